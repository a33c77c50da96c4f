"""Pieces the scheduler composes: task events and their fan-out, progress files."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..models import Task
from ..progress import CHECKBOXES, FileProgress, ProgressDoc, render

__all__ = ["EventHub", "ProgressWriter", "TaskEvent", "write_in_workspace"]

log = logging.getLogger("orchestra_kit.scheduler")


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
        """Deliver to every subscriber of the event's task."""
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
    """Writes ``<workspace>/<employee>/current_task.md`` off the event loop.

    An agent works in that folder and may plant links there, so nothing is ever written
    through one: folders are opened with ``O_NOFOLLOW`` relative to their parent, files
    are written to a fresh temporary name and renamed into place (a planted symlink or
    hard link is replaced, never written through). The progress file is a side record:
    a failure to write it (disk full, a file where a folder should be, a link) is logged,
    never raised into the task's run.
    """

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
        if not self._enabled:
            return
        try:
            await asyncio.to_thread(write_in_workspace, self._root, task.employee, name, text,
                                    remove)
        except OSError as e:
            log.warning("task %s: progress file %s/%s not written: %s", task.id, task.employee,
                        name, e)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_subdir(parent_fd: int, name: str) -> int:
    """Open (creating it) folder ``name`` inside ``parent_fd``; a link there is refused."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o755, dir_fd=parent_fd)
    return os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=parent_fd)


def write_in_workspace(root: Path, employee: str, name: str, text: str,
                       remove: str | None = None) -> None:
    """Write ``root/employee/name`` without following any link below ``root``.

    ``name`` may hold folders (``completed_tasks/x.md``). The file is written under a
    temporary name and renamed into place; ``remove`` (in the employee's folder) is
    unlinked afterwards. Raises OSError (ELOOP for a planted folder link).
    """
    root.mkdir(parents=True, exist_ok=True)
    fds = [os.open(root, _DIR_FLAGS)]  # the configured root itself may be a link
    try:
        fds.append(_open_subdir(fds[0], employee))
        *folders, filename = name.split("/")
        for folder in folders:
            fds.append(_open_subdir(fds[-1], folder))
        _replace_file(fds[-1], filename, text)
        if remove is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(remove, dir_fd=fds[1])
    finally:
        for fd in fds:
            os.close(fd)


def _replace_file(dir_fd: int, filename: str, text: str) -> None:
    tmp = f".{filename}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, _NEW_FILE_FLAGS, 0o644, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.rename(tmp, filename, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
