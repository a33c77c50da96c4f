"""One service per SQLite database: an exclusive ``flock`` on ``<database>.lock``.

Two services on one file would both recover "their" running tasks and run them twice.
The lock is taken when the store opens and dropped when it closes, or by the kernel
when the process dies (SIGKILL included), so a crash never leaves it stale. The file
holds the holder's pid for the error message; it is never deleted (deleting a lock
file lets a newcomer lock a fresh inode while the old holder still runs).
"""

from __future__ import annotations

import contextlib
import fcntl
import os

from ..errors import StoreError

__all__ = ["InstanceLock"]


class InstanceLock:
    """The exclusive lock of one database file (idempotent ``release``)."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.path = os.path.realpath(database) + ".lock"  # one lock for every spelling
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise StoreError naming the database and the holder's pid."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise StoreError(f"Cannot open database {self.database!r}: cannot create its lock"
                             f" file {self.path}: {e.strerror}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_pid(fd)
            os.close(fd)
            raise StoreError(
                f"Database {self.database} is in use by another orchestra service"
                f" (pid {holder}, lock {self.path}); stop that one first, or give this one"
                " its own database", details={"database": self.database, "pid": holder}
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (closing the descriptor releases it)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)


def _read_pid(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        return str(int(os.pread(fd, 32, 0).decode("ascii", "replace").strip()))
    return "unknown"
