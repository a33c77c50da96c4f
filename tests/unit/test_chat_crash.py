"""A crash anywhere while a chat event is handled: its redelivery makes exactly one task.

The process "dies" at the n-th awaited store call, before the call reaches the database
or after it committed; the service is then rebuilt on the same database (a restart)
and Slack's retry of the event arrives. Whatever n, the message ends with one task.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from orchestra_kit.chat import ChatService, IncomingMessage, Outcome
from orchestra_kit.config import ChatSettings, DatabaseSettings, OptimizationFlags
from orchestra_kit.models import Task
from orchestra_kit.store import Store

MSG = IncomingMessage(channel="C1", user="U1", text="@alice fix the build", ts="1.0",
                      event_id="Ev1", addressed=True)


class Crash(BaseException):
    """The process dies here (a BaseException: no handler in the service catches it)."""


class CrashingStore:
    """The real store, except that the ``at``-th awaited call dies, before or after it ran."""

    def __init__(self, store: Store, at: int, after: bool) -> None:
        self._store, self._at, self._after = store, at, after
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            dies = len(self.calls) == self._at
            if dies and not self._after:
                raise Crash(f"before {name}")
            result = await attr(*args, **kwargs)
            if dies:
                raise Crash(f"after {name}")
            return result

        return call


class Queue:
    """The scheduler's side, without running anything: what was scheduled."""

    accepting = True

    def __init__(self, store: Any) -> None:
        self.store = store
        self.scheduled: list[int] = []

    def adopt(self, tasks: list[Task]) -> None:
        self.scheduled += [t.id for t in tasks]

    async def subscribe(self, task_id: int) -> AsyncIterator[None]:
        """Nothing runs here: a follower sees no event and finds the task still queued."""
        for _ in ():
            yield None

    async def submit(self, employee: str, description: str, **kw: Any) -> Task:
        task: Task = await self.store.create_task(employee, description, **kw)
        self.scheduled.append(task.id)
        return task


async def _deliver(store: Any, root: Path, msg: IncomingMessage = MSG) -> Outcome:
    chat = ChatService(store, Queue(store), ChatSettings(min_interval_s=0), project_root=root,
                       transport=_Quiet())
    try:
        return await chat.handle(msg)
    finally:
        chat._closed = True  # a dead process posts nothing more
        for t in list(chat._tasks):
            t.cancel()


class _Quiet:
    async def post(self, channel: str, text: str, *, thread_ts: str | None = None) -> str:
        return "1"

    async def update(self, channel: str, ts: str, text: str) -> None:
        return None


async def _crash_then_retry(tmp_path: Path, at: int,
                            after: bool) -> tuple[list[str], Outcome, int]:
    db = DatabaseSettings(path=str(tmp_path / f"c{at}{after}.db"))
    async with Store(db, OptimizationFlags(), project_root=tmp_path) as store:
        await store.hire("alice", "developer")
        crashing = CrashingStore(store, at, after)
        with pytest.raises(Crash):
            await _deliver(crashing, tmp_path)
    async with Store(db, OptimizationFlags(), project_root=tmp_path) as store:  # restarted
        outcome = await _deliver(store, tmp_path, dataclasses.replace(MSG, retry=1))
        tasks = await store.list_tasks()
    return crashing.calls, outcome, len(tasks)


async def _calls_of_one_delivery(tmp_path: Path) -> int:
    async with Store(DatabaseSettings(path=str(tmp_path / "dry.db")), OptimizationFlags(),
                     project_root=tmp_path) as store:
        await store.hire("alice", "developer")
        counting = CrashingStore(store, 0, False)
        assert (await _deliver(counting, tmp_path)).kind == "task"
        return len(counting.calls)


async def test_a_crash_at_any_store_call_then_a_retry_makes_exactly_one_task(
        tmp_path: Path) -> None:
    calls = await _calls_of_one_delivery(tmp_path)
    assert calls >= 2  # at least: record the event, create its task
    for at in range(1, calls + 1):
        for after in (False, True):
            seen, outcome, tasks = await _crash_then_retry(tmp_path, at, after)
            where = f"crash {'after' if after else 'before'} {seen[-1]} (call {at})"
            assert tasks == 1, f"{where}: the retry left {tasks} tasks ({outcome.kind})"
            # and the thread gets its answer, even when the tasks were committed already
            assert outcome.kind == "task" and "alice took this on" in outcome.reply, where


async def test_a_repeat_of_an_event_answered_here_stays_a_duplicate(tmp_path: Path) -> None:
    async with Store(DatabaseSettings(path=str(tmp_path / "d.db")), OptimizationFlags(),
                     project_root=tmp_path) as store:
        await store.hire("alice", "developer")
        chat = ChatService(store, Queue(store), ChatSettings(min_interval_s=0),
                           project_root=tmp_path, transport=_Quiet())
        async with chat:
            assert (await chat.handle(MSG)).kind == "task"
            late_retry = dataclasses.replace(MSG, retry=1)  # its ack came after Slack's 3 s
            twin = dataclasses.replace(MSG, event_id="Ev2")  # the `message` event of it
            assert (await chat.handle(late_retry)).kind == "duplicate"
            assert (await chat.handle(twin)).kind == "duplicate"
        assert len(await store.list_tasks()) == 1 and chat.stats()["resumed"] == 0


async def test_concurrent_redeliveries_of_a_pending_event_make_one_set_of_tasks(
        tmp_path: Path) -> None:
    async with Store(DatabaseSettings(path=str(tmp_path / "p.db")), OptimizationFlags(),
                     project_root=tmp_path) as store:
        await store.hire("alice", "developer")
        assert await store.claim_chat_event("Ev1", "C1:1.0", channel="C1", user="U1")
        item = {"employee": "alice", "description": "fix the build"}
        results = await asyncio.gather(*(store.create_chat_tasks("Ev1", [item])
                                         for _ in range(20)))
        made = [r for r in results if r is not None]
        assert len(made) == 1 and len(await store.list_tasks()) == 1
        assert await store.chat_event_state("EvOther", "C1:1.0") == ("Ev1", "task",
                                                                      (made[0][0].id,))
        assert not await store.finish_chat_event("Ev1", "help")  # handled: stays "task"


async def test_an_item_error_rolls_back_and_leaves_the_event_pending(tmp_path: Path) -> None:
    async with Store(DatabaseSettings(path=str(tmp_path / "r.db")), OptimizationFlags(),
                     project_root=tmp_path) as store:
        await store.hire("alice", "developer")
        assert await store.claim_chat_event("Ev1", "C1:1.0", channel="C1", user="U1")
        items = [{"employee": "alice", "description": "a"},
                 {"employee": "ghost", "description": "b"}]
        with pytest.raises(Exception, match="ghost"):
            await store.create_chat_tasks("Ev1", items)
        assert await store.list_tasks() == []
        assert await store.chat_event_state("Ev1", "C1:1.0") == ("Ev1", "received", ())

