"""Regression tests for the scheduler defects of issue 12 (cancel during lease waits,
stuck parked tasks, retries after cancel, progress-file failures and symlinks,
cancelling more than a page of an employee's tasks) — on a real Store (SQLite file)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from orchestra_kit.agents.base import AgentEvent, AgentRequest, AgentResult, Emit
from orchestra_kit.config import DatabaseSettings, OptimizationFlags, SchedulerSettings
from orchestra_kit.models import TaskStatus
from orchestra_kit.scheduler import Scheduler
from orchestra_kit.store import Store


class GatedBackend:
    """Each task runs until its own gate opens (``finish(task_id)``); records calls."""

    name = "gated"

    def __init__(self, *, open_all: bool = False) -> None:
        self.calls: dict[int, int] = {}
        self.running: set[int] = set()
        self._gates: dict[int, asyncio.Event] = {}
        self._open_all = open_all

    def _gate(self, task_id: int) -> asyncio.Event:
        gate = self._gates.setdefault(task_id, asyncio.Event())
        if self._open_all:
            gate.set()
        return gate

    def finish(self, task_id: int) -> None:
        self._gate(task_id).set()

    async def run(self, request: AgentRequest, emit: Emit) -> AgentResult:
        self.calls[request.task_id] = self.calls.get(request.task_id, 0) + 1
        self.running.add(request.task_id)
        emit(AgentEvent(kind="started"))
        try:
            await self._gate(request.task_id).wait()
            return AgentResult(summary=f"did {request.task_id}")
        finally:
            self.running.discard(request.task_id)

    async def aclose(self) -> None:
        pass


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    (tmp_path / "project").mkdir()
    async with Store(DatabaseSettings(path=str(tmp_path / "t.db")), OptimizationFlags(),
                     project_root=tmp_path / "project") as s:
        await s.hire_many([{"name": n, "role": "dev"} for n in ("a", "b", "c")])
        yield s


def make_scheduler(store: Store, backend: Any, tmp_path: Path, **kw: Any) -> Scheduler:
    base: dict[str, Any] = {"max_concurrent_tasks": 50, "retry_backoff_s": 0.05,
                            "retry_backoff_max_s": 0.05, "shutdown_grace_s": 0.5,
                            "progress_persist_interval_s": 0.0}
    base.update(kw)
    return Scheduler(store, backend, SchedulerSettings(**base),
                     workspace_root=tmp_path / "sessions", project_root=tmp_path / "project")


async def until(cond: Any, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not cond():
            await asyncio.sleep(0.005)


class LockSpy:
    """Counts ``lock_files`` calls for one task and can hold one call mid-flight."""

    def __init__(self, store: Store) -> None:
        self.calls = 0
        self.hold_next = False
        self.entered = asyncio.Event()
        self.proceed = asyncio.Event()
        self.left = asyncio.Event()  # the held call returned
        self._inner = store.lock_files

    async def __call__(self, *args: Any, **kw: Any) -> dict[str, str]:
        if kw.get("task_id") is not None:
            self.calls += 1
            if self.hold_next:
                self.hold_next = False
                self.entered.set()
                await self.proceed.wait()
                try:
                    return await self._inner(*args, **kw)
                finally:
                    self.left.set()
        return await self._inner(*args, **kw)


async def test_cancel_while_taking_leases_is_prompt_and_the_task_never_runs(
        store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """High 1: a DELETE landing while the task retries its leases ends it at once."""
    spy = LockSpy(store)
    monkeypatch.setattr(store, "lock_files", spy)
    backend = GatedBackend(open_all=True)
    assert (await store.lock_files("b", ["src/shared.py"]))["src/shared.py"] == "locked"
    async with make_scheduler(store, backend, tmp_path) as sched:
        task = await sched.submit("a", "needs shared", files=["src/shared.py"])
        await until(lambda: spy.calls >= 1)
        spy.hold_next = True
        await spy.entered.wait()  # a retry is taking its leases right now
        cancelling = asyncio.create_task(sched.cancel(task.id))
        await asyncio.sleep(0.05)
        spy.proceed.set()
        async with asyncio.timeout(2):  # today: waits until b's lease goes
            cancelled = await cancelling
        assert cancelled.status == TaskStatus.CANCELLED
        await spy.left.wait()  # the attempt found the file still held by b
        await store.release_files("b")
        await asyncio.sleep(0.3)  # several retry periods: nothing may start it now
        final = await sched.wait(task.id, timeout_s=2)
    assert final.status == TaskStatus.CANCELLED
    assert task.id not in backend.calls
    assert await store.list_leases() == []


async def test_cancelled_task_waiting_on_a_lease_is_not_retried(
        store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Medium 5: after the cancel, no more lease attempts, no stale 'queued' state."""
    spy = LockSpy(store)
    monkeypatch.setattr(store, "lock_files", spy)
    backend = GatedBackend(open_all=True)
    assert (await store.lock_files("b", ["src/shared.py"]))["src/shared.py"] == "locked"
    async with make_scheduler(store, backend, tmp_path) as sched:
        task = await sched.submit("a", "needs shared", files=["src/shared.py", "src/own.py"])
        await until(lambda: spy.calls >= 2 and sched.stats()["running"] == 0)
        assert (await sched.cancel(task.id)).status == TaskStatus.CANCELLED
        calls_at_cancel = spy.calls
        await asyncio.sleep(0.4)  # eight retry periods
        assert spy.calls == calls_at_cancel
        first = await anext(aiter(sched.subscribe(task.id)))
        assert first is not None and first.status == "cancelled"
        assert [x.path for x in await store.list_leases()] == ["src/shared.py"]  # b's only
        assert sched.stats()["queued"] == 0


async def test_cancelled_released_entry_does_not_strand_its_siblings(
        store: Store, tmp_path: Path) -> None:
    """High 2: the issue's repro — 2 slots, one employee with three tasks, a higher
    priority task takes the freed slot, the released task is cancelled."""
    backend = GatedBackend()
    async with make_scheduler(store, backend, tmp_path, max_concurrent_tasks=2) as sched:
        a1 = await sched.submit("a", "first")
        await until(lambda: a1.id in backend.running)
        a2 = await sched.submit("a", "second")
        a3 = await sched.submit("a", "third")
        await asyncio.sleep(0.05)  # a is busy: both are parked
        b0 = await sched.submit("b", "holds the other slot")
        await until(lambda: b0.id in backend.running)
        high = await sched.submit("c", "urgent", priority=9)
        backend.finish(a1.id)  # a2 is released; the urgent task takes the slot
        await until(lambda: high.id in backend.running)
        assert (await sched.cancel(a2.id)).status == TaskStatus.CANCELLED
        backend.finish(b0.id)
        backend.finish(high.id)
        backend.finish(a3.id)
        final = await sched.wait(a3.id, timeout_s=3)  # today: stays queued for ever
    assert final.status == TaskStatus.COMPLETED
    assert a2.id not in backend.calls


async def test_failing_end_of_task_progress_write_still_publishes_the_end(
        store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Medium 8: a file where the archive folder should be; the waiter still returns."""
    workspace = tmp_path / "sessions" / "a"
    workspace.mkdir(parents=True)
    (workspace / "completed_tasks").write_text("not a folder")
    backend = GatedBackend(open_all=True)
    caplog.set_level(logging.WARNING)
    async with make_scheduler(store, backend, tmp_path) as sched:
        task = await sched.submit("a", "work")
        final = await sched.wait(task.id, timeout_s=3)
    assert final.status == TaskStatus.COMPLETED
    assert any("progress" in r.getMessage() and str(task.id) in r.getMessage()
               for r in caplog.records)


async def test_progress_files_never_follow_symlinks(store: Store, tmp_path: Path) -> None:
    """Medium 6: planted links make the writer refuse, never write outside the workspace."""
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.txt"
    victim.write_text("precious")
    workspace = tmp_path / "sessions" / "a"
    workspace.mkdir(parents=True)
    (workspace / "current_task.md").symlink_to(victim)
    (workspace / "completed_tasks").symlink_to(outside, target_is_directory=True)
    backend = GatedBackend(open_all=True)
    async with make_scheduler(store, backend, tmp_path) as sched:
        task = await sched.submit("a", "work")
        final = await sched.wait(task.id, timeout_s=3)
    assert final.status == TaskStatus.COMPLETED
    assert victim.read_text() == "precious"
    assert sorted(p.name for p in outside.iterdir()) == ["victim.txt"]


async def test_workspace_folder_planted_as_symlink_is_refused(store: Store, tmp_path: Path) -> None:
    """Medium 6: the employee's folder itself replaced by a link to elsewhere."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "sessions").mkdir()
    (tmp_path / "sessions" / "a").symlink_to(outside, target_is_directory=True)
    backend = GatedBackend(open_all=True)
    async with make_scheduler(store, backend, tmp_path) as sched:
        final = await sched.wait((await sched.submit("a", "work")).id, timeout_s=3)
    assert final.status == TaskStatus.COMPLETED
    assert list(outside.iterdir()) == []


async def test_cancel_employee_stops_more_than_a_thousand_queued_tasks(
        store: Store, tmp_path: Path) -> None:
    """Low: DELETE /tasks/{name} used to stop at most 1,000 queued tasks."""
    backend = GatedBackend()
    async with make_scheduler(store, backend, tmp_path, max_concurrent_tasks=1) as sched:
        first = await sched.submit("a", "runs")
        await until(lambda: first.id in backend.running)
        results = await sched.submit_many([{"employee": "a", "description": f"t{i}"}
                                           for i in range(1100)])
        assert len(results) == 1100
        done = await sched.cancel_employee("a")
        assert len(done) == 1101
        assert await store.list_tasks(employee="a", status="queued") == []
