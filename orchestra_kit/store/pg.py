"""``PgStore``: the store on PostgreSQL (asyncpg), shareable by several service instances.

Same public methods, validation, errors and invariants as the SQLite
:class:`~orchestra_kit.store.Store` (both conform to
:class:`~orchestra_kit.store.protocol.StoreProtocol`); see docs/scale-out.md.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import (
    NotFoundError,
    OrchestraError,
    ValidationError,
)
from ..models import (
    Employee,
    FileLease,
    FileRequest,
    Smartness,
    Task,
    TaskStatus,
    normalise_path,
    validate_employee_name,
    validate_files,
    validate_smartness,
)
from . import pg_ops as ops
from . import pg_tasks
from .base import TABLES
from .checks import check_id, check_text, new_employee, new_task, task_status
from .leasecheck import lease_args, request_status
from .pg_chat import PgChatEventAPI
from .schema import (
    EMPLOYEE_COLS,
    LEASE_COLS,
    REQUEST_COLS,
    TASK_COLS,
    row_to_employee,
    row_to_lease,
    row_to_request,
    row_to_task,
)
from .sqlops import FireReport, RecoveryReport, check_limit

__all__ = ["PgStore"]

log = logging.getLogger(__name__)

_EMP, _TASKS, _LR, _REQ = ("employees",), ("tasks",), ("file_leases", "file_requests"), \
    ("file_requests",)


class PgStore(PgChatEventAPI):
    """``async with PgStore(url, settings.database, settings.flags, project_root=p) as s``."""

    # ------------------------------------------------------------------ employees

    async def hire(self, name: str, role: str, smartness: str = "normal") -> Employee:
        """Hire one employee; ConflictError if the name is taken."""
        emp = new_employee(name, role, smartness, now=self._clock())
        (result,) = ops.hire_results([emp], await self._write1(*ops.employee_rows([emp]), _EMP))
        if isinstance(result, OrchestraError):
            raise result
        return result

    async def hire_many(self, items: Sequence[Mapping[str, Any]]) -> list[Employee | OrchestraError]:
        """Hire many in ONE transaction; a result per item, in order."""
        if not isinstance(items, Sequence) or isinstance(items, str | bytes):
            raise ValidationError("employees", "must be a list of objects")
        results: list[Employee | OrchestraError | None] = [None] * len(items)
        valid: list[tuple[int, Employee]] = []
        now = self._clock()
        for i, item in enumerate(items):
            try:
                if not isinstance(item, Mapping):
                    raise ValidationError(f"employees[{i}]", "must be an object")
                valid.append((i, new_employee(item.get("name"), item.get("role"),
                                              item.get("smartness", Smartness.NORMAL.value),
                                              now=now, prefix=f"employees[{i}].")))
            except ValidationError as e:
                results[i] = e
        if valid:
            emps = [e for _, e in valid]
            done = ops.hire_results(emps, await self._write1(*ops.employee_rows(emps), _EMP))
            for (i, _), r in zip(valid, done, strict=True):
                results[i] = r
        return [r for r in results if r is not None]

    async def fire(self, name: str) -> FireReport:
        """Release leases, deny requests, cancel tasks and delete the employee, atomically."""
        validate_employee_name(name)
        now = self._clock()
        return await self._tx(lambda c: ops.fire(c, name, now), TABLES)

    async def get_employee(self, name: str) -> Employee:
        """One employee; NotFoundError when absent."""
        validate_employee_name(name)

        async def load() -> Employee | None:
            rows = await self._fetch(f"SELECT {EMPLOYEE_COLS} FROM employees WHERE name = $1",
                                     name)
            return row_to_employee(rows[0]) if rows else None

        emp = await self._cached(("employee", name), _EMP, load)
        if emp is None:
            raise NotFoundError(f"Employee {name!r} does not exist", details={"name": name})
        return emp

    async def list_employees(self, *, role: str | None = None, smartness: str | None = None,
                             limit: int = 1000, offset: int = 0) -> list[Employee]:
        """Employees in hire order, optionally filtered by role and smartness."""
        limit, offset = check_limit(limit, offset)
        sm = validate_smartness(smartness).value if smartness is not None else None
        sql = (f"SELECT {EMPLOYEE_COLS} FROM employees WHERE ($1::text IS NULL OR role = $1)"
               " AND ($2::text IS NULL OR smartness = $2) ORDER BY id LIMIT $3 OFFSET $4")

        async def load() -> tuple[Employee, ...]:
            return tuple(row_to_employee(r) for r in await self._fetch(sql, role, sm, limit,
                                                                        offset))

        return list(await self._cached(("employees", role, sm, limit, offset), _EMP, load))

    # ------------------------------------------------------------------ leases

    async def lock_files(self, employee: str, files: Sequence[str], *, description: str = "",
                         task_id: int | None = None, ttl_s: float | None = None) -> dict[str, str]:
        """Lease each path: ``locked`` | ``already_locked`` | ``locked_by:<owner>``."""
        paths, description, ttl = lease_args(self.project_root, employee, files, description,
                                             task_id, ttl_s, self.settings.lease_ttl_s)
        now = self._clock()
        return await self._tx(lambda c: ops.lock(c, employee, paths, description, task_id, now,
                                                 now + ttl), _LR)

    async def release_files(self, employee: str, files: Sequence[str] | None = None) -> list[str]:
        """Release the employee's leases on ``files`` (None: all); returns released paths."""
        validate_employee_name(employee, "employee")
        now = self._clock()
        args: list[Any] = [employee]
        if files is None:
            where = "employee = $2"
        else:
            paths = validate_files(self.project_root,
                                   files if isinstance(files, tuple) else list(files))
            if not paths:
                return []
            where = "employee = $2 AND path = ANY($3::text[])"
            args.append(paths)
        return await self._tx(lambda c: ops.release(c, where, args, now), _LR)

    async def release_task_leases(self, task_id: int) -> list[str]:
        """Release every active lease taken for ``task_id``; returns the paths."""
        check_id(task_id, "task_id")
        now = self._clock()
        return await self._tx(lambda c: ops.release(c, "task_id = $2", [task_id], now), _LR)

    async def expire_leases(self) -> int:
        """Release every lease past its expiry; returns how many."""
        now = self._clock()
        return len(await self._tx(lambda c: ops.release_expired(c, now), _LR))

    async def list_leases(self, *, employee: str | None = None) -> list[FileLease]:
        """Active (unreleased, unexpired) leases, oldest first."""
        if employee is not None:
            validate_employee_name(employee, "employee")
        now = self._clock()
        sql = (f"SELECT {LEASE_COLS} FROM file_leases WHERE released_at IS NULL"
               " AND (expires_at IS NULL OR expires_at > $1)"
               " AND ($2::text IS NULL OR employee = $2) ORDER BY id")

        async def load() -> tuple[FileLease, ...]:
            return tuple(row_to_lease(r) for r in await self._fetch(sql, now, employee))

        def valid_until(leases: tuple[FileLease, ...]) -> float | None:
            exp = [x.expires_at for x in leases if x.expires_at is not None]
            return min(exp) if exp else None

        found: tuple[FileLease, ...] = await self._cached(
            ("leases", employee), ("file_leases",), load, valid_until)
        return list(found)

    async def request_file(self, requester: str, path: str,
                           reason: str = "") -> tuple[str, FileRequest | None]:
        """Ask the holder of ``path`` for it; returns (status, request)."""
        validate_employee_name(requester, "requester")
        norm = normalise_path(self.project_root, path, "path")
        reason = check_text(reason, "reason")
        now = self._clock()
        return await self._tx(lambda c: ops.request(c, requester, norm, reason, now), _LR)

    async def approve_request(self, request_id: int, *, actor: str | None = None) -> FileLease:
        """Move the lease to the requester atomically; returns the new lease."""
        check_id(request_id, "request_id")
        now = self._clock()
        exp = now + self.settings.lease_ttl_s
        return await self._tx(lambda c: ops.approve(c, request_id, actor, now, exp), _LR)

    async def deny_request(self, request_id: int, *, actor: str | None = None) -> FileRequest:
        """Close a pending request without moving the lease."""
        check_id(request_id, "request_id")
        now = self._clock()
        return await self._tx(lambda c: ops.deny(c, request_id, actor, now), _REQ)

    async def list_requests(self, *, status: str | None = None,
                            employee: str | None = None) -> list[FileRequest]:
        """Requests, optionally by status and by employee (as requester or owner)."""
        status = request_status(status)
        if employee is not None:
            validate_employee_name(employee, "employee")
        sql = (f"SELECT {REQUEST_COLS} FROM file_requests WHERE ($1::text IS NULL OR status = $1)"
               " AND ($2::text IS NULL OR requester = $2 OR owner = $2) ORDER BY id")

        async def load() -> tuple[FileRequest, ...]:
            return tuple(row_to_request(r) for r in await self._fetch(sql, status, employee))

        return list(await self._cached(("requests", status, employee), _REQ, load))

    # ------------------------------------------------------------------ tasks

    async def create_task(self, employee: str, description: str, *, priority: int = 5,
                          model: str | None = None, mode: str = "build",
                          files: Sequence[str] = ()) -> Task:
        """Queue a task for an existing employee (NotFoundError otherwise)."""
        task = new_task({"employee": employee, "description": description, "priority": priority,
                         "model": model, "mode": mode, "files": files},
                        project_root=self.project_root, now=self._clock())
        (created,) = await self._tx(lambda c: pg_tasks.insert_tasks(c, [task]), _TASKS)
        if isinstance(created, OrchestraError):
            raise created
        return created

    async def create_tasks(self, items: Sequence[Mapping[str, Any]]) -> list[Task | OrchestraError]:
        """Create many in ONE transaction; a Task or an error per item, in order."""
        results: list[Task | OrchestraError | None] = [None] * len(items)
        valid: list[tuple[int, Task]] = []
        now = self._clock()
        for i, item in enumerate(items):
            try:
                if not isinstance(item, Mapping):
                    raise ValidationError(f"tasks[{i}]", "must be an object")
                valid.append((i, new_task(item, project_root=self.project_root, now=now,
                                          prefix=f"tasks[{i}].")))
            except ValidationError as e:
                results[i] = e
        if valid:
            done = await self._tx(lambda c: pg_tasks.insert_tasks(c, [t for _, t in valid]),
                                  _TASKS)
            for (i, _), r in zip(valid, done, strict=True):
                results[i] = r
        return [r for r in results if r is not None]

    async def get_task(self, task_id: int) -> Task:
        """One task; NotFoundError when absent."""
        async def load() -> Task | None:
            rows = await self._fetch(f"SELECT {TASK_COLS} FROM tasks WHERE id = $1", task_id)
            return row_to_task(rows[0]) if rows else None

        task = await self._cached(("task", task_id), _TASKS, load)
        if task is None:
            raise NotFoundError(f"Task {task_id} does not exist", details={"task_id": task_id})
        return task

    async def list_tasks(self, *, status: str | None = None, employee: str | None = None,
                         limit: int = 1000, offset: int = 0) -> list[Task]:
        """Tasks by id, optionally filtered by status and employee."""
        limit, offset = check_limit(limit, offset)
        st = task_status(status, "status").value if status is not None else None
        if employee is not None:
            validate_employee_name(employee, "employee")
        sql = (f"SELECT {TASK_COLS} FROM tasks WHERE ($1::text IS NULL OR status = $1)"
               " AND ($2::text IS NULL OR employee = $2) ORDER BY id LIMIT $3 OFFSET $4")

        async def load() -> tuple[Task, ...]:
            return tuple(row_to_task(r) for r in await self._fetch(sql, st, employee, limit,
                                                                    offset))

        return list(await self._cached(("tasks", st, employee, limit, offset), _TASKS, load))

    async def queued_tasks(self) -> list[Task]:
        """Queued tasks, highest priority first, FIFO within a priority."""
        sql = (f"SELECT {TASK_COLS} FROM tasks WHERE status = 'queued'"
               " ORDER BY priority DESC, id ASC")

        async def load() -> tuple[Task, ...]:
            return tuple(row_to_task(r) for r in await self._fetch(sql))

        return list(await self._cached(("queued",), _TASKS, load))

    async def transition(self, task_id: int, new: TaskStatus, *, expect: TaskStatus | None = None,
                         result: str | None = None, error: str | None = None,
                         count_attempt: bool = False, max_running: int | None = None,
                         usage: Mapping[str, Any] | None = None) -> Task:
        """Move a task along the state machine; ConflictError if illegal or not ``expect``."""
        new_s = task_status(new, "status")
        expect_s = task_status(expect, "expect") if expect is not None else None
        now = self._clock()
        usage_text = json.dumps(dict(usage), sort_keys=True) if usage is not None else None
        return await self._tx(lambda c: pg_tasks.transition(
            c, self.schema, task_id, new_s, expect_s, result, error, count_attempt, now,
            max_running, self.instance_id, usage_text), _TASKS)

    async def set_progress(self, task_id: int, progress: int) -> None:
        """Record a task's progress percentage (0-100)."""
        if isinstance(progress, bool) or not isinstance(progress, int) or not 0 <= progress <= 100:
            raise ValidationError("progress", f"must be an integer 0-100, got {progress!r}",
                                  value=progress)

        async def op(conn: Any) -> None:
            if await conn.fetchval("UPDATE tasks SET progress = $1 WHERE id = $2 RETURNING id",
                                   progress, task_id) is None:
                raise NotFoundError(f"Task {task_id} does not exist", details={"task_id": task_id})

        await self._tx(op, _TASKS)

    async def recover(self, *, max_attempts: int) -> RecoveryReport:
        """Requeue (or fail) tasks left running by this instance or by dead instances."""
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValidationError("max_attempts", f"must be a positive integer, got"
                                  f" {max_attempts!r}", value=max_attempts)
        now = self._clock()
        return await self._tx(lambda c: pg_tasks.recover(
            c, max_attempts, now, self.instance_id, self.settings.instance_timeout_s), TABLES)

    async def counts(self) -> dict[str, int]:
        """Employees, active leases, pending requests and tasks per status."""
        now = self._clock()
        statuses = [s.value for s in TaskStatus]
        sql = ("SELECT (SELECT COUNT(*) FROM employees),"
               " (SELECT COUNT(*) FROM file_leases WHERE released_at IS NULL"
               "  AND (expires_at IS NULL OR expires_at > $1)),"
               " (SELECT COUNT(*) FROM file_requests WHERE status = 'pending'),"
               " (SELECT MIN(expires_at) FROM file_leases WHERE released_at IS NULL"
               "  AND expires_at > $1), "
               + ", ".join(f"(SELECT COUNT(*) FROM tasks WHERE status = '{s}')" for s in statuses))

        async def load() -> tuple[dict[str, int], float | None]:
            (row,) = await self._fetch(sql, now)
            out = {"employees": row[0], "active_leases": row[1], "pending_requests": row[2]}
            out.update({f"tasks_{s}": n for s, n in zip(statuses, row[4:], strict=True)})
            return out, row[3]

        value, _ = await self._cached(("counts",), TABLES, load, lambda v: v[1])
        return dict(value)
