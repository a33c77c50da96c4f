"""Task writes of one group-commit batch merged into a few statements (writer thread).

Every ``sqlite3`` call, and every row fetched, releases the GIL; the writer thread then
waits for the event loop to hand it back (up to the interpreter's switch interval,
5 ms, when the loop is busy). A task used to cost the writer six such round trips per
state move (a read, an ``UPDATE ... RETURNING``, each stepped then reset): under load
the writer spent its time waiting for the GIL, not in SQLite. Merged, a batch of N
creates costs a constant number of calls, and N state moves N + 6 (one row fetched
each, read in one query) — see docs/benchmarks.md.

The results are exactly those of the one-op-at-a-time functions in :mod:`.tasks`
(same checks, same errors, rows converted by the same function); when a merged form
does not apply it raises :class:`MergeDeclined` and the writer rolls it back and runs
the ops one by one.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConflictError, NotFoundError
from ..models import TERMINAL_STATUSES, Task, TaskStatus, can_transition
from .schema import TASK_COLS, row_to_task

__all__ = ["MergeDeclined", "Move", "check_move", "created", "merged_task_writes"]

_CHUNK = 500  # rows per statement: at most 9 parameters each, far below SQLite's limit
_INSERT_ROWS = ("INSERT INTO tasks (employee, description, priority, model, mode, files, status,"
                " attempts, created_at) VALUES ")
# TASK_COLS positions of the columns a state move writes.
_STATUS, _ATTEMPTS, _STARTED, _FINISHED, _RESULT, _ERROR, _PROGRESS, _USAGE = (
    7, 8, 10, 11, 12, 13, 14, 15)


class MergeDeclined(Exception):
    """The merged form does not apply here; the writer runs the ops one by one."""


@dataclass(frozen=True, slots=True)
class Move:
    """One state move's arguments (the payload of a mergeable ``transition``)."""

    task_id: int
    new: TaskStatus
    expect: TaskStatus | None
    result: str | None
    error: str | None
    count_attempt: bool
    now: float
    usage: str | None


def check_move(task_id: int, old: TaskStatus, new: TaskStatus, expect: TaskStatus | None) -> None:
    """ConflictError unless ``old`` is what the caller expects and may move to ``new``."""
    if expect is not None and old != expect:
        raise ConflictError(f"Cannot move task {task_id} to {new.value!r}: it is {old.value!r},"
                            f" not {expect.value!r}",
                            details={"task_id": task_id, "status": old.value})
    if not can_transition(old, new):
        raise ConflictError(f"Cannot move task {task_id} from {old.value!r} to {new.value!r}",
                            details={"task_id": task_id, "status": old.value})


def created(t: Task, task_id: int) -> Task:
    """The stored form of a new task: ``t`` with its id."""
    return Task(id=task_id, employee=t.employee, description=t.description, priority=t.priority,
                model=t.model, mode=t.mode, files=t.files, created_at=t.created_at)


def _marks(n: int) -> str:
    return ",".join("?" * n)


def merged_task_writes(conn: sqlite3.Connection, ops: list[Task | Move]
                       ) -> list[tuple[bool, Any]]:
    """Creates (a :class:`Task` payload) and state moves (a :class:`Move`) queued together:
    the moves merged, then the creates. They commute: a move names a task that existed
    before the batch, a create makes a new one, and the row counts only add up."""
    moves = [(i, op) for i, op in enumerate(ops) if isinstance(op, Move)]
    creates = [(i, op) for i, op in enumerate(ops) if isinstance(op, Task)]
    out: list[tuple[bool, Any]] = [(False, None)] * len(ops)
    if moves:
        for (i, _), outcome in zip(moves, move_merged(conn, [m for _, m in moves]), strict=True):
            out[i] = outcome
    if creates:
        for (i, _), outcome in zip(creates, insert_merged(conn, [t for _, t in creates]),
                                   strict=True):
            out[i] = outcome
    return out


def insert_merged(conn: sqlite3.Connection, tasks: list[Task]) -> list[tuple[bool, Any]]:
    """Many creates as multi-row INSERTs. Ids are the rowids after the largest one, in
    order — checked against the statement's row count and last rowid, never assumed."""
    names = list({t.employee for t in tasks})
    (found,) = conn.execute(f"SELECT count(*) FROM employees WHERE name IN ({_marks(len(names))})",
                            names).fetchone()
    if found != len(names):
        raise MergeDeclined("an employee does not exist")
    out: list[tuple[bool, Any]] = []
    for start in range(0, len(tasks), _CHUNK):
        chunk = tasks[start:start + _CHUNK]
        last = conn.execute("SELECT max(id) FROM tasks").fetchone()[0] or 0
        cur = conn.execute(
            _INSERT_ROWS + ",".join(["(?, ?, ?, ?, ?, ?, 'queued', 0, ?)"] * len(chunk)),
            [v for t in chunk for v in (t.employee, t.description, t.priority, t.model,
                                        t.mode.value, json.dumps(list(t.files)), t.created_at)])
        if cur.rowcount != len(chunk) or cur.lastrowid != last + len(chunk):
            raise MergeDeclined("the new rowids were not consecutive")
        out += [(True, created(t, last + 1 + i)) for i, t in enumerate(chunk)]
    return out


def moved_row(row: Sequence[Any], m: Move) -> list[Any]:
    """The TASK_COLS row after move ``m`` (the columns ``_transition`` would set)."""
    new = list(row)
    new[_STATUS] = m.new.value
    if m.count_attempt:
        new[_ATTEMPTS] += 1
    if m.new == TaskStatus.RUNNING:
        new[_STARTED] = m.now
    if m.new in TERMINAL_STATUSES:
        new[_FINISHED] = m.now
    if m.new == TaskStatus.COMPLETED:
        new[_PROGRESS] = 100
    for i, value in ((_RESULT, m.result), (_ERROR, m.error), (_USAGE, m.usage)):
        if value is not None:
            new[i] = value
    return new


def move_merged(conn: sqlite3.Connection, moves: list[Move]) -> list[tuple[bool, Any]]:
    """Many state moves: the rows read in one query, checked here, written by one UPDATE.

    A task moved twice in one batch declines (the order between its moves matters); a
    move the database refuses (one running task per employee) fails the UPDATE whole,
    and the one-by-one rerun gives that move its ConflictError."""
    ids = [m.task_id for m in moves]
    if len(set(ids)) != len(ids):
        raise MergeDeclined("a task moves twice in one batch")
    rows: dict[int, Any] = {}
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start:start + _CHUNK]
        for r in conn.execute(f"SELECT {TASK_COLS} FROM tasks WHERE id IN ({_marks(len(chunk))})",
                              chunk):
            rows[r[0]] = r
    out: list[tuple[bool, Any]] = []
    updates: list[list[Any]] = []
    for m in moves:
        row = rows.get(m.task_id)
        try:
            if row is None:
                raise NotFoundError(f"Task {m.task_id} does not exist",
                                    details={"task_id": m.task_id})
            check_move(m.task_id, TaskStatus(row[_STATUS]), m.new, m.expect)
        except (NotFoundError, ConflictError) as e:
            out.append((False, e))
            continue
        new = moved_row(row, m)
        updates.append(new)
        out.append((True, row_to_task(new)))
    for start in range(0, len(updates), _CHUNK):
        _write_moves(conn, updates[start:start + _CHUNK])
    return out


def _write_moves(conn: sqlite3.Connection, rows: list[list[Any]]) -> None:
    cur = conn.execute(
        "UPDATE tasks SET status = v.column2, attempts = v.column3, started_at = v.column4,"
        " finished_at = v.column5, result = v.column6, error = v.column7, progress = v.column8,"
        " usage = v.column9 FROM (VALUES " + ",".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(rows))
        + ") AS v WHERE tasks.id = v.column1",
        [x for r in rows for x in (r[0], r[_STATUS], r[_ATTEMPTS], r[_STARTED], r[_FINISHED],
                                   r[_RESULT], r[_ERROR], r[_PROGRESS], r[_USAGE])])
    if cur.rowcount != len(rows):
        raise MergeDeclined(f"{cur.rowcount} of {len(rows)} moves written")
