"""The HTTP client pool the OpenAI-compatible backend uses (DESIGN §3, connection pooling).

With ``pooling=True`` there is one :class:`aiohttp.ClientSession` over a
``TCPConnector(limit=pool_size)`` with keep-alive, shared by every call. With
``pooling=False`` (the seed's "before") each ``session()`` opens a fresh session and
connection and closes it afterwards. Either way callers write::

    async with pool.session() as session:
        async with session.post(url, json=body) as response: ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Self

import aiohttp

from ..errors import ConfigError

__all__ = ["HttpClientPool"]

_KEEPALIVE_S = 30.0


class HttpClientPool:
    """Pooled (one shared session) or unpooled (a session per call) aiohttp clients."""

    def __init__(self, pool_size: int, pooling: bool, timeout_s: float) -> None:
        if pool_size < 1:
            raise ConfigError("connection_pool_size", pool_size, "must be >= 1")
        if timeout_s <= 0:
            raise ConfigError("request_timeout", timeout_s, "must be > 0")
        self.pool_size = pool_size
        self.pooling = pooling
        self.timeout_s = timeout_s
        self.sessions_created = 0
        self.in_use = 0
        self._shared: aiohttp.ClientSession | None = None
        self._closed = False

    def _new_session(self, *, pooled: bool) -> aiohttp.ClientSession:
        if pooled:
            connector = aiohttp.TCPConnector(limit=self.pool_size,
                                             keepalive_timeout=_KEEPALIVE_S)
        else:
            connector = aiohttp.TCPConnector(limit=1, force_close=True)
        # Total timeouts are the caller's job (asyncio.timeout around the whole call);
        # here only connect and per-read timeouts guard against dead sockets.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout_s,
                                        sock_read=self.timeout_s)
        self.sessions_created += 1
        return aiohttp.ClientSession(connector=connector, timeout=timeout)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[aiohttp.ClientSession]:
        """A session to make calls with: the shared one, or a fresh one closed afterwards."""
        if self._closed:
            raise RuntimeError("HttpClientPool is closed: cannot open a session after aclose()")
        self.in_use += 1
        try:
            if self.pooling:
                if self._shared is None or self._shared.closed:
                    self._shared = self._new_session(pooled=True)
                yield self._shared
            else:
                fresh = self._new_session(pooled=False)
                try:
                    yield fresh
                finally:
                    await fresh.close()
        finally:
            self.in_use -= 1

    async def aclose(self) -> None:
        """Close the shared session (idempotent)."""
        self._closed = True
        shared, self._shared = self._shared, None
        if shared is not None and not shared.closed:
            await shared.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()
