"""Two service instances on one PostgreSQL database (a fresh schema per test).

Each invariant is checked through both instances' HTTP APIs at once, and counted in
the database itself.
"""

from __future__ import annotations

import asyncio
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from server_fixtures import make_settings

from orchestra_kit.client import OrchestraClient
from orchestra_kit.config import Settings
from orchestra_kit.errors import ApiError
from orchestra_kit.server import Service
from orchestra_kit.store.pg import PgStore
from orchestra_kit.store.pgserver import free_port


def pg_settings(tmp_path: Path, url: str, **extra: Any) -> Settings:
    return make_settings(tmp_path, **{
        "database.url": url, "database.max_connections": 10,
        "database.heartbeat_interval_s": 0.2, "database.instance_timeout_s": 1.5,
        "scheduler.progress_files": False, **extra})


async def db_rows(url: str, sql: str, *args: Any) -> list[Any]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


@pytest.fixture
async def pair(tmp_path: Path, pg_url: str) -> AsyncIterator[tuple[Service, Service]]:
    """Two instances (A, B) sharing one database."""
    settings = pg_settings(tmp_path, pg_url)
    async with Service(settings) as a, Service(settings) as b:
        yield a, b


async def test_lease_race_through_both_has_one_holder(pair: tuple[Service, Service],
                                                      pg_url: str) -> None:
    a, b = pair
    names = [f"e{i}" for i in range(200)]
    async with OrchestraClient(a.url) as ca, OrchestraClient(b.url) as cb:
        await ca.hire_many([{"name": n, "role": "dev"} for n in names])
        results = await asyncio.gather(*(
            (ca if i % 2 else cb).lock_files(n, ["src/hot.py"]) for i, n in enumerate(names)))
    statuses = [r["src/hot.py"] for r in results]
    winners = [n for n, s in zip(names, statuses, strict=True) if s == "locked"]
    assert len(winners) == 1
    assert statuses.count(f"locked_by:{winners[0]}") == 199
    rows = await db_rows(pg_url, "SELECT employee FROM file_leases WHERE path = $1"
                                 " AND released_at IS NULL", "src/hot.py")
    assert [r[0] for r in rows] == winners


async def test_hires_with_duplicates_through_both(pair: tuple[Service, Service],
                                                  pg_url: str) -> None:
    a, b = pair
    rng = random.Random(11)
    unique = [f"h{i}" for i in range(900)]
    names = unique + [rng.choice(unique) for _ in range(100)]
    rng.shuffle(names)
    async with OrchestraClient(a.url) as ca, OrchestraClient(b.url) as cb:
        results = await asyncio.gather(*((ca if i % 2 else cb).hire(n, "dev")
                                         for i, n in enumerate(names)), return_exceptions=True)
    conflicts = [r for r in results if isinstance(r, ApiError) and r.http_status == 409]
    assert len(conflicts) == 100
    assert all(not isinstance(r, BaseException) or r in conflicts for r in results)
    rows = await db_rows(pg_url, "SELECT name FROM employees")
    assert sorted(r[0] for r in rows) == sorted(unique)


async def test_thousand_tasks_each_run_once_in_priority_order(tmp_path: Path,
                                                              pg_url: str) -> None:
    settings = pg_settings(tmp_path, pg_url, **{"scheduler.max_concurrent_tasks": 2000,
                                                "agents.sim_latency_ms": 1})
    rng = random.Random(5)
    async with PgStore(pg_url, settings.database, settings.flags,
                       project_root=tmp_path) as store:  # queued before either starts
        await store.hire_many([{"name": f"w{i}", "role": "dev"} for i in range(1000)])
        made = await store.create_tasks([{"employee": f"w{i}", "description": f"t{i}",
                                          "priority": rng.randint(0, 10)} for i in range(1000)])
    assert all(not isinstance(t, Exception) for t in made)
    async with Service(settings) as a, Service(settings) as b:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            (row,) = await db_rows(pg_url, "SELECT COUNT(*) FROM tasks WHERE status <> 'completed'")
            if row[0] == 0:
                break
            await asyncio.sleep(0.2)
        started = [s.state.scheduler.stats()["started"] for s in (a, b)]  # type: ignore[union-attr]
    rows = await db_rows(pg_url, "SELECT status, attempts, instance, started_at, priority"
                                 " FROM tasks ORDER BY instance, started_at, priority DESC")
    assert {(r[0], r[1]) for r in rows} == {("completed", 1)}  # every one ran, once
    assert sum(started) == 1000 and min(started) > 0  # both instances took part
    for inst in {r[2] for r in rows}:
        prios = [r[4] for r in rows if r[2] == inst]
        assert prios == sorted(prios, reverse=True), f"instance {inst} claimed out of order"


async def test_global_limit_holds_across_instances(tmp_path: Path, pg_url: str) -> None:
    settings = pg_settings(tmp_path, pg_url, **{"scheduler.max_concurrent_tasks": 3,
                                                "agents.sim_latency_ms": 40})
    peak = 0
    async with Service(settings) as a, Service(settings) as b, \
            OrchestraClient(a.url) as ca, OrchestraClient(b.url) as cb:
        await ca.hire_many([{"name": f"g{i}", "role": "dev"} for i in range(12)])
        for i in range(12):
            await (ca if i % 2 else cb).assign(f"g{i}", "work")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            (row,) = await db_rows(pg_url, "SELECT COUNT(*) FILTER (WHERE status = 'running'),"
                                           " COUNT(*) FILTER (WHERE status = 'completed')"
                                           " FROM tasks")
            peak = max(peak, row[0])
            if row[1] == 12:
                break
            await asyncio.sleep(0.005)
    assert row[1] == 12
    assert 1 <= peak <= 3


async def test_sse_on_one_follows_a_task_run_by_the_other(tmp_path: Path, pg_url: str) -> None:
    settings = pg_settings(tmp_path, pg_url, **{"agents.sim_latency_ms": 600})
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(Service(settings))
        b = await stack.enter_async_context(Service(settings))
        by_id = {s.state.store.instance_id: s for s in (a, b)}  # type: ignore[union-attr]
        ca = await stack.enter_async_context(OrchestraClient(a.url))
        await ca.hire("sse", "dev")
        task = await ca.assign("sse", "follow me")
        instance = None
        for _ in range(200):
            rows = await db_rows(pg_url, "SELECT instance FROM tasks WHERE id = $1", task.id)
            if rows[0][0] is not None:
                instance = rows[0][0]
                break
            await asyncio.sleep(0.01)
        assert instance in by_id
        other = a if by_id[instance] is b else b
        co = await stack.enter_async_context(OrchestraClient(other.url))
        events = [e async for e in co.events(task.id)]
    assert events[-1]["kind"] == "status" and events[-1]["status"] == "completed"
    assert "progress" in [e["kind"] for e in events]  # forwarded from the running instance


async def test_sigkill_one_instance_mid_run_its_tasks_finish_on_the_other(
        tmp_path: Path, pg_url: str) -> None:
    sets = {"database.heartbeat_interval_s": "0.2", "database.instance_timeout_s": "1.5",
            "agents.sim_latency_ms": "20000", "server.requests_per_minute": "0",
            "scheduler.progress_files": "false"}
    argv = [sys.executable, "-m", "orchestra_kit", "serve", "--db", pg_url, "--port", "0",
            "--project-root", str(tmp_path)]
    for k, v in sets.items():
        argv += ["--set", f"{k}={v}"]
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        url = line.split(" on ")[1].split()[0]
        async with OrchestraClient(url) as ca:
            await ca.hire_many([{"name": f"k{i}", "role": "dev"} for i in range(6)])
            ids = [(await ca.assign(f"k{i}", "long")).id for i in range(6)]
        for _ in range(500):  # all six running on the doomed instance
            rows = await db_rows(pg_url, "SELECT COUNT(*) FROM tasks WHERE status = 'running'")
            if rows[0][0] == 6:
                break
            await asyncio.sleep(0.02)
        assert rows[0][0] == 6
        settings = pg_settings(tmp_path, pg_url, **{"agents.sim_latency_ms": 30})
        async with Service(settings) as b:
            proc.kill()  # SIGKILL: no drain, no requeue, no goodbye
            await proc.wait()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                rows = await db_rows(pg_url, "SELECT id, status, attempts, instance FROM tasks")
                if all(r[1] == "completed" for r in rows):
                    break
                await asyncio.sleep(0.1)
            mine = b.state.store.instance_id  # type: ignore[union-attr]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert sorted(r[0] for r in rows) == sorted(ids)
    assert {(r[1], r[2], r[3]) for r in rows} == {("completed", 2, mine)}


async def test_serve_workers_share_one_port(tmp_path: Path, pg_url: str) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "orchestra_kit", "serve", "--workers", "2", "--db", pg_url,
            "--port", str(port), "--project-root", str(tmp_path), "--set", "log_level=WARNING"]
    # No pipes: the workers inherit them, and asyncio waits for pipes to close.
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        seen: set[str] = set()
        for _ in range(600):  # until both workers listen (start-up is slow on a busy box)
            try:
                async with aiohttp.ClientSession(
                        connector=aiohttp.TCPConnector(force_close=True)) as s:
                    for _ in range(20):  # fresh connections: the kernel spreads them
                        async with s.get(f"{url}/performance") as r:
                            if r.status == 200:
                                seen.update(re.findall(r'"instance_id": ?"(\w+)"',
                                                       await r.text()))
            except aiohttp.ClientError:
                pass
            if len(seen) == 2:
                break
            await asyncio.sleep(0.1)
        assert len(seen) == 2
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        proc2 = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.DEVNULL,
                                                     stderr=asyncio.subprocess.DEVNULL)
        for _ in range(600):  # a supervisor killed outright takes its workers with it
            if await _answers(url):
                break
            await asyncio.sleep(0.1)
        proc2.kill()
        await proc2.wait()
        for _ in range(300):
            if not await _answers(url):
                break
            await asyncio.sleep(0.1)
        assert not await _answers(url)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _answers(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as s, s.get(f"{url}/health") as r:
            return r.status == 200
    except aiohttp.ClientError:
        return False


def test_serve_workers_refused_on_sqlite(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "orchestra_kit", "serve", "--workers", "2",
                          "--db", str(tmp_path / "x.db")], check=False, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2
    assert "--workers" in out.stderr and "postgresql://" in out.stderr


async def test_fire_on_one_stops_the_run_on_the_other(tmp_path: Path, pg_url: str) -> None:
    settings = pg_settings(tmp_path, pg_url, **{"agents.sim_latency_ms": 8000})
    async with Service(settings) as a, Service(settings) as b, OrchestraClient(a.url) as ca:
        by_id = {s.state.store.instance_id: s for s in (a, b)}  # type: ignore[union-attr]
        await ca.hire("doomed", "dev")
        task = await ca.assign("doomed", "long work")
        rows: list[Any] = []
        for _ in range(300):
            rows = await db_rows(pg_url, "SELECT instance FROM tasks WHERE id = $1", task.id)
            if rows[0][0] is not None:
                break
            await asyncio.sleep(0.01)
        runner = by_id[rows[0][0]]
        other = a if runner is b else b
        async with OrchestraClient(other.url) as co:
            await co.fire("doomed")
        t0 = time.monotonic()
        while runner.state.scheduler.stats()["running"] and time.monotonic() - t0 < 5:  # type: ignore[union-attr]
            await asyncio.sleep(0.02)
        assert runner.state.scheduler.stats()["running"] == 0  # type: ignore[union-attr]
        assert time.monotonic() - t0 < 5  # stopped, not run to its 8 s end
    (row,) = await db_rows(pg_url, "SELECT status, error FROM tasks WHERE id = $1", task.id)
    assert (row[0], row[1]) == ("cancelled", "employee fired")
