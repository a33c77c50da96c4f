"""Server-Sent Events: status and progress stream until terminal, then the stream closes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from server_fixtures import make_settings

from orchestra_kit.client import OrchestraClient
from orchestra_kit.errors import ApiError
from orchestra_kit.server import Service, routes_tasks


async def test_events_until_terminal(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, **{"agents.sim_latency_ms": 100})
    async with Service(settings) as svc, OrchestraClient(svc.url) as c:
        await c.hire("sse", "dev")
        task = await c.assign("sse", "stream me")
        events = [e async for e in c.events(task.id)]
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "status" and kinds[-1] == "status"
    assert events[-1]["status"] == "completed"
    assert "progress" in kinds
    assert all(e["task_id"] == task.id for e in events)


async def test_events_raw_format_and_terminal_task(tmp_path: Path) -> None:
    async with Service(make_settings(tmp_path)) as svc, OrchestraClient(svc.url) as c:
        await c.hire("raw", "dev")
        task = await c.wait_task((await c.assign("raw", "quick")).id)
        assert task.status == "completed"
        async with aiohttp.ClientSession() as s, s.get(f"{svc.url}/tasks/{task.id}/events") as r:
            assert r.headers["Content-Type"].startswith("text/event-stream")
            text = await asyncio.wait_for(r.text(), 5)  # ends by itself: already terminal
        assert text.startswith("event: status\ndata: {") and text.endswith("\n\n")
        with pytest.raises(ApiError) as e:
            async for _ in c.events(4242):
                pass
        assert e.value.http_status == 404


async def test_heartbeat_while_idle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routes_tasks, "SSE_HEARTBEAT_S", 0.05)
    settings = make_settings(tmp_path, **{"agents.sim_latency_ms": 400})
    async with Service(settings) as svc, OrchestraClient(svc.url) as c:
        await c.hire("hb", "dev")
        task = await c.assign("hb", "slow")
        async with aiohttp.ClientSession() as s, s.get(f"{svc.url}/tasks/{task.id}/events") as r:
            text = await asyncio.wait_for(r.text(), 10)
    assert ": heartbeat" in text and "completed" in text
