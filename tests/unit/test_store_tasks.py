"""Task state machine, attempts, batch creation, recovery and counts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from orchestra_kit.config import DatabaseSettings, OptimizationFlags
from orchestra_kit.errors import ConflictError, NotFoundError, ValidationError
from orchestra_kit.models import TaskStatus
from orchestra_kit.store import Store


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["file", "memory"])
async def store(request: pytest.FixtureRequest, tmp_path: Path,
                clock: FakeClock) -> AsyncIterator[Store]:
    path = str(tmp_path / "t.db") if request.param == "file" else ":memory:"
    async with Store(DatabaseSettings(path=path), OptimizationFlags(), project_root=tmp_path,
                     clock=clock) as s:
        await s.hire("bob", "dev")
        yield s


async def test_lifecycle_and_timestamps(store: Store, clock: FakeClock) -> None:
    t = await store.create_task("bob", "write code", priority=7, files=["a.py", "./a.py"])
    assert (t.status, t.priority, t.files, t.created_at) == (TaskStatus.QUEUED, 7, ("a.py",), 1000)
    clock.now = 1010.0
    t = await store.transition(t.id, TaskStatus.RUNNING, expect=TaskStatus.QUEUED,
                               count_attempt=True)
    assert (t.status, t.started_at, t.attempts, t.finished_at) == ("running", 1010.0, 1, None)
    await store.set_progress(t.id, 40)
    assert (await store.get_task(t.id)).progress == 40
    clock.now = 1020.0
    t = await store.transition(t.id, TaskStatus.COMPLETED, result="done")
    assert (t.status, t.finished_at, t.result, t.progress) == ("completed", 1020.0, "done", 100)
    assert await store.get_task(t.id) == t


@pytest.mark.parametrize("terminal", ["completed", "failed", "cancelled", "timed_out"])
async def test_terminal_states_never_move(store: Store, terminal: str) -> None:
    t = await store.create_task("bob", "x")
    await store.transition(t.id, TaskStatus.RUNNING)
    await store.transition(t.id, TaskStatus(terminal))
    for new in TaskStatus:
        with pytest.raises(ConflictError, match=f"from '{terminal}' to '{new.value}'"):
            await store.transition(t.id, new)


async def test_illegal_and_expect_mismatch(store: Store) -> None:
    t = await store.create_task("bob", "x")
    with pytest.raises(ConflictError, match="from 'queued' to 'completed'"):
        await store.transition(t.id, TaskStatus.COMPLETED)
    with pytest.raises(ConflictError, match="it is 'queued', not 'running'"):
        await store.transition(t.id, TaskStatus.CANCELLED, expect=TaskStatus.RUNNING)
    assert (await store.get_task(t.id)).status == TaskStatus.QUEUED
    with pytest.raises(NotFoundError):
        await store.transition(9999, TaskStatus.RUNNING)
    with pytest.raises(ValidationError, match="status"):
        await store.transition(t.id, "sleeping")  # type: ignore[arg-type]


async def test_retry_counts_attempts(store: Store) -> None:
    t = await store.create_task("bob", "x")
    for attempt in (1, 2, 3):
        t = await store.transition(t.id, TaskStatus.RUNNING, count_attempt=True)
        assert t.attempts == attempt
        t = await store.transition(t.id, TaskStatus.QUEUED, error=f"try {attempt}")
    assert t.error == "try 3"


async def test_queued_order_priority_then_fifo(store: Store) -> None:
    ids = [(await store.create_task("bob", f"t{p}", priority=p)).id for p in (1, 9, 5, 9, 1)]
    order = [t.id for t in await store.queued_tasks()]
    assert order == [ids[1], ids[3], ids[2], ids[0], ids[4]]


async def test_create_task_validation(store: Store) -> None:
    with pytest.raises(NotFoundError, match="ghost"):
        await store.create_task("ghost", "x")
    with pytest.raises(ValidationError) as ei:
        await store.create_task("bob", "x", priority=True)
    assert ei.value.field == "priority"
    for kwargs, field in (({"priority": 11}, "priority"), ({"mode": "yolo"}, "mode"),
                          ({"model": ""}, "model")):
        with pytest.raises(ValidationError) as ei:
            await store.create_task("bob", "x", **kwargs)  # type: ignore[arg-type]
        assert ei.value.field == field
    with pytest.raises(ValidationError, match="description"):
        await store.create_task("bob", "   ")
    assert await store.list_tasks() == []


async def test_create_tasks_batch_per_item(store: Store) -> None:
    res = await store.create_tasks([
        {"employee": "bob", "description": "a"},
        {"employee": "ghost", "description": "b"},
        {"employee": "bob", "description": "c", "priority": "high"},
        {"employee": "bob", "description": "d", "files": ["../etc"]},
        {"employee": "bob", "description": "e", "mode": "chat"},
    ])
    assert [type(r).__name__ for r in res] == ["Task", "NotFoundError", "ValidationError",
                                               "ValidationError", "Task"]
    assert isinstance(res[2], ValidationError) and res[2].field == "tasks[2].priority"
    assert isinstance(res[3], ValidationError) and res[3].field == "tasks[3].files[0]"
    assert [t.description for t in await store.list_tasks()] == ["a", "e"]
    assert len(await store.list_tasks(status="queued", employee="bob", limit=1)) == 1


async def test_recover_requeues_or_fails(store: Store, clock: FakeClock) -> None:
    await store.hire("amy", "dev")
    a = await store.create_task("bob", "a")
    b = await store.create_task("amy", "b")
    c = await store.create_task("bob", "c")
    await store.transition(a.id, TaskStatus.RUNNING, count_attempt=True)
    await store.transition(b.id, TaskStatus.RUNNING, count_attempt=True)
    await store.transition(b.id, TaskStatus.QUEUED)
    await store.transition(b.id, TaskStatus.RUNNING, count_attempt=True)
    await store.lock_files("bob", ["a.py"], task_id=a.id)
    await store.lock_files("amy", ["old.py"], ttl_s=5)
    await store.lock_files("amy", ["keep.py"])
    clock.now += 10
    report = await store.recover(max_attempts=2)
    assert report.requeued_task_ids == (a.id,)
    assert report.failed_task_ids == (b.id,)
    assert report.released_paths == ("a.py", "old.py")
    ta, tb = await store.get_task(a.id), await store.get_task(b.id)
    assert (ta.status, tb.status, tb.error) == ("queued", "failed", "interrupted")
    assert (await store.get_task(c.id)).status == TaskStatus.QUEUED
    assert [x.path for x in await store.list_leases()] == ["keep.py"]
    assert (await store.counts())["tasks_running"] == 0


async def test_lease_expiry_and_counts(store: Store, clock: FakeClock) -> None:
    await store.hire("amy", "dev")
    assert await store.lock_files("bob", ["a.py"], ttl_s=5) == {"a.py": "locked"}
    assert (await store.counts())["active_leases"] == 1
    assert len(await store.list_leases()) == 1
    clock.now += 6
    assert (await store.counts())["active_leases"] == 0  # the cache must not hide expiry
    assert await store.list_leases() == []
    assert await store.lock_files("amy", ["a.py"]) == {"a.py": "locked"}
    assert await store.expire_leases() == 0
    assert await store.release_files("amy") == ["a.py"]
    assert await store.release_files("amy") == []


async def test_requests_flow_and_permissions(store: Store) -> None:
    await store.hire("amy", "dev")
    assert await store.request_file("amy", "a.py") == ("file_not_locked", None)
    await store.lock_files("bob", ["a.py"])
    assert await store.request_file("bob", "a.py") == ("already_owner", None)
    status, req = await store.request_file("amy", "a.py", "please")
    assert status == "request_sent_to:bob" and req is not None
    status2, req2 = await store.request_file("amy", "a.py")
    assert status2 == "request_already_exists" and req2 == req
    from orchestra_kit.errors import ForbiddenError
    with pytest.raises(ForbiddenError):
        await store.approve_request(req.id, actor="amy")
    denied = await store.deny_request(req.id, actor="bob")
    assert denied.status == "denied"
    with pytest.raises(ConflictError, match="already denied"):
        await store.approve_request(req.id)
    with pytest.raises(NotFoundError):
        await store.deny_request(12345)
    _, req3 = await store.request_file("amy", "a.py")
    assert req3 is not None
    await store.release_files("bob", ["a.py"])
    assert (await store.list_requests(employee="amy"))[-1].status == "denied"


async def test_migration_2_keeps_one_running_task_per_employee(tmp_path: Path) -> None:
    import sqlite3

    from orchestra_kit.store.schema import MIGRATIONS

    db = tmp_path / "v1.db"
    with sqlite3.connect(db) as conn:  # a version-1 database with two running tasks of bob
        for sql in MIGRATIONS[0][1]:
            conn.execute(sql)
        conn.execute("PRAGMA user_version = 1")
        conn.execute("INSERT INTO employees (name, role, hired_at) VALUES ('bob', 'dev', 1)")
        for desc in ("older", "newer"):
            conn.execute("INSERT INTO tasks (employee, description, priority, mode, status,"
                         " created_at) VALUES ('bob', ?, 5, 'build', 'running', 1)", (desc,))
    async with Store(DatabaseSettings(path=str(db)), OptimizationFlags(),
                     project_root=tmp_path) as s:
        tasks = await s.list_tasks()
        assert [(t.description, t.status) for t in tasks] == [
            ("older", TaskStatus.RUNNING), ("newer", TaskStatus.QUEUED)]
        with pytest.raises(ConflictError):
            await s.transition(tasks[1].id, TaskStatus.RUNNING)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
