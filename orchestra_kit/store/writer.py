"""The single writer: a thread that owns the write connection and commits in groups.

Callers on the event loop submit :class:`WriteOp` s (a function run against the
connection) to a queue. The thread takes every op queued (up to ``batch_size``; it
waits up to ``window_s`` for more when the previous batch held at least 16 ops and
more than what is queued, and writes arrive faster than that), runs ``BEGIN
IMMEDIATE``, each op in its own ``SAVEPOINT`` (so one bad op rolls back only itself),
``COMMIT``, bumps the generation of every table a successful op touched, and only
THEN hands all results back to the loop with one
``call_soon_threadsafe``. An awaiting caller therefore resumes only after its
transaction is durable, and a cache can never serve data older than that write.

With ``idle_checkpoint_commits`` (WAL mode, persistent connection), the thread
checkpoints the WAL itself (``PRAGMA wal_checkpoint(PASSIVE)``) when its queue is empty
and that many commits were made since the last one: small checkpoints between batches,
instead of SQLite's auto-checkpoint of 1,000 pages inside the commit that crosses the
mark, which every caller of that batch waited for (two fsyncs and the copy; the
scheduler's p99 tail, docs/benchmarks.md). The auto-checkpoint stays on as the backstop
for a writer that is never idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import OrchestraError, StoreError

__all__ = ["GroupCommitWriter", "WriteOp", "WriterStats"]

log = logging.getLogger(__name__)

WriteFn = Callable[[sqlite3.Connection], Any]
#: Runs many ops of one kind as one statement: ``merge(conn, payloads)`` returns one
#: ``(ok, value_or_error)`` per payload, in order.
MergeFn = Callable[[sqlite3.Connection, list[Any]], list[tuple[bool, Any]]]
_STOP = object()
_BURST = 16  # see GroupCommitWriter._take: the smallest batch that makes the window worth it
_Outcome = tuple["asyncio.Future[Any]", bool, Any]


@dataclass(slots=True)
class WriteOp:
    """One write: ``fn(conn)`` runs inside the batch transaction.

    ``savepoint=False`` is allowed only for ops whose single modifying statement is
    their last one: a failing SQLite statement undoes itself, and nothing before it
    changed anything, so the savepoint would buy nothing.
    """

    fn: WriteFn
    future: asyncio.Future[Any]
    tables: tuple[str, ...]
    savepoint: bool = True
    merge: MergeFn | None = None  # consecutive ops with the same merge run as one statement
    payload: Any = None


@dataclass(slots=True)
class WriterStats:
    """Counters kept by the writer thread (plain ints: one writer, GIL-atomic reads)."""

    ops: int = 0
    failed_ops: int = 0
    batches: int = 0
    commits: int = 0
    failed_commits: int = 0
    max_batch: int = 0
    merged_ops: int = 0  # ops that ran inside a merged statement (see WriteOp.merge)
    window_waits: int = 0  # batches that waited for company (group_commit_window_ms)
    window_wait_s: float = 0.0  # ... and the time they waited, added up
    checkpoints: int = 0  # idle-time WAL checkpoints (see idle_checkpoint_commits)
    checkpoint_s: float = 0.0  # ... their time, added up
    checkpoint_max_s: float = 0.0  # ... the longest
    failed_checkpoints: int = 0
    histogram: dict[int, int] = field(default_factory=dict)

    def record(self, size: int) -> None:
        """Count one batch of ``size`` ops (histogram buckets are powers of two)."""
        self.batches += 1
        self.ops += size
        self.max_batch = max(self.max_batch, size)
        bucket = 1 << (size - 1).bit_length()
        self.histogram[bucket] = self.histogram.get(bucket, 0) + 1


class _BatchAborted(Exception):
    """SQLite rolled the whole transaction back (disk full, I/O error ...)."""


class GroupCommitWriter:
    """Runs write ops on one thread, many per transaction (or one, when not batching)."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        *,
        loop: asyncio.AbstractEventLoop,
        generations: dict[str, int],
        batch_size: int,
        window_s: float,
        persistent: bool,
        adaptive_window: bool = True,
        on_start: Callable[[sqlite3.Connection], None] | None = None,
        idle_checkpoint_commits: int = 0,
    ) -> None:
        self._connect = connect
        self._loop = loop
        self._gens = generations
        self._batch_size = batch_size
        self._window_s = window_s
        self._persistent = persistent
        self._adaptive = adaptive_window
        self._on_start = on_start
        self._checkpoint_every = idle_checkpoint_commits if persistent else 0
        self._checkpointed_at = 0  # stats.commits at the last idle checkpoint
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()  # lists of ops, or _STOP
        self._pending: list[WriteOp] = []  # submitted during this loop iteration
        self._carry: list[WriteOp] = []  # taken beyond batch_size: the next batch's start
        self._handed = 0  # ops put on the queue (loop thread) ...
        self._taken = 0  # ... and ops taken into a batch (writer thread): the depth
        self._last_batch = 1
        self._last_submit = time.monotonic()
        self._gap_avg_s = 1.0  # moving average of the time between two submitted writes
        self._stopping = False
        self.stats = WriterStats()
        self._ready: asyncio.Future[None] = loop.create_future()
        self._done: asyncio.Future[None] = loop.create_future()
        self._thread = threading.Thread(target=self._main, name="orchestra-store-writer",
                                        daemon=True)

    # ------------------------------------------------------------------ loop side

    async def start(self) -> None:
        """Start the thread; returns once the connection is open and migrated."""
        self._thread.start()
        await self._ready

    def submit(self, op: WriteOp) -> None:
        """Queue ``op`` (non-blocking, on the loop's thread).

        The ops submitted during one loop iteration reach the thread together, in one
        queue item at the start of the next iteration: one wake-up of the thread (a
        futex call, then a wait for the GIL the loop holds) per iteration instead of
        one per op, and the thread starts on a whole batch instead of fighting the
        loop for the GIL after the first op."""
        pending = self._pending
        pending.append(op)
        if len(pending) == 1:
            self._loop.call_soon(self._hand_over)

    def _hand_over(self) -> None:
        ops, self._pending = self._pending, []
        if not ops:
            return
        now = time.monotonic()  # average gap between writes, for the adaptive window
        gap, self._last_submit = (now - self._last_submit) / len(ops), now
        self._gap_avg_s += 0.2 * (min(gap, 1.0) - self._gap_avg_s)
        self._handed += len(ops)
        self._queue.put(ops)

    @property
    def queue_depth(self) -> int:
        """Ops waiting for the writer."""
        return len(self._pending) + self._handed - self._taken

    def stop_nowait(self) -> None:
        """Ask the thread to finish the queued ops and exit."""
        if not self._stopping:
            self._stopping = True
            self._hand_over()  # what this iteration submitted goes first
            self._queue.put(_STOP)

    async def aclose(self) -> None:
        """Finish queued ops, close the connection and join the thread."""
        self.stop_nowait()
        if self._thread.is_alive() or self._thread.ident is not None:
            await asyncio.shield(self._done)
            self._thread.join()

    # ------------------------------------------------------------------ thread side

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # loop closed: nobody is waiting
            self._loop.call_soon_threadsafe(fn, *args)

    def _main(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            conn = self._connect()
            self._run_on_start(conn)
            if not self._persistent:
                conn.close()
                conn = None
        except BaseException as e:  # noqa: BLE001 - handed to the loop, not swallowed
            if conn is not None:
                conn.close()
            self._post(_set_exception, self._ready, e)
            self._post(_set_result, self._done, None)
            return
        self._post(_set_result, self._ready, None)
        try:
            while (batch := self._take(conn)) is not None:
                if batch:
                    self._run_batch(batch, conn)
        finally:
            if conn is not None:
                conn.close()
            self._post(_set_result, self._done, None)

    def _run_on_start(self, conn: sqlite3.Connection) -> None:
        # Drop the reference once used, so a forgotten Store can be garbage-collected.
        on_start, self._on_start = self._on_start, None
        if on_start is not None:
            on_start(conn)

    def _take(self, conn: sqlite3.Connection | None) -> list[WriteOp] | None:
        """The next batch; None once stopped and drained. ``conn``: the thread's
        persistent connection (None without one), for the idle-time checkpoint."""
        batch, self._carry = self._carry, []
        if not batch:
            if self._stopping and self._queue.empty():
                return None
            if self._checkpoint_every and conn is not None and self._queue.empty():
                self._checkpoint_if_due(conn)
            first = self._queue.get()
            if first is _STOP:
                return [] if not self._queue.empty() else None
            batch = first
        limit = self._batch_size
        self._drain(batch, limit)
        target = min(limit, self._last_batch) if self._adaptive else limit
        # Wait for company only when writes arrive faster than the window AND come in
        # bursts: a previous batch of _BURST or more ops means callers are resumed by
        # commits (many writers in closed loops), and the window gathers the next burst
        # into one commit. Writes that trickle in (timers, one request at a time: the
        # scheduler's creates and moves) commit at once: a window there adds up to its
        # length to each write on a task's critical path and gathers almost nothing.
        busy = not self._adaptive or (self._gap_avg_s < self._window_s
                                      and self._last_batch >= min(_BURST, limit))
        if self._window_s > 0 and len(batch) < target and busy:
            started = time.monotonic()
            deadline = started + self._window_s
            while len(batch) < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
                if item is _STOP:
                    self._queue.put(_STOP)
                    break
                batch += item
                self._drain(batch, limit)
            self.stats.window_waits += 1
            self.stats.window_wait_s += time.monotonic() - started
        if len(batch) > limit:
            batch, self._carry = batch[:limit], batch[limit:]
        self._taken += len(batch)
        self._last_batch = len(batch)
        return batch

    def _checkpoint_if_due(self, conn: sqlite3.Connection) -> None:
        """Checkpoint the WAL now, between batches, when enough commits were made since
        the last time. PASSIVE: it takes no lock a reader needs; with no other writer it
        copies every frame unless a reader still uses an older snapshot, and the next
        write then restarts the log from its start (so the file stays small)."""
        stats = self.stats
        if stats.commits - self._checkpointed_at < self._checkpoint_every:
            return
        self._checkpointed_at = stats.commits
        started = time.perf_counter()
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as e:  # the next commit may still work: log, count, go on
            stats.failed_checkpoints += 1
            log.warning("WAL checkpoint failed: %s", e)
            return
        took = time.perf_counter() - started
        stats.checkpoints += 1
        stats.checkpoint_s += took
        stats.checkpoint_max_s = max(stats.checkpoint_max_s, took)

    def _drain(self, batch: list[WriteOp], limit: int) -> None:
        while len(batch) < limit:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is _STOP:
                self._queue.put(_STOP)  # seen again once the queue is empty
                return
            batch += item

    def _run_batch(self, batch: list[WriteOp], conn: sqlite3.Connection | None) -> None:
        outcomes: list[_Outcome] = []
        own = conn is None
        try:
            if conn is None:
                conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
            outcomes = self._run_ops(conn, batch)
            conn.execute("COMMIT")
        except (sqlite3.Error, StoreError, _BatchAborted) as e:
            _rollback(conn)
            self.stats.failed_commits += 1
            err = e if isinstance(e, StoreError) else StoreError(f"Write transaction failed: {e}")
            outcomes = [(op.future, False, err) for op in batch]
        else:
            self.stats.commits += 1
            gens = self._gens
            for op, (_f, ok, _v) in zip(batch, outcomes, strict=True):
                if ok:
                    for t in op.tables:
                        gens[t] += 1
        finally:
            if own and conn is not None:
                conn.close()
        self.stats.record(len(batch))
        self._post(_resolve_all, outcomes)

    def _run_ops(self, conn: sqlite3.Connection, batch: list[WriteOp]) -> list[_Outcome]:
        """Every op of the batch; runs of mergeable ops go as one statement each."""
        outcomes: list[_Outcome] = []
        i = 0
        while i < len(batch):
            merge = batch[i].merge
            j = i + 1
            while merge is not None and j < len(batch) and batch[j].merge is merge:
                j += 1
            if j - i > 1:
                outcomes += self._run_merged(conn, batch[i:j])
            else:
                outcomes.append(self._run_op(conn, batch[i]))
            i = j
        return outcomes

    def _run_merged(self, conn: sqlite3.Connection, ops: list[WriteOp]) -> list[_Outcome]:
        """One statement for many ops; on an unexpected error, each op on its own."""
        merge = ops[0].merge
        assert merge is not None
        conn.execute("SAVEPOINT merged")
        try:
            results = merge(conn, [op.payload for op in ops])
        except Exception:
            if not conn.in_transaction:
                raise
            conn.execute("ROLLBACK TO merged")
            conn.execute("RELEASE merged")
            return [self._run_op(conn, op) for op in ops]
        conn.execute("RELEASE merged")
        self.stats.merged_ops += len(ops)
        self.stats.failed_ops += sum(1 for ok, _ in results if not ok)
        return [(op.future, ok, value) for op, (ok, value) in zip(ops, results, strict=True)]

    def _run_op(self, conn: sqlite3.Connection, op: WriteOp) -> _Outcome:
        if op.savepoint:
            conn.execute("SAVEPOINT op")
        try:
            value = op.fn(conn)
        except Exception as e:
            self.stats.failed_ops += 1
            if not conn.in_transaction:
                raise _BatchAborted(str(e)) from e
            if op.savepoint:
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
            if isinstance(e, sqlite3.Error) and not isinstance(e, OrchestraError):
                e = StoreError(f"Database error: {e}")
            return (op.future, False, e)
        if op.savepoint:
            conn.execute("RELEASE op")
        return (op.future, True, value)


def _rollback(conn: sqlite3.Connection | None) -> None:
    if conn is not None and conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _set_result(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


def _resolve_all(outcomes: list[_Outcome]) -> None:
    for fut, ok, value in outcomes:
        if fut.done():  # the caller was cancelled; the write still happened
            continue
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)
