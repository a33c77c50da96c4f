"""The PostgreSQL store's LISTEN connection, kept alive.

One connection listens on the store's channels (cache invalidations, task events). If
it drops (the server restarted, a network cut, ``pg_terminate_backend``), the
notifications sent meanwhile are lost for good: PostgreSQL does not queue them for a
listener that is gone. So :class:`Listener` notices the loss (asyncpg's termination
callback at once; a ``SELECT 1`` probe every ``probe_interval_s`` for a connection that
went silent without closing), reconnects with capped exponential backoff and jitter,
and then calls ``on_resync()``: the store treats every cached value as stale and tells
its event listeners to re-read what they follow (see ``PgStoreBase``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg

__all__ = ["Listener"]

log = logging.getLogger("orchestra_kit.store.pg")

Handler = Callable[[Any, int, str, str], None]
_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
RECONNECT_MIN_S = 0.05
RECONNECT_MAX_S = 2.0
CONNECT_TIMEOUT_S = 10.0


class Listener:
    """``await start()`` connects (raising on failure); then it stays connected until
    :meth:`aclose` (idempotent), reconnecting whenever the connection drops."""

    def __init__(self, url: str, channels: Sequence[tuple[str, Handler]], *,
                 probe_interval_s: float, on_resync: Callable[[], None]) -> None:
        self.url = url
        self.channels = list(channels)
        self.probe_interval_s = probe_interval_s
        self.on_resync = on_resync
        self.reconnects = 0
        self._conn: Any = None
        self._lost: asyncio.Event | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def server_pid(self) -> int:
        """The backend process id of the listening connection (0 when not connected)."""
        conn = self._conn
        return int(conn.get_server_pid()) if conn is not None and not conn.is_closed() else 0

    async def start(self) -> None:
        """Connect and listen; then keep the connection (a task owned by this object)."""
        self._lost = asyncio.Event()
        await self._connect()
        self._keeper = asyncio.create_task(self._keep(), name="pg-listener")

    async def aclose(self) -> None:
        """Stop reconnecting and close the connection (idempotent)."""
        self._closed = True
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)

    async def _connect(self) -> None:
        conn = await asyncpg.connect(self.url, timeout=CONNECT_TIMEOUT_S)
        try:
            for channel, handler in self.channels:
                await conn.add_listener(channel, handler)
        except BaseException:
            conn.terminate()
            raise
        conn.add_termination_listener(self._on_terminated)
        self._conn = conn

    def _on_terminated(self, conn: Any) -> None:
        # Only the current connection's loss counts (an old one is terminated on purpose).
        if not self._closed and self._lost is not None and conn is self._conn:
            self._lost.set()

    async def _alive(self) -> bool:
        """Wait up to one probe interval for a loss; without one, probe the connection."""
        assert self._lost is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.probe_interval_s):
                await self._lost.wait()
        conn = self._conn
        if self._lost.is_set() or conn is None or conn.is_closed():
            return False
        try:
            await conn.fetchval("SELECT 1", timeout=max(self.probe_interval_s, 1.0))
        except _ERRORS:
            return False
        return True

    async def _keep(self) -> None:
        while True:
            if await self._alive():
                continue
            assert self._lost is not None
            self._lost.clear()
            old, self._conn = self._conn, None
            if old is not None:
                old.terminate()
            log.warning("the LISTEN connection dropped: reconnecting")
            await self._reconnect()
            self.reconnects += 1
            log.warning("the LISTEN connection is back (reconnect %d): resynchronising",
                        self.reconnects)
            self.on_resync()

    async def _reconnect(self) -> None:
        delay_s = RECONNECT_MIN_S
        while True:
            try:
                await self._connect()
                return
            except _ERRORS as e:
                log.warning("LISTEN reconnect failed (next try in %.2f s): %s", delay_s, e)
            await asyncio.sleep(delay_s * (0.5 + random.random() / 2))
            delay_s = min(delay_s * 2, RECONNECT_MAX_S)
