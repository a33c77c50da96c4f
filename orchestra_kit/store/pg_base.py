"""The PostgreSQL store's lifecycle and plumbing: pool, transactions, cache, notifications.

Writes run as one transaction each (``_tx``), retried a bounded number of times when
PostgreSQL reports a deadlock or a serialisation failure, and return only after
``COMMIT``. Concurrent commits are grouped by PostgreSQL itself (its WAL flush covers
every commit waiting for it), so there is no writer thread here.

Cache invalidation across instances: every write transaction that touches cached tables
sends ``pg_notify(channel, 'table,table')``; PostgreSQL delivers it at commit to every
listening instance, whose listener bumps the same per-table generations the local
writes bump (see :mod:`.cache`). The listening connection is kept alive
(:mod:`.pg_listen`); after it reconnects, every generation is bumped (a notification
may have been missed) and the event listeners get :data:`RESYNC`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
import warnings
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from ..config import DatabaseSettings, OptimizationFlags
from ..errors import OrchestraError, StoreClosedError, StoreError
from .base import TABLES, _percentile
from .cache import MISS, GenerationCache
from .pg_listen import Listener
from .pg_schema import apply_pg_migrations

__all__ = ["RESYNC", "PgStoreBase", "is_postgres_url"]

#: The payload event listeners get after the LISTEN connection reconnected: events may
#: have been missed meanwhile, so re-read what you follow (never a real event: those
#: are JSON objects).
RESYNC = ""

T = TypeVar("T")
_RETRIES = 8
_RETRYABLE = (asyncpg.exceptions.DeadlockDetectedError,
              asyncpg.exceptions.SerializationError)


def is_postgres_url(url: str) -> bool:
    """Whether ``url`` names a PostgreSQL database (``postgresql://`` or ``postgres://``)."""
    return url.startswith(("postgresql://", "postgres://"))


async def _ensure_schema(conn: Any, url: str) -> str:
    """The current schema; the first of ``search_path`` is created when missing (so a URL
    ending ``?search_path=team1`` gives that team its own tables in a shared database)."""
    schema = await conn.fetchval("SELECT current_schema()")
    if schema is not None:
        return str(schema)
    first = str(await conn.fetchval("SHOW search_path")).split(",")[0].strip().strip('"')
    if not first or first.startswith("$"):
        raise StoreError(f"{url}: its search_path names no schema to use")
    with contextlib.suppress(asyncpg.exceptions.UniqueViolationError,
                             asyncpg.exceptions.DuplicateSchemaError):
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{first}"')
    return first


async def _keep_session(conn: Any) -> None:
    """No reset round trip when a connection goes back to the pool: the store leaves no
    session state behind (transaction-scoped locks only; LISTEN is on its own connection).
    Only a transaction left open (a caller cancelled mid-query) is rolled back."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


class PgStoreBase:
    """Lifecycle (start/aclose, async context manager) and the read/write paths."""

    def __init__(
        self,
        url: str,
        settings: DatabaseSettings,
        flags: OptimizationFlags,
        *,
        project_root: Path,
        clock: Callable[[], float] = time.time,
        instance_id: str | None = None,
    ) -> None:
        if not is_postgres_url(url):
            raise StoreError(f"Not a PostgreSQL URL: {url!r} (want postgresql://...)")
        self.url = url
        self.settings = settings
        self.flags = flags
        self.project_root = Path(project_root).resolve()
        self.instance_id = instance_id or uuid.uuid4().hex[:12]
        self._clock = clock
        self._gens: dict[str, int] = dict.fromkeys(TABLES, 0)
        self._cache: GenerationCache | None = (
            GenerationCache(ttl_s=settings.cache_ttl_seconds,
                            max_entries=settings.cache_max_entries, clock=clock)
            if flags.enable_query_caching else None
        )
        self._pool: Any = None
        self._listener: Listener | None = None
        # Pooling off: a fresh connection per op, but never more than max_connections.
        self._connect_slots = asyncio.Semaphore(settings.max_connections)
        self.schema = ""
        self.channel = ""
        self.events_channel = ""
        self._event_callbacks: list[Callable[[str], None]] = []
        self._state = "new"
        self._write_latency_s: deque[float] = deque(maxlen=8192)
        self._counters = {"reads": 0, "writes": 0, "commits": 0, "failed_ops": 0,
                          "retries": 0, "notifications": 0}

    @property
    def listener_reconnects(self) -> int:
        """How often the LISTEN connection was re-established."""
        return self._listener.reconnects if self._listener is not None else 0

    @property
    def listener_pid(self) -> int:
        """The server process of the LISTEN connection (0 while it is down)."""
        return self._listener.server_pid if self._listener is not None else 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect, apply migrations, and listen for other instances' writes."""
        if self._state != "new":
            raise StoreError(f"PgStore.start() called on a {self._state} store")
        self._state = "starting"
        try:
            await self._open()
        except BaseException:
            await self._close_connections()
            self._state = "closed"
            raise
        self._state = "open"

    async def _open(self) -> None:
        try:
            if self.flags.enable_connection_pooling:
                self._pool = await asyncpg.create_pool(
                    self.url, min_size=1, max_size=self.settings.max_connections,
                    reset=_keep_session)
            async with self._connection() as conn:
                self.schema = await _ensure_schema(conn, self.url)
                self.channel = f"orchestra_{self.schema}"[:63]
                self.events_channel = f"orchestra_ev_{self.schema}"[:63]
                await apply_pg_migrations(conn, self.schema)
            # One listening connection for both channels: PostgreSQL delivers its
            # notifications in commit order, so a cache invalidation always arrives
            # before the task event sent after the same commit.
            channels = [(self.channel, self._on_notify)] if self._cache is not None else []
            self._listener = Listener(self.url, [*channels, (self.events_channel, self._on_event)],
                                      probe_interval_s=self.settings.heartbeat_interval_s,
                                      on_resync=self._resync)
            await self._listener.start()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            raise StoreError(f"Cannot open PostgreSQL store {self.url}: {e}") from e

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self._counters["notifications"] += 1
        for table in payload.split(","):
            if table in self._gens:
                self._gens[table] += 1

    def _on_event(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        for callback in list(self._event_callbacks):
            callback(payload)

    def _resync(self) -> None:
        """After a reconnect: every cached value may be stale, every listener may have
        missed events."""
        for table in self._gens:
            self._gens[table] += 1
        self._on_event(None, 0, self.events_channel, RESYNC)

    def add_event_listener(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(payload)`` for every event any instance publishes (own ones
        too), and with :data:`RESYNC` after the listening connection came back."""
        self._event_callbacks.append(callback)

    def remove_event_listener(self, callback: Callable[[str], None]) -> None:
        """Stop calling ``callback``."""
        with contextlib.suppress(ValueError):
            self._event_callbacks.remove(callback)

    async def publish_events(self, payloads: list[str]) -> None:
        """NOTIFY every listening instance, one round trip for the lot (each < 8000 bytes)."""
        if not payloads:
            return
        self._check_open()
        try:
            async with self._connection() as conn:
                await conn.execute("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p",
                                   self.events_channel, payloads)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            raise StoreError(f"Publishing events failed: {e}") from e

    async def _close_connections(self) -> None:
        if self._listener is not None:  # kept: its counters outlive it
            await self._listener.aclose()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def aclose(self) -> None:
        """Close the pool and the listener (idempotent)."""
        if self._state in ("closed", "new"):
            self._state = "closed"
            return
        self._state = "closed"
        await self._close_connections()

    async def __aenter__(self) -> Any:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __del__(self) -> None:
        if getattr(self, "_state", "new") in ("open", "starting"):
            warnings.warn(f"PgStore({self.url!r}) was garbage-collected unclosed",
                          ResourceWarning, stacklevel=2)

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        """A pooled connection, or a fresh one per operation when pooling is off."""
        if self._pool is not None:
            async with self._pool.acquire() as conn:
                yield conn
            return
        async with self._connect_slots:
            conn = await asyncpg.connect(self.url)
            try:
                yield conn
            finally:
                await conn.close()

    def _check_open(self) -> None:
        if self._state != "open":
            raise StoreClosedError(f"Store is {self._state}: call start() / use 'async with'")

    # ------------------------------------------------------------------ write path

    async def _tx(self, fn: Callable[[Any], Awaitable[T]], tables: tuple[str, ...], *,
                  transaction: bool = True) -> T:
        """``await fn(conn)`` in one transaction; returns after COMMIT (retries deadlocks).

        ``transaction=False``: ``fn`` sends a single statement, which is its own
        transaction (committed when it returns) and carries its own notification."""
        self._check_open()
        self._counters["writes"] += 1
        t0 = time.perf_counter()
        try:
            for attempt in range(_RETRIES):
                try:
                    result = await self._tx_once(fn, tables, transaction)
                except _RETRYABLE:
                    if attempt == _RETRIES - 1:
                        raise
                    self._counters["retries"] += 1
                    await asyncio.sleep(0.001 * 2 ** attempt)
                    continue
                self._counters["commits"] += 1
                for t in tables:
                    self._gens[t] += 1
                return result
            raise AssertionError("unreachable")  # pragma: no cover
        except OrchestraError:
            self._counters["failed_ops"] += 1
            raise
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            self._counters["failed_ops"] += 1
            raise StoreError(f"Write failed: {e}") from e
        finally:
            self._write_latency_s.append(time.perf_counter() - t0)

    async def _tx_once(self, fn: Callable[[Any], Awaitable[T]], tables: tuple[str, ...],
                       transaction: bool) -> T:
        if not transaction:
            async with self._connection() as conn:
                return await fn(conn)
        async with self._connection() as conn, conn.transaction():
            result = await fn(conn)
            if tables and self._cache is not None:
                await conn.execute("SELECT pg_notify($1, $2)", self.channel, ",".join(tables))
            return result

    async def _write1(self, sql: str, args: Sequence[Any], tables: tuple[str, ...]) -> list[Any]:
        """One data-modifying statement ``sql`` (with RETURNING) as its own transaction, in
        ONE round trip: no BEGIN/COMMIT, and the cache notification rides in the statement
        (``pg_notify`` once per returned row; PostgreSQL folds duplicates in a transaction)."""
        async def op(conn: Any) -> list[Any]:
            if tables and self._cache is not None:
                n = len(args)
                wrapped = (f"WITH w AS ({sql}) SELECT w.*, pg_notify(${n + 1}, ${n + 2})"
                           " IS NULL AS _notified FROM w")
                return list(await conn.fetch(wrapped, *args, self.channel, ",".join(tables)))
            return list(await conn.fetch(sql, *args))

        return await self._tx(op, tables, transaction=False)

    # ------------------------------------------------------------------ read path

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        """Rows of one query (autocommit, read committed)."""
        self._check_open()
        self._counters["reads"] += 1
        try:
            if self._pool is not None:
                return list(await self._pool.fetch(sql, *args))
            async with self._connection() as conn:
                return list(await conn.fetch(sql, *args))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            raise StoreError(f"Read failed: {e}") from e

    async def _cached(
        self,
        key: Hashable,
        tables: tuple[str, ...],
        load: Callable[[], Awaitable[T]],
        valid_until: Callable[[T], float | None] | None = None,
    ) -> T:
        """``load()`` through the generation-checked cache (when caching is on)."""
        cache = self._cache
        if cache is None:
            return await load()
        gens = tuple(self._gens[t] for t in tables)  # observed BEFORE the query
        hit = cache.get(key, gens)
        if hit is not MISS:
            return hit  # type: ignore[no-any-return]
        value = await load()
        cache.put(key, gens, value, valid_until=valid_until(value) if valid_until else None)
        return value

    # ------------------------------------------------------------------ stats

    def stats(self) -> dict[str, Any]:
        """Counters for /performance (cheap)."""
        lat = sorted(self._write_latency_s)
        c = self._counters
        pool = self._pool
        return {
            "backend": "postgresql",
            "instance_id": self.instance_id,
            **c,
            "listener_reconnects": self.listener_reconnects,
            "transactions": c["commits"],
            "failed_commits": 0,
            "batches": c["commits"],
            "mean_batch_size": 1.0 if c["commits"] else 0.0,
            "write_latency_p50_ms": _percentile(lat, 0.50) * 1000.0,
            "write_latency_p99_ms": _percentile(lat, 0.99) * 1000.0,
            "cache": self._cache.stats() if self._cache else {"enabled": False, "hits": 0,
                                                              "misses": 0, "hit_ratio": 0.0,
                                                              "size": 0},
            "pool": {"size": pool.get_size() if pool else 0,
                     "in_use": (pool.get_size() - pool.get_idle_size()) if pool else 0},
            "flags": {k: bool(v) for k, v in vars(self.flags).items()},
        }
