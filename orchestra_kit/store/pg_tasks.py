"""PostgreSQL write ops for tasks: insert, the state machine, recovery, claims.

The global running limit (``max_running``) is checked under a transaction-level
advisory lock, so two instances starting tasks at once cannot both see a free slot.
One running task per employee is a unique partial index, as on SQLite.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import asyncpg

from ..errors import (
    CapacityError,
    ConflictError,
    LeaseBlockedError,
    NotFoundError,
    OrchestraError,
)
from ..models import TERMINAL_STATUSES, Task, TaskStatus
from .pg_ops import close_requests_for, lock, require_employee
from .pg_schema import lock_key
from .schema import TASK_COLS, row_to_task
from .sqlops import RecoveryReport
from .taskmerge import check_move

__all__ = ["claim", "insert_tasks", "recover", "transition"]

_INSERT = ("INSERT INTO tasks (employee, description, priority, model, mode, files, status,"
           " attempts, created_at) VALUES ($1, $2, $3, $4, $5, $6, 'queued', 0, $7) RETURNING id")


async def insert_tasks(conn: Any, tasks: Sequence[Task]) -> list[Task | OrchestraError]:
    """Insert each task whose employee exists; NotFoundError for the others."""
    out: list[Task | OrchestraError] = []
    for t in tasks:
        try:
            await require_employee(conn, t.employee, lock=True)
        except NotFoundError as e:
            out.append(e)
            continue
        task_id = await conn.fetchval(_INSERT, t.employee, t.description, t.priority, t.model,
                                      t.mode.value, json.dumps(list(t.files)), t.created_at)
        out.append(Task(id=task_id, employee=t.employee, description=t.description,
                        priority=t.priority, model=t.model, mode=t.mode, files=t.files,
                        created_at=t.created_at))
    return out


async def _check_capacity(conn: Any, schema: str, task_id: int, max_running: int) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key(schema, "running"))
    running = await conn.fetchval("SELECT COUNT(*) FROM tasks WHERE status = 'running'")
    if running >= max_running:
        raise CapacityError(f"Cannot start task {task_id}: {running} tasks already run"
                            f" (max_concurrent_tasks={max_running})",
                            details={"task_id": task_id, "running": running})


async def transition(conn: Any, schema: str, task_id: int, new: TaskStatus,
                     expect: TaskStatus | None, result: str | None, error: str | None,
                     count_attempt: bool, now: float, max_running: int | None,
                     instance: str, usage: str | None = None) -> Task:
    """Move a task (row locked first); ConflictError when illegal or not ``expect``.

    A running task whose cancel was requested (on another instance) and that would go
    back to the queue (a retry, a drain) is cancelled instead: the request wins."""
    row = await conn.fetchrow("SELECT status, instance, cancel_requested FROM tasks"
                              " WHERE id = $1 FOR UPDATE", task_id)
    if row is None:
        raise NotFoundError(f"Task {task_id} does not exist", details={"task_id": task_id})
    old = TaskStatus(row[0])
    if old == TaskStatus.RUNNING and new == TaskStatus.QUEUED and row[2] is not None:
        new, error, expect = TaskStatus.CANCELLED, row[2], None
    if old == TaskStatus.RUNNING and row[1] not in (None, instance):
        # Only the instance running a task ends it: one whose heartbeat lapsed (and whose
        # task was requeued and claimed elsewhere) cannot record a second outcome.
        raise ConflictError(f"Task {task_id} is run by instance {row[1]}, not {instance}",
                            details={"task_id": task_id, "status": old.value})
    check_move(task_id, old, new, expect)
    if new == TaskStatus.RUNNING and max_running is not None:  # row first, then the slot
        await _check_capacity(conn, schema, task_id, max_running)
    sets: list[str] = ["status = $2"]
    args: list[Any] = [task_id, new.value]
    for cond, col, value in (
            (new == TaskStatus.RUNNING, "started_at", now),
            (new == TaskStatus.RUNNING, "instance", instance),
            (new in TERMINAL_STATUSES, "finished_at", now),
            (result is not None, "result", result),
            (error is not None, "error", error),
            (usage is not None, "usage", usage)):
        if cond:
            args.append(value)
            sets.append(f"{col} = ${len(args)}")
    if new == TaskStatus.COMPLETED:
        sets.append("progress = 100")
    if count_attempt:
        sets.append("attempts = attempts + 1")
    try:
        row = await conn.fetchrow(f"UPDATE tasks SET {', '.join(sets)} WHERE id = $1"
                                  f" RETURNING {TASK_COLS}", *args)
    except asyncpg.exceptions.UniqueViolationError:  # uq_tasks_running_employee
        raise ConflictError(f"Cannot start task {task_id}: its employee already runs a task",
                            details={"task_id": task_id}) from None
    return row_to_task(row)


async def recover(conn: Any, max_attempts: int, now: float, instance: str,
                  dead_after_s: float) -> RecoveryReport:
    """Requeue (or fail) the running tasks of instances that stopped heartbeating
    ``dead_after_s`` ago (never this one's: it is alive, and runs them); release leases no
    running task holds. Safe to call periodically from every instance."""
    rows = await conn.fetch(  # a cancel requested of the dead instance wins over a retry
        "UPDATE tasks SET"
        " status = CASE WHEN cancel_requested IS NOT NULL THEN 'cancelled'"
        "  WHEN attempts >= $1 THEN 'failed' ELSE 'queued' END,"
        " error = CASE WHEN cancel_requested IS NOT NULL THEN cancel_requested"
        "  WHEN attempts >= $1 THEN 'interrupted' ELSE error END,"
        " finished_at = CASE WHEN cancel_requested IS NOT NULL OR attempts >= $1 THEN $2"
        "  ELSE finished_at END,"
        " instance = NULL"
        " WHERE status = 'running' AND instance IS DISTINCT FROM $3 AND (instance IS NULL"
        "  OR instance NOT IN (SELECT id FROM instances WHERE heartbeat_at > $2::float8 - $4))"
        " RETURNING id, status", max_attempts, now, instance, dead_after_s)
    released = await conn.fetch(
        "UPDATE file_leases SET released_at = $1 WHERE released_at IS NULL AND"
        " ((expires_at IS NOT NULL AND expires_at <= $1) OR (task_id IS NOT NULL AND task_id"
        " NOT IN (SELECT id FROM tasks WHERE status = 'running'))) RETURNING path, employee",
        now)
    await close_requests_for(conn, [(r[0], r[1]) for r in released], now)
    return RecoveryReport(
        requeued_task_ids=tuple(sorted(r[0] for r in rows if r[1] == "queued")),
        failed_task_ids=tuple(sorted(r[0] for r in rows if r[1] == "failed")),
        released_paths=tuple(sorted(r[0] for r in released)),
        cancelled_task_ids=tuple(sorted(r[0] for r in rows if r[1] == "cancelled")),
    )


async def claim(conn: Any, schema: str, task_id: int, max_running: int, now: float,
                instance: str, lease_ttl_s: float) -> Task:
    """Claim a queued task for ``instance``: its row (``FOR UPDATE SKIP LOCKED``: a row
    another instance is claiming is skipped, not waited for), a global slot, a free
    employee and its files' leases, all in one transaction; raises without claiming.

    ConflictError: claimed or ended elsewhere. CapacityError: no slot, or the employee
    runs another task (retry later). LeaseBlockedError: a file is held by another."""
    row = await conn.fetchrow("SELECT status, employee, files, description FROM tasks"
                              " WHERE id = $1 FOR UPDATE SKIP LOCKED", task_id)
    if row is None or row[0] != TaskStatus.QUEUED.value:
        raise ConflictError(f"Task {task_id} is claimed or ended elsewhere",
                            details={"task_id": task_id})
    employee, files = row[1], json.loads(row[2])
    if await conn.fetchval("SELECT 1 FROM tasks WHERE employee = $1 AND status = 'running'",
                           employee) is not None:
        raise CapacityError(f"Cannot start task {task_id}: {employee!r} runs another task",
                            details={"task_id": task_id, "employee": employee})
    if files:
        got = await lock(conn, employee, files, row[3][:200], task_id, now, now + lease_ttl_s)
        held = {p: s for p, s in got.items() if s.startswith("locked_by")}
        if held:
            raise LeaseBlockedError(f"Task {task_id} waits for files held by others",
                                    details={"task_id": task_id, "blocked": held})
    # Last, so the global lock is held only for the count, the update and the commit.
    await _check_capacity(conn, schema, task_id, max_running)
    try:
        updated = await conn.fetchrow(
            "UPDATE tasks SET status = 'running', started_at = $2, instance = $3,"
            f" attempts = attempts + 1 WHERE id = $1 RETURNING {TASK_COLS}",
            task_id, now, instance)
    except asyncpg.exceptions.UniqueViolationError:
        raise CapacityError(f"Cannot start task {task_id}: {employee!r} runs another task",
                            details={"task_id": task_id}) from None
    return row_to_task(updated)
