"""PostgreSQL write ops for employees and file leases (each runs inside ``PgStore._tx``).

Under READ COMMITTED with several instances writing at once, the invariants rest on the
database, never on a check-then-insert: names and active leases are inserted with
``ON CONFLICT DO NOTHING`` against unique (partial) indexes, and rows that a decision
depends on are locked (``FOR UPDATE``) before it is taken. Lock order, to keep
deadlocks rare (they are retried when they happen): a path's active lease before the
requests aimed at it; paths in sorted order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ..errors import ConflictError, NotFoundError, OrchestraError
from ..models import Employee, FileLease, FileRequest
from .leasecheck import check_own_task, check_pending
from .schema import LEASE_COLS, REQUEST_COLS, row_to_lease, row_to_request
from .sqlops import FireReport

__all__ = [
    "approve", "deny", "employee_rows", "fire", "hire_results", "lock", "release", "release_expired",
    "request", "require_employee",
]

_INSERT_EMP = ("INSERT INTO employees (name, role, smartness, status, hired_at)"
               " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],"
               " $5::float8[]) ON CONFLICT (name) DO NOTHING RETURNING name")


def employee_rows(emps: Sequence[Employee]) -> tuple[str, list[Any]]:
    """The statement and arguments that insert ``emps`` (one statement for any number)."""
    return _INSERT_EMP, [[e.name for e in emps], [e.role for e in emps],
                         [e.smartness.value for e in emps], [e.status.value for e in emps],
                         [e.hired_at for e in emps]]


def hire_results(emps: Sequence[Employee], rows: Sequence[Any]) -> list[Employee | OrchestraError]:
    """Per-employee results from the names the insert returned (first of a repeat wins)."""
    inserted = {r[0] for r in rows}
    out: list[Employee | OrchestraError] = []
    for emp in emps:
        if emp.name in inserted:
            inserted.discard(emp.name)
            out.append(emp)
        else:
            out.append(ConflictError(f"Employee {emp.name!r} already exists",
                                     details={"name": emp.name}))
    return out


async def require_employee(conn: Any, name: str, field: str = "employee",
                           *, lock: bool = False) -> None:
    """NotFoundError unless the employee exists (``lock``: FOR KEY SHARE, so no fire races)."""
    sql = "SELECT 1 FROM employees WHERE name = $1" + (" FOR KEY SHARE" if lock else "")
    if await conn.fetchval(sql, name) is None:
        raise NotFoundError(f"Employee {name!r} does not exist", details={field: name})


async def close_requests_for(conn: Any, released: Iterable[tuple[str, str]], now: float) -> None:
    """Deny pending requests aimed at leases just released ((path, owner) pairs)."""
    pairs = list(released)
    if pairs:
        await conn.execute(
            "UPDATE file_requests SET status = 'denied', resolved_at = $1"
            " FROM unnest($2::text[], $3::text[]) AS r(path, owner)"
            " WHERE status = 'pending' AND file_requests.path = r.path"
            " AND file_requests.owner = r.owner",
            now, [p for p, _ in pairs], [o for _, o in pairs])


async def release_expired(conn: Any, now: float,
                          paths: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """Release expired active leases (all, or only on ``paths``); returns (path, owner)."""
    sql = ("UPDATE file_leases SET released_at = $1 WHERE released_at IS NULL"
           " AND expires_at IS NOT NULL AND expires_at <= $1")
    args: list[Any] = [now]
    if paths is not None:
        sql += " AND path = ANY($2::text[])"
        args.append(list(paths))
    rows = await conn.fetch(sql + " RETURNING path, employee", *args)
    await close_requests_for(conn, [(r[0], r[1]) for r in rows], now)
    return [(r[0], r[1]) for r in rows]


async def fire(conn: Any, name: str, now: float) -> FireReport:
    """Lock the employee row, then release, deny, cancel and delete in one transaction."""
    if await conn.fetchval("SELECT 1 FROM employees WHERE name = $1 FOR UPDATE", name) is None:
        raise NotFoundError(f"Employee {name!r} does not exist", details={"name": name})
    released = await conn.fetch(
        "UPDATE file_leases SET released_at = $1 WHERE employee = $2 AND released_at IS NULL"
        " RETURNING path", now, name)
    denied = await conn.fetch(
        "UPDATE file_requests SET status = 'denied', resolved_at = $1"
        " WHERE status = 'pending' AND (requester = $2 OR owner = $2) RETURNING id", now, name)
    cancelled = await conn.fetch(
        "UPDATE tasks SET status = 'cancelled', error = 'employee fired', finished_at = $1"
        " WHERE employee = $2 AND status IN ('queued', 'running') RETURNING id", now, name)
    await conn.execute("DELETE FROM employees WHERE name = $1", name)
    return FireReport(name=name, released_paths=tuple(sorted(r[0] for r in released)),
                      cancelled_task_ids=tuple(sorted(r[0] for r in cancelled)),
                      denied_request_ids=tuple(sorted(r[0] for r in denied)))


_INSERT_LEASE = (
    "INSERT INTO file_leases (path, employee, description, task_id, acquired_at, expires_at)"
    " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING id"
)


async def _lock_one(conn: Any, path: str, employee: str, description: str,
                    task_id: int | None, now: float, expires_at: float) -> str:
    for _ in range(10):  # the holder may release between our insert and our look
        if await conn.fetchval(_INSERT_LEASE, path, employee, description, task_id, now,
                               expires_at) is not None:
            return "locked"
        row = await conn.fetchrow("SELECT id, employee FROM file_leases WHERE path = $1"
                                  " AND released_at IS NULL", path)
        if row is None:
            continue
        if row[1] == employee:  # holding it already: renew the expiry
            await conn.execute("UPDATE file_leases SET expires_at = GREATEST(expires_at, $1)"
                               " WHERE id = $2", expires_at, row[0])
            return "already_locked"
        return f"locked_by:{row[1]}"
    raise ConflictError(f"Cannot lease {path!r}: it changed hands too often, try again")


async def lock(conn: Any, employee: str, paths: list[str], description: str,
               task_id: int | None, now: float, expires_at: float) -> dict[str, str]:
    """Lease each path (inserted in sorted order: concurrent lockers never deadlock)."""
    await require_employee(conn, employee, lock=True)
    if task_id is not None:  # a lease tagged with a task ends with it: only its own employee's
        owner = await conn.fetchval("SELECT employee FROM tasks WHERE id = $1", task_id)
        check_own_task(owner, employee, task_id)
    await release_expired(conn, now, sorted(paths))
    got = {p: await _lock_one(conn, p, employee, description, task_id, now, expires_at)
           for p in sorted(paths)}
    return {p: got[p] for p in paths}


async def release(conn: Any, where: str, args: Sequence[Any], now: float) -> list[str]:
    """Release the active leases matching ``where`` ($2, $3 ...); returns their paths."""
    rows = await conn.fetch(f"UPDATE file_leases SET released_at = $1 WHERE released_at IS NULL"
                            f" AND {where} RETURNING path, employee", now, *args)
    await close_requests_for(conn, [(r[0], r[1]) for r in rows], now)
    return sorted(r[0] for r in rows)


async def request(conn: Any, requester: str, path: str, reason: str,
                  now: float) -> tuple[str, FileRequest | None]:
    """Ask the holder of ``path`` for it (one pending request per requester and path)."""
    await require_employee(conn, requester, "requester")
    await release_expired(conn, now, [path])
    owner = await conn.fetchval("SELECT employee FROM file_leases WHERE path = $1"
                                " AND released_at IS NULL", path)
    if owner is None:
        return "file_not_locked", None
    if owner == requester:
        return "already_owner", None
    new = await conn.fetchrow(
        "INSERT INTO file_requests (path, requester, owner, reason, status, created_at)"
        " VALUES ($1, $2, $3, $4, 'pending', $5) ON CONFLICT DO NOTHING"
        f" RETURNING {REQUEST_COLS}", path, requester, owner, reason, now)
    if new is not None:
        return f"request_sent_to:{owner}", row_to_request(new)
    existing = await conn.fetchrow(f"SELECT {REQUEST_COLS} FROM file_requests WHERE path = $1"
                                   " AND requester = $2 AND status = 'pending'", path, requester)
    return "request_already_exists", row_to_request(existing) if existing else None


async def _pending(conn: Any, request_id: int, actor: str | None) -> FileRequest:
    row = await conn.fetchrow(f"SELECT {REQUEST_COLS} FROM file_requests WHERE id = $1"
                              " FOR UPDATE", request_id)
    return check_pending(row_to_request(row) if row is not None else None, request_id, actor)


async def approve(conn: Any, request_id: int, actor: str | None, now: float,
                  expires_at: float) -> FileLease:
    """Move the lease atomically: lock the path's lease, then the request."""
    path = await conn.fetchval("SELECT path FROM file_requests WHERE id = $1", request_id)
    if path is not None:
        await release_expired(conn, now, [path])
        await conn.fetch("SELECT 1 FROM file_leases WHERE path = $1 AND released_at IS NULL"
                         " FOR UPDATE", path)
    req = await _pending(conn, request_id, actor)
    row = await conn.fetchrow("SELECT id, employee FROM file_leases WHERE path = $1"
                              " AND released_at IS NULL", req.path)
    if row is None or row[1] != req.owner:
        raise ConflictError(f"Request #{request_id} cannot be approved: {req.path!r} is no"
                            f" longer leased by {req.owner!r}", details={"path": req.path})
    await require_employee(conn, req.requester, "requester", lock=True)
    await conn.execute("UPDATE file_leases SET released_at = $1 WHERE id = $2", now, row[0])
    lease = await conn.fetchrow(
        "INSERT INTO file_leases (path, employee, description, task_id, acquired_at, expires_at)"
        f" VALUES ($1, $2, $3, NULL, $4, $5) RETURNING {LEASE_COLS}",
        req.path, req.requester, f"Approved request #{request_id}", now, expires_at)
    await conn.execute("UPDATE file_requests SET status = 'approved', resolved_at = $1"
                       " WHERE id = $2", now, request_id)
    await close_requests_for(conn, [(req.path, req.owner)], now)  # the other suitors lost
    return row_to_lease(lease)


async def deny(conn: Any, request_id: int, actor: str | None, now: float) -> FileRequest:
    """Close a pending request without moving the lease."""
    await _pending(conn, request_id, actor)
    row = await conn.fetchrow(f"UPDATE file_requests SET status = 'denied', resolved_at = $1"
                              f" WHERE id = $2 RETURNING {REQUEST_COLS}", now, request_id)
    return row_to_request(row)
