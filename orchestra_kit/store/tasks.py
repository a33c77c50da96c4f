"""Tasks: create (one or many), the state machine, progress, recovery, counts."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import CapacityError, ConflictError, NotFoundError, OrchestraError, ValidationError
from ..models import (
    TERMINAL_STATUSES,
    Task,
    TaskStatus,
    validate_employee_name,
)
from .base import TABLES, StoreBase
from .checks import new_task, task_status
from .schema import TASK_COLS, row_to_task
from .sqlops import RecoveryReport, check_limit, close_requests_for, require_employee
from .taskmerge import Move, check_move, created, merged_task_writes
from .writer import MergeFn, WriteFn

__all__ = ["TaskAPI"]

_TASKS = ("tasks",)
_INSERT = ("INSERT INTO tasks (employee, description, priority, model, mode, files, status,"
           " attempts, created_at) VALUES (?, ?, ?, ?, ?, ?, 'queued', 0, ?) RETURNING id")


def _insert(conn: sqlite3.Connection, t: Task) -> Task:
    require_employee(conn, t.employee)
    (task_id,) = conn.execute(_INSERT, (t.employee, t.description, t.priority, t.model,
                                        t.mode.value, json.dumps(list(t.files)),
                                        t.created_at)).fetchone()
    return created(t, task_id)


def _insert_many(conn: sqlite3.Connection, tasks: list[Task]) -> list[Task | OrchestraError]:
    out: list[Task | OrchestraError] = []
    for t in tasks:
        try:
            out.append(_insert(conn, t))
        except NotFoundError as e:
            out.append(e)
    return out


def _check_capacity(conn: sqlite3.Connection, task_id: int, max_running: int | None) -> None:
    if max_running is None:
        return
    (running,) = conn.execute("SELECT COUNT(*) FROM tasks WHERE status = 'running'").fetchone()
    if running >= max_running:
        raise CapacityError(f"Cannot start task {task_id}: {running} tasks already run"
                            f" (max_concurrent_tasks={max_running})",
                            details={"task_id": task_id, "running": running})


def _transition(conn: sqlite3.Connection, task_id: int, new: TaskStatus,
                expect: TaskStatus | None, result: str | None, error: str | None,
                count_attempt: bool, now: float, max_running: int | None = None,
                usage: str | None = None) -> Task:
    row = conn.execute("SELECT status FROM tasks WHERE id = ?", (task_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"Task {task_id} does not exist", details={"task_id": task_id})
    check_move(task_id, TaskStatus(row[0]), new, expect)
    sets: list[str] = ["status = ?"]
    params: list[Any] = [new.value]
    if new == TaskStatus.RUNNING:
        _check_capacity(conn, task_id, max_running)
        sets.append("started_at = ?")
        params.append(now)
    if new in TERMINAL_STATUSES:
        sets.append("finished_at = ?")
        params.append(now)
    if new == TaskStatus.COMPLETED:
        sets.append("progress = 100")
    for col, value in (("result", result), ("error", error), ("usage", usage)):
        if value is not None:
            sets.append(f"{col} = ?")
            params.append(value)
    if count_attempt:
        sets.append("attempts = attempts + 1")
    try:
        row = conn.execute(f"UPDATE tasks SET {', '.join(sets)} WHERE id = ? RETURNING {TASK_COLS}",
                           (*params, task_id)).fetchone()
    except sqlite3.IntegrityError as e:  # uq_tasks_running_employee: one running per employee
        raise ConflictError(f"Cannot start task {task_id}: its employee already runs a task",
                            details={"task_id": task_id, "reason": str(e)}) from None
    return row_to_task(row)


_PROGRESS_CHUNK = 5000  # rows per statement: 2 parameters each, under SQLite's 32,766


def _set_progress_rows(conn: sqlite3.Connection, rows: list[tuple[int, int]]) -> None:
    """``(task id, percent)`` rows, only where the task still runs: one UPDATE per 5,000
    rows (``executemany`` is a call into SQLite per row, each a GIL round trip)."""
    for start in range(0, len(rows), _PROGRESS_CHUNK):
        chunk = rows[start:start + _PROGRESS_CHUNK]
        conn.execute("UPDATE tasks SET progress = v.column2 FROM (VALUES "
                     + ",".join(["(?, ?)"] * len(chunk))
                     + ") AS v WHERE tasks.id = v.column1 AND tasks.status = 'running'",
                     [x for row in chunk for x in row])


def _recover(conn: sqlite3.Connection, max_attempts: int, now: float) -> RecoveryReport:
    rows = conn.execute(
        "UPDATE tasks SET"
        " status = CASE WHEN attempts >= :max THEN 'failed' ELSE 'queued' END,"
        " error = CASE WHEN attempts >= :max THEN 'interrupted' ELSE error END,"
        " finished_at = CASE WHEN attempts >= :max THEN :now ELSE finished_at END"
        " WHERE status = 'running' RETURNING id, status", {"max": max_attempts, "now": now},
    ).fetchall()
    released = conn.execute(
        "UPDATE file_leases SET released_at = :now WHERE released_at IS NULL AND"
        " ((expires_at IS NOT NULL AND expires_at <= :now) OR (task_id IS NOT NULL AND task_id"
        " NOT IN (SELECT id FROM tasks WHERE status = 'running'))) RETURNING path, employee",
        {"now": now}).fetchall()
    close_requests_for(conn, released, now)
    return RecoveryReport(
        requeued_task_ids=tuple(sorted(r[0] for r in rows if r[1] == "queued")),
        failed_task_ids=tuple(sorted(r[0] for r in rows if r[1] == "failed")),
        released_paths=tuple(sorted(r[0] for r in released)),
    )


class TaskAPI(StoreBase):
    """Task methods of :class:`~orchestra_kit.store.Store`."""

    def _new_task(self, item: Mapping[str, Any], prefix: str = "") -> Task:
        return new_task(item, project_root=self.project_root, now=self._clock(), prefix=prefix)

    async def create_task(
        self, employee: str, description: str, *, priority: int = 5, model: str | None = None,
        mode: str = "build", files: Sequence[str] = (),
    ) -> Task:
        """Queue a task for an existing employee (NotFoundError otherwise)."""
        task = self._new_task({"employee": employee, "description": description,
                               "priority": priority, "model": model, "mode": mode,
                               "files": files})
        created: Task = await self._write(lambda c: _insert(c, task), _TASKS, savepoint=False,
                                          merge=merged_task_writes, payload=task)
        return created

    async def create_tasks(self, items: Sequence[Mapping[str, Any]]) -> list[Task | OrchestraError]:
        """Create many in ONE transaction; a Task or an error per item, in order."""
        results: list[Task | OrchestraError | None] = [None] * len(items)
        valid: list[tuple[int, Task]] = []
        for i, item in enumerate(items):
            try:
                if not isinstance(item, Mapping):
                    raise ValidationError(f"tasks[{i}]", "must be an object")
                valid.append((i, self._new_task(item, f"tasks[{i}].")))
            except ValidationError as e:
                results[i] = e
        if valid:
            tasks = [t for _, t in valid]
            done = await self._write(lambda c: _insert_many(c, tasks), _TASKS)
            for (i, _), r in zip(valid, done, strict=True):
                results[i] = r
        return [r for r in results if r is not None]

    async def get_task(self, task_id: int) -> Task:
        """One task; NotFoundError when absent."""
        async def load() -> Task | None:
            rows = await self._fetch(f"SELECT {TASK_COLS} FROM tasks WHERE id = ?", (task_id,))
            return row_to_task(rows[0]) if rows else None

        task = await self._cached(("task", task_id), _TASKS, load)
        if task is None:
            raise NotFoundError(f"Task {task_id} does not exist", details={"task_id": task_id})
        return task

    async def list_tasks(
        self, *, status: str | None = None, employee: str | None = None,
        limit: int = 1000, offset: int = 0,
    ) -> list[Task]:
        """Tasks by id, optionally filtered by status and employee."""
        limit, offset = check_limit(limit, offset)
        where, params = [], []
        if status is not None:
            where.append("status = ?")
            params.append(task_status(status, "status").value)
        if employee is not None:
            where.append("employee = ?")
            params.append(validate_employee_name(employee, "employee"))
        sql = f"SELECT {TASK_COLS} FROM tasks"
        sql += (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id LIMIT ? OFFSET ?"

        async def load() -> tuple[Task, ...]:
            return tuple(row_to_task(r) for r in await self._fetch(sql, (*params, limit, offset)))

        return list(await self._cached(("tasks", status, employee, limit, offset), _TASKS, load))

    async def queued_tasks(self) -> list[Task]:
        """Queued tasks, highest priority first, FIFO within a priority."""
        sql = (f"SELECT {TASK_COLS} FROM tasks WHERE status = 'queued'"
               " ORDER BY priority DESC, id ASC")

        async def load() -> tuple[Task, ...]:
            return tuple(row_to_task(r) for r in await self._fetch(sql))

        return list(await self._cached(("queued",), _TASKS, load))

    async def transition(
        self, task_id: int, new: TaskStatus, *, expect: TaskStatus | None = None,
        result: str | None = None, error: str | None = None, count_attempt: bool = False,
        max_running: int | None = None, usage: Mapping[str, Any] | None = None,
    ) -> Task:
        """Move a task along the state machine; ConflictError if illegal or not ``expect``.

        With ``max_running``, a move to running is refused (CapacityError) when that many
        tasks already run. ``usage`` (what the agent run cost) is stored as JSON on the
        task, replacing an earlier attempt's."""
        t0 = time.perf_counter()
        try:
            fn, merge, payload = self._move_op(task_id, new, expect, result, error,
                                               count_attempt, max_running, usage)
            task: Task = await self._submit(fn, _TASKS, savepoint=False, merge=merge,
                                            payload=payload)
        finally:
            self._write_latency_s.append(time.perf_counter() - t0)
        return task

    def transition_soon(self, task_id: int, new: TaskStatus, *,
                        expect: TaskStatus | None = None,
                        count_attempt: bool = False) -> asyncio.Future[Task]:
        """:meth:`transition`, queued now without a coroutine or task: the future resolves
        (or fails) once the move committed. The scheduler's move to running, which it
        issues as the agent starts and awaits later."""
        fn, merge, payload = self._move_op(task_id, new, expect, None, None, count_attempt,
                                           None, None)
        return self._submit(fn, _TASKS, savepoint=False, merge=merge, payload=payload)

    def _move_op(self, task_id: int, new: TaskStatus, expect: TaskStatus | None,
                 result: str | None, error: str | None, count_attempt: bool,
                 max_running: int | None, usage: Mapping[str, Any] | None
                 ) -> tuple[WriteFn, MergeFn | None, Move | None]:
        """The writer's function for a move, and its merged form when it has one."""
        new_s = task_status(new, "status")
        expect_s = task_status(expect, "expect") if expect is not None else None
        now = self._clock()
        usage_text = json.dumps(dict(usage), sort_keys=True) if usage is not None else None
        # Moves of many tasks in one batch run merged (.taskmerge); one that checks the
        # running limit reads a count the others may change, so it runs alone.
        mergeable = max_running is None
        return (lambda c: _transition(c, task_id, new_s, expect_s, result, error, count_attempt,
                                      now, max_running, usage_text),
                merged_task_writes if mergeable else None,
                Move(task_id, new_s, expect_s, result, error, count_attempt, now, usage_text)
                if mergeable else None)

    async def set_progress(self, task_id: int, progress: int) -> None:
        """Record a task's progress percentage (0-100)."""
        if isinstance(progress, bool) or not isinstance(progress, int) or not 0 <= progress <= 100:
            raise ValidationError("progress", f"must be an integer 0-100, got {progress!r}",
                                  value=progress)

        def op(conn: sqlite3.Connection) -> None:
            cur = conn.execute("UPDATE tasks SET progress = ? WHERE id = ?", (progress, task_id))
            if cur.rowcount == 0:
                raise NotFoundError(f"Task {task_id} does not exist", details={"task_id": task_id})

        await self._write(op, _TASKS, savepoint=False)

    async def set_progress_many(self, progress: Mapping[int, int]) -> None:
        """Record the progress of many running tasks in one write; a task that is no
        longer running keeps what its end wrote (a late flush never undoes a 100 %)."""
        for task_id, pct in progress.items():
            if isinstance(pct, bool) or not isinstance(pct, int) or not 0 <= pct <= 100:
                raise ValidationError(f"progress[{task_id}]",
                                      f"must be an integer 0-100, got {pct!r}", value=pct)
        rows = [(task_id, pct) for task_id, pct in progress.items()]
        if rows:
            await self._write(lambda c: _set_progress_rows(c, rows), _TASKS)

    async def recover(self, *, max_attempts: int) -> RecoveryReport:
        """Start-up: requeue (or fail, 'interrupted') tasks left running; free stale leases."""
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValidationError("max_attempts", f"must be a positive integer, got"
                                  f" {max_attempts!r}", value=max_attempts)
        now = self._clock()
        report: RecoveryReport = await self._write(lambda c: _recover(c, max_attempts, now),
                                                   TABLES)
        return report

    async def counts(self) -> dict[str, int]:
        """Employees, active leases, pending requests and tasks per status.

        Row counts are kept by triggers in the ``row_counts`` table, in the transaction
        of the write that changes them (schema step 3), so this reads a dozen rows
        however many tasks the table holds; only active leases, which expire with time,
        are counted (from the small partial index of unreleased leases)."""
        now = self._clock()
        sql = ("SELECT name, n FROM row_counts UNION ALL"
               " SELECT 'active_leases', COUNT(*) FROM file_leases WHERE released_at IS NULL"
               "  AND (expires_at IS NULL OR expires_at > :now) UNION ALL"
               " SELECT 'lease_expiry', MIN(expires_at) FROM file_leases"
               "  WHERE released_at IS NULL AND expires_at > :now")

        async def load() -> tuple[dict[str, int], float | None]:
            rows = dict(await self._fetch(sql, {"now": now}))
            expiry = rows.pop("lease_expiry", None)
            out = {"employees": rows.get("employees", 0),
                   "active_leases": rows.get("active_leases", 0),
                   "pending_requests": rows.get("pending_requests", 0)}
            out.update({f"tasks_{s.value}": rows.get(f"tasks_{s.value}", 0) for s in TaskStatus})
            return out, expiry

        value, _ = await self._cached(("counts",), TABLES, load, lambda v: v[1])
        return dict(value)
