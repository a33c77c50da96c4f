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
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from .agents import model_for
from .agents.base import AgentBackend, AgentEvent, AgentRequest, AgentResult
from .config import AgentSettings, SchedulerSettings
from .errors import AgentError, ConflictError, OrchestraError, ServiceUnavailableError
from .models import TERMINAL_STATUSES, Task, TaskStatus
from .scheduler_support import EventHub, ProgressWriter, TaskEvent
from .taskqueue import QueueEntry, ReadyQueue

__all__ = ["Scheduler", "TaskEvent"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Run:
    """A task being executed."""

    task: Task
    agent: asyncio.Future[AgentResult] | None = None
    cancel_reason: str | None = None
    last_persist: float = 0.0
    files_touched: list[str] = field(default_factory=list)


class Scheduler:
    """Runs queued tasks through ``backend``; an async context manager."""

    def __init__(
        self,
        store: Any,
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
        self._rng = random.Random(seed)
        self._state = "new"
        self._counts = {"completed": 0, "failed": 0, "cancelled": 0, "timed_out": 0,
                        "retries": 0, "requeued": 0, "started": 0}
        self.peak_running = 0

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
        """Recover tasks a crash left running, load the queue, start dispatching."""
        if self._state != "new":
            raise RuntimeError(f"Scheduler.start() called twice (state {self._state})")
        await self._store.recover(max_attempts=self._settings.max_attempts)
        for task in await self._store.queued_tasks():
            self._live[task.id] = task
            self._queue.push(QueueEntry.of(task.id, task.priority, task.employee))
        self._wake = asyncio.Event()
        self._state = "running"
        self._dispatcher = asyncio.create_task(self._dispatch_loop(), name="scheduler-dispatch")
        self._wake.set()

    async def aclose(self) -> None:
        """Drain: stop taking work, let running tasks finish within the grace, requeue the rest."""
        if self._state in ("closing", "closed", "new"):
            self._state = "closed"
            return
        self._state = "closing"
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            await asyncio.gather(self._dispatcher, return_exceptions=True)
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=self._settings.shutdown_grace_s)
            for run_task in pending:
                run_task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
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
                self._enqueue(r)
        return results

    async def run_now(self, employee: str, description: str, **kw: Any) -> Task:
        """Submit and wait for the end (the synchronous, "before" path)."""
        task = await self.submit(employee, description, **kw)
        return await self.wait(task.id)

    def _enqueue(self, task: Task) -> None:
        self._live[task.id] = task
        self._queue.push(QueueEntry.of(task.id, task.priority, task.employee))
        self._hub.publish(TaskEvent.status_of(task))
        if self._wake is not None:
            self._wake.set()

    # ------------------------------------------------------------------ observing

    async def subscribe(self, task_id: int, *,
                        heartbeat_s: float | None = None) -> AsyncIterator[TaskEvent | None]:
        """Events of one task, starting with its current state, until it is terminal.

        With ``heartbeat_s``, ``None`` is yielded after that long without an event (so a
        stream can send keep-alives without wrapping the iterator in timeouts). The
        stream also ends on :meth:`end_subscriptions` (service draining).
        """
        queue = self._hub.add(task_id)
        try:
            current = self._live.get(task_id) or await self._store.get_task(task_id)
            yield TaskEvent.status_of(current)
            if current.terminal:
                return
            while True:
                if heartbeat_s is None:
                    event = await queue.get()
                else:
                    try:
                        event = await asyncio.wait_for(queue.get(), heartbeat_s)
                    except TimeoutError:
                        yield None
                        continue
                if event is None:
                    return
                yield event
                if event.kind == "status" and event.status in TERMINAL_STATUSES:
                    return
        finally:
            self._hub.remove(task_id, queue)

    async def wait(self, task_id: int, timeout_s: float | None = None) -> Task:
        """The task once it is terminal."""
        last: TaskEvent | None = None
        async with asyncio.timeout(timeout_s):
            async for event in self.subscribe(task_id):
                last = event if event is not None else last
        if last is not None and last.task is not None and last.task.terminal:
            return last.task
        task: Task = await self._store.get_task(task_id)
        return task

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
            **self._limiter_stats(),
            **self._counts,
        }

    def _limiter_stats(self) -> dict[str, Any]:
        if self._limiter is None:
            return {}
        return {"llm_tokens_available": round(self._limiter.tokens, 2),
                "llm_calls_waiting": self._limiter.waiting}

    # ------------------------------------------------------------------ cancelling

    async def cancel(self, task_id: int) -> Task:
        """Cancel a queued or running task (a terminal task is returned unchanged)."""
        run = self._runs.get(task_id)
        if run is not None:
            return await self._cancel_running(run, "cancelled by request")
        try:
            task: Task = await self._store.transition(
                task_id, TaskStatus.CANCELLED, expect=TaskStatus.QUEUED, error="cancelled by request"
            )
        except ConflictError:
            run = self._runs.get(task_id)
            if run is not None:  # it started meanwhile
                return await self._cancel_running(run, "cancelled by request")
            current: Task = await self._store.get_task(task_id)
            if current.terminal:
                return current
            raise
        self._queue.remove(task_id)
        self._live.pop(task_id, None)
        self._counts["cancelled"] += 1
        self._hub.publish(TaskEvent.status_of(task))
        return task

    async def _cancel_running(self, run: _Run, reason: str) -> Task:
        run.cancel_reason = reason
        if run.agent is not None:
            run.agent.cancel()
        return await self.wait(run.task.id)

    async def cancel_employee(self, name: str) -> list[int]:
        """Cancel every queued and running task of an employee; the ids cancelled."""
        ids = [t.id for t in await self._store.list_tasks(employee=name, status="queued")]
        ids += [tid for tid, run in self._runs.items() if run.task.employee == name]
        done: list[int] = []
        for tid in ids:
            task = await self.cancel(tid)
            if task.status == TaskStatus.CANCELLED:
                done.append(tid)
        return done

    def fired(self, report: Any) -> None:
        """The store cancelled these tasks while firing an employee: stop their runs."""
        for tid in getattr(report, "cancelled_task_ids", ()):
            if self._queue.remove(tid):
                self._live.pop(tid, None)
            run = self._runs.get(tid)
            if run is not None:
                run.cancel_reason = "employee fired"
                if run.agent is not None:
                    run.agent.cancel()

    # ------------------------------------------------------------------ dispatching

    async def _dispatch_loop(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while len(self._runs) < self._settings.max_concurrent_tasks:
                entry = self._queue.pop()
                if entry is None:
                    break
                self._start(entry)

    def _start(self, entry: QueueEntry) -> None:
        # Reserve the slot now (the run is registered before its first await), so the
        # global limit holds even while the run is still taking its leases.
        run = _Run(task=_placeholder(entry))
        self._runs[entry.task_id] = run
        self.peak_running = max(self.peak_running, len(self._runs))
        t = asyncio.create_task(self._execute(entry, run), name=f"task-{entry.task_id}")
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    def _finish(self, entry: QueueEntry) -> None:
        self._runs.pop(entry.task_id, None)
        self._queue.release(entry.employee)
        if self._wake is not None:
            self._wake.set()

    async def _execute(self, entry: QueueEntry, run: _Run) -> None:
        try:
            await self._execute_inner(entry, run)
        except asyncio.CancelledError:
            await asyncio.shield(self._requeue_after_shutdown(run))
            raise
        except Exception:  # a bug or a store failure: never leave the task running
            log.exception("task %s: unexpected failure", entry.task_id)
            await asyncio.shield(self._end(run, TaskStatus.FAILED, error="internal error"))
        finally:
            await asyncio.shield(self._cleanup(run))
            self._finish(entry)

    async def _execute_inner(self, entry: QueueEntry, run: _Run) -> None:
        task = self._live.get(entry.task_id) or await self._store.get_task(entry.task_id)
        run.task = task
        if task.status != TaskStatus.QUEUED:
            await self._forget(task.id)
            return  # cancelled or fired meanwhile (the store's conditional move re-checks)
        if task.files and not await self._take_leases(task):
            return
        try:
            task = await self._store.transition(
                task.id, TaskStatus.RUNNING, expect=TaskStatus.QUEUED, count_attempt=True
            )
        except ConflictError:  # ended elsewhere meanwhile (cancelled, fired): forget it here
            await self._forget(task.id)
            return
        run.task = task
        run.last_persist = time.monotonic()
        self._live[task.id] = task
        self._counts["started"] += 1
        self._hub.publish(TaskEvent.status_of(task))
        await self._progress.start(task)
        await self._run_agent(run)

    async def _forget(self, task_id: int) -> None:
        """Drop a task this scheduler will not run, telling subscribers where it stands."""
        self._live.pop(task_id, None)
        self._hub.publish(TaskEvent.status_of(await self._store.get_task(task_id)))

    async def _take_leases(self, task: Task) -> bool:
        result: dict[str, str] = await self._store.lock_files(
            task.employee, list(task.files), description=task.description[:200], task_id=task.id
        )
        if all(status in ("locked", "already_locked") for status in result.values()):
            return True
        await self._store.release_task_leases(task.id)
        held = {p: s for p, s in result.items() if s.startswith("locked_by")}
        self._hub.publish(TaskEvent(task.id, "status", str(task.status), 0, {"blocked": held}))
        self._retry_later(task, self._settings.retry_backoff_s or 0.5)
        return False

    async def _run_agent(self, run: _Run) -> None:
        task = run.task
        request = AgentRequest(
            task_id=task.id,
            employee=task.employee,
            description=task.description,
            model=await self._model_for(task),
            mode=str(task.mode),
            files=task.files,
            workspace=self._progress.workspace(task.employee),
            project_root=self._project_root,
            timeout_s=self._settings.task_timeout_s,
        )
        run.agent = asyncio.ensure_future(self._backend.run(request, lambda e: self._on_event(run, e)))
        if run.cancel_reason is not None:  # cancelled while it was taking its leases
            run.agent.cancel()
        try:
            async with asyncio.timeout(self._settings.task_timeout_s):
                result = await run.agent
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # we are being shut down, not cancelled by a user
            await self._end(run, TaskStatus.CANCELLED, error=run.cancel_reason or "cancelled")
        except TimeoutError:
            await self._end(run, TaskStatus.TIMED_OUT, error=f"timed out after {self._settings.task_timeout_s:g} s")
        except AgentError as e:
            await self._on_agent_error(run, e)
        else:
            await self._end(run, TaskStatus.COMPLETED, result=result.summary or "done",
                            files=result.files_touched)

    async def _model_for(self, task: Task) -> str:
        if task.model:
            return task.model
        try:
            smartness = str((await self._store.get_employee(task.employee)).smartness)
        except OrchestraError:  # fired meanwhile: the store's state move will refuse it
            smartness = "normal"
        return model_for(self._agents, smartness, None)

    async def _on_agent_error(self, run: _Run, error: AgentError) -> None:
        task = run.task
        if error.retryable and task.attempts < self._settings.max_attempts:
            try:
                requeued = await self._store.transition(task.id, TaskStatus.QUEUED, expect=TaskStatus.RUNNING,
                                                        error=f"attempt {task.attempts}: {error.message}")
            except ConflictError:
                return
            self._counts["retries"] += 1
            self._live[requeued.id] = requeued
            self._hub.publish(TaskEvent.status_of(requeued))
            delay = min(self._settings.retry_backoff_max_s, self._settings.retry_backoff_s * 2 ** (task.attempts - 1))
            self._retry_later(requeued, delay * (0.5 + self._rng.random() / 2))
            return
        await self._end(run, TaskStatus.FAILED, error=error.message)

    def _retry_later(self, task: Task, delay_s: float) -> None:
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.discard(handle)
            if self._state == "running":
                self._enqueue(task)

        handle = loop.call_later(delay_s, fire)
        self._timers.add(handle)

    def _on_event(self, run: _Run, event: AgentEvent) -> None:
        task = run.task
        if event.kind == "file" and event.path:
            run.files_touched.append(event.path)
        progress = event.progress if event.progress is not None else 0
        self._hub.publish(TaskEvent(task.id, event.kind, str(TaskStatus.RUNNING), progress,
                                    {k: v for k, v in (("path", event.path), ("text", event.text),
                                                       ("tokens", event.tokens)) if v is not None}))
        if event.kind == "progress" and event.progress is not None:
            now = time.monotonic()
            # 100 % is written by the move to completed; in between, at most one write
            # per interval keeps progress durable without a write per event.
            if event.progress < 100 and (
                    now - run.last_persist >= self._settings.progress_persist_interval_s):
                run.last_persist = now
                self._spawn(self._store.set_progress(task.id, event.progress))

    def _spawn(self, coro: Any) -> None:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        t.add_done_callback(_log_failure)

    async def _end(self, run: _Run, status: TaskStatus, *, result: str | None = None,
                   error: str | None = None, files: Sequence[str] = ()) -> None:
        try:
            task: Task = await self._store.transition(run.task.id, status, result=result, error=error)
        except ConflictError:  # already ended elsewhere (fired): report what the store holds
            task = await self._store.get_task(run.task.id)
        else:
            self._counts[str(status)] = self._counts.get(str(status), 0) + 1
        run.task = task
        self._live.pop(task.id, None)
        await self._progress.finish(task, list(files) or run.files_touched)
        self._hub.publish(TaskEvent.status_of(task))

    async def _requeue_after_shutdown(self, run: _Run) -> None:
        try:  # re-read: the move to running may have committed as we were cancelled
            current: Task = await self._store.get_task(run.task.id)
            if current.status != TaskStatus.RUNNING:
                return
            task = await self._store.transition(run.task.id, TaskStatus.QUEUED, expect=TaskStatus.RUNNING,
                                                error="requeued at shutdown")
        except (ConflictError, OrchestraError):
            return
        self._counts["requeued"] += 1
        run.task = task
        self._hub.publish(TaskEvent.status_of(task))

    async def _cleanup(self, run: _Run) -> None:
        if not run.task.files:
            return  # leases are only ever taken for a task's files
        try:
            await self._store.release_task_leases(run.task.id)
        except OrchestraError:
            log.warning("task %s: could not release its leases", run.task.id, exc_info=True)


def _placeholder(entry: QueueEntry) -> Task:
    return Task(id=entry.task_id, employee=entry.employee, description="-", priority=-entry.neg_priority)


def _log_failure(t: asyncio.Future[Any]) -> None:
    if not t.cancelled() and t.exception() is not None:
        log.warning("background store write failed: %s", t.exception())
