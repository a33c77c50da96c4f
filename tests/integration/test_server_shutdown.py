"""`orchestra serve` as a subprocess: SIGTERM under load drains, exits 0, keeps queued tasks."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import sys
from pathlib import Path

import aiohttp

from orchestra_kit.client import OrchestraClient

SERVE = "import sys; from orchestra_kit.server.cli import serve_main; sys.exit(serve_main(sys.argv[1:]))"


async def _start(tmp_path: Path) -> tuple[asyncio.subprocess.Process, str]:
    args = [sys.executable, "-c", SERVE, "--port", "0", "--db", str(tmp_path / "o.db"),
            "--project-root", str(tmp_path),
            "--set", "agents.sim_latency_ms=3000", "--set", "agents.sim_jitter_ms=0",
            "--set", "scheduler.max_concurrent_tasks=2", "--set", "scheduler.shutdown_grace_s=0.2",
            "--set", "server.requests_per_minute=0", "--set", "server.shutdown_timeout_s=5"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRA_")}
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, env=env)
    assert proc.stdout is not None
    async with asyncio.timeout(20):
        line = (await proc.stdout.readline()).decode()
    match = re.search(r"serving on (http://\S+)", line)
    assert match, line
    return proc, match.group(1)


async def _hire(session: aiohttp.ClientSession, url: str, name: str) -> int | str:
    try:
        async with session.post(url + "/employees", json={"name": name, "role": "dev"}) as r:
            await r.read()
            return r.status
    except aiohttp.ClientError as exc:
        return type(exc).__name__


async def test_sigterm_drains_and_keeps_queued_tasks(tmp_path: Path) -> None:
    proc, url = await _start(tmp_path)
    try:
        async with OrchestraClient(url) as c:
            await c.hire_many([{"name": f"t{i}", "role": "dev"} for i in range(6)])
            task_ids = [(await c.assign(f"t{i}", f"slow {i}")).id for i in range(6)]
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
            load = [asyncio.create_task(_hire(s, url, f"load{i}")) for i in range(300)]
            await asyncio.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            results = await asyncio.gather(*load)
        async with asyncio.timeout(30):
            code = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code == 0
    acked = sum(1 for r in results if r == 201)
    assert all(r == 201 or isinstance(r, str) or r == 503 for r in results), results
    with sqlite3.connect(tmp_path / "o.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = db.execute("SELECT count(*) FROM employees WHERE name LIKE 'load%'").fetchone()[0]
        statuses = dict(db.execute("SELECT id, status FROM tasks").fetchall())
    assert rows == acked
    assert sorted(statuses) == sorted(task_ids)
    assert set(statuses.values()) == {"queued"}  # the running ones were requeued

    proc, url = await _start(tmp_path)
    try:
        async with OrchestraClient(url) as c:
            after = {t.id: t.status for t in await c.list_tasks(limit=100)}
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert sorted(after) == sorted(task_ids)
    assert set(after.values()) <= {"queued", "running"}
