"""Chat events: each incoming event recorded once, so a repeat never creates a second task.

:meth:`ChatEventAPI.claim_chat_event` inserts the event, outcome ``received`` (pending),
in one transaction; it answers ``False`` when the event id, or the message it carries
(``channel:ts``), was seen before. A pending event becomes handled in the transaction
that acts on it: :meth:`ChatEventAPI.create_chat_tasks` inserts its tasks AND marks it
``task`` together, only if it is still pending, so a crash leaves either a pending event
and no task (its redelivery is processed again) or the tasks and a handled event (its
redelivery is a duplicate): never zero tasks, never two sets.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from ..models import Task
from .base import StoreBase
from .checks import new_task
from .tasks import _insert

__all__ = ["ChatEventAPI"]

_TABLES = ("chat_events",)
_WITH_TASKS = ("chat_events", "tasks")
_CLAIM = ("INSERT INTO chat_events (event_id, message_key, channel, user, received_at)"
          " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING")
_STATE = ("SELECT event_id, outcome, task_ids FROM chat_events WHERE event_id = ? OR message_key = ?"
          " ORDER BY event_id = ? DESC LIMIT 1")
_MARK = ("UPDATE chat_events SET outcome = ?, task_ids = ? WHERE event_id = ?"
         " AND outcome = 'received'")


class ChatEventAPI(StoreBase):
    """Durable de-duplication of incoming chat events."""

    async def claim_chat_event(self, event_id: str, message_key: str, *, channel: str,
                               user: str) -> bool:
        """Record an incoming event as pending; ``False`` when it (or its message) was
        recorded before."""
        now = self._clock()

        def op(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(_CLAIM, (event_id, message_key, channel, user, now))
            return cur.rowcount == 1

        claimed: bool = await self._write(op, _TABLES)
        return claimed

    async def chat_event_state(self, event_id: str,
                               message_key: str) -> tuple[str, str, tuple[int, ...]] | None:
        """``(event id, outcome, task ids)`` of the event recorded with this id or message
        key (outcome ``received`` while pending), or ``None``."""
        rows = await self._fetch(_STATE, (event_id, message_key, event_id))
        if not rows:
            return None
        row = rows[0]
        return str(row[0]), str(row[1]), tuple(int(i) for i in json.loads(row[2]))

    async def create_chat_tasks(self, event_id: str,
                                items: Sequence[Mapping[str, Any]]) -> list[Task] | None:
        """Create a pending event's tasks and mark it ``task`` in ONE transaction.

        ``None`` (nothing created) when the event is not pending any more: another
        delivery of it was handled. An item's error (an unknown employee ...) rolls the
        whole transaction back and is raised; the event stays pending."""
        now = self._clock()
        tasks = [new_task(item, project_root=self.project_root, now=now, prefix=f"tasks[{i}].")
                 for i, item in enumerate(items)]

        def op(conn: sqlite3.Connection) -> list[Task] | None:
            if conn.execute(_MARK, ("task", "[]", event_id)).rowcount != 1:
                return None
            created = [_insert(conn, t) for t in tasks]
            conn.execute("UPDATE chat_events SET task_ids = ? WHERE event_id = ?",
                         (json.dumps([t.id for t in created]), event_id))
            return created

        created: list[Task] | None = await self._write(op, _WITH_TASKS)
        return created

    async def finish_chat_event(self, event_id: str, outcome: str,
                                task_ids: Sequence[int] = ()) -> bool:
        """Mark a pending event handled with what it led to (``limited``, ``help``,
        ``status``, ``rejected`` ...); ``False`` when it was handled already."""
        ids = json.dumps(list(task_ids))

        def op(conn: sqlite3.Connection) -> bool:
            return conn.execute(_MARK, (outcome, ids, event_id)).rowcount == 1

        marked: bool = await self._write(op, _TABLES)
        return marked

    async def chat_event_counts(self) -> dict[str, int]:
        """Events recorded, by outcome."""
        rows = await self._fetch("SELECT outcome, COUNT(*) FROM chat_events GROUP BY outcome")
        return {str(r[0]): int(r[1]) for r in rows}
