"""Pieces the scheduler composes: task events and their fan-out, progress files."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..models import Task
from ..progress import CHECKBOXES, FileProgress, ProgressDoc, render
from .progressfiles import write_progress_file

__all__ = ["EventHub", "ProgressWriter", "TaskEvent"]


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


class EventHub:
    """Fan-out of task events to subscribers' queues (unbounded: events are small and few)."""

    def __init__(self) -> None:
        self._subs: dict[int, set[asyncio.Queue[TaskEvent | None]]] = {}
        #: Also hands every published event to this (the other instances, when shared).
        self.forward: Callable[[TaskEvent], None] | None = None

    def add(self, task_id: int) -> asyncio.Queue[TaskEvent | None]:
        """A new subscription queue for a task."""
        q: asyncio.Queue[TaskEvent | None] = asyncio.Queue()
        self._subs.setdefault(task_id, set()).add(q)
        return q

    def remove(self, task_id: int, q: asyncio.Queue[TaskEvent | None]) -> None:
        """Drop a subscription."""
        subs = self._subs.get(task_id)
        if subs is not None:
            subs.discard(q)
            if not subs:
                del self._subs[task_id]

    def publish(self, event: TaskEvent) -> None:
        """Deliver to every subscriber of the event's task (and forward it, when shared)."""
        for q in self._subs.get(event.task_id, ()):
            q.put_nowait(event)
        if self.forward is not None:
            self.forward(event)

    def publish_local(self, event: TaskEvent) -> None:
        """Deliver to this instance's subscribers only (an event from another instance)."""
        for q in self._subs.get(event.task_id, ()):
            q.put_nowait(event)

    def close_all(self) -> None:
        """End every subscription (shutdown)."""
        for subs in self._subs.values():
            for q in subs:
                q.put_nowait(None)

    def count(self) -> int:
        """Number of live subscriptions."""
        return sum(len(s) for s in self._subs.values())


class ProgressWriter:
    """Writes ``<workspace>/<employee>/current_task.md`` off the event loop, never through
    a link an agent planted, and never failing the task (:mod:`.progressfiles`)."""

    def __init__(self, root: Path, *, enabled: bool) -> None:
        self._root = root
        self._enabled = enabled

    def workspace(self, employee: str) -> Path:
        """The employee's folder (names are validated, so this cannot escape the root)."""
        return self._root / employee

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
            await write_progress_file(self._root, task, name, text, remove)
