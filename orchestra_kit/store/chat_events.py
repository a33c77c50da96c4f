"""Chat events: each incoming event recorded once, so a repeat never creates a second task.

:meth:`ChatEventAPI.claim_chat_event` inserts the event in one transaction; it answers
``False`` when the event id, or the message it carries (``channel:ts``), was seen
before. The chat layer claims before it acts, then records the outcome.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from .base import StoreBase

__all__ = ["ChatEventAPI"]

_TABLES = ("chat_events",)
_CLAIM = ("INSERT INTO chat_events (event_id, message_key, channel, user, received_at)"
          " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING")


class ChatEventAPI(StoreBase):
    """Durable de-duplication of incoming chat events."""

    async def claim_chat_event(self, event_id: str, message_key: str, *, channel: str,
                               user: str) -> bool:
        """Record an incoming event; ``False`` when it (or its message) was recorded before."""
        now = self._clock()

        def op(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(_CLAIM, (event_id, message_key, channel, user, now))
            return cur.rowcount == 1

        claimed: bool = await self._write(op, _TABLES)
        return claimed

    async def finish_chat_event(self, event_id: str, outcome: str,
                                task_ids: Sequence[int] = ()) -> None:
        """Record what an event led to (``task``, ``limited``, ``ignored``, ``reply`` ...)."""
        ids = json.dumps(list(task_ids))

        def op(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE chat_events SET outcome = ?, task_ids = ? WHERE event_id = ?",
                         (outcome, ids, event_id))

        await self._write(op, _TABLES)

    async def chat_event_counts(self) -> dict[str, int]:
        """Events recorded, by outcome."""
        rows = await self._fetch("SELECT outcome, COUNT(*) FROM chat_events GROUP BY outcome")
        return {str(r[0]): int(r[1]) for r in rows}
