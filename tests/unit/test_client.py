"""OrchestraClient against a tiny canned aiohttp app: errors, SSE parsing, session ownership."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from orchestra_kit.client import OrchestraClient
from orchestra_kit.errors import ApiError

TASK = {"id": 7, "employee": "a", "description": "d", "priority": 5, "model": None,
        "mode": "build", "files": [], "status": "completed", "attempts": 1, "created_at": 1.0,
        "started_at": 1.0, "finished_at": 2.0, "result": "ok", "error": None, "progress": 100}


async def _rate_limited(request: web.Request) -> web.Response:
    return web.json_response({"error": {"code": "rate_limited", "message": "slow down",
                                        "details": {"retry_after_s": 3}}, "request_id": "r1"},
                             status=429, headers={"Retry-After": "3"})


async def _hire(request: web.Request) -> web.Response:
    body = await request.json()
    assert request.headers.get("Authorization") == "Bearer k-12345678"
    return web.json_response({"message": "ok", "employee": {
        "name": body["name"], "role": body["role"], "smartness": body["smartness"],
        "status": "active", "hired_at": 1.0}}, status=201)


async def _events(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    await resp.write(b': heartbeat\n\nevent: progress\ndata: {"kind":"progress","progress":50}\n\n')
    await resp.write(b'event: status\ndata: {"kind":"status","status":"completed"}\n\n')
    await resp.write_eof()
    return resp


async def _task(request: web.Request) -> web.Response:
    return web.json_response(TASK)


async def _plain_500(request: web.Request) -> web.Response:
    return web.Response(status=502, text="bad gateway")


@pytest.fixture
async def url() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/employees", _rate_limited)
    app.router.add_post("/employees", _hire)
    app.router.add_get("/tasks/7/events", _events)
    app.router.add_get("/tasks/7", _task)
    app.router.add_get("/status", _plain_500)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def test_error_answer_raises_api_error(url: str) -> None:
    async with OrchestraClient(url) as c:
        with pytest.raises(ApiError) as e:
            await c.list_employees()
        assert e.value.http_status == 429 and e.value.code == "rate_limited"
        assert e.value.retry_after_s == 3.0 and e.value.request_id == "r1"
        assert await c.request("GET", "/employees") == (429, {
            "error": {"code": "rate_limited", "message": "slow down",
                      "details": {"retry_after_s": 3}}, "request_id": "r1"})
        with pytest.raises(ApiError) as e:
            await c.status()
        assert e.value.http_status == 502 and e.value.code == "http_error"


async def test_typed_results_and_auth_header(url: str) -> None:
    async with OrchestraClient(url, api_key="k-12345678") as c:
        emp = await c.hire("a", "dev", "smart")
        assert emp.name == "a" and emp.smartness == "smart"


async def test_sse_parsing_and_wait(url: str) -> None:
    async with OrchestraClient(url) as c:
        events = [e async for e in c.events(7)]
        assert events == [{"kind": "progress", "progress": 50},
                          {"kind": "status", "status": "completed"}]
        task = await c.wait_task(7)
        assert task.id == 7 and task.status == "completed"


async def test_session_ownership(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with OrchestraClient(url, session=session) as c:
            await c.get_task(7)
        assert not session.closed  # handed in: not ours to close
    c2 = OrchestraClient(url)
    async with c2:
        await c2.get_task(7)
    await c2.aclose()  # idempotent
    with pytest.raises(RuntimeError):
        await c2.get_task(7)
