"""Several schedulers (one per service instance) on one shared store (PostgreSQL).

Every instance knows every queued task and competes for it; the store decides:

- **claims**: ``store.claim_task`` locks the task row ``FOR UPDATE SKIP LOCKED`` (a row
  another instance is claiming is skipped, not waited for), takes a global slot (the
  running count under an advisory lock), checks the employee runs nothing else and
  takes the task's leases, all in one transaction. The loser gets a ConflictError and
  forgets the task; no slot, a busy employee or a held file → retried later, locally.
- **events**: every event an instance publishes locally is also sent (batched) over
  ``NOTIFY``; the others deliver it to their SSE subscribers. A remote "queued" status
  puts the task into the local queue; "running" or a terminal status takes it out.
- **dead instances**: each instance heartbeats (the store does); every
  ``heartbeat_interval_s`` each scheduler runs ``recover``, which requeues the running
  tasks of instances silent for ``instance_timeout_s``, and announces them.
- **cancels across instances**: only the runner ends a task; another instance records
  a cancel request and its "cancel" event in one statement (:meth:`request_cancel`).
  The runner stops the run when the event arrives, or on its next sweep, which also
  reads the requests of its own running tasks (a missed notification costs at most
  ``heartbeat_interval_s``).
- **missed notifications**: when the store's LISTEN connection comes back after a
  drop, it sends ``RESYNC``; the coordinator then re-reads the queued tasks (claims
  resume), the tasks this instance's streams and waiters follow (their current status
  is delivered) and its cancel requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from ..errors import NotFoundError, OrchestraError
from ..models import Task
from ..store.protocol import SharedStoreProtocol
from .events import EventHub, TaskEvent

RESYNC = ""  # the store's payload after its listener reconnected (store.pg_base.RESYNC)

__all__ = ["SharedCoordinator", "decode_event", "encode_event"]

log = logging.getLogger("orchestra_kit.scheduler")
_MAX_PAYLOAD = 7000  # NOTIFY payloads are limited to 8000 bytes


def encode_event(origin: str, event: TaskEvent) -> str:
    """The NOTIFY payload of an event (long agent text is dropped to fit)."""
    doc = {"o": origin, "id": event.task_id, "k": event.kind, "s": event.status,
           "p": event.progress, "d": event.data, "t": event.t}
    text = json.dumps(doc, separators=(",", ":"), default=str)
    if len(text) > _MAX_PAYLOAD:
        doc["d"] = {k: v for k, v in event.data.items() if k != "text"}
        text = json.dumps(doc, separators=(",", ":"), default=str)[:_MAX_PAYLOAD]
    return text


def decode_event(payload: str) -> tuple[str, TaskEvent] | None:
    """(origin, event), or None for a payload that is not one of ours."""
    try:
        d = json.loads(payload)
        return str(d["o"]), TaskEvent(int(d["id"]), str(d["k"]), str(d["s"]), int(d["p"]),
                                      dict(d["d"]), float(d["t"]))
    except (ValueError, KeyError, TypeError):
        return None


class SharedCoordinator:
    """Connects one scheduler to the others through the shared store."""

    def __init__(self, store: SharedStoreProtocol, hub: EventHub, *,
                 on_remote_status: Callable[[Task], None],
                 on_requeued: Callable[[Task], None],
                 on_cancel_request: Callable[[int, str], None],
                 max_attempts: int, sweep_interval_s: float) -> None:
        self._store = store
        self._hub = hub
        self._on_remote_status = on_remote_status
        self._on_requeued = on_requeued
        self._on_cancel_request = on_cancel_request
        self._max_attempts = max_attempts
        self._sweep_interval_s = sweep_interval_s
        self._outgoing: asyncio.Queue[str] = asyncio.Queue()
        self._incoming: asyncio.Queue[TaskEvent] = asyncio.Queue()
        self._loops: list[asyncio.Task[None]] = []
        self.received = 0
        self.sent = 0
        self.resyncs = 0

    @property
    def instance_id(self) -> str:
        """This instance's id in the store."""
        return self._store.instance_id

    def forward(self, event: TaskEvent) -> None:
        """Send a locally published event to the other instances (batched, in order)."""
        self._outgoing.put_nowait(encode_event(self.instance_id, event))

    def _on_payload(self, payload: str) -> None:
        if payload == RESYNC:
            self._incoming.put_nowait(TaskEvent(0, "resync", "", 0, {}, time.time()))
            return
        decoded = decode_event(payload)
        if decoded is not None and decoded[0] != self.instance_id:
            self._incoming.put_nowait(decoded[1])

    async def request_cancel(self, task_id: int, reason: str) -> Task | None:
        """Ask the instance running ``task_id`` to cancel it (returns once the request
        is committed); None when the task is not running any more."""
        event = TaskEvent(task_id, "cancel", "running", 0, {"reason": reason}, time.time())
        return await self._store.request_cancel(task_id, reason,
                                                encode_event(self.instance_id, event))

    async def start(self) -> None:
        """Listen, and start the sender, receiver and sweeper loops."""
        self._store.add_event_listener(self._on_payload)
        for name, coro in (("send", self._send_loop()), ("receive", self._receive_loop()),
                           ("sweep", self._sweep_loop())):
            self._loops.append(asyncio.create_task(coro, name=f"shared-{name}"))

    async def aclose(self) -> None:
        """Flush the events still to send, then stop every loop (idempotent)."""
        self._store.remove_event_listener(self._on_payload)
        with contextlib.suppress(OrchestraError):
            await self._flush()
        loops, self._loops = self._loops, []
        for t in loops:
            t.cancel()
        await asyncio.gather(*loops, return_exceptions=True)

    async def _flush(self) -> None:
        batch: list[str] = []
        while not self._outgoing.empty():
            batch.append(self._outgoing.get_nowait())
        if batch:
            await self._store.publish_events(batch)
            self.sent += len(batch)

    async def _send_loop(self) -> None:
        while True:
            first = await self._outgoing.get()
            batch = [first]
            while not self._outgoing.empty() and len(batch) < 500:
                batch.append(self._outgoing.get_nowait())
            try:
                await self._store.publish_events(batch)
                self.sent += len(batch)
            except OrchestraError as e:
                log.warning("could not publish %d task events: %s", len(batch), e)

    async def _receive_loop(self) -> None:
        while True:
            event = await self._incoming.get()
            if event.kind == "resync":
                await self._run_guarded(self._resync())
                continue
            self.received += 1
            if event.kind == "cancel":
                self._on_cancel_request(event.task_id, str(event.data.get("reason", "cancelled")))
                continue
            if event.kind != "status":
                self._hub.publish_local(event)
                continue
            try:  # the event says "changed"; the store says to what (invalidated first)
                task = await self._store.get_task(event.task_id)
            except NotFoundError:
                continue
            except OrchestraError as e:
                log.warning("task %s: could not read a remote update: %s", event.task_id, e)
                continue
            self._on_remote_status(task)
            self._hub.publish_local(TaskEvent(task.id, "status", str(task.status),
                                              task.progress, event.data, event.t, task=task))

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_interval_s)
            await self._run_guarded(self._sweep())

    async def _sweep(self) -> None:
        report = await self._store.recover(max_attempts=self._max_attempts)
        for tid in report.requeued_task_ids:
            self._on_requeued(await self._store.get_task(tid))
        for tid in (*report.failed_task_ids, *report.cancelled_task_ids):  # announce the end
            self._hub.publish(TaskEvent.status_of(await self._store.get_task(tid)))
        await self._cancel_requested()
        if report.requeued_task_ids or report.failed_task_ids:
            log.warning("requeued %s and failed %s, left by instances that stopped",
                        list(report.requeued_task_ids), list(report.failed_task_ids))

    async def _cancel_requested(self) -> None:
        """Stop this instance's runs whose cancel another instance requested."""
        for tid, reason in await self._store.cancel_requests():
            self._on_cancel_request(tid, reason)

    async def _resync(self) -> None:
        """After the listener reconnected: catch up on what its notifications would
        have said (queued tasks, followed tasks, cancel requests)."""
        self.resyncs += 1
        for task in await self._store.queued_tasks():
            self._on_remote_status(task)
        for tid in sorted(self._hub.followed()):
            try:
                task = await self._store.get_task(tid)
            except NotFoundError:
                continue
            self._on_remote_status(task)
            self._hub.publish_local(TaskEvent.status_of(task))
        await self._cancel_requested()

    @staticmethod
    async def _run_guarded(coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except OrchestraError as e:
            log.warning("shared-store sweep failed: %s", e)

    def stats(self) -> dict[str, Any]:
        """Events sent and received, for /performance."""
        return {"instance_id": self.instance_id, "events_sent": self.sent,
                "events_received": self.received, "resyncs": self.resyncs}
