"""Store invariants under real concurrency, on both backends, for each code path.

SQLite: a real file per test. PostgreSQL: one server per session, a fresh schema per
test (``pg_url`` in tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from orchestra_kit.config import DatabaseSettings, OptimizationFlags
from orchestra_kit.errors import CapacityError, ConflictError, NotFoundError, ValidationError
from orchestra_kit.models import RequestStatus, TaskStatus
from orchestra_kit.store import Store
from orchestra_kit.store.pg import PgStore
from orchestra_kit.store.protocol import StoreProtocol

ON = OptimizationFlags()
VARIANTS = {
    "all_on": ON,
    "no_batch": dataclasses.replace(ON, enable_batch_operations=False),
    "no_wal": dataclasses.replace(ON, enable_wal_mode=False),
    "no_pool": dataclasses.replace(ON, enable_connection_pooling=False),
    "no_cache": dataclasses.replace(ON, enable_query_caching=False),
    "all_off": OptimizationFlags.all_off(),
}
# Slow paths (a commit per row with synchronous=FULL) get smaller sizes.
SIZES = {"all_on": 1000, "no_cache": 1000, "no_pool": 1000, "no_batch": 1000, "no_wal": 1000,
         "all_off": 150, "pg_all_on": 1000, "pg_all_off": 150}
# PostgreSQL: batching and WAL select nothing there; pooling and caching do.
PG_VARIANTS = {"pg_all_on": ON, "pg_all_off": OptimizationFlags.all_off()}
ALL = [*VARIANTS, *PG_VARIANTS]


@pytest.fixture(params=ALL, ids=ALL)
def variant(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def store(tmp_path: Path, variant: str,
                request: pytest.FixtureRequest) -> AsyncIterator[StoreProtocol]:
    if variant in PG_VARIANTS:
        url: str = request.getfixturevalue("pg_url")
        pg_settings = DatabaseSettings(url=url, max_connections=8)
        async with PgStore(url, pg_settings, PG_VARIANTS[variant], project_root=tmp_path) as p:
            yield p
        return
    settings = DatabaseSettings(path=str(tmp_path / "store.db"), max_connections=8)
    async with Store(settings, VARIANTS[variant], project_root=tmp_path) as s:
        yield s


async def active_leases_in_db(store: StoreProtocol, path: str) -> int:
    """Counted in the database itself, past every cache."""
    if isinstance(store, PgStore):
        conn = await asyncpg.connect(store.url)
        try:
            return int(await conn.fetchval("SELECT COUNT(*) FROM file_leases WHERE path = $1"
                                           " AND released_at IS NULL", path))
        finally:
            await conn.close()
    assert isinstance(store, Store)
    with sqlite3.connect(store.settings.path) as sq:
        return int(sq.execute(
            "SELECT COUNT(*) FROM file_leases WHERE path = ? AND released_at IS NULL",
            (path,)).fetchone()[0])


async def test_concurrent_hires_with_duplicates(store: StoreProtocol, variant: str) -> None:
    n = SIZES[variant]
    rng = random.Random(7)
    unique = [f"emp-{i}" for i in range(n - n // 10)]
    names = unique + [rng.choice(unique) for _ in range(n // 10)]
    rng.shuffle(names)
    results = await asyncio.gather(*(store.hire(nm, "dev") for nm in names),
                                   return_exceptions=True)
    conflicts = [r for r in results if isinstance(r, ConflictError)]
    others = [r for r in results if isinstance(r, BaseException)
              and not isinstance(r, ConflictError)]
    assert others == []
    assert len(conflicts) == n // 10
    assert all("already exists" in str(c) for c in conflicts)
    stored = await store.list_employees(limit=10_000)
    assert sorted(e.name for e in stored) == sorted(unique)
    assert (await store.counts())["employees"] == len(unique)


async def test_concurrent_lock_one_path_has_one_winner(store: StoreProtocol, variant: str) -> None:
    n = SIZES[variant]
    names = [f"e{i}" for i in range(n)]
    hired = await store.hire_many([{"name": nm, "role": "dev"} for nm in names])
    assert all(not isinstance(h, Exception) for h in hired)
    results = await asyncio.gather(*(store.lock_files(nm, ["src/shared.py"]) for nm in names))
    statuses = [r["src/shared.py"] for r in results]
    winners = [nm for nm, st in zip(names, statuses, strict=True) if st == "locked"]
    assert len(winners) == 1
    assert statuses.count(f"locked_by:{winners[0]}") == n - 1
    assert await active_leases_in_db(store, "src/shared.py") == 1
    leases = await store.list_leases()
    assert [(x.path, x.employee) for x in leases] == [("src/shared.py", winners[0])]


async def test_approve_moves_lease_atomically_under_contention(store: StoreProtocol) -> None:
    owner, requesters, lockers = "owner", [f"r{i}" for i in range(20)], [f"l{i}" for i in range(20)]
    await store.hire_many([{"name": nm, "role": "dev"} for nm in [owner, *requesters, *lockers]])
    assert (await store.lock_files(owner, ["a.py"]))["a.py"] == "locked"
    reqs = []
    for r in requesters:
        status, req = await store.request_file(r, "a.py", "need it")
        assert status == "request_sent_to:owner" and req is not None
        reqs.append(req)
    approvals = [store.approve_request(q.id, actor=owner) for q in reqs]
    locks = [store.lock_files(nm, ["a.py"]) for nm in lockers]
    mixed = approvals + locks
    random.Random(3).shuffle(mixed)
    results = await asyncio.gather(*mixed, return_exceptions=True)
    ok = [r for r in results if not isinstance(r, BaseException) and hasattr(r, "employee")]
    errs = [r for r in results if isinstance(r, BaseException)]
    assert len(ok) == 1, results
    assert all(isinstance(e, ConflictError) for e in errs) and len(errs) == len(reqs) - 1
    lock_results = [r for r in results if isinstance(r, dict)]
    assert all(r["a.py"] in ("locked_by:owner", f"locked_by:{ok[0].employee}")
               for r in lock_results)
    assert await active_leases_in_db(store, "a.py") == 1
    assert [x.employee for x in await store.list_leases()] == [ok[0].employee]
    pending = await store.list_requests(status="pending")
    assert pending == []  # the losers were closed, not left pending forever


async def test_fire_cascades(store: StoreProtocol) -> None:
    await store.hire_many([{"name": "bob", "role": "dev"}, {"name": "amy", "role": "dev"}])
    await store.lock_files("bob", ["x.py", "y.py"])
    await store.lock_files("amy", ["z.py"])
    _, req_in = await store.request_file("amy", "x.py")       # targets bob's lease
    _, req_out = await store.request_file("bob", "z.py")      # made by bob
    t1 = await store.create_task("bob", "queued one")
    t2 = await store.create_task("bob", "running one")
    await store.transition(t2.id, TaskStatus.RUNNING, count_attempt=True)
    t3 = await store.create_task("amy", "amy's")
    report = await store.fire("bob")
    assert report.released_paths == ("x.py", "y.py")
    assert set(report.cancelled_task_ids) == {t1.id, t2.id}
    assert req_in is not None and req_out is not None
    assert set(report.denied_request_ids) == {req_in.id, req_out.id}
    for tid in (t1.id, t2.id):
        t = await store.get_task(tid)
        assert t.status == TaskStatus.CANCELLED and t.error == "employee fired"
    assert (await store.get_task(t3.id)).status == TaskStatus.QUEUED
    assert [x.employee for x in await store.list_leases()] == ["amy"]
    reqs = await store.list_requests()
    assert {r.status for r in reqs} == {RequestStatus.DENIED}
    with pytest.raises(NotFoundError):
        await store.get_employee("bob")
    with pytest.raises(NotFoundError, match="bob"):
        await store.fire("bob")
    assert (await store.lock_files("amy", ["x.py"]))["x.py"] == "locked"


@pytest.mark.parametrize("bad", ["../x", "a/../../x", "/etc/passwd", "x\x00y", "", "."])
async def test_traversal_paths_rejected(tmp_path: Path, bad: str) -> None:
    settings = DatabaseSettings(path=str(tmp_path / "s.db"))
    async with Store(settings, ON, project_root=tmp_path) as store:
        await store.hire("bob", "dev")
        with pytest.raises(ValidationError) as ei:
            await store.lock_files("bob", ["ok.py", bad])
        assert ei.value.field == "files[1]"
        with pytest.raises(ValidationError) as ei2:
            await store.request_file("bob", bad)
        assert ei2.value.field == "path"
        with pytest.raises(ValidationError) as ei3:
            await store.create_task("bob", "t", files=[bad])
        assert ei3.value.field == "files[0]"
        assert await store.list_leases() == []  # nothing half-done


async def test_absolute_path_inside_root_is_normalised(tmp_path: Path) -> None:
    settings = DatabaseSettings(path=str(tmp_path / "s.db"))
    async with Store(settings, ON, project_root=tmp_path) as store:
        await store.hire("bob", "dev")
        res = await store.lock_files("bob", [str(tmp_path / "src" / "a.py"), "./src/a.py"])
        assert res == {"src/a.py": "locked"}
        assert (await store.lock_files("bob", ["src//a.py"])) == {"src/a.py": "already_locked"}


async def test_lock_unknown_employee_is_not_found(store: StoreProtocol) -> None:
    with pytest.raises(NotFoundError, match="ghost"):
        await store.lock_files("ghost", ["a.py"])
    assert await store.list_leases() == []


async def test_one_running_task_per_employee_and_the_running_limit(store: StoreProtocol) -> None:
    await store.hire_many([{"name": n, "role": "dev"} for n in ("ann", "ben", "cy")])
    a1, a2 = (await store.create_task("ann", "one")), (await store.create_task("ann", "two"))
    b1 = await store.create_task("ben", "three")
    c1 = await store.create_task("cy", "four")
    await store.transition(a1.id, TaskStatus.RUNNING, count_attempt=True)
    with pytest.raises(ConflictError, match="already runs a task"):  # the database refuses
        await store.transition(a2.id, TaskStatus.RUNNING)
    assert (await store.get_task(a2.id)).status == TaskStatus.QUEUED
    await store.transition(b1.id, TaskStatus.RUNNING, max_running=2)
    with pytest.raises(CapacityError, match="2 tasks already run"):
        await store.transition(c1.id, TaskStatus.RUNNING, max_running=2)
    assert (await store.get_task(c1.id)).status == TaskStatus.QUEUED
    await store.transition(a1.id, TaskStatus.COMPLETED)
    assert (await store.transition(c1.id, TaskStatus.RUNNING, max_running=2)).status \
        == TaskStatus.RUNNING


async def test_chat_events_are_claimed_once(store: StoreProtocol) -> None:
    ids = ["Ev1" if i % 2 else f"Ev{i + 100}" for i in range(20)]  # repeats, one message
    claims = await asyncio.gather(*(store.claim_chat_event(e, "C1:1.0", channel="C1", user="U1")
                                    for e in ids))
    assert claims.count(True) == 1  # one message: whichever came first
    winner = ids[claims.index(True)]
    await store.hire("alice", "developer")
    item = {"employee": "alice", "description": "fix the build"}
    made = await asyncio.gather(*(store.create_chat_tasks(winner, [item]) for _ in range(10)))
    created = [m for m in made if m is not None]  # redeliveries at once: one set of tasks
    assert len(created) == 1 and len(await store.list_tasks()) == 1
    assert await store.chat_event_state("EvOther", "C1:1.0") == (winner, "task",
                                                                  (created[0][0].id,))
    assert not await store.finish_chat_event(winner, "help")  # handled: it stays "task"
    assert await store.chat_event_counts() == {"task": 1}
