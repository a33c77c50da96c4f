"""Synchronous SQL helpers shared by write ops (they run on the writer thread)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import NotFoundError, ValidationError

__all__ = [
    "FireReport",
    "RecoveryReport",
    "check_limit",
    "close_requests_for",
    "release_expired",
    "require_employee",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class FireReport:
    """What firing an employee did, in the same transaction as the delete."""

    name: str
    released_paths: tuple[str, ...] = ()
    cancelled_task_ids: tuple[int, ...] = ()
    denied_request_ids: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "released_paths": list(self.released_paths),
            "cancelled_task_ids": list(self.cancelled_task_ids),
            "denied_request_ids": list(self.denied_request_ids),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class RecoveryReport:
    """What start-up recovery did: tasks left running are requeued or failed."""

    requeued_task_ids: tuple[int, ...] = ()
    failed_task_ids: tuple[int, ...] = ()
    released_paths: tuple[str, ...] = ()
    #: PostgreSQL: tasks of dead instances whose cancel had been requested
    cancelled_task_ids: tuple[int, ...] = ()

    @property
    def requeued(self) -> int:
        """How many tasks went back to the queue."""
        return len(self.requeued_task_ids)

    @property
    def failed(self) -> int:
        """How many tasks failed with error 'interrupted' (out of attempts)."""
        return len(self.failed_task_ids)

    @property
    def released_leases(self) -> int:
        """How many leases were released."""
        return len(self.released_paths)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "requeued_task_ids": list(self.requeued_task_ids),
            "failed_task_ids": list(self.failed_task_ids),
            "cancelled_task_ids": list(self.cancelled_task_ids),
            "released_paths": list(self.released_paths),
        }


def require_employee(conn: sqlite3.Connection, name: str, field: str = "employee") -> None:
    """NotFoundError unless the employee exists (inside the caller's transaction)."""
    if conn.execute("SELECT 1 FROM employees WHERE name = ?", (name,)).fetchone() is None:
        raise NotFoundError(f"Employee {name!r} does not exist", details={field: name})


def close_requests_for(
    conn: sqlite3.Connection, released: Iterable[tuple[str, str]], now: float
) -> None:
    """Deny pending requests aimed at leases that were just released ((path, owner) pairs).

    A request targets one owner's lease; once that lease is gone the request can never
    be approved, so it is closed instead of staying pending forever.
    """
    conn.executemany(
        "UPDATE file_requests SET status = 'denied', resolved_at = ?"
        " WHERE status = 'pending' AND path = ? AND owner = ?",
        [(now, path, owner) for path, owner in released],
    )


def release_expired(
    conn: sqlite3.Connection, now: float, paths: Sequence[str] | None = None
) -> list[tuple[str, str]]:
    """Release expired active leases (all, or only on ``paths``); returns (path, owner)."""
    sql = ("UPDATE file_leases SET released_at = ? WHERE released_at IS NULL"
           " AND expires_at IS NOT NULL AND expires_at <= ?")
    params: list[Any] = [now, now]
    if paths is not None:
        sql += f" AND path IN ({','.join('?' * len(paths))})"
        params.extend(paths)
    rows = conn.execute(sql + " RETURNING path, employee", params).fetchall()
    if rows:
        close_requests_for(conn, rows, now)
    return [(r[0], r[1]) for r in rows]


def check_limit(limit: Any, offset: Any) -> tuple[int, int]:
    """Validated (limit, offset) for list queries."""
    for field, value, hi in (("limit", limit, 10_000), ("offset", offset, None)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValidationError(field, f"must be a non-negative integer, got {value!r}",
                                  value=value)
        if hi is not None and value > hi:
            raise ValidationError(field, f"must be at most {hi}, got {value}", value=value)
    return limit, offset
