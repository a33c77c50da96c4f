"""The scheduler: durable tasks run through an agent backend, in priority order.

Guarantees (each tested):

- priority order, higher first, FIFO within a priority, among tasks whose employee is free;
- at most one running task per employee;
- at most ``max_concurrent_tasks`` running, each slot held for the whole run;
- every task ends in a terminal state, or is requeued (retry, shutdown, crash recovery);
- a task's leases are taken before it runs and released however it ends;
- cancel stops the agent (for the opencode backend: kills its process group).

The store is the truth: every state move is a conditional transition there, so a task
cancelled or fired between decisions is never run twice or resurrected.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

from ..agents.base import AgentBackend
from ..agents.usage import UsageAggregate
from ..config import AgentSettings, SchedulerSettings
from ..errors import ConflictError, OrchestraError, ServiceUnavailableError
from ..models import TERMINAL_STATUSES, Task, TaskStatus
from ..store.protocol import SharedStoreProtocol, StoreProtocol
from .events import EventHub, ProgressWriter, TaskEvent
from .execution import TaskExecution, _placeholder, _Run
from .queue import QueueEntry, ReadyQueue
from .shared import SharedCoordinator

__all__ = ["Scheduler", "TaskEvent"]

log = logging.getLogger(__name__)


class Scheduler(TaskExecution):
    """Runs queued tasks through ``backend``; an async context manager."""

    def __init__(
        self,
        store: StoreProtocol,
        backend: AgentBackend,
        settings: SchedulerSettings,
        *,
        agents: AgentSettings | None = None,
        workspace_root: Path,
        project_root: Path,
        limiter: Any = None,
        seed: int = 0,
    ) -> None:
        self._store = store
        self._backend = backend
        self._settings = settings
        self._agents = agents or AgentSettings()
        self._project_root = project_root
        self._limiter = limiter
        self._queue = ReadyQueue()
        self._runs: dict[int, _Run] = {}
        self._live: dict[int, Task] = {}  # queued or running tasks this scheduler knows
        self._tasks: set[asyncio.Task[None]] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self._hub = EventHub()
        self._progress = ProgressWriter(workspace_root, enabled=settings.progress_files)
        self._wake: asyncio.Event | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._progress_due: dict[int, int] = {}
        self._rng = random.Random(seed)
        self._state = "new"
        self._counts = {"completed": 0, "failed": 0, "cancelled": 0, "timed_out": 0,
                        "retries": 0, "requeued": 0, "started": 0}
        self.peak_running = 0
        self._usage = UsageAggregate()
        self._shared: SharedCoordinator | None = None
        self._paused_until = 0.0
        if isinstance(store, SharedStoreProtocol):  # several instances: see .shared
            self._shared = SharedCoordinator(
                store, self._hub, on_remote_status=self._remote_status,
                on_requeued=self._enqueue, on_cancel_request=self._stop_run,
                max_attempts=settings.max_attempts,
                sweep_interval_s=store.settings.heartbeat_interval_s)
            self._hub.forward = self._shared.forward

    # ------------------------------------------------------------------ lifecycle

    @property
    def accepting(self) -> bool:
        """Whether new work is taken."""
        return self._state == "running"

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """End agents a crashed predecessor left running, recover the tasks it left
        running, load the queue, start dispatching."""
        if self._state != "new":
            raise RuntimeError(f"Scheduler.start() called twice (state {self._state})")
        end_leftovers = getattr(self._backend, "end_leftovers", None)
        if end_leftovers is not None:  # before the requeue: never two agents on one task
            await end_leftovers()
        await self._store.recover(max_attempts=self._settings.max_attempts)
        for task in await self._store.queued_tasks():
            self._live[task.id] = task
            self._queue.push(QueueEntry.of(task.id, task.priority, task.employee))
        self._wake = asyncio.Event()
        self._state = "running"
        self._dispatcher = asyncio.create_task(self._dispatch_loop(), name="scheduler-dispatch")
        self._flusher = asyncio.create_task(self._flush_progress_loop(), name="scheduler-progress")
        self._wake.set()
        if self._shared is not None:
            await self._shared.start()

    async def aclose(self) -> None:
        """Drain: stop taking work, let running tasks finish within the grace, requeue the rest."""
        if self._state in ("closing", "closed", "new"):
            self._state = "closed"
            return
        self._state = "closing"
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        for loop_task in (self._dispatcher, self._flusher):
            if loop_task is not None:
                loop_task.cancel()
                await asyncio.gather(loop_task, return_exceptions=True)
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=self._settings.shutdown_grace_s)
            for run_task in pending:
                run_task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._progress.aclose()  # archives of the tasks that ended just now
        if self._shared is not None:
            await self._shared.aclose()  # after the requeues, so the others hear of them
        self._hub.close_all()
        self._state = "closed"

    def _require_running(self) -> None:
        if self._state != "running":
            raise ServiceUnavailableError(f"The scheduler is {self._state}; it takes no new tasks")

    # ------------------------------------------------------------------ submitting

    async def submit(
        self,
        employee: str,
        description: str,
        *,
        priority: int = 5,
        model: str | None = None,
        mode: str = "build",
        files: Sequence[str] = (),
    ) -> Task:
        """Persist a queued task and schedule it; returns at once."""
        self._require_running()
        task: Task = await self._store.create_task(
            employee, description, priority=priority, model=model, mode=mode, files=files
        )
        self._enqueue(task)
        return task

    async def submit_many(self, items: Sequence[Mapping[str, Any]]) -> list[Task | OrchestraError]:
        """Persist many tasks in one transaction; per-item results."""
        self._require_running()
        results: list[Task | OrchestraError] = await self._store.create_tasks(items)
        for r in results:
            if isinstance(r, Task):
                self._push(r)
        self._kick()  # after all of them: the batch starts in priority order
        return results

    def adopt(self, tasks: Sequence[Task]) -> None:
        """Schedule tasks committed as queued by another transaction (a chat event's);
        when not running, the next :meth:`start` loads them from the store."""
        if self._state == "running":
            for task in tasks:
                self._push(task)
            self._kick()

    async def run_now(self, employee: str, description: str, **kw: Any) -> Task:
        """Submit and wait for the end (the synchronous, "before" path)."""
        task = await self.submit(employee, description, **kw)
        return await self.wait(task.id)

    def _remote_status(self, task: Task) -> None:
        """Another instance changed a task: queue it here too, or stop considering it (or,
        when it ended elsewhere while running here, e.g. its employee was fired, stop it)."""
        if task.id in self._runs:
            if task.terminal:
                self._stop_run(task.id, task.error or f"{task.status} elsewhere")
            return
        if task.status == TaskStatus.QUEUED and self._state == "running":
            self._live[task.id] = task
            self._queue.push(QueueEntry.of(task.id, task.priority, task.employee))
            if self._wake is not None:
                self._wake.set()
        elif task.status != TaskStatus.QUEUED:
            self._queue.remove(task.id)
            self._live.pop(task.id, None)

    def _requeue_local(self, task: Task, pause_s: float = 0.0) -> None:
        """Back into this queue without telling anyone; ``pause_s`` holds dispatching."""
        if pause_s > 0:
            self._paused_until = asyncio.get_running_loop().time() + pause_s
        self._queue.push(QueueEntry.of(task.id, task.priority, task.employee))
        if self._wake is not None:
            self._wake.set()

    def _enqueue(self, task: Task) -> None:
        self._push(task)
        self._kick()

    def _push(self, task: Task) -> None:
        self._live[task.id] = task
        self._queue.push(QueueEntry.of(task.id, task.priority, task.employee))
        if self._hub.listened(task.id):  # a queued status for nobody: not built
            self._hub.publish(TaskEvent.status_of(task))

    def _kick(self) -> None:
        """Start what can start, now: the dispatcher task's pass without waking it (an
        Event, a future and a loop iteration fewer between a task's commit and its
        start). Paused (no global slot, shared store): the dispatcher waits it out."""
        if self._state != "running" or self._wake is None:
            return
        if self._paused_until > 0 and self._paused_until > asyncio.get_running_loop().time():
            self._wake.set()
            return
        self._dispatch_ready()

    # ------------------------------------------------------------------ observing

    async def subscribe(self, task_id: int, *,
                        heartbeat_s: float | None = None) -> AsyncIterator[TaskEvent | None]:
        """Events of one task, starting with its current state, until it is terminal.

        With ``heartbeat_s``, ``None`` is yielded after that long without an event (so a
        stream can send keep-alives without wrapping the iterator in timeouts). The
        stream also ends on :meth:`end_subscriptions` (service draining).
        """
        sub = self._hub.add(task_id)
        try:
            current = self._live.get(task_id) or await self._store.get_task(task_id)
            yield TaskEvent.status_of(current)
            if current.terminal:
                return
            while True:
                batch = await sub.take(heartbeat_s)
                if not batch:  # the heartbeat interval passed without an event
                    yield None
                    continue
                for event in batch:
                    if event is None:
                        return
                    yield event
                    if event.kind == "status" and event.status in TERMINAL_STATUSES:
                        return
        finally:
            self._hub.remove(task_id, sub)

    async def wait(self, task_id: int, timeout_s: float | None = None) -> Task:
        """The task once it is terminal (one wake-up, whatever its events)."""
        if task_id not in self._live:
            current: Task = await self._store.get_task(task_id)
            if current.terminal:
                return current
        ended = self._hub.until_end(task_id)
        try:
            if task_id not in self._live:  # ended while we looked
                task: Task = await self._store.get_task(task_id)
                if task.terminal:
                    return task
            if timeout_s is None:  # no Timeout object for nothing
                done = await ended
            else:
                async with asyncio.timeout(timeout_s):
                    done = await ended
        finally:
            self._hub.forget_end(task_id, ended)
        if done is not None:
            return done
        now: Task = await self._store.get_task(task_id)  # the hub closed: where it stands
        return now

    def end_subscriptions(self) -> None:
        """End every event stream now (the service is draining)."""
        self._hub.close_all()

    def stats(self) -> dict[str, Any]:
        """Counters for /performance and /metrics."""
        return {
            "queued": len(self._queue),
            "running": len(self._runs),
            "peak_running": self.peak_running,
            "max_concurrent": self._settings.max_concurrent_tasks,
            "subscribers": self._hub.count(),
            **(self._shared.stats() if self._shared is not None else {}),
            **self._limiter_stats(),
            **self._counts,
        }

    def live_task(self, task_id: int) -> Task | None:
        """The task as this scheduler holds it while queued or running (else None)."""
        return self._live.get(task_id)

    @property
    def running_count(self) -> int:
        """Tasks holding a slot now (cheap: for /health on every call)."""
        return len(self._runs)

    def agent_usage(self) -> dict[str, Any]:
        """What agent runs cost (per-field count, mean, p50, p99, max) for /performance."""
        return self._usage.summary()

    def _limiter_stats(self) -> dict[str, Any]:
        if self._limiter is None:
            return {}
        return {"llm_tokens_available": round(self._limiter.tokens, 2),
                "llm_calls_waiting": self._limiter.waiting}

    # ------------------------------------------------------------------ cancelling

    async def cancel(self, task_id: int) -> Task:
        """Cancel a queued or running task (a terminal task is returned unchanged).

        A task still taking its leases (or waiting to retry them) is cancelled in the
        store at once; its run then sees ``cancel_reason`` and neither retries nor starts,
        and a pending retry finds it gone from the live tasks. A task running on another
        instance (shared store) gets a committed cancel request, and is returned still
        running: that instance stops it (docs/scale-out.md)."""
        reason = "cancelled by request"
        run = self._runs.get(task_id)
        if run is not None and run.agent is not None:
            return await self._cancel_running(run, reason)
        try:
            task: Task = await self._store.transition(
                task_id, TaskStatus.CANCELLED, expect=TaskStatus.QUEUED, error=reason
            )
        except ConflictError:
            current: Task = await self._store.get_task(task_id)
            if current.terminal:
                self._stop_local(task_id, reason)
                return current
            run = self._runs.get(task_id)
            if run is not None:  # it started meanwhile
                return await self._cancel_running(run, reason)
            if self._shared is None or current.status != TaskStatus.RUNNING:
                raise
            requested = await self._shared.request_cancel(task_id, reason)  # runs elsewhere
            return requested or await self.cancel(task_id)  # it moved meanwhile: again
        self._stop_local(task_id, reason)
        self._counts["cancelled"] += 1
        self._hub.publish(TaskEvent.status_of(task))
        return task

    def _stop_local(self, task_id: int, reason: str) -> None:
        """Forget a task the store cancelled: no queue entry, no live state (so a pending
        retry does nothing), and a run still taking its leases must not go on."""
        self._queue.remove(task_id)
        self._live.pop(task_id, None)
        run = self._runs.get(task_id)
        if run is not None:
            run.cancel_reason = reason

    async def _cancel_running(self, run: _Run, reason: str) -> Task:
        run.cancel_reason = reason
        if run.agent is not None:
            run.agent.cancel()
        return await self.wait(run.task.id)

    async def cancel_employee(self, name: str) -> list[int]:
        """Cancel every queued and running task of an employee; the ids cancelled."""
        done: list[int] = []
        seen: set[int] = set()
        # Shared store: its tasks running on other instances get cancel requests too.
        states = ("queued", "running") if self._shared is not None else ("queued",)
        while True:  # page by page: each page's tasks leave the 'queued' filter as they go
            page = [t.id for st in states
                    for t in await self._store.list_tasks(employee=name, status=st)]
            page += [tid for tid, run in self._runs.items() if run.task.employee == name]
            page = [tid for tid in dict.fromkeys(page) if tid not in seen]
            if not page:
                return done
            for tid in page:  # a task may have started since the list
                seen.add(tid)
                if (await self.cancel(tid)).status == TaskStatus.CANCELLED:
                    done.append(tid)

    def fired(self, report: Any) -> None:
        """The store cancelled these tasks while firing an employee: stop their runs."""
        for tid in getattr(report, "cancelled_task_ids", ()):
            self._stop_local(tid, "employee fired")
            run = self._runs.get(tid)
            if run is not None and run.agent is not None:
                run.agent.cancel()
            elif run is None and self._shared is not None:  # it may run on another instance
                self._hub.publish(TaskEvent(tid, "status", str(TaskStatus.CANCELLED), 0,
                                            {"error": "employee fired"}))

    # ------------------------------------------------------------------ dispatching

    async def _dispatch_loop(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            pause_s = self._paused_until - loop.time()
            if pause_s > 0:  # no global slot free (shared store): look again shortly
                await asyncio.sleep(pause_s)
            self._dispatch_ready()

    def _dispatch_ready(self) -> None:
        """Start queued tasks while slots are free (highest priority first)."""
        limit = self._settings.max_concurrent_tasks
        while len(self._runs) < limit:
            entry = self._queue.pop()
            if entry is None:
                break
            self._start(entry)

    def _start(self, entry: QueueEntry) -> None:
        # Reserve the slot now (the run is registered before its first await), so the
        # global limit holds even while the run is still taking its leases.
        run = _Run(task=self._live.get(entry.task_id) or _placeholder(entry))
        self._runs[entry.task_id] = run
        self.peak_running = max(self.peak_running, len(self._runs))
        t = asyncio.create_task(self._execute(entry, run), name=f"task-{entry.task_id}")
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    def _finish(self, entry: QueueEntry) -> None:
        self._runs.pop(entry.task_id, None)
        self._queue.release(entry.employee)
        self._kick()
