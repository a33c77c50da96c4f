"""Chat events on PostgreSQL: the same contract as :mod:`orchestra_kit.store.chat_events`.

An event is recorded pending (``received``); :meth:`PgChatEventAPI.create_chat_tasks`
marks it ``task`` and inserts its tasks in one transaction, only while it is pending.
Two instances handling redeliveries of one event at once serialise on the event's row
(the second ``UPDATE ... WHERE outcome = 'received'`` waits, then matches nothing), so
one set of tasks is created, whichever instance wins.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import OrchestraError
from ..models import Task
from . import pg_tasks
from .checks import new_task
from .pg_instance import PgInstance

__all__ = ["PgChatEventAPI"]

_CHAT = ("chat_events",)
_WITH_TASKS = ("chat_events", "tasks")
_MARK = ("UPDATE chat_events SET outcome = $1, task_ids = $2 WHERE event_id = $3"
         " AND outcome = 'received' RETURNING event_id")


class PgChatEventAPI(PgInstance):
    """Durable de-duplication of incoming chat events (PostgreSQL)."""

    async def claim_chat_event(self, event_id: str, message_key: str, *, channel: str,
                               user: str) -> bool:
        """Record an incoming event as pending; ``False`` when it (or its message) was
        recorded before."""
        rows = await self._write1(
            "INSERT INTO chat_events (event_id, message_key, channel, \"user\", received_at)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING event_id",
            (event_id, message_key, channel, user, self._clock()), _CHAT)
        return bool(rows)

    async def chat_event_state(self, event_id: str,
                               message_key: str) -> tuple[str, str, tuple[int, ...]] | None:
        """``(event id, outcome, task ids)`` of the event recorded with this id or message key."""
        rows = await self._fetch(
            "SELECT event_id, outcome, task_ids FROM chat_events"
            " WHERE event_id = $1 OR message_key = $2"
            " ORDER BY event_id = $1 DESC LIMIT 1", event_id, message_key)
        if not rows:
            return None
        row = rows[0]
        return str(row[0]), str(row[1]), tuple(int(i) for i in json.loads(row[2]))

    async def create_chat_tasks(self, event_id: str,
                                items: Sequence[Mapping[str, Any]]) -> list[Task] | None:
        """Create a pending event's tasks and mark it ``task`` in ONE transaction; ``None``
        when it was handled already. An item's error rolls back and is raised."""
        now = self._clock()
        tasks = [new_task(item, project_root=self.project_root, now=now, prefix=f"tasks[{i}].")
                 for i, item in enumerate(items)]

        async def op(conn: Any) -> list[Task] | None:
            if await conn.fetchval(_MARK, "task", "[]", event_id) is None:
                return None
            created: list[Task] = []
            for result in await pg_tasks.insert_tasks(conn, tasks):
                if isinstance(result, OrchestraError):
                    raise result  # the transaction rolls back: the event stays pending
                created.append(result)
            await conn.execute("UPDATE chat_events SET task_ids = $1 WHERE event_id = $2",
                               json.dumps([t.id for t in created]), event_id)
            return created

        created: list[Task] | None = await self._tx(op, _WITH_TASKS)
        return created

    async def finish_chat_event(self, event_id: str, outcome: str,
                                task_ids: Sequence[int] = ()) -> bool:
        """Mark a pending event handled (``limited``, ``help`` ...); ``False`` when it was
        handled already."""
        rows = await self._write1(_MARK, (outcome, json.dumps(list(task_ids)), event_id), _CHAT)
        return bool(rows)

    async def chat_event_counts(self) -> dict[str, int]:
        """Events recorded, by outcome."""
        rows = await self._fetch("SELECT outcome, COUNT(*) FROM chat_events GROUP BY outcome")
        return {str(r[0]): int(r[1]) for r in rows}
