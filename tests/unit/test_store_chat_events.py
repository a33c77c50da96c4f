"""chat_events: an event (or its message) is claimed once, even under concurrency and restarts."""

from __future__ import annotations

import asyncio
from pathlib import Path

from orchestra_kit.config import DatabaseSettings, OptimizationFlags
from orchestra_kit.store import Store


def _store(tmp_path: Path) -> Store:
    return Store(DatabaseSettings(path=str(tmp_path / "chat.db")), OptimizationFlags(),
                 project_root=tmp_path)


async def test_claim_once_by_event_id_and_by_message(tmp_path: Path) -> None:
    async with _store(tmp_path) as store:
        assert await store.claim_chat_event("Ev1", "C1:1.0", channel="C1", user="U1")
        assert not await store.claim_chat_event("Ev1", "C1:1.0", channel="C1", user="U1")
        # the same message as a second event type (Slack sends message + app_mention)
        assert not await store.claim_chat_event("Ev2", "C1:1.0", channel="C1", user="U1")
        assert await store.claim_chat_event("Ev3", "C1:2.0", channel="C1", user="U1")
        await store.finish_chat_event("Ev1", "task", [7])
        assert await store.chat_event_counts() == {"task": 1, "received": 1}


async def test_concurrent_claims_of_one_event_have_one_winner(tmp_path: Path) -> None:
    async with _store(tmp_path) as store:
        wins = await asyncio.gather(*(store.claim_chat_event("EvX", "C:1", channel="C",
                                                             user=f"U{i}") for i in range(50)))
        assert sum(wins) == 1


async def test_claims_survive_a_restart(tmp_path: Path) -> None:
    async with _store(tmp_path) as store:
        assert await store.claim_chat_event("Ev1", "C1:1.0", channel="C1", user="U1")
    async with _store(tmp_path) as store:
        assert not await store.claim_chat_event("Ev1", "C1:1.0", channel="C1", user="U1")
