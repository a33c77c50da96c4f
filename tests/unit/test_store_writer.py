"""Writer, migrations and lifecycle: savepoint isolation, batch failure, close semantics."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import sqlite3
import warnings
from pathlib import Path

import pytest

from orchestra_kit.config import DatabaseSettings, OptimizationFlags
from orchestra_kit.errors import ConflictError, StoreClosedError, StoreError
from orchestra_kit.store import Store
from orchestra_kit.store.schema import MIGRATIONS


async def test_schema_version_and_unique_index(tmp_path: Path) -> None:
    db = str(tmp_path / "m.db")
    for _ in range(2):  # reopening applies nothing twice
        async with Store(DatabaseSettings(path=db), OptimizationFlags(), project_root=tmp_path):
            pass
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.execute("INSERT INTO employees(name, role, hired_at) VALUES ('a', 'r', 0)")
        conn.execute("INSERT INTO file_leases(path, employee, acquired_at) VALUES ('p', 'a', 0)")
        with pytest.raises(sqlite3.IntegrityError):  # the database itself refuses
            conn.execute("INSERT INTO file_leases(path, employee, acquired_at)"
                         " VALUES ('p', 'a', 0)")


async def test_wal_off_uses_rollback_journal(tmp_path: Path) -> None:
    db = str(tmp_path / "d.db")
    flags = dataclasses.replace(OptimizationFlags(), enable_wal_mode=False)
    async with Store(DatabaseSettings(path=db), flags, project_root=tmp_path) as s:
        await s.hire("a", "r")
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


async def test_one_bad_op_in_a_batch_fails_alone(tmp_path: Path) -> None:
    settings = DatabaseSettings(path=str(tmp_path / "b.db"), group_commit_window_ms=5)
    async with Store(settings, OptimizationFlags(), project_root=tmp_path) as store:
        await store.hire("dup", "dev")
        names = [f"n{i}" for i in range(50)] + ["dup"]
        res = await asyncio.gather(*(store.hire(n, "dev") for n in names),
                                   return_exceptions=True)
        assert [type(r).__name__ for r in res].count("ConflictError") == 1
        assert isinstance(res[-1], ConflictError)
        assert len(await store.list_employees()) == 51
        assert store.stats()["max_batch_size"] > 1  # really coalesced


async def test_failed_commit_fails_every_op(tmp_path: Path) -> None:
    async with Store(DatabaseSettings(path=str(tmp_path / "f.db")), OptimizationFlags(),
                     project_root=tmp_path) as store:
        def explode(conn: sqlite3.Connection) -> None:
            conn.execute("COMMIT")  # ends the transaction behind the writer's back
            conn.execute("SELECT * FROM no_such_table")

        with pytest.raises(StoreError):
            await store._write(explode, ())
        await store.hire("after", "dev")  # the writer survives
        assert (await store.get_employee("after")).name == "after"


async def test_lifecycle(tmp_path: Path) -> None:
    store = Store(DatabaseSettings(path=str(tmp_path / "l.db")), OptimizationFlags(),
                  project_root=tmp_path)
    with pytest.raises(StoreClosedError):
        await store.hire("a", "r")
    await store.start()
    await store.hire("a", "r")
    await store.aclose()
    await store.aclose()  # idempotent
    with pytest.raises(StoreClosedError):
        await store.get_employee("a")
    with pytest.raises(StoreError):
        await store.start()


async def test_unclosed_store_warns(tmp_path: Path) -> None:
    store = Store(DatabaseSettings(path=str(tmp_path / "w.db")), OptimizationFlags(),
                  project_root=tmp_path)
    await store.start()
    writer = store._writer
    assert writer is not None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del store
        gc.collect()
    assert any(issubclass(w.category, ResourceWarning) for w in caught)
    await writer.aclose()


async def test_bad_path_fails_start(tmp_path: Path) -> None:
    store = Store(DatabaseSettings(path=str(tmp_path / "missing" / "x.db")), OptimizationFlags(),
                  project_root=tmp_path)
    with pytest.raises(StoreError, match="Cannot open"):
        await store.start()
    await store.aclose()


async def test_stats_shape(tmp_path: Path) -> None:
    async with Store(DatabaseSettings(path=str(tmp_path / "s.db")), OptimizationFlags(),
                     project_root=tmp_path) as store:
        await asyncio.gather(*(store.hire(f"e{i}", "dev") for i in range(100)))
        await store.get_employee("e1")
        await store.get_employee("e1")
        s = store.stats()
        assert s["writes"] == 100 and s["commits"] == s["batches"] <= 100
        assert sum(s["batch_size_histogram"].values()) == s["batches"]
        assert s["cache"]["hits"] == 1 and s["cache"]["misses"] == 1
        assert s["pool"]["size"] >= 1 and s["write_latency_p99_ms"] > 0


async def test_merged_hires_keep_per_op_results(tmp_path: Path) -> None:
    """Concurrent single hires run as multi-row INSERTs: duplicates inside one merged
    statement and names already stored each get their own ConflictError."""
    settings = DatabaseSettings(path=str(tmp_path / "mg.db"), group_commit_window_ms=5)
    async with Store(settings, OptimizationFlags(), project_root=tmp_path) as store:
        await store.hire("old", "dev")
        names = [f"m{i}" for i in range(200)] + ["m7", "old", "m7"]
        res = await asyncio.gather(*(store.hire(n, "dev") for n in names),
                                   return_exceptions=True)
        conflicts = [n for n, r in zip(names, res, strict=True) if isinstance(r, ConflictError)]
        assert sorted(conflicts) == ["m7", "m7", "old"]
        assert not isinstance(res[7], Exception)  # the first "m7" won
        assert len(await store.list_employees()) == 201


async def test_merge_failure_falls_back_to_single_ops(tmp_path: Path) -> None:
    from orchestra_kit.store.writer import WriteOp

    def broken_merge(conn: sqlite3.Connection, payloads: list[object]) -> list[tuple[bool, object]]:
        raise sqlite3.OperationalError("merge cannot run")

    def insert(name: str):  # type: ignore[no-untyped-def]
        return lambda c: c.execute("INSERT INTO employees(name, role, hired_at) VALUES (?, 'r', 0)"
                                   " RETURNING name", (name,)).fetchone()[0]

    async with Store(DatabaseSettings(path=str(tmp_path / "fb.db"), group_commit_window_ms=5),
                     OptimizationFlags(), project_root=tmp_path) as store:
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(5)]
        writer = store._writer
        assert writer is not None
        for i, fut in enumerate(futures):
            writer.submit(WriteOp(insert(f"f{i}"), fut, ("employees",), True, broken_merge, i))
        assert await asyncio.gather(*futures) == [f"f{i}" for i in range(5)]
        assert len(await store.list_employees()) == 5


async def test_window_waits_only_after_a_burst(tmp_path: Path) -> None:
    """The group-commit window gathers bursts (callers resumed together by a commit), not
    writes that trickle in: after batches of a few ops it never waits, after a batch of
    16 or more a smaller one waits for company (counted in ``window_waits``)."""
    settings = DatabaseSettings(path=str(tmp_path / "w.db"), group_commit_window_ms=50)
    async with Store(settings, OptimizationFlags(), project_root=tmp_path) as store:
        n = 0

        async def hires(k: int) -> None:
            nonlocal n
            await asyncio.gather(*(store.hire(f"w{n + i}", "dev") for i in range(k)))
            n += k

        for _ in range(30):  # fast, alternating 4 and 2: fewer queued than last time
            await hires(4)
            await hires(2)
        assert store.stats()["window_waits"] == 0
        await hires(32)
        await hires(2)  # after a burst, the window waits for company
        s = store.stats()
        assert s["window_waits"] >= 1 and s["window_wait_ms"] > 0
        assert len(await store.list_employees()) == n


def _wal_bytes(db: Path) -> int:
    wal = db.with_name(db.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


@pytest.mark.parametrize("every", [0, 5])
async def test_idle_checkpoints_keep_the_wal_small(tmp_path: Path, every: int) -> None:
    """With ``idle_checkpoint_commits`` the writer checkpoints between batches, so the log
    restarts and stays a few commits long; with 0 only SQLite's auto-checkpoint (inside
    the commit that crosses 1,000 pages) bounds it, at about 4 MB."""
    db = tmp_path / "c.db"
    settings = DatabaseSettings(path=str(db), idle_checkpoint_commits=every)
    async with Store(settings, OptimizationFlags(), project_root=tmp_path) as store:
        largest = 0
        for i in range(400):  # one at a time, a commit each, and the writer idle between
            await store.hire(f"c{i}", "dev", smartness="smart")
            largest = max(largest, _wal_bytes(db))
            await asyncio.sleep(0.002)  # (it checkpoints only when it finds nothing queued)
        s = store.stats()
        assert s["commits"] >= 400
        if every:
            assert s["checkpoints"] >= 400 // every // 2
            assert s["checkpoint_ms"] > 0 and s["failed_checkpoints"] == 0
            assert largest < 1_000_000
        else:
            assert s["checkpoints"] == 0
            assert largest > 1_000_000
    with sqlite3.connect(db) as conn:  # nothing lost on the way
        assert conn.execute("SELECT COUNT(*) FROM employees").fetchone()[0] == 400


class _CheckpointFails:
    """The writer's connection, except that every WAL checkpoint fails."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if "wal_checkpoint" in sql:
            raise sqlite3.OperationalError("disk I/O error")
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> object:
        return getattr(self._conn, name)


async def test_a_failed_idle_checkpoint_is_counted_and_writes_go_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from orchestra_kit.store import base
    real = base.connect_writer
    monkeypatch.setattr(base, "connect_writer", lambda s, f: _CheckpointFails(real(s, f)))
    settings = DatabaseSettings(path=str(tmp_path / "x.db"), idle_checkpoint_commits=2)
    async with Store(settings, OptimizationFlags(), project_root=tmp_path) as store:
        for i in range(10):
            await store.hire(f"x{i}", "dev")
            await asyncio.sleep(0.002)  # the writer checkpoints only when it finds nothing queued
        for _ in range(500):  # the last one runs after the last hire was answered
            if store.stats()["failed_checkpoints"] >= 2:
                break
            await asyncio.sleep(0.01)
        s = store.stats()
        assert s["failed_checkpoints"] >= 2 and s["checkpoints"] == 0
        assert len(await store.list_employees()) == 10
    assert "WAL checkpoint failed: disk I/O error" in caplog.text


@pytest.mark.parametrize("wal", [True, False])
async def test_no_idle_checkpoint_without_a_wal(tmp_path: Path, wal: bool) -> None:
    """The rollback journal and ``:memory:`` have no log to checkpoint."""
    flags = dataclasses.replace(OptimizationFlags(), enable_wal_mode=wal)
    path = str(tmp_path / "j.db") if not wal else ":memory:"
    settings = DatabaseSettings(path=path, idle_checkpoint_commits=1)
    async with Store(settings, flags, project_root=tmp_path) as store:
        for i in range(5):
            await store.hire(f"j{i}", "dev")
        assert store.stats()["checkpoints"] == 0
