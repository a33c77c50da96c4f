"""PostgreSQL schema and migrations (table ``orchestra_schema``, one transaction per step).

The same tables, columns and invariants as the SQLite schema (:mod:`.schema`); times
are epoch seconds (``DOUBLE PRECISION``), as there. Migrations run under a
transaction-level advisory lock, so several instances starting at once migrate once.
PostgreSQL's DDL is transactional: a step commits whole or not at all.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

from ..errors import StoreError
from ..models import RequestStatus, TaskMode, TaskStatus

__all__ = [
    "CLAIM_BUSY", "CLAIM_CAPACITY", "CLAIM_CONFLICT", "CLAIM_HAS_FILES", "PG_MIGRATIONS",
    "apply_pg_migrations", "lock_key",
]

_TASK_STATUSES = ", ".join(f"'{s.value}'" for s in TaskStatus)
_MODES = ", ".join(f"'{m.value}'" for m in TaskMode)
_REQ_STATUSES = ", ".join(f"'{s.value}'" for s in RequestStatus)

#: SQLSTATEs raised by orchestra_claim (class OR: user-defined).
CLAIM_CONFLICT, CLAIM_CAPACITY, CLAIM_BUSY, CLAIM_HAS_FILES = "OR001", "OR002", "OR003", "OR004"

# The claim of pg_tasks.claim for a task without files, server-side: the row FOR UPDATE
# SKIP LOCKED, a free employee, then the global slot under the advisory lock, the update
# and the cache notification, as one statement (its own transaction).
_CLAIM_FUNCTION = f"""
CREATE FUNCTION orchestra_claim(p_task BIGINT, p_max BIGINT, p_now FLOAT8, p_instance TEXT,
                                p_lock BIGINT, p_channel TEXT) RETURNS SETOF tasks
LANGUAGE plpgsql AS $$
DECLARE
    r tasks%ROWTYPE;
    running BIGINT;
BEGIN
    SELECT * INTO r FROM tasks WHERE id = p_task FOR UPDATE SKIP LOCKED;
    IF NOT FOUND OR r.status <> 'queued' THEN
        RAISE EXCEPTION 'task % is claimed or ended elsewhere', p_task
            USING ERRCODE = '{CLAIM_CONFLICT}';
    END IF;
    IF r.files <> '[]' THEN
        RAISE EXCEPTION 'task % has files', p_task USING ERRCODE = '{CLAIM_HAS_FILES}';
    END IF;
    IF EXISTS (SELECT 1 FROM tasks WHERE employee = r.employee AND status = 'running') THEN
        RAISE EXCEPTION '% runs another task', r.employee USING ERRCODE = '{CLAIM_BUSY}';
    END IF;
    PERFORM pg_advisory_xact_lock(p_lock);
    SELECT COUNT(*) INTO running FROM tasks WHERE status = 'running';
    IF running >= p_max THEN
        RAISE EXCEPTION '% tasks already run', running USING ERRCODE = '{CLAIM_CAPACITY}';
    END IF;
    UPDATE tasks SET status = 'running', started_at = p_now, instance = p_instance,
        attempts = attempts + 1 WHERE id = p_task RETURNING * INTO r;
    IF p_channel IS NOT NULL THEN
        PERFORM pg_notify(p_channel, 'tasks');
    END IF;
    RETURN NEXT r;
END
$$"""

# Each step: (description, statements). Never edit a released step; append a new one.
PG_MIGRATIONS: list[tuple[str, Sequence[str]]] = [
    (
        "initial schema: employees, tasks, file_leases, file_requests, instances",
        (
            """CREATE TABLE employees (
                id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                name TEXT NOT NULL UNIQUE,
                role TEXT NOT NULL,
                smartness TEXT NOT NULL DEFAULT 'normal' CHECK (smartness IN ('smart', 'normal')),
                status TEXT NOT NULL DEFAULT 'active',
                hired_at DOUBLE PRECISION NOT NULL)""",
            "CREATE INDEX idx_employees_role ON employees(role)",
            f"""CREATE TABLE tasks (
                id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                employee TEXT NOT NULL,
                description TEXT NOT NULL,
                priority INTEGER NOT NULL CHECK (priority BETWEEN 0 AND 10),
                model TEXT,
                mode TEXT NOT NULL CHECK (mode IN ({_MODES})),
                files TEXT NOT NULL DEFAULT '[]',
                status TEXT NOT NULL DEFAULT 'queued' CHECK (status IN ({_TASK_STATUSES})),
                attempts INTEGER NOT NULL DEFAULT 0,
                progress INTEGER NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
                created_at DOUBLE PRECISION NOT NULL,
                started_at DOUBLE PRECISION,
                finished_at DOUBLE PRECISION,
                result TEXT,
                error TEXT,
                instance TEXT)""",
            "CREATE INDEX idx_tasks_queued ON tasks(priority DESC, id) WHERE status = 'queued'",
            "CREATE INDEX idx_tasks_status ON tasks(status, id)",
            "CREATE INDEX idx_tasks_employee_status ON tasks(employee, status)",
            # One running task per employee, enforced by PostgreSQL (as on SQLite).
            ("CREATE UNIQUE INDEX uq_tasks_running_employee ON tasks(employee)"
             " WHERE status = 'running'"),
            """CREATE TABLE file_leases (
                id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                path TEXT NOT NULL,
                employee TEXT NOT NULL REFERENCES employees(name) ON DELETE CASCADE,
                description TEXT NOT NULL DEFAULT '',
                task_id BIGINT REFERENCES tasks(id) ON DELETE SET NULL,
                acquired_at DOUBLE PRECISION NOT NULL,
                expires_at DOUBLE PRECISION,
                released_at DOUBLE PRECISION)""",
            # THE invariant: at most one active lease per path, enforced by PostgreSQL.
            ("CREATE UNIQUE INDEX uq_file_leases_active_path ON file_leases(path)"
             " WHERE released_at IS NULL"),
            "CREATE INDEX idx_file_leases_employee ON file_leases(employee)",
            "CREATE INDEX idx_file_leases_task ON file_leases(task_id)",
            f"""CREATE TABLE file_requests (
                id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                path TEXT NOT NULL,
                requester TEXT NOT NULL,
                owner TEXT NOT NULL,
                reason TEXT NOT NULL DEFAULT '',
                status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ({_REQ_STATUSES})),
                created_at DOUBLE PRECISION NOT NULL,
                resolved_at DOUBLE PRECISION)""",
            ("CREATE UNIQUE INDEX uq_file_requests_pending ON file_requests(path, requester)"
             " WHERE status = 'pending'"),
            "CREATE INDEX idx_file_requests_status ON file_requests(status)",
            """CREATE TABLE instances (
                id TEXT PRIMARY KEY,
                started_at DOUBLE PRECISION NOT NULL,
                heartbeat_at DOUBLE PRECISION NOT NULL)""",
        ),
    ),
    (
        "orchestra_claim(): a claim of a task without files in one round trip",
        (_CLAIM_FUNCTION,),
    ),
    (
        "chat_events: every incoming chat event, so a repeat never creates a second task",
        ("""CREATE TABLE chat_events (
                event_id TEXT PRIMARY KEY,
                message_key TEXT NOT NULL UNIQUE,
                channel TEXT NOT NULL,
                "user" TEXT NOT NULL,
                received_at DOUBLE PRECISION NOT NULL,
                outcome TEXT NOT NULL DEFAULT 'received',
                task_ids TEXT NOT NULL DEFAULT '[]')""",),
    ),
    (
        "tasks.usage: what the agent run cost (JSON), as on SQLite",
        ("ALTER TABLE tasks ADD COLUMN usage TEXT",),
    ),
    (
        "tasks.cancel_requested: a cancel asked for on another instance than the runner's",
        ("ALTER TABLE tasks ADD COLUMN cancel_requested TEXT",),
    ),
]


def lock_key(schema: str, purpose: str) -> int:
    """A signed 64-bit advisory-lock key, distinct per schema and purpose."""
    h = zlib.crc32(f"{schema}:{purpose}".encode())
    return (h << 16) ^ zlib.crc32(purpose.encode())


async def apply_pg_migrations(conn: Any, schema: str) -> int:
    """Apply every pending step, each in its own transaction; returns the final version."""
    for version, (_description, statements) in enumerate(PG_MIGRATIONS, start=1):
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key(schema, "migrate"))
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS orchestra_schema (version INTEGER NOT NULL)")
            current = await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM orchestra_schema")
            if current > len(PG_MIGRATIONS):
                raise StoreError(f"Database schema version {current} is newer than this code"
                                 f" ({len(PG_MIGRATIONS)})")
            if version <= current:
                continue
            for sql in statements:
                await conn.execute(sql)
            await conn.execute("INSERT INTO orchestra_schema (version) VALUES ($1)", version)
    return len(PG_MIGRATIONS)
