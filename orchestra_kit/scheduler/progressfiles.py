"""Progress files in an employee's workspace, written without following any link.

An agent works in its workspace and may plant links there (``current_task.md`` to a file
elsewhere, ``completed_tasks`` to a folder elsewhere), so nothing here is ever written
through one: folders are opened with ``O_NOFOLLOW`` relative to their parent's
descriptor, and a file is written under a fresh temporary name (``O_EXCL|O_NOFOLLOW``)
then renamed into place, which replaces a planted symlink or hard link instead of
writing through it. A progress file is a side record: :func:`write_progress_file` logs
a failure (disk full, a file where a folder should be, a link) and never raises it into
the task's run, so the task's end is always published.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from pathlib import Path

from ..models import Task

__all__ = ["write_in_workspace", "write_progress_file"]

log = logging.getLogger("orchestra_kit.scheduler")


async def write_progress_file(root: Path, task: Task, name: str, text: str,
                              remove: str | None = None) -> None:
    """Write ``root/<employee>/name`` off the loop; a failure is logged, not raised."""
    try:
        await asyncio.to_thread(write_in_workspace, root, task.employee, name, text, remove)
    except (OSError, ValueError) as e:  # ValueError: text that cannot be encoded
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
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as f:
            f.write(text)
        os.rename(tmp, filename, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
