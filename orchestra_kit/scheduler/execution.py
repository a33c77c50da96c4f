"""How one task runs: leases, the move to running, the agent, retries, the end.

:class:`TaskExecution` is the half of :class:`~orchestra_kit.scheduler.Scheduler` that
executes a task once the dispatcher has reserved its slot; the other half (``core``)
owns the lifecycle, submitting, observing, cancelling and dispatching. The store is the
truth: every state move here is a conditional transition there.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..agents import model_for
from ..agents.base import AgentBackend, AgentEvent, AgentRequest, AgentResult
from ..agents.usage import AgentUsage, UsageAggregate
from ..config import AgentSettings, SchedulerSettings
from ..errors import AgentError, CapacityError, ConflictError, LeaseBlockedError, OrchestraError
from ..models import Task, TaskStatus
from ..store.protocol import SharedStoreProtocol, StoreProtocol
from .events import EventHub, ProgressWriter, TaskEvent
from .queue import QueueEntry
from .shared import SharedCoordinator

__all__ = ["TaskExecution"]

log = logging.getLogger("orchestra_kit.scheduler")


@dataclass(slots=True)
class _Run:
    """A task being executed."""

    task: Task
    agent: asyncio.Future[AgentResult] | None = None
    cancel_reason: str | None = None
    last_persist: float = 0.0
    files_touched: list[str] = field(default_factory=list)
    holds_leases: bool = True  # False when another instance claimed the task (its leases)
    progress_file: asyncio.Future[None] | None = None  # the write of current_task.md


class TaskExecution:
    """Runs one task whose slot the dispatcher reserved (a base of ``Scheduler``)."""

    _store: StoreProtocol
    _backend: AgentBackend
    _settings: SchedulerSettings
    _agents: AgentSettings
    _project_root: Path
    _runs: dict[int, _Run]
    _live: dict[int, Task]
    _tasks: set[asyncio.Task[None]]
    _timers: set[asyncio.TimerHandle]
    _hub: EventHub
    _progress: ProgressWriter
    _rng: random.Random
    _state: str
    _counts: dict[str, int]
    _progress_due: dict[int, int]  # task id -> latest progress not yet written
    _usage: UsageAggregate
    # Set when the store is shared: isinstance() on a runtime protocol walks its ~35
    # members, so it runs once at construction, not per task.
    _shared: SharedCoordinator | None

    def _enqueue(self, task: Task) -> None:
        raise NotImplementedError  # Scheduler's

    def _finish(self, entry: QueueEntry) -> None:
        raise NotImplementedError  # Scheduler's

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
            if run.task.files and run.holds_leases:  # leases are only taken for files
                await asyncio.shield(self._cleanup(run))  # (a shield is a task: only then)
            self._finish(entry)

    async def _execute_inner(self, entry: QueueEntry, run: _Run) -> None:
        task = self._live.get(entry.task_id) or await self._store.get_task(entry.task_id)
        run.task = task
        if task.status != TaskStatus.QUEUED:
            await self._forget(task.id)
            return  # cancelled or fired meanwhile (the store's conditional move re-checks)
        if self._shared is not None and isinstance(self._store, SharedStoreProtocol):
            # A shared store claims the task (slot, employee, leases) in one transaction,
            # first (claims stay in priority order); the agent starts once it committed.
            claimed = await self._claim(run, task, self._store)
            if claimed is None:
                return
            moving: asyncio.Future[Task] = asyncio.get_running_loop().create_future()
            moving.set_result(claimed)
            await self._run_agent(run, moving, await self._model_for(claimed))
            return
        if task.files and not await self._take_leases(task):
            return
        model = await self._model_for(task)
        if run.cancel_reason is not None:  # cancelled (in the store) while it got ready
            await self._forget(task.id)
            return
        # No await from here until the agent is started. The move to running is queued
        # for the writer and the agent started at once: its commit (a group-commit round
        # trip) is off the critical path. Its outcome is awaited before anything else is
        # written or announced, so "running" is only published once durable, and the end
        # is written after it (docs/benchmarks.md, "What a task writes").
        soon = getattr(self._store, "transition_soon", None)  # a future, not a task
        moving = (soon(task.id, TaskStatus.RUNNING, expect=TaskStatus.QUEUED, count_attempt=True)
                  if soon is not None else asyncio.ensure_future(self._store.transition(
                      task.id, TaskStatus.RUNNING, expect=TaskStatus.QUEUED, count_attempt=True)))
        await self._run_agent(run, moving, model)

    async def _started(self, run: _Run, moving: asyncio.Future[Task]) -> bool:
        """Wait for the move to running; on a conflict stop the agent and forget the task."""
        try:
            task = await asyncio.shield(moving)  # a shutdown must not hide its outcome
        except ConflictError:  # ended elsewhere meanwhile (cancelled, fired): forget it here
            if run.agent is not None:
                run.agent.cancel()
                await asyncio.gather(run.agent, return_exceptions=True)
            await self._forget(run.task.id)
            return False
        run.task = task
        run.last_persist = time.monotonic()
        self._live[task.id] = task
        self._counts["started"] += 1
        if self._hub.listened(task.id):
            self._hub.publish(TaskEvent.status_of(task))
        return True  # current_task.md: written once the task outlives the persist interval

    async def _claim(self, run: _Run, task: Task, store: SharedStoreProtocol) -> Task | None:
        """Claim on a shared store (see .shared); None when this instance will not run it."""
        run.holds_leases = False  # until the claim (which takes them) committed
        try:
            claimed = await store.claim_task(task.id, max_running=self._settings.max_concurrent_tasks)
        except LeaseBlockedError as e:
            held = (e.details or {}).get("blocked", {})
            self._hub.publish(TaskEvent(task.id, "status", str(task.status), 0, {"blocked": held}))
            self._retry_later(task, self._settings.retry_backoff_s or 0.5)
            return None
        except CapacityError as e:
            delay_s = 0.02 + 0.08 * self._rng.random()
            if "employee" in (e.details or {}):  # it runs elsewhere: this one waits
                self._retry_quietly(task, delay_s)
            else:  # no global slot: back in the queue now (keeps priority order), pause
                self._requeue_local(task, pause_s=delay_s)
            return None
        except ConflictError:  # claimed or ended elsewhere
            self._live.pop(task.id, None)
            return None
        run.holds_leases = True
        return claimed

    def _retry_quietly(self, task: Task, delay_s: float) -> None:
        """Back into this instance's queue after ``delay_s``, without telling anyone."""
        def fire() -> None:
            self._timers.discard(handle)
            if self._state == "running" and task.id in self._live:
                self._requeue_local(task)

        handle = asyncio.get_running_loop().call_later(delay_s, fire)
        self._timers.add(handle)

    def _requeue_local(self, task: Task, pause_s: float = 0.0) -> None:
        raise NotImplementedError  # Scheduler's

    def _stop_run(self, task_id: int, reason: str) -> None:
        """Stop this instance's run of a task (ended, or its cancel asked, elsewhere)."""
        run = self._runs.get(task_id)
        if run is not None and run.cancel_reason is None:
            run.cancel_reason = reason
            if run.agent is not None:
                run.agent.cancel()

    async def _forget(self, task_id: int) -> None:
        """Drop a task this scheduler will not run, telling subscribers where it stands."""
        self._live.pop(task_id, None)
        self._hub.publish(TaskEvent.status_of(await self._store.get_task(task_id)))

    async def _take_leases(self, task: Task) -> bool:
        result: dict[str, str] = await self._store.lock_files(  # CheckedFiles: not re-checked
            task.employee, task.files, description=task.description[:200], task_id=task.id
        )
        if all(status in ("locked", "already_locked") for status in result.values()):
            return True
        await self._store.release_task_leases(task.id)
        # Retry only a task the store still holds queued and nobody cancelled meanwhile:
        # a cancel landing during this attempt must end it, not be lost in the retry.
        current: Task = await self._store.get_task(task.id)
        run = self._runs.get(task.id)
        if current.status != TaskStatus.QUEUED or (run is not None and run.cancel_reason):
            if current.terminal:
                await self._forget(task.id)
            return False
        held = {p: s for p, s in result.items() if s.startswith("locked_by")}
        self._hub.publish(TaskEvent(task.id, "status", str(task.status), 0, {"blocked": held}))
        self._retry_later(task, self._settings.retry_backoff_s or 0.5)
        return False

    async def _run_agent(self, run: _Run, moving: asyncio.Future[Task], model: str) -> None:
        task = run.task
        request = AgentRequest(
            task_id=task.id,
            employee=task.employee,
            description=task.description,
            model=model,
            mode=str(task.mode),
            files=task.files,
            workspace=self._progress.workspace(task.employee),
            project_root=self._project_root,
            timeout_s=self._settings.task_timeout_s,
        )
        run.last_persist = time.monotonic()  # current_task.md only past the interval
        run.agent = asyncio.ensure_future(self._backend.run(request, lambda e: self._on_event(run, e)))
        try:
            if not await self._started(run, moving):
                return
        except BaseException:  # shut down (or the store failed) before it was running
            run.agent.cancel()
            # Let the move settle, so the drain's requeue sees the task as it is stored.
            await asyncio.gather(run.agent, moving, return_exceptions=True)
            raise
        if run.cancel_reason is not None:  # cancelled while it was starting
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
            if e.usage is not None:
                self._usage.add(AgentUsage.from_dict(e.usage))
            await self._on_agent_error(run, e)
        else:
            usage = result.usage.to_dict() if result.usage is not None else None
            if result.usage is not None:
                self._usage.add(result.usage)
            await self._end(run, TaskStatus.COMPLETED, result=result.summary or "done",
                            files=result.files_touched, usage=usage)

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
                                                        error=f"attempt {task.attempts}: {error.message}",
                                                        usage=error.usage)
            except ConflictError:
                return
            if requeued.terminal:  # its cancel was requested (on another instance)
                await self._end(run, requeued.status, error=requeued.error)
                return
            self._counts["retries"] += 1
            self._live[requeued.id] = requeued
            self._hub.publish(TaskEvent.status_of(requeued))
            delay = min(self._settings.retry_backoff_max_s, self._settings.retry_backoff_s * 2 ** (task.attempts - 1))
            self._retry_later(requeued, delay * (0.5 + self._rng.random() / 2))
            return
        await self._end(run, TaskStatus.FAILED, error=error.message, usage=error.usage)

    def _retry_later(self, task: Task, delay_s: float) -> None:
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.discard(handle)
            # Cancelled meanwhile: cancel() dropped it from the live tasks. Enqueueing the
            # stale copy would start its agent (it starts before the move to running).
            if self._state == "running" and task.id in self._live:
                self._enqueue(task)

        handle = loop.call_later(delay_s, fire)
        self._timers.add(handle)

    def _on_event(self, run: _Run, event: AgentEvent) -> None:
        task = run.task
        if event.kind == "file" and event.path:
            run.files_touched.append(event.path)
        progress = event.progress if event.progress is not None else 0
        if self._hub.listened(task.id):  # nobody listening: build nothing
            self._hub.publish(TaskEvent(task.id, event.kind, str(TaskStatus.RUNNING), progress,
                                        {k: v for k, v in (("path", event.path), ("text", event.text),
                                                           ("tokens", event.tokens)) if v is not None}))
        # 100 % is written by the move to completed; in between, the latest percentage
        # of every running task goes to the store in one write per interval.
        if event.kind == "progress" and event.progress is not None and event.progress < 100:
            self._progress_due[task.id] = event.progress

    async def _flush_progress_loop(self) -> None:
        """One writer of progress for all running tasks: every interval, the latest
        percentage of each in one write (not a write and an asyncio task per task)."""
        interval = max(self._settings.progress_persist_interval_s, 0.01)
        while True:
            await asyncio.sleep(interval)
            self._start_progress_files(interval)
            if not self._progress_due:
                continue
            due, self._progress_due = self._progress_due, {}
            many = getattr(self._store, "set_progress_many", None)
            try:
                if many is not None:
                    await many(due)
                else:  # a store without the batch method: one write each
                    for task_id, pct in due.items():
                        await self._store.set_progress(task_id, pct)
            except OrchestraError as e:
                log.warning("progress of %d task(s) not recorded: %s", len(due), e)

    def _start_progress_files(self, interval_s: float) -> None:
        """current_task.md for each running task older than the interval: a task shorter
        than that gets only its archive at the end (two file writes and thread hops fewer
        per short task), a long one its file within an interval of starting."""
        if not self._progress.enabled:
            return
        now = time.monotonic()
        for run in self._runs.values():
            if (run.progress_file is None and run.task.status == TaskStatus.RUNNING
                    and now - run.last_persist >= interval_s):
                run.progress_file = self._spawn(self._progress.start(run.task))

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        t: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        t.add_done_callback(_log_failure)
        return t

    async def _end(self, run: _Run, status: TaskStatus, *, result: str | None = None,
                   error: str | None = None, files: Sequence[str] = (),
                   usage: dict[str, Any] | None = None) -> None:
        try:
            task: Task = await self._store.transition(run.task.id, status, result=result, error=error,
                                                      usage=usage)
        except ConflictError:  # already ended elsewhere (fired): report what the store holds
            task = await self._store.get_task(run.task.id)
        else:
            self._counts[str(status)] = self._counts.get(str(status), 0) + 1
        run.task = task
        self._live.pop(task.id, None)
        self._progress_due.pop(task.id, None)
        if run.progress_file is not None:  # the archive removes it: never write it after
            await asyncio.gather(run.progress_file, return_exceptions=True)
        if self._progress.enabled:  # the archive file (off: not even a coroutine)
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
        self._counts["requeued" if task.status == TaskStatus.QUEUED else str(task.status)] += 1
        run.task = task
        self._hub.publish(TaskEvent.status_of(task))

    async def _cleanup(self, run: _Run) -> None:
        try:
            await self._store.release_task_leases(run.task.id)
        except OrchestraError:
            log.warning("task %s: could not release its leases", run.task.id, exc_info=True)


def _placeholder(entry: QueueEntry) -> Task:
    return Task(id=entry.task_id, employee=entry.employee, description="-", priority=-entry.neg_priority)


def _log_failure(t: asyncio.Future[Any]) -> None:
    if not t.cancelled() and t.exception() is not None:
        log.warning("background store write failed: %s", t.exception())
