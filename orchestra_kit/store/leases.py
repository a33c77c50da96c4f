"""File leases and requests: lock, release, expire, request, approve, deny, list.

The database enforces "at most one active lease per path" (a UNIQUE partial index);
these ops never check-then-insert: they insert, and a conflict names the holder.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from ..errors import ConflictError
from ..models import (
    FileLease,
    FileRequest,
    normalise_path,
    validate_employee_name,
    validate_files,
)
from .base import StoreBase
from .checks import check_id, check_text
from .leasecheck import check_own_task, check_pending, lease_args, request_status
from .schema import LEASE_COLS, REQUEST_COLS, row_to_lease, row_to_request
from .sqlops import close_requests_for, release_expired, require_employee

__all__ = ["LeaseAPI"]

_LR = ("file_leases", "file_requests")
_REQ = ("file_requests",)
_INSERT_LEASE = (
    "INSERT INTO file_leases (path, employee, description, task_id, acquired_at, expires_at)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)


def _lock(conn: sqlite3.Connection, employee: str, paths: list[str], description: str,
          task_id: int | None, now: float, expires_at: float) -> dict[str, str]:
    require_employee(conn, employee)
    if task_id is not None:
        _require_own_task(conn, employee, task_id)
    release_expired(conn, now, paths)
    out: dict[str, str] = {}
    for path in paths:
        cur = conn.execute(_INSERT_LEASE, (path, employee, description, task_id, now, expires_at))
        if cur.rowcount == 1:
            out[path] = "locked"
            continue
        lease_id, owner = conn.execute(
            "SELECT id, employee FROM file_leases WHERE path = ? AND released_at IS NULL",
            (path,)).fetchone()
        if owner == employee:  # holding it already: renew the expiry
            conn.execute("UPDATE file_leases SET expires_at = MAX(expires_at, ?) WHERE id = ?",
                         (expires_at, lease_id))
            out[path] = "already_locked"
        else:
            out[path] = f"locked_by:{owner}"
    return out


def _require_own_task(conn: sqlite3.Connection, employee: str, task_id: int) -> None:
    row = conn.execute("SELECT employee FROM tasks WHERE id = ?", (task_id,)).fetchone()
    check_own_task(row[0] if row is not None else None, employee, task_id)


def _release(conn: sqlite3.Connection, where: str, params: Sequence[Any], now: float) -> list[str]:
    rows = conn.execute(f"UPDATE file_leases SET released_at = ? WHERE released_at IS NULL"
                        f" AND {where} RETURNING path, employee", (now, *params)).fetchall()
    close_requests_for(conn, rows, now)
    return sorted(r[0] for r in rows)


def _request(conn: sqlite3.Connection, requester: str, path: str, reason: str,
             now: float) -> tuple[str, FileRequest | None]:
    require_employee(conn, requester, "requester")
    release_expired(conn, now, [path])
    row = conn.execute("SELECT employee FROM file_leases WHERE path = ? AND released_at IS NULL",
                       (path,)).fetchone()
    if row is None:
        return "file_not_locked", None
    owner = row[0]
    if owner == requester:
        return "already_owner", None
    existing = conn.execute(
        f"SELECT {REQUEST_COLS} FROM file_requests"
        " WHERE path = ? AND requester = ? AND status = 'pending'", (path, requester)).fetchone()
    if existing is not None:
        return "request_already_exists", row_to_request(existing)
    new = conn.execute(
        "INSERT INTO file_requests (path, requester, owner, reason, status, created_at)"
        f" VALUES (?, ?, ?, ?, 'pending', ?) RETURNING {REQUEST_COLS}",
        (path, requester, owner, reason, now)).fetchone()
    return f"request_sent_to:{owner}", row_to_request(new)


def _pending(conn: sqlite3.Connection, request_id: int, actor: str | None) -> FileRequest:
    row = conn.execute(f"SELECT {REQUEST_COLS} FROM file_requests WHERE id = ?",
                       (request_id,)).fetchone()
    return check_pending(row_to_request(row) if row is not None else None, request_id, actor)


def _approve(conn: sqlite3.Connection, request_id: int, actor: str | None, now: float,
             expires_at: float) -> FileLease:
    req = _pending(conn, request_id, actor)
    release_expired(conn, now, [req.path])
    row = conn.execute("SELECT id, employee FROM file_leases WHERE path = ? AND released_at IS NULL",
                       (req.path,)).fetchone()
    if row is None or row[1] != req.owner:
        raise ConflictError(f"Request #{request_id} cannot be approved: {req.path!r} is no"
                            f" longer leased by {req.owner!r}", details={"path": req.path})
    conn.execute("UPDATE file_leases SET released_at = ? WHERE id = ?", (now, row[0]))
    lease = conn.execute(
        "INSERT INTO file_leases (path, employee, description, task_id, acquired_at, expires_at)"
        f" VALUES (?, ?, ?, NULL, ?, ?) RETURNING {LEASE_COLS}",
        (req.path, req.requester, f"Approved request #{request_id}", now, expires_at)).fetchone()
    conn.execute("UPDATE file_requests SET status = 'approved', resolved_at = ? WHERE id = ?",
                 (now, request_id))
    close_requests_for(conn, [(req.path, req.owner)], now)  # the other suitors lost
    return row_to_lease(lease)


def _deny(conn: sqlite3.Connection, request_id: int, actor: str | None, now: float) -> FileRequest:
    _pending(conn, request_id, actor)
    row = conn.execute(f"UPDATE file_requests SET status = 'denied', resolved_at = ? WHERE id = ?"
                       f" RETURNING {REQUEST_COLS}", (now, request_id)).fetchone()
    return row_to_request(row)


class LeaseAPI(StoreBase):
    """File lease and request methods of :class:`~orchestra_kit.store.Store`."""

    async def lock_files(
        self, employee: str, files: Sequence[str], *, description: str = "",
        task_id: int | None = None, ttl_s: float | None = None,
    ) -> dict[str, str]:
        """Lease each path: ``locked`` | ``already_locked`` | ``locked_by:<owner>``."""
        paths, description, ttl = lease_args(self.project_root, employee, files, description,
                                             task_id, ttl_s, self.settings.lease_ttl_s)
        now = self._clock()
        result: dict[str, str] = await self._write(
            lambda c: _lock(c, employee, paths, description, task_id, now, now + ttl), _LR)
        return result

    async def release_files(self, employee: str, files: Sequence[str] | None = None) -> list[str]:
        """Release the employee's leases on ``files`` (None: all); returns released paths."""
        validate_employee_name(employee, "employee")
        now = self._clock()
        if files is None:
            where, params = "employee = ?", [employee]
        else:
            paths = validate_files(self.project_root,
                                   files if isinstance(files, tuple) else list(files))
            if not paths:
                return []
            where = f"employee = ? AND path IN ({','.join('?' * len(paths))})"
            params = [employee, *paths]
        released: list[str] = await self._write(lambda c: _release(c, where, params, now), _LR)
        return released

    async def release_task_leases(self, task_id: int) -> list[str]:
        """Release every active lease taken for ``task_id``; returns the paths."""
        check_id(task_id, "task_id")
        now = self._clock()
        released: list[str] = await self._write(
            lambda c: _release(c, "task_id = ?", [task_id], now), _LR)
        return released

    async def expire_leases(self) -> int:
        """Release every lease past its expiry; returns how many."""
        now = self._clock()
        rows: list[Any] = await self._write(lambda c: release_expired(c, now), _LR)
        return len(rows)

    async def list_leases(self, *, employee: str | None = None) -> list[FileLease]:
        """Active (unreleased, unexpired) leases, oldest first."""
        if employee is not None:
            validate_employee_name(employee, "employee")
        now = self._clock()
        sql = (f"SELECT {LEASE_COLS} FROM file_leases WHERE released_at IS NULL"
               " AND (expires_at IS NULL OR expires_at > ?)")
        params: list[Any] = [now]
        if employee is not None:
            sql += " AND employee = ?"
            params.append(employee)

        async def load() -> tuple[FileLease, ...]:
            return tuple(row_to_lease(r) for r in await self._fetch(sql + " ORDER BY id", params))

        def valid_until(leases: tuple[FileLease, ...]) -> float | None:
            exp = [x.expires_at for x in leases if x.expires_at is not None]
            return min(exp) if exp else None

        found: tuple[FileLease, ...] = await self._cached(
            ("leases", employee), ("file_leases",), load, valid_until)
        return list(found)

    async def request_file(
        self, requester: str, path: str, reason: str = ""
    ) -> tuple[str, FileRequest | None]:
        """Ask the holder of ``path`` for it; returns (status, request)."""
        validate_employee_name(requester, "requester")
        norm = normalise_path(self.project_root, path, "path")
        reason = check_text(reason, "reason")
        now = self._clock()
        out: tuple[str, FileRequest | None] = await self._write(
            lambda c: _request(c, requester, norm, reason, now), _LR)
        return out

    async def approve_request(self, request_id: int, *, actor: str | None = None) -> FileLease:
        """Move the lease to the requester atomically; returns the new lease."""
        check_id(request_id, "request_id")
        now = self._clock()
        exp = now + self.settings.lease_ttl_s
        lease: FileLease = await self._write(lambda c: _approve(c, request_id, actor, now, exp),
                                             _LR)
        return lease

    async def deny_request(self, request_id: int, *, actor: str | None = None) -> FileRequest:
        """Close a pending request without moving the lease."""
        check_id(request_id, "request_id")
        now = self._clock()
        req: FileRequest = await self._write(lambda c: _deny(c, request_id, actor, now), _REQ,
                                             savepoint=False)
        return req

    async def list_requests(
        self, *, status: str | None = None, employee: str | None = None
    ) -> list[FileRequest]:
        """Requests, optionally by status and by employee (as requester or owner)."""
        where, params = [], []
        if status is not None:
            params.append(request_status(status))
            where.append("status = ?")
        if employee is not None:
            validate_employee_name(employee, "employee")
            where.append("(requester = ? OR owner = ?)")
            params += [employee, employee]
        sql = f"SELECT {REQUEST_COLS} FROM file_requests"
        sql += (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"

        async def load() -> tuple[FileRequest, ...]:
            return tuple(row_to_request(r) for r in await self._fetch(sql, params))

        return list(await self._cached(("requests", status, employee), _REQ, load))
