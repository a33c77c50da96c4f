"""Pieces the scheduler composes: task events and their fan-out, progress files."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..models import Task
from ..progress import CHECKBOXES, FileProgress, ProgressDoc, render
from .progressfiles import BatchedWriter

__all__ = ["EventHub", "ProgressWriter", "Subscription", "TaskEvent"]


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """One thing that happened to a task (sent over SSE as ``event: kind``)."""

    task_id: int
    kind: str  # status | progress | file | text | tokens | started | finished
    status: str
    progress: int = 0
    data: dict[str, Any] = field(default_factory=dict)
    t: float = field(default_factory=time.time)
    task: Task | None = field(default=None, compare=False, repr=False)  # status events only

    @classmethod
    def status_of(cls, task: Task) -> TaskEvent:
        """A status event carrying the task's current state."""
        data: dict[str, Any] = {"attempts": task.attempts}
        if task.error:
            data["error"] = task.error
        if task.result:
            data["result"] = task.result
        return cls(task.id, "status", str(task.status), task.progress, data, task=task)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"task_id": self.task_id, "kind": self.kind, "status": self.status,
                "progress": self.progress, "data": self.data, "t": self.t}


class Subscription:
    """One subscriber's events: appended by :meth:`EventHub.publish`, taken in batches.

    A publish only wakes a subscriber that is waiting, and only once: a task's events
    published in one loop iteration (started, progress, finished, the end) reach the
    subscriber in one wake-up instead of one each (an ``asyncio.Queue`` per event).
    ``None`` in a batch means the hub closed (the service is draining).
    """

    __slots__ = ("_events", "_waiter")

    def __init__(self) -> None:
        self._events: deque[TaskEvent | None] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def put(self, event: TaskEvent | None) -> None:
        """Add an event; wake the subscriber if it waits."""
        self._events.append(event)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def take(self, timeout_s: float | None = None) -> list[TaskEvent | None]:
        """Every event published since the last take; waits for one first (an empty
        list when ``timeout_s`` passes without one)."""
        if not self._events:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout_s):
                    await self._waiter
            except TimeoutError:
                return []
            finally:
                self._waiter = None
        batch = list(self._events)
        self._events.clear()
        return batch


class EventHub:
    """Fan-out of task events to subscriptions, and the futures of :meth:`until_end`."""

    def __init__(self) -> None:
        self._subs: dict[int, set[Subscription]] = {}
        self._ends: dict[int, list[asyncio.Future[Task | None]]] = {}
        #: Also hands every published event to this (the other instances, when shared).
        self.forward: Callable[[TaskEvent], None] | None = None

    def add(self, task_id: int) -> Subscription:
        """A new subscription to a task's events."""
        sub = Subscription()
        self._subs.setdefault(task_id, set()).add(sub)
        return sub

    def remove(self, task_id: int, sub: Subscription) -> None:
        """Drop a subscription."""
        subs = self._subs.get(task_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[task_id]

    def listened(self, task_id: int) -> bool:
        """Whether anybody subscribes to the task (events for nobody are not built);
        with a forward (several instances), a subscriber may be on another instance."""
        return task_id in self._subs or self.forward is not None

    def until_end(self, task_id: int) -> asyncio.Future[Task | None]:
        """A future resolved with the task when a terminal status is published (None
        when the hub closes first): one wake-up per waiter, whatever the events."""
        fut: asyncio.Future[Task | None] = asyncio.get_running_loop().create_future()
        self._ends.setdefault(task_id, []).append(fut)
        return fut

    def forget_end(self, task_id: int, fut: asyncio.Future[Task | None]) -> None:
        """Drop a waiter's future (it gave up: timeout or cancellation)."""
        futs = self._ends.get(task_id)
        if futs is not None and fut in futs:
            futs.remove(fut)
            if not futs:
                del self._ends[task_id]

    def publish(self, event: TaskEvent) -> None:
        """Deliver to every subscriber of the event's task (and forward it, when shared)."""
        self.publish_local(event)
        if self.forward is not None:
            self.forward(event)

    def publish_local(self, event: TaskEvent) -> None:
        """Deliver to this instance's subscribers only (an event from another instance
        arrives here), and resolve the waiters of a terminal status."""
        for sub in self._subs.get(event.task_id, ()):
            sub.put(event)
        if event.task is not None and event.kind == "status" and event.task.terminal:
            for fut in self._ends.pop(event.task_id, ()):
                if not fut.done():
                    fut.set_result(event.task)

    def close_all(self) -> None:
        """End every subscription and wait (shutdown)."""
        for subs in self._subs.values():
            for sub in subs:
                sub.put(None)
        ends, self._ends = self._ends, {}
        for futs in ends.values():
            for fut in futs:
                if not fut.done():
                    fut.set_result(None)

    def followed(self) -> set[int]:
        """Ids of the tasks somebody here follows (subscriptions and end waiters)."""
        return set(self._subs) | set(self._ends)

    def count(self) -> int:
        """Number of live subscriptions."""
        return sum(len(s) for s in self._subs.values())


class ProgressWriter:
    """Writes ``<workspace>/<employee>/current_task.md`` off the event loop, never through
    a link an agent planted, and never failing the task (:mod:`.progressfiles`)."""

    def __init__(self, root: Path, *, enabled: bool) -> None:
        self._root = root
        self._enabled = enabled
        self._workspaces: dict[str, Path] = {}  # a Path join per task is ~3 us
        self._writer = BatchedWriter(root)  # one thread job per batch, not per file

    @property
    def enabled(self) -> bool:
        """Whether progress files are written at all."""
        return self._enabled

    def workspace(self, employee: str) -> Path:
        """The employee's folder (names are validated, so this cannot escape the root)."""
        path = self._workspaces.get(employee)
        if path is None:
            if len(self._workspaces) >= 10_000:  # bounded: employees come and go
                self._workspaces.clear()
            path = self._workspaces[employee] = self._root / employee
        return path

    async def start(self, task: Task) -> None:
        """The progress file of a task that just started."""
        doc = ProgressDoc(
            task=task.description.splitlines()[0][:200],
            assigned=task.employee,
            files=tuple(FileProgress(path=f) for f in task.files),
            checks=(True, bool(task.files), True, False, False),
            current_work=f"Task {task.id}, attempt {task.attempts}",
        )
        await self._write(task, "current_task.md", render(doc))

    async def finish(self, task: Task, files_touched: list[str]) -> None:
        """Mark the task's files done and archive the file under completed_tasks/."""
        if not self._enabled:
            return
        done = set(files_touched) | set(task.files)
        doc = ProgressDoc(
            task=task.description.splitlines()[0][:200],
            assigned=task.employee,
            files=tuple(FileProgress(path=f, percent=100, note="READY TO RELEASE")
                        for f in sorted(done)),
            checks=(True,) * len(CHECKBOXES) if task.status == "completed"
            else (True, bool(task.files), True, False, True),
            current_work=f"Task {task.id} {task.status}",
            notes=task.error or task.result or "",
        )
        stamp = time.strftime("%Y%m%d_%H%M%S", time.gmtime())
        await self._write(task, f"completed_tasks/task_{task.id}_{stamp}.md", render(doc),
                          remove="current_task.md")

    async def _write(self, task: Task, name: str, text: str, remove: str | None = None) -> None:
        if self._enabled:
            await self._writer.write(task, name, text, remove)

    async def aclose(self) -> None:
        """Wait until every queued file is written (shutdown: no archive is lost)."""
        await self._writer.aclose()
