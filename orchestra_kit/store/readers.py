"""Read connections: a lazily filled pool of aiosqlite connections, or one per read.

Each read is one ``execute_fetchall`` (one thread hop). Readers set
``query_only`` so a bug cannot write behind the writer's back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiosqlite

from ..config import DatabaseSettings, OptimizationFlags
from ..errors import StoreClosedError, StoreError
from .schema import reader_pragmas

__all__ = ["ReaderPool"]


class ReaderPool:
    """Up to ``max_connections`` pooled readers (pooling on) or a fresh one per read."""

    def __init__(self, settings: DatabaseSettings, flags: OptimizationFlags) -> None:
        self._path = settings.path
        self._pragmas = reader_pragmas(settings, flags)
        self._size = settings.max_connections
        self._pooled = flags.enable_connection_pooling
        self._idle: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        self._all: list[aiosqlite.Connection] = []
        self._opening = 0
        self._in_use = 0
        self._closed = False
        self.reads = 0
        self.opened = 0

    async def _open(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self._path, isolation_level=None)
        try:
            await conn.executescript(self._pragmas)
        except BaseException:
            await conn.close()
            raise
        self.opened += 1
        return conn

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[aiosqlite.Connection]:
        """A reader connection for the duration of the block."""
        if self._closed:
            raise StoreClosedError("Store is closed: cannot read")
        if not self._pooled:
            conn = await self._open()
            self._in_use += 1
            try:
                yield conn
            finally:
                self._in_use -= 1
                await conn.close()
            return
        conn = await self._acquire()
        self._in_use += 1
        try:
            yield conn
        finally:
            self._in_use -= 1
            if self._closed:
                await conn.close()
            else:
                self._idle.put_nowait(conn)

    async def _acquire(self) -> aiosqlite.Connection:
        if not self._idle.empty():
            return self._idle.get_nowait()
        if len(self._all) + self._opening < self._size:
            self._opening += 1
            try:
                conn = await self._open()
            finally:
                self._opening -= 1
            self._all.append(conn)
            return conn
        return await self._idle.get()

    async def fetchall(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]:
        """All rows of one query (one thread hop on a pooled connection)."""
        async with self.connection() as conn:
            self.reads += 1
            try:
                return list(await conn.execute_fetchall(sql, params))
            except aiosqlite.Error as e:
                raise StoreError(f"Read failed: {e}") from e

    async def aclose(self) -> None:
        """Close every pooled connection (idempotent)."""
        self._closed = True
        conns, self._all = self._all, []
        while not self._idle.empty():
            self._idle.get_nowait()
        for conn in conns:
            await conn.close()

    def stats(self) -> dict[str, Any]:
        """Pool size, connections in use and reads done."""
        return {
            "pooled": self._pooled,
            "max_connections": self._size,
            "size": len(self._all),
            "in_use": self._in_use,
            "opened": self.opened,
            "reads": self.reads,
        }
