"""Progress files in an employee's workspace, written without following any link.

An agent works in its workspace and may plant links there (``current_task.md`` to a file
elsewhere, ``completed_tasks`` to a folder elsewhere), so nothing here is ever written
through one: folders are opened with ``O_NOFOLLOW`` relative to their parent's
descriptor, and a file is written under a fresh temporary name (``O_EXCL|O_NOFOLLOW``)
then renamed into place, which replaces a planted symlink or hard link instead of
writing through it. A progress file is a side record: a failure (disk full, a file where
a folder should be, a link) is logged and never raised into the task's run, so the
task's end is always published.

Writes are batched (:class:`BatchedWriter`): one worker-thread job writes every file
queued while the previous job ran, opening the root and each folder once per job rather
than once per file, so the thread hop and the folder opens are shared by every task
that ends in the same few milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from ..models import Task

__all__ = ["BatchedWriter", "WriteItem", "write_batch"]

log = logging.getLogger("orchestra_kit.scheduler")


class WriteItem(NamedTuple):
    """One file to write: ``root/employee/name``, then ``remove`` unlinked (optional)."""

    employee: str
    name: str
    text: str
    remove: str | None = None


def _log_failure(task_id: int, employee: str, name: str, e: BaseException) -> None:
    log.warning("task %s: progress file %s/%s not written: %s", task_id, employee, name, e)


class BatchedWriter:
    """Queues progress-file writes and runs them in worker-thread jobs, one job in flight
    at a time: the files queued meanwhile form the next job. Files are written in the
    order they were queued (so per employee too). :meth:`write` returns once its file is
    written (or its failure logged); :meth:`aclose` waits for everything queued."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._queue: list[tuple[int, WriteItem, asyncio.Future[None]]] = []
        self._job: asyncio.Task[None] | None = None
        self.jobs = 0  # worker-thread jobs run (observability, tests)
        self.files = 0  # files attempted in them

    async def write(self, task: Task, name: str, text: str, remove: str | None = None) -> None:
        """Queue ``root/<employee>/name`` and wait until its job has run; never raises
        a write failure (it is logged)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((task.id, WriteItem(task.employee, name, text, remove), fut))
        if self._job is None:
            self._job = asyncio.create_task(self._run_jobs(), name="progress-files")
        await fut  # cancelled: the file is still written (the job does not depend on us)

    async def aclose(self) -> None:
        """Wait until every queued file is written (shutdown)."""
        while self._job is not None:  # wait(): the job's own failure is not ours to raise
            await asyncio.wait({self._job})

    async def _run_jobs(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                results: Sequence[BaseException | None] = ()
                try:
                    results = await asyncio.to_thread(write_batch, self._root,
                                                      [item for _, item, _ in batch])
                except BaseException as e:  # the thread itself failed, or we were cancelled
                    results = [e] * len(batch)
                    raise
                finally:
                    self.jobs += 1
                    self.files += len(batch)
                    for (task_id, item, fut), error in zip(batch, results, strict=True):
                        if error is not None:
                            _log_failure(task_id, item.employee, item.name, error)
                        if not fut.done():
                            fut.set_result(None)
        finally:
            self._job = None
            for _, _, fut in self._queue:  # only left when cancelled (loop shutdown)
                if not fut.done():
                    fut.cancel()


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_subdir(parent_fd: int, name: str) -> int:
    """Open (creating it) folder ``name`` inside ``parent_fd``; a link there is refused."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o755, dir_fd=parent_fd)
    return os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=parent_fd)


def write_batch(root: Path, items: Sequence[WriteItem]) -> list[Exception | None]:
    """Write each item's ``root/employee/name`` in order, without following any link
    below ``root`` (folders opened with ``O_NOFOLLOW``, created when missing, each once
    per batch; the file written under a temporary name and renamed into place), then
    unlink its ``remove`` in the employee's folder. Returns per item None or the error
    that stopped it (OSError, ELOOP for a planted folder link; ValueError). Runs in a
    worker thread."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        root_fd = os.open(root, _DIR_FLAGS)  # the configured root itself may be a link
    except OSError as e:
        return [e] * len(items)
    folders: dict[tuple[str, ...], int] = {}  # (employee, folder, ...) -> open descriptor
    results: list[Exception | None] = []
    try:
        for item in items:
            try:
                *subdirs, filename = item.name.split("/")
                fd = root_fd
                key: tuple[str, ...] = ()
                for part in (item.employee, *subdirs):
                    key = (*key, part)
                    opened = folders.get(key)
                    if opened is None:  # a failure is not remembered: the next item retries
                        opened = folders[key] = _open_subdir(fd, part)
                    fd = opened
                _replace_file(fd, filename, item.text)
                if item.remove is not None:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(item.remove, dir_fd=folders[(item.employee,)])
            except (OSError, ValueError) as e:
                results.append(e)
            else:
                results.append(None)
    finally:
        for fd in folders.values():
            os.close(fd)
        os.close(root_fd)
    return results


def _replace_file(dir_fd: int, filename: str, text: str) -> None:
    tmp = f".{filename}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, _NEW_FILE_FLAGS, 0o644, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as f:
            f.write(text)
        os.rename(tmp, filename, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
