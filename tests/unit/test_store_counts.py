"""Row counts kept by triggers (schema step 3) always equal the rows counted, through
every kind of write, and a database made before the step gets them seeded."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from orchestra_kit.config import DatabaseSettings, OptimizationFlags
from orchestra_kit.models import TaskStatus
from orchestra_kit.store import Store
from orchestra_kit.store.schema import MIGRATIONS


def counted(path: Path) -> dict[str, int]:
    """The same figures by COUNT(*), straight from the file."""
    with sqlite3.connect(path) as conn:
        out = {"employees": conn.execute("SELECT COUNT(*) FROM employees").fetchone()[0],
               "pending_requests": conn.execute(
                   "SELECT COUNT(*) FROM file_requests WHERE status = 'pending'").fetchone()[0]}
        for s in TaskStatus:
            out[f"tasks_{s.value}"] = conn.execute(
                "SELECT COUNT(*) FROM tasks WHERE status = ?", (s.value,)).fetchone()[0]
    return out


async def kept(store: Store) -> dict[str, int]:
    counts = await store.counts()
    counts.pop("active_leases")
    return counts


async def test_kept_counts_follow_every_write(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    async with Store(DatabaseSettings(path=str(db)), OptimizationFlags(),
                     project_root=tmp_path) as store:
        await store.hire_many([{"name": f"e{i}", "role": "dev"} for i in range(5)])
        await store.hire("solo", "dev")
        tasks = [await store.create_task(f"e{i % 5}", "t") for i in range(8)]
        await store.transition(tasks[0].id, TaskStatus.RUNNING)
        await store.transition(tasks[0].id, TaskStatus.COMPLETED)
        await store.transition(tasks[1].id, TaskStatus.CANCELLED)
        await store.lock_files("e1", ["a.py", "b.py"])
        _, req = await store.request_file("e2", "a.py")
        await store.request_file("e3", "b.py")
        assert req is not None
        await store.deny_request(req.id)
        assert await kept(store) == counted(db)
        await store.fire("e1")  # releases b.py: the pending request on it is denied
        await store.fire("e4")  # cancels its queued tasks
        await store.recover(max_attempts=3)
        assert await kept(store) == counted(db)
        assert (await store.counts())["employees"] == 4


async def test_a_database_from_before_the_step_is_seeded(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db, isolation_level=None)
    for sql in MIGRATIONS[0][1]:
        conn.execute(sql)
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO employees (name, role, smartness, status, hired_at)"
                 " VALUES ('old', 'dev', 'normal', 'active', 0)")
    conn.execute("INSERT INTO tasks (employee, description, priority, mode, files, status,"
                 " attempts, created_at) VALUES ('old', 'x', 5, 'build', '[]', 'failed', 1, 0)")
    conn.close()
    async with Store(DatabaseSettings(path=str(db)), OptimizationFlags(),
                     project_root=tmp_path) as store:
        counts = await store.counts()
        assert counts["employees"] == 1 and counts["tasks_failed"] == 1
        await store.hire("new", "dev")
        assert await kept(store) == counted(db)
