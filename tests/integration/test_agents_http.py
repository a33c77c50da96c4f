"""HttpClientPool: one shared session when pooling, a fresh one per call otherwise."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from orchestra_kit.agents import HttpClientPool
from orchestra_kit.errors import ConfigError


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, set[int]]]:
    """A hello server that records the client ports it saw (one per TCP connection)."""
    ports: set[int] = set()

    async def hello(req: web.Request) -> web.Response:
        peer = req.transport.get_extra_info("peername") if req.transport else None
        if peer:
            ports.add(peer[1])
        return web.Response(text="hi")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/", ports
    finally:
        await runner.cleanup()


async def _get(pool: HttpClientPool, url: str) -> str:
    async with pool.session() as s, s.get(url) as r:
        return await r.text()


async def test_pooled_reuses_one_session_and_connections(server: tuple[str, set[int]]) -> None:
    url, ports = server
    async with HttpClientPool(2, True, 5.0) as pool:
        for _ in range(10):
            assert await _get(pool, url) == "hi"
        await asyncio.gather(*(_get(pool, url) for _ in range(10)))
        assert pool.sessions_created == 1 and pool.in_use == 0
    assert len(ports) <= 2  # keep-alive, limit=pool_size


async def test_unpooled_makes_a_session_per_call(server: tuple[str, set[int]]) -> None:
    url, ports = server
    async with HttpClientPool(2, False, 5.0) as pool:
        for _ in range(5):
            assert await _get(pool, url) == "hi"
        assert pool.sessions_created == 5
    assert len(ports) == 5  # a new connection each time


async def test_closed_pool_refuses_and_aclose_is_idempotent(server: tuple[str, set[int]]) -> None:
    url, _ = server
    pool = HttpClientPool(2, True, 5.0)
    await _get(pool, url)
    await pool.aclose()
    await pool.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await _get(pool, url)


def test_bad_parameters() -> None:
    with pytest.raises(ConfigError):
        HttpClientPool(0, True, 1.0)
    with pytest.raises(ConfigError):
        HttpClientPool(1, True, 0.0)
