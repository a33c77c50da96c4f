"""The instance side of the PostgreSQL store: registration, heartbeat, claims.

An instance registers in ``instances`` at start, heartbeats on its own connection (a
busy pool must never delay a heartbeat past ``database.instance_timeout_s``), and
deregisters on close. Claims (:meth:`PgInstance.claim_task`) run as one round trip
(``orchestra_claim``) for a task without files, else as the multi-statement
``pg_tasks.claim`` that also takes the leases.

Cancels across instances: only the instance running a task may end it, so another
instance records the request (:meth:`PgInstance.request_cancel`: ``tasks.cancel_requested``
and a NOTIFY, in one statement) and the runner, told by the notification or finding it
in :meth:`PgInstance.cancel_requests` on its next sweep, stops the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Self

import asyncpg

from ..errors import CapacityError, ConflictError, StoreError
from ..models import Task
from . import pg_tasks
from .checks import check_id, check_text
from .pg_base import PgStoreBase
from .pg_schema import CLAIM_BUSY, CLAIM_CAPACITY, CLAIM_CONFLICT, CLAIM_HAS_FILES, lock_key
from .schema import TASK_COLS, row_to_task

__all__ = ["PgInstance"]

log = logging.getLogger("orchestra_kit.store.pg")
_TASKS, _LR = ("tasks",), ("file_leases", "file_requests")


class PgInstance(PgStoreBase):
    """Lifecycle with registration and heartbeat, and task claims."""

    _heartbeat: asyncio.Task[None] | None = None
    _beat_conn: Any = None
    #: The longest time between two heartbeats seen (an event loop stalled this long).
    max_heartbeat_gap_s = 0.0
    #: Several instances may share this store (the scheduler then claims tasks here).
    shared = True

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def start(self) -> None:
        """Connect, migrate, register this instance and start its heartbeat."""
        await super().start()
        try:
            await self._beat()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            await super().aclose()
            raise StoreError(f"Cannot register instance {self.instance_id}: {e}") from e
        self._heartbeat = asyncio.create_task(self._heartbeat_loop(), name="pg-heartbeat")

    async def aclose(self) -> None:
        """Stop the heartbeat, deregister, close connections (idempotent)."""
        hb, self._heartbeat = self._heartbeat, None
        if hb is not None:
            hb.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await hb
        conn, self._beat_conn = self._beat_conn, None
        if conn is not None:
            with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await conn.execute("DELETE FROM instances WHERE id = $1", self.instance_id)
            await conn.close()
        await super().aclose()

    def stats(self) -> dict[str, Any]:
        """The base counters plus the longest heartbeat gap (event-loop stalls show there)."""
        return {**super().stats(), "max_heartbeat_gap_s": round(self.max_heartbeat_gap_s, 3)}

    async def _beat(self) -> None:
        # Its own connection: a busy pool must never delay a heartbeat past the timeout
        # (the others would take this instance for dead and requeue its tasks).
        if self._beat_conn is None or self._beat_conn.is_closed():
            self._beat_conn = await asyncpg.connect(self.url)
        await self._beat_conn.execute(
            "INSERT INTO instances (id, started_at, heartbeat_at) VALUES ($1, $2, $2)"
            " ON CONFLICT (id) DO UPDATE SET heartbeat_at = $2", self.instance_id, self._clock())

    async def _heartbeat_loop(self) -> None:
        last = self._clock()
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval_s)
            try:
                await self._beat()
                now = self._clock()
                self.max_heartbeat_gap_s = max(self.max_heartbeat_gap_s, now - last)
                last = now
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
                log.warning("heartbeat failed (retrying): %s", e)


    async def claim_task(self, task_id: int, *, max_running: int) -> Task:
        """Claim a queued task for this instance with its leases (see ``pg_tasks.claim``)."""
        check_id(task_id, "task_id")
        now = self._clock()
        fast = await self._claim_fast(task_id, max_running, now)
        if fast is not None:
            return fast
        return await self._tx(lambda c: pg_tasks.claim(
            c, self.schema, task_id, max_running, now, self.instance_id,
            self.settings.lease_ttl_s), (*_TASKS, *_LR))

    async def _claim_fast(self, task_id: int, max_running: int, now: float) -> Task | None:
        """The claim in one round trip (``orchestra_claim``); None for a task with files."""
        channel = self.channel if self._cache is not None else None
        sql = f"SELECT {TASK_COLS} FROM orchestra_claim($1, $2, $3, $4, $5, $6)"
        args = (task_id, max_running, now, self.instance_id,
                lock_key(self.schema, "running"), channel)
        try:
            rows = await self._tx(lambda c: c.fetch(sql, *args), _TASKS, transaction=False)
        except StoreError as e:
            state = getattr(e.__cause__, "sqlstate", None)
            details = {"task_id": task_id}
            if state == CLAIM_HAS_FILES:
                return None
            if state == CLAIM_CONFLICT:
                raise ConflictError(f"Task {task_id} is claimed or ended elsewhere",
                                    details=details) from None
            if state in (CLAIM_BUSY, "23505"):
                raise CapacityError(f"Cannot start task {task_id}: its employee runs another"
                                    " task", details={**details, "employee": True}) from None
            if state == CLAIM_CAPACITY:
                raise CapacityError(f"Cannot start task {task_id}: max_concurrent_tasks"
                                    f"={max_running} already run", details=details) from None
            raise
        return row_to_task(rows[0])

    async def request_cancel(self, task_id: int, reason: str, event: str) -> Task | None:
        """Record a cancel request for a running task and NOTIFY ``event`` on the events
        channel, in one statement (delivered at its commit); the task as it stands, or
        None when it is not running (queued or ended meanwhile)."""
        check_id(task_id, "task_id")
        reason = check_text(reason, "reason")
        sql = (f"WITH w AS (UPDATE tasks SET cancel_requested = $2 WHERE id = $1"
               f" AND status = 'running' RETURNING {TASK_COLS})"
               " SELECT w.*, pg_notify($3, $4) IS NULL AS _notified FROM w")
        rows = await self._tx(lambda c: c.fetch(sql, task_id, reason, self.events_channel,
                                                event), (), transaction=False)
        return row_to_task(rows[0]) if rows else None

    async def cancel_requests(self) -> list[tuple[int, str]]:
        """(task id, reason) of this instance's running tasks whose cancel was requested."""
        rows = await self._fetch("SELECT id, cancel_requested FROM tasks WHERE status = 'running'"
                                 " AND instance = $1 AND cancel_requested IS NOT NULL",
                                 self.instance_id)
        return [(int(r[0]), str(r[1])) for r in rows]
