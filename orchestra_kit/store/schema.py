"""Schema, migrations (``PRAGMA user_version``), connection set-up and row converters.

Migrations are a list of steps; step *n* moves the database from ``user_version``
*n-1* to *n* inside one ``BEGIN IMMEDIATE`` transaction (``user_version`` lives in the
database header, so it commits or rolls back with the step).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from ..config import DatabaseSettings, OptimizationFlags
from ..errors import StoreError
from ..models import (
    Employee,
    EmployeeStatus,
    FileLease,
    FileRequest,
    RequestStatus,
    Smartness,
    Task,
    TaskMode,
    TaskStatus,
)

__all__ = [
    "EMPLOYEE_COLS",
    "LEASE_COLS",
    "MIGRATIONS",
    "REQUEST_COLS",
    "TASK_COLS",
    "apply_migrations",
    "connect_writer",
    "is_memory",
    "reader_pragmas",
    "row_to_employee",
    "row_to_lease",
    "row_to_request",
    "row_to_task",
    "set_journal_mode",
]

_TASK_STATUSES = ", ".join(f"'{s.value}'" for s in TaskStatus)
_MODES = ", ".join(f"'{m.value}'" for m in TaskMode)
_REQ_STATUSES = ", ".join(f"'{s.value}'" for s in RequestStatus)

def _count_trigger(name: str, event: str, when: str, key: str, delta: str) -> str:
    """A trigger keeping ``row_counts[key]`` current (``delta``: "+ 1", "- 1" ...)."""
    cond = f" WHEN {when}" if when else ""
    return (f"CREATE TRIGGER count_{name} AFTER {event} FOR EACH ROW{cond} BEGIN"
            f" UPDATE row_counts SET n = n {delta} WHERE name = {key}; END")


# Each step: (description, statements). Never edit a released step; append a new one.
MIGRATIONS: list[tuple[str, Sequence[str]]] = [
    (
        "initial schema: employees, tasks, file_leases, file_requests",
        (
            """CREATE TABLE employees (
                id INTEGER PRIMARY KEY,
                name TEXT NOT NULL UNIQUE,
                role TEXT NOT NULL,
                smartness TEXT NOT NULL DEFAULT 'normal' CHECK (smartness IN ('smart', 'normal')),
                status TEXT NOT NULL DEFAULT 'active',
                hired_at REAL NOT NULL)""",
            "CREATE INDEX idx_employees_role ON employees(role)",
            # Tasks keep the employee's name without a foreign key: they are history and
            # outlive a fired employee (create_task checks existence in its transaction).
            f"""CREATE TABLE tasks (
                id INTEGER PRIMARY KEY,
                employee TEXT NOT NULL,
                description TEXT NOT NULL,
                priority INTEGER NOT NULL CHECK (priority BETWEEN 0 AND 10),
                model TEXT,
                mode TEXT NOT NULL CHECK (mode IN ({_MODES})),
                files TEXT NOT NULL DEFAULT '[]',
                status TEXT NOT NULL DEFAULT 'queued' CHECK (status IN ({_TASK_STATUSES})),
                attempts INTEGER NOT NULL DEFAULT 0,
                progress INTEGER NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
                created_at REAL NOT NULL,
                started_at REAL,
                finished_at REAL,
                result TEXT,
                error TEXT)""",
            "CREATE INDEX idx_tasks_status_priority ON tasks(status, priority DESC, id)",
            "CREATE INDEX idx_tasks_employee_status ON tasks(employee, status)",
            """CREATE TABLE file_leases (
                id INTEGER PRIMARY KEY,
                path TEXT NOT NULL,
                employee TEXT NOT NULL REFERENCES employees(name) ON DELETE CASCADE,
                description TEXT NOT NULL DEFAULT '',
                task_id INTEGER REFERENCES tasks(id) ON DELETE SET NULL,
                acquired_at REAL NOT NULL,
                expires_at REAL,
                released_at REAL)""",
            # THE invariant: at most one active lease per path, enforced by SQLite.
            ("CREATE UNIQUE INDEX uq_file_leases_active_path ON file_leases(path)"
            " WHERE released_at IS NULL"),
            "CREATE INDEX idx_file_leases_employee ON file_leases(employee)",
            "CREATE INDEX idx_file_leases_task ON file_leases(task_id)",
            ("CREATE INDEX idx_file_leases_active_expiry ON file_leases(expires_at)"
            " WHERE released_at IS NULL"),
            f"""CREATE TABLE file_requests (
                id INTEGER PRIMARY KEY,
                path TEXT NOT NULL,
                requester TEXT NOT NULL,
                owner TEXT NOT NULL,
                reason TEXT NOT NULL DEFAULT '',
                status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ({_REQ_STATUSES})),
                created_at REAL NOT NULL,
                resolved_at REAL)""",
            ("CREATE UNIQUE INDEX uq_file_requests_pending ON file_requests(path, requester)"
            " WHERE status = 'pending'"),
            "CREATE INDEX idx_file_requests_status ON file_requests(status)",
            "CREATE INDEX idx_file_requests_owner ON file_requests(owner, status)",
            "CREATE INDEX idx_file_requests_requester ON file_requests(requester, status)",
        ),
    ),
    (
        "chat_events: every incoming chat event, so a repeat never creates a second task",
        (
            # event_id: the transport's id (Slack's Ev...); message_key: channel:ts, because
            # Slack sends one message twice (a `message` and an `app_mention` event).
            """CREATE TABLE chat_events (
                event_id TEXT PRIMARY KEY,
                message_key TEXT NOT NULL UNIQUE,
                channel TEXT NOT NULL,
                user TEXT NOT NULL,
                received_at REAL NOT NULL,
                outcome TEXT NOT NULL DEFAULT 'received',
                task_ids TEXT NOT NULL DEFAULT '[]')""",
        ),
    ),
    (
        "one running task per employee, enforced by a unique partial index",
        (
            # A database left by a version without this rule may hold two running tasks
            # of one employee: requeue all but the oldest before the index is created.
            ("UPDATE tasks SET status = 'queued' WHERE status = 'running' AND id NOT IN"
             " (SELECT MIN(id) FROM tasks WHERE status = 'running' GROUP BY employee)"),
            ("CREATE UNIQUE INDEX uq_tasks_running_employee ON tasks(employee)"
             " WHERE status = 'running'"),
        ),
    ),
    (
        "row counts kept by triggers in each write's own transaction (GET /health)",
        (
            "CREATE TABLE row_counts (name TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID",
            "INSERT INTO row_counts SELECT 'employees', COUNT(*) FROM employees",
            ("INSERT INTO row_counts SELECT 'pending_requests', COUNT(*) FROM file_requests"
             " WHERE status = 'pending'"),
            *(f"INSERT INTO row_counts SELECT 'tasks_{s.value}', COUNT(*) FROM tasks"
              f" WHERE status = '{s.value}'" for s in TaskStatus),
            _count_trigger("emp_ins", "INSERT ON employees", "", "'employees'", "+ 1"),
            _count_trigger("emp_del", "DELETE ON employees", "", "'employees'", "- 1"),
            _count_trigger("task_ins", "INSERT ON tasks", "", "'tasks_' || NEW.status", "+ 1"),
            _count_trigger("task_del", "DELETE ON tasks", "", "'tasks_' || OLD.status", "- 1"),
            _count_trigger("task_upd_old", "UPDATE OF status ON tasks",
                           "OLD.status <> NEW.status", "'tasks_' || OLD.status", "- 1"),
            _count_trigger("task_upd_new", "UPDATE OF status ON tasks",
                           "OLD.status <> NEW.status", "'tasks_' || NEW.status", "+ 1"),
            _count_trigger("req_ins", "INSERT ON file_requests", "NEW.status = 'pending'",
                           "'pending_requests'", "+ 1"),
            _count_trigger("req_del", "DELETE ON file_requests", "OLD.status = 'pending'",
                           "'pending_requests'", "- 1"),
            _count_trigger("req_upd", "UPDATE OF status ON file_requests",
                           "(OLD.status = 'pending') <> (NEW.status = 'pending')",
                           "'pending_requests'",
                           "+ CASE WHEN NEW.status = 'pending' THEN 1 ELSE -1 END"),
        ),
    ),
]


def is_memory(path: str) -> bool:
    """Whether ``path`` names an in-memory database (one connection only)."""
    return path == ":memory:" or path.startswith("file::memory:")


def _common_pragmas(settings: DatabaseSettings, flags: OptimizationFlags) -> list[str]:
    sync = "NORMAL" if flags.enable_wal_mode else "FULL"
    return [
        f"PRAGMA busy_timeout = {int(settings.busy_timeout_ms)}",
        f"PRAGMA synchronous = {sync}",
        "PRAGMA temp_store = MEMORY",
        "PRAGMA cache_size = -16000",
    ]


def reader_pragmas(settings: DatabaseSettings, flags: OptimizationFlags) -> str:
    """One script of PRAGMAs for a reader connection (one thread hop with aiosqlite)."""
    return ";".join([*_common_pragmas(settings, flags), "PRAGMA query_only = ON"]) + ";"


def connect_writer(settings: DatabaseSettings, flags: OptimizationFlags) -> sqlite3.Connection:
    """A configured autocommit connection for the writer thread."""
    try:
        conn = sqlite3.connect(settings.path, isolation_level=None, check_same_thread=False)
        for pragma in _common_pragmas(settings, flags):
            conn.execute(pragma)
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.Error as e:
        raise StoreError(f"Cannot open database {settings.path!r}: {e}") from e
    return conn


def set_journal_mode(conn: sqlite3.Connection, path: str, flags: OptimizationFlags) -> None:
    """WAL when the flag is on, else the rollback journal (persistent in the file)."""
    if is_memory(path):
        return
    mode = "wal" if flags.enable_wal_mode else "delete"
    got = conn.execute(f"PRAGMA journal_mode = {mode}").fetchone()[0]
    if str(got).lower() != mode:
        raise StoreError(f"Cannot set journal_mode={mode} on {path!r} (got {got})")


def apply_migrations(conn: sqlite3.Connection) -> int:
    """Apply every pending step, each in its own transaction; returns the final version."""
    current = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if current > len(MIGRATIONS):
        raise StoreError(
            f"Database schema version {current} is newer than this code ({len(MIGRATIONS)})"
        )
    for version, (_description, statements) in enumerate(MIGRATIONS, start=1):
        if version <= current:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql in statements:
                conn.execute(sql)
            conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return len(MIGRATIONS)


# ------------------------------------------------------------------------ row converters

EMPLOYEE_COLS = "name, role, smartness, status, hired_at"
LEASE_COLS = "id, path, employee, description, task_id, acquired_at, expires_at, released_at"
REQUEST_COLS = "id, path, requester, owner, reason, status, created_at, resolved_at"
TASK_COLS = (
    "id, employee, description, priority, model, mode, files, status, attempts,"
    " created_at, started_at, finished_at, result, error, progress"
)


def row_to_employee(r: Sequence[Any]) -> Employee:
    """An ``EMPLOYEE_COLS`` row as an Employee."""
    return Employee(
        name=r[0], role=r[1], smartness=Smartness(r[2]), status=EmployeeStatus(r[3]),
        hired_at=r[4],
    )


def row_to_lease(r: Sequence[Any]) -> FileLease:
    """A ``LEASE_COLS`` row as a FileLease."""
    return FileLease(
        id=r[0], path=r[1], employee=r[2], description=r[3], task_id=r[4],
        acquired_at=r[5], expires_at=r[6], released_at=r[7],
    )


def row_to_request(r: Sequence[Any]) -> FileRequest:
    """A ``REQUEST_COLS`` row as a FileRequest."""
    return FileRequest(
        id=r[0], path=r[1], requester=r[2], owner=r[3], reason=r[4],
        status=RequestStatus(r[5]), created_at=r[6], resolved_at=r[7],
    )


def row_to_task(r: Sequence[Any]) -> Task:
    """A ``TASK_COLS`` row as a Task (``files`` is JSON text in the database)."""
    return Task(
        id=r[0], employee=r[1], description=r[2], priority=r[3], model=r[4],
        mode=TaskMode(r[5]), files=tuple(json.loads(r[6])), status=TaskStatus(r[7]),
        attempts=r[8], created_at=r[9], started_at=r[10], finished_at=r[11],
        result=r[12], error=r[13], progress=r[14],
    )
