"""The event hub: batched delivery to subscriptions, one wake-up per waiter for the end."""

from __future__ import annotations

import asyncio

from orchestra_kit.models import Task, TaskStatus
from orchestra_kit.scheduler.events import EventHub, TaskEvent


def _task(status: TaskStatus) -> Task:
    return Task(id=7, employee="a", description="d", status=status)


async def test_events_published_together_arrive_in_one_batch() -> None:
    hub = EventHub()
    sub = hub.add(7)
    waiter = asyncio.ensure_future(sub.take())
    await asyncio.sleep(0)  # the subscriber waits
    for pct in (25, 50, 75):
        hub.publish(TaskEvent(7, "progress", "running", pct))
    hub.publish(TaskEvent.status_of(_task(TaskStatus.COMPLETED)))
    batch = await waiter
    assert [e.kind if e else None for e in batch] == ["progress"] * 3 + ["status"]
    assert [e.progress for e in batch if e and e.kind == "progress"] == [25, 50, 75]
    assert await sub.take(timeout_s=0.01) == []  # nothing left: the heartbeat case


async def test_until_end_resolves_once_with_the_terminal_task() -> None:
    hub = EventHub()
    ended = hub.until_end(7)
    hub.publish(TaskEvent.status_of(_task(TaskStatus.RUNNING)))
    assert not ended.done()
    hub.publish(TaskEvent.status_of(_task(TaskStatus.FAILED)))
    done = await ended
    assert done is not None and done.status == TaskStatus.FAILED


async def test_close_all_ends_subscriptions_and_waiters() -> None:
    hub = EventHub()
    sub, ended = hub.add(7), hub.until_end(7)
    hub.close_all()
    assert await sub.take() == [None]
    assert await ended is None


async def test_forgotten_waiters_and_subscriptions_leave_nothing_behind() -> None:
    hub = EventHub()
    ended, sub = hub.until_end(7), hub.add(7)
    assert hub.listened(7)
    hub.forget_end(7, ended)
    hub.remove(7, sub)
    assert not hub.listened(7) and hub.count() == 0
    hub.publish(TaskEvent.status_of(_task(TaskStatus.COMPLETED)))
    assert not ended.done()  # it was forgotten: nobody sets it
