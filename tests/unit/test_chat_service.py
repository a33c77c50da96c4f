"""The chat core without Slack: an in-memory transport, a real store and scheduler."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from orchestra_kit.agents.simulated import SimulatedBackend
from orchestra_kit.chat import ChatService, IncomingMessage
from orchestra_kit.config import (
    AgentSettings,
    ChatSettings,
    DatabaseSettings,
    OptimizationFlags,
    SchedulerSettings,
)
from orchestra_kit.scheduler import Scheduler
from orchestra_kit.store import Store


class MemoryTransport:
    """Records posts and edits; ts are counters."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, str, str | None]] = []
        self.edits: list[tuple[str, str, str]] = []

    async def post(self, channel: str, text: str, *, thread_ts: str | None = None) -> str:
        self.posts.append((channel, text, thread_ts))
        return f"9.{len(self.posts)}"

    async def update(self, channel: str, ts: str, text: str) -> None:
        self.edits.append((channel, ts, text))


@pytest.fixture
async def chat(tmp_path: Path) -> AsyncIterator[tuple[ChatService, MemoryTransport]]:
    transport = MemoryTransport()
    async with Store(DatabaseSettings(path=str(tmp_path / "c.db")), OptimizationFlags(),
                     project_root=tmp_path) as store:
        backend = SimulatedBackend(AgentSettings(sim_latency_ms=1, sim_jitter_ms=0))
        async with Scheduler(store, backend, SchedulerSettings(progress_files=False),
                             workspace_root=tmp_path / "ws", project_root=tmp_path) as sched:
            await store.hire("alice", "developer")
            await store.hire("bob", "developer")
            async with ChatService(store, sched, ChatSettings(min_interval_s=0),
                                   project_root=tmp_path, transport=transport) as service:
                yield service, transport


def _msg(text: str, ts: str = "1.0", **kw: object) -> IncomingMessage:
    return IncomingMessage(channel="C", user=str(kw.pop("user", "U1")), text=text, ts=ts,
                           event_id=f"Ev{ts}", **kw)  # type: ignore[arg-type]


async def test_two_mentions_make_two_tasks_and_both_complete(
        chat: tuple[ChatService, MemoryTransport]) -> None:
    service, transport = chat
    outcome = await service.handle(_msg("@alice and @bob-bot write notes.md", addressed=True))
    assert outcome.kind == "task" and len(outcome.task_ids) == 2
    await service.aclose()
    texts = [t for _, t, thread in transport.posts if thread == "1.0"]
    assert "alice took this on" in texts[0] and "bob took this on" in texts[0]
    assert sum("completed" in t for t in texts) == 2


async def test_chatter_and_bots_are_ignored_and_status_and_help_answer(
        chat: tuple[ChatService, MemoryTransport]) -> None:
    service, transport = chat
    assert (await service.handle(_msg("lunch anyone?"))).kind == "ignored"
    assert (await service.handle(_msg("@alice do it", "2.0", from_bot=True))).kind == "ignored"
    assert (await service.handle(_msg("@alice status", "3.0"))).kind == "status"
    assert (await service.handle(_msg("", "4.0", addressed=True))).kind == "help"
    await service.aclose()
    assert [thread for _, _, thread in transport.posts] == ["3.0", "4.0"]


async def test_no_mention_goes_to_a_free_volunteer(
        chat: tuple[ChatService, MemoryTransport]) -> None:
    service, _ = chat
    outcome = await service.handle(_msg("tidy the readme", addressed=True))
    task = await service.store.get_task(outcome.task_ids[0])
    assert task.employee in ("alice", "bob")


async def test_too_many_mentions_are_refused(chat: tuple[ChatService, MemoryTransport]) -> None:
    service, _ = chat
    text = " ".join(f"@e{i}" for i in range(11)) + " do things"
    outcome = await service.handle(_msg(text))
    assert outcome.kind == "rejected" and "at most 10" in outcome.reply
