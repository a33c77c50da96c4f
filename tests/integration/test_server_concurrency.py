"""Concurrency invariants: every answer is a legal status, the DB holds exactly what was acked."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from server_fixtures import make_settings

from orchestra_kit.client import OrchestraClient
from orchestra_kit.models import TERMINAL_STATUSES
from orchestra_kit.server import Service

N = 1000


async def _post_all(url: str, bodies: list[dict[str, Any]]) -> list[tuple[int, Any, Any]]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as s:
        async def one(body: dict[str, Any]) -> tuple[int, Any, Any]:
            async with s.post(url, json=body) as r:
                return r.status, await r.json(), r.headers
        return await asyncio.gather(*(one(b) for b in bodies))


async def test_concurrent_hires_with_duplicates(tmp_path: Path) -> None:
    names = [f"emp{i}" for i in range(N - N // 10)] + [f"emp{i}" for i in range(N // 10)]
    async with Service(make_settings(tmp_path)) as svc:
        answers = await _post_all(svc.url + "/employees",
                                  [{"name": n, "role": "dev"} for n in names])
        statuses = Counter(a[0] for a in answers)
        assert set(statuses) <= {201, 409}
        assert statuses[409] == N // 10 and statuses[201] == N - N // 10
        acked = {a[1]["employee"]["name"] for a in answers if a[0] == 201}
        async with OrchestraClient(svc.url) as c:
            listed = {e.name for e in await c.list_employees(limit=10_000)}
    assert listed == acked
    with sqlite3.connect(tmp_path / "orchestra.db") as db:
        assert db.execute("SELECT count(*) FROM employees").fetchone()[0] == len(acked)


async def test_concurrent_tasks_with_rate_limit(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, **{"server.requests_per_minute": 6000,
                                          "server.rate_limit_burst": 400,
                                          "agents.sim_latency_ms": 1})
    async with Service(settings) as svc:
        async with OrchestraClient(svc.url) as c:
            await c.hire_many([{"name": f"w{i}", "role": "dev"} for i in range(40)])
        bodies = [{"name": f"w{i % 40}", "task": f"job {i}", "priority": i % 11}
                  for i in range(N)]
        answers = await _post_all(svc.url + "/tasks", bodies)
        statuses = Counter(a[0] for a in answers)
        assert set(statuses) <= {202, 429}, statuses
        assert statuses[429] > 0 and statuses[202] >= 400
        for status, body, headers in answers:
            if status == 429:
                assert int(headers["Retry-After"]) >= 1
                assert body["error"]["code"] == "rate_limited"
        accepted = {a[1]["task_id"] for a in answers if a[0] == 202}
        store = svc.state.store
        async with asyncio.timeout(60):
            while True:
                counts = await store.counts()
                if counts["tasks_queued"] + counts["tasks_running"] == 0:
                    break
                await asyncio.sleep(0.05)
        tasks = await store.list_tasks(limit=10_000)
    assert {t.id for t in tasks} == accepted
    assert all(t.status in TERMINAL_STATUSES for t in tasks)
