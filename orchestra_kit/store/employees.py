"""Employees: hire (one or many), fire (with its cascade), get, list."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ConflictError, NotFoundError, OrchestraError, ValidationError
from ..models import (
    Employee,
    Smartness,
    validate_employee_name,
    validate_smartness,
)
from .base import TABLES, StoreBase
from .checks import new_employee
from .schema import EMPLOYEE_COLS, row_to_employee
from .sqlops import FireReport, check_limit

__all__ = ["EmployeeAPI"]

_EMP = ("employees",)
_INSERT = ("INSERT INTO employees (name, role, smartness, status, hired_at) VALUES (?, ?, ?, ?, ?)"
           " ON CONFLICT (name) DO NOTHING")


def _insert(conn: sqlite3.Connection, emp: Employee) -> Employee:
    cur = conn.execute(_INSERT, (emp.name, emp.role, emp.smartness.value, emp.status.value,
                                 emp.hired_at))
    if cur.rowcount != 1:
        raise ConflictError(f"Employee {emp.name!r} already exists", details={"name": emp.name})
    return emp


_INSERT_ROWS = "INSERT INTO employees (name, role, smartness, status, hired_at) VALUES "
_MERGE_CHUNK = 500  # rows per statement: 5 parameters each, far below SQLite's limit


def _insert_merged(conn: sqlite3.Connection, emps: list[Employee]) -> list[tuple[bool, Any]]:
    """Many single hires as multi-row INSERTs; the first of duplicate names wins.

    A constant number of ``sqlite3`` calls per chunk, whatever its size: one query for
    the names already taken, one INSERT of the others. Each call (and each row fetched)
    releases the GIL, and the writer then waits for the event loop to hand it back, so
    ``RETURNING`` one row per hire cost one GIL round trip per hire. Should the INSERT
    meet a name taken after all (it cannot: this thread is the only writer), it fails
    whole and the writer retries the ops one by one."""
    out: list[tuple[bool, Any]] = []
    for start in range(0, len(emps), _MERGE_CHUNK):
        chunk = emps[start:start + _MERGE_CHUNK]
        taken = _taken_names(conn, [e.name for e in chunk])
        fresh: list[Employee] = []
        for emp in chunk:
            if emp.name in taken:
                out.append((False, ConflictError(f"Employee {emp.name!r} already exists",
                                                 details={"name": emp.name})))
            else:
                taken.add(emp.name)  # a later row of the same name loses to this one
                fresh.append(emp)
                out.append((True, emp))
        if fresh:
            sql = _INSERT_ROWS + ",".join(["(?, ?, ?, ?, ?)"] * len(fresh))
            conn.execute(sql, [v for e in fresh for v in (e.name, e.role, e.smartness.value,
                                                         e.status.value, e.hired_at)])
    return out


def _taken_names(conn: sqlite3.Connection, names: list[str]) -> set[str]:
    """Which of ``names`` are stored, in one row (one fetch, not one per name)."""
    sql = ("SELECT json_group_array(name) FROM employees WHERE name IN ("
           + ",".join("?" * len(names)) + ")")
    (found,) = conn.execute(sql, names).fetchone()
    return set(json.loads(found))


def _insert_many(conn: sqlite3.Connection, emps: list[Employee]) -> list[Employee | OrchestraError]:
    out: list[Employee | OrchestraError] = []
    for emp in emps:
        try:
            out.append(_insert(conn, emp))
        except ConflictError as e:
            out.append(e)
    return out


def _fire(conn: sqlite3.Connection, name: str, now: float) -> FireReport:
    if conn.execute("SELECT 1 FROM employees WHERE name = ?", (name,)).fetchone() is None:
        raise NotFoundError(f"Employee {name!r} does not exist", details={"name": name})
    denied = conn.execute(
        "UPDATE file_requests SET status = 'denied', resolved_at = ?"
        " WHERE status = 'pending' AND (requester = ? OR owner = ?) RETURNING id",
        (now, name, name)).fetchall()
    released = conn.execute(
        "UPDATE file_leases SET released_at = ? WHERE employee = ? AND released_at IS NULL"
        " RETURNING path", (now, name)).fetchall()
    paths = [r[0] for r in released]
    cancelled = conn.execute(
        "UPDATE tasks SET status = 'cancelled', error = 'employee fired', finished_at = ?"
        " WHERE employee = ? AND status IN ('queued', 'running') RETURNING id",
        (now, name)).fetchall()
    conn.execute("DELETE FROM employees WHERE name = ?", (name,))
    return FireReport(
        name=name,
        released_paths=tuple(sorted(paths)),
        cancelled_task_ids=tuple(sorted(r[0] for r in cancelled)),
        denied_request_ids=tuple(sorted(r[0] for r in denied)),
    )


class EmployeeAPI(StoreBase):
    """Employee methods of :class:`~orchestra_kit.store.Store`."""

    def _new_employee(self, name: Any, role: Any, smartness: Any, prefix: str = "") -> Employee:
        return new_employee(name, role, smartness, now=self._clock(), prefix=prefix)

    async def hire(self, name: str, role: str, smartness: str = "normal") -> Employee:
        """Hire one employee; ConflictError if the name is taken."""
        emp = self._new_employee(name, role, smartness)
        result: Employee = await self._write(lambda c: _insert(c, emp), _EMP, savepoint=False,
                                             merge=_insert_merged, payload=emp)
        return result

    async def hire_many(
        self, items: Sequence[Mapping[str, Any]]
    ) -> list[Employee | OrchestraError]:
        """Hire many in ONE transaction; a result (Employee or error) per item, in order."""
        if not isinstance(items, Sequence) or isinstance(items, str | bytes):
            raise ValidationError("employees", "must be a list of objects")
        results: list[Employee | OrchestraError | None] = [None] * len(items)
        valid: list[tuple[int, Employee]] = []
        for i, item in enumerate(items):
            prefix = f"employees[{i}]."
            try:
                if not isinstance(item, Mapping):
                    raise ValidationError(f"employees[{i}]", "must be an object")
                valid.append((i, self._new_employee(
                    item.get("name"), item.get("role"),
                    item.get("smartness", Smartness.NORMAL.value), prefix)))
            except ValidationError as e:
                results[i] = e
        if valid:
            emps = [e for _, e in valid]
            done = await self._write(lambda c: _insert_many(c, emps), _EMP)
            for (i, _), r in zip(valid, done, strict=True):
                results[i] = r
        return [r for r in results if r is not None]

    async def fire(self, name: str) -> FireReport:
        """Release leases, deny requests, cancel tasks and delete the employee, atomically."""
        validate_employee_name(name)
        now = self._clock()
        report: FireReport = await self._write(lambda c: _fire(c, name, now), TABLES)
        return report

    async def get_employee(self, name: str) -> Employee:
        """One employee; NotFoundError when absent."""
        validate_employee_name(name)

        async def load() -> Employee | None:
            rows = await self._fetch(f"SELECT {EMPLOYEE_COLS} FROM employees WHERE name = ?",
                                     (name,))
            return row_to_employee(rows[0]) if rows else None

        emp = await self._cached(("employee", name), _EMP, load)
        if emp is None:
            raise NotFoundError(f"Employee {name!r} does not exist", details={"name": name})
        return emp

    async def list_employees(
        self, *, role: str | None = None, smartness: str | None = None,
        limit: int = 1000, offset: int = 0,
    ) -> list[Employee]:
        """Employees in hire order, optionally filtered by role and smartness."""
        limit, offset = check_limit(limit, offset)
        where, params = [], []
        if role is not None:
            where.append("role = ?")
            params.append(role)
        if smartness is not None:
            where.append("smartness = ?")
            params.append(validate_smartness(smartness).value)
        sql = f"SELECT {EMPLOYEE_COLS} FROM employees"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id LIMIT ? OFFSET ?"

        async def load() -> tuple[Employee, ...]:
            rows = await self._fetch(sql, (*params, limit, offset))
            return tuple(row_to_employee(r) for r in rows)

        key = ("employees", role, smartness, limit, offset)
        return list(await self._cached(key, _EMP, load))
