"""The Store's lifecycle and plumbing: writer, readers, cache, stats.

Domain methods live in :mod:`.employees`, :mod:`.leases` and :mod:`.tasks`; each
builds a function for the writer thread (writes) or a SQL query (reads).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import warnings
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ..config import DatabaseSettings, OptimizationFlags
from ..errors import StoreClosedError, StoreError
from .cache import MISS, GenerationCache
from .instancelock import InstanceLock
from .readers import ReaderPool
from .schema import apply_migrations, connect_writer, is_memory, set_journal_mode
from .writer import GroupCommitWriter, MergeFn, WriteFn, WriteOp

__all__ = ["TABLES", "StoreBase"]

T = TypeVar("T")
TABLES = ("employees", "file_leases", "file_requests", "tasks", "chat_events")
_LATENCY_SAMPLES = 8192


class StoreBase:
    """Lifecycle (start/aclose, async context manager) and the read/write paths."""

    def __init__(
        self,
        settings: DatabaseSettings,
        flags: OptimizationFlags,
        *,
        project_root: Path,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.flags = flags
        self.project_root = Path(project_root).resolve()
        self._clock = clock
        self._memory = is_memory(settings.path)
        self._gens: dict[str, int] = dict.fromkeys(TABLES, 0)
        self._cache: GenerationCache | None = (
            GenerationCache(ttl_s=settings.cache_ttl_seconds,
                            max_entries=settings.cache_max_entries, clock=clock)
            if flags.enable_query_caching else None
        )
        self._writer: GroupCommitWriter | None = None
        self._readers: ReaderPool | None = None
        self._lock = None if self._memory else InstanceLock(settings.path)
        self._state = "new"  # new -> open -> closed
        self._write_latency_s: deque[float] = deque(maxlen=_LATENCY_SAMPLES)
        self._reads = 0
        self._writes = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open the database, apply migrations and start the writer thread."""
        if self._state != "new":
            raise StoreError(f"Store.start() called on a {self._state} store")
        self._state = "starting"
        if self._lock is not None:
            try:
                self._lock.acquire()
            except BaseException:
                self._state = "closed"
                raise
        loop = asyncio.get_running_loop()
        settings, flags = self.settings, self.flags
        batching = flags.enable_batch_operations
        self._writer = GroupCommitWriter(
            lambda: connect_writer(settings, flags),
            loop=loop,
            generations=self._gens,
            batch_size=settings.batch_size if batching else 1,
            window_s=settings.group_commit_window_ms / 1000.0 if batching else 0.0,
            persistent=flags.enable_connection_pooling or self._memory,
            on_start=self._prepare_database,
            idle_checkpoint_commits=(settings.idle_checkpoint_commits
                                     if flags.enable_wal_mode and not self._memory else 0),
        )
        try:
            await self._writer.start()
        except BaseException:
            self._state = "closed"
            await self._writer.aclose()
            self._release_lock()
            raise
        if not self._memory:
            self._readers = ReaderPool(settings, flags)
        self._state = "open"

    def _prepare_database(self, conn: sqlite3.Connection) -> None:
        # Runs on the writer thread before any op: journal mode, then migrations.
        set_journal_mode(conn, self.settings.path, self.flags)
        apply_migrations(conn)

    async def aclose(self) -> None:
        """Finish queued writes, close readers and the writer (idempotent)."""
        if self._state in ("closed", "new"):
            self._state = "closed"
            return
        self._state = "closed"
        if self._readers is not None:
            await self._readers.aclose()
        if self._writer is not None:
            await self._writer.aclose()
        self._release_lock()

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()

    async def __aenter__(self) -> Any:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __del__(self) -> None:
        if getattr(self, "_state", "new") in ("open", "starting"):
            warnings.warn(f"Store({self.settings.path!r}) was garbage-collected unclosed",
                          ResourceWarning, stacklevel=2)
            if self._writer is not None:
                self._writer.stop_nowait()

    def _check_open(self) -> GroupCommitWriter:
        if self._state != "open" or self._writer is None:
            raise StoreClosedError(f"Store is {self._state}: call start() / use 'async with'")
        return self._writer

    # ------------------------------------------------------------------ write path

    async def _write(self, fn: WriteFn, tables: tuple[str, ...], *, savepoint: bool = True,
                     merge: MergeFn | None = None, payload: Any = None) -> Any:
        """Run ``fn(conn)`` on the writer thread; returns once its transaction committed.

        With ``merge``, queued ops of the same kind may instead run together as
        ``merge(conn, [payload, ...])`` (one statement for many rows)."""
        t0 = time.perf_counter()
        fut = self._submit(fn, tables, savepoint=savepoint, merge=merge, payload=payload)
        try:
            return await fut
        finally:
            self._write_latency_s.append(time.perf_counter() - t0)

    def _submit(self, fn: WriteFn, tables: tuple[str, ...], *, savepoint: bool = True,
                merge: MergeFn | None = None, payload: Any = None) -> asyncio.Future[Any]:
        """:meth:`_write` queued now, as a future resolved once its transaction committed
        (no coroutine, no task: for a write issued now and awaited later)."""
        writer = self._check_open()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        writer.submit(WriteOp(fn, fut, tables, savepoint, merge, payload))
        self._writes += 1
        return fut

    # ------------------------------------------------------------------ read path

    async def _fetch(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]:
        """Rows of one query: a reader connection, or the writer for ``:memory:``."""
        self._check_open()
        self._reads += 1
        if self._readers is None:  # in-memory: only the writer's connection sees the data
            rows: list[Any] = await self._write(
                lambda c: c.execute(sql, params).fetchall(), (), savepoint=False)
            return rows
        return await self._readers.fetchall(sql, params)

    def _gens_of(self, tables: tuple[str, ...]) -> tuple[int, ...]:
        return tuple(map(self._gens.__getitem__, tables))  # no generator frame: per read

    def generations(self, tables: tuple[str, ...]) -> tuple[int, ...] | None:
        """The tables' write generations now (bumped by every committed write, before its
        caller is answered); None when caching is off. A value derived from a read made
        after observing these may be served while they stay current (see :mod:`.cache`)."""
        return self._gens_of(tables) if self._cache is not None else None

    @property
    def writer_queue_depth(self) -> int:
        """Write ops waiting for the writer thread now."""
        return self._writer.queue_depth if self._writer is not None else 0

    @property
    def cache_ttl_s(self) -> float:
        """How long a cached read may be served (writes by other processes: unseen)."""
        return self.settings.cache_ttl_seconds

    async def _cached(
        self,
        key: Hashable,
        tables: tuple[str, ...],
        load: Callable[[], Awaitable[T]],
        valid_until: Callable[[T], float | None] | None = None,
    ) -> T:
        """``load()`` through the cache (when caching is on); see :mod:`.cache`."""
        cache = self._cache
        if cache is None:
            return await load()
        gens = self._gens_of(tables)  # observed BEFORE the query
        hit = cache.get(key, gens)
        if hit is not MISS:
            return hit  # type: ignore[no-any-return]
        value = await load()
        cache.put(key, gens, value, valid_until=valid_until(value) if valid_until else None)
        return value

    # ------------------------------------------------------------------ stats

    def stats(self) -> dict[str, Any]:
        """Counters for /performance (cheap; safe to call often)."""
        w = self._writer
        ws = w.stats if w is not None else None
        lat = sorted(self._write_latency_s)
        out: dict[str, Any] = {
            "reads": self._reads,
            "writes": self._writes,
            "transactions": ws.batches if ws else 0,
            "commits": ws.commits if ws else 0,
            "failed_commits": ws.failed_commits if ws else 0,
            "failed_ops": ws.failed_ops if ws else 0,
            "batches": ws.batches if ws else 0,
            "mean_batch_size": (ws.ops / ws.batches) if ws and ws.batches else 0.0,
            "max_batch_size": ws.max_batch if ws else 0,
            "merged_ops": ws.merged_ops if ws else 0,
            "window_waits": ws.window_waits if ws else 0,
            "window_wait_ms": ws.window_wait_s * 1000.0 if ws else 0.0,
            "checkpoints": ws.checkpoints if ws else 0,
            "checkpoint_ms": ws.checkpoint_s * 1000.0 if ws else 0.0,
            "checkpoint_max_ms": ws.checkpoint_max_s * 1000.0 if ws else 0.0,
            "failed_checkpoints": ws.failed_checkpoints if ws else 0,
            "batch_size_histogram": {str(k): v for k, v in sorted(ws.histogram.items())}
            if ws else {},
            "batch_size_limit": self.settings.batch_size if self.flags.enable_batch_operations
            else 1,
            "group_commit_queue_depth": w.queue_depth if w is not None else 0,
            "write_latency_p50_ms": _percentile(lat, 0.50) * 1000.0,
            "write_latency_p99_ms": _percentile(lat, 0.99) * 1000.0,
            "cache": self._cache.stats() if self._cache else {"enabled": False, "hits": 0,
                                                              "misses": 0, "hit_ratio": 0.0,
                                                              "size": 0},
            "pool": self._readers.stats() if self._readers else {"size": 0, "in_use": 0},
            "flags": {k: bool(v) for k, v in vars(self.flags).items()},
        }
        return out


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    idx = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[idx]
