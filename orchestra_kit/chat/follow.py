"""Following tasks from a chat thread: throttled progress edits, then a completion message."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from ..models import Task
from .replies import completion_text, progress_text

__all__ = ["follow_tasks"]


async def follow_tasks(chat: Any, channel: str, thread_ts: str, task_ids: Sequence[int]) -> None:
    """Follow every task of one message until each ends."""
    await asyncio.gather(*(follow_task(chat, channel, thread_ts, tid) for tid in task_ids))


async def follow_task(chat: Any, channel: str, thread_ts: str, task_id: int) -> None:
    """Post at most one progress edit per ``progress_interval_s``, then the completion."""
    interval = chat.settings.progress_interval_s
    last = time.monotonic()
    progress_ts: str | None = None
    touched: list[str] = []
    final: Task | None = None
    employee = ""
    async for event in chat.scheduler.subscribe(task_id):
        if event is None:
            continue
        if event.task is not None:
            employee = event.task.employee
            if event.task.terminal:
                final = event.task
        if event.kind == "file" and event.data.get("path"):
            touched.append(str(event.data["path"]))
        elif event.kind == "progress" and 0 < event.progress < 100:
            now = time.monotonic()
            if now - last < interval:
                continue
            last = now
            text = progress_text(event.task, task_id, employee, event.progress)
            if progress_ts is None:
                progress_ts = await chat.post(channel, text, thread_ts)
            else:
                await chat.edit(channel, progress_ts, text)
    if final is None:  # the stream ended early (service draining): read where it stands
        final = await chat.store.get_task(task_id)
    if final is not None and final.terminal:
        await chat.post(channel, completion_text(final, touched or list(final.files)), thread_ts)
