"""tasks.usage: migration 2 on an existing database, and the round trip through transition."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from orchestra_kit.config import DatabaseSettings, OptimizationFlags
from orchestra_kit.models import TaskStatus
from orchestra_kit.store import Store
from orchestra_kit.store.schema import MIGRATIONS


async def test_a_version_1_database_gains_the_usage_column(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for sql in MIGRATIONS[0][1]:
        conn.execute(sql)
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO employees (name, role, hired_at) VALUES ('bob', 'dev', 1)")
    conn.execute("INSERT INTO tasks (employee, description, priority, mode, created_at)"
                 " VALUES ('bob', 'old task', 5, 'build', 1)")
    conn.close()
    async with Store(DatabaseSettings(path=str(path)), OptimizationFlags(),
                     project_root=tmp_path) as store:
        old = await store.get_task(1)
        assert old.usage is None and old.description == "old task"
        await store.transition(1, TaskStatus.RUNNING, count_attempt=True)
        usage = {"backend": "opencode", "peak_rss_mb": 512.5, "exit_code": 0}
        done = await store.transition(1, TaskStatus.COMPLETED, result="ok", usage=usage)
        assert done.usage == usage and (await store.get_task(1)).usage == usage
        assert done.to_dict()["usage"] == usage
    version = sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0]
    assert version == len(MIGRATIONS) >= 2
