"""The chat layer: an incoming message becomes tasks, replies in its thread, updates.

:meth:`ChatService.handle` is the fast part, awaited before the transport acknowledges
the message: it ignores bots, records the event as pending (a handled repeat is
dropped), applies the sender's limits, routes the mentions to employees, and creates
the tasks in the transaction that marks the event handled, then hands them to the
scheduler; so an acknowledged message is a committed task, and a redelivery after a
crash makes exactly one (docs/chat.md, "Exactly one task per message"). Everything that
talks back (the reply in thread, throttled progress edits, the completion message) runs
in background tasks this service owns and awaits in :meth:`aclose`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Self

from ..config import ChatSettings
from ..errors import ConflictError, NotFoundError, OrchestraError, ServiceUnavailableError
from ..models import Task, validate_description, validate_files
from .follow import follow_tasks
from .limits import SenderLimits
from .message import IncomingMessage, Intent, classify, find_paths, parse_mentions, strip_mentions
from .replies import HELP_TEXT, escape, limited_text, taken_text

__all__ = ["ChatService", "ChatTransport", "Outcome"]

log = logging.getLogger(__name__)
AUTO_HIRE_ROLE = "developer"
MAX_MENTIONS = 10  # one message may not fan out into an unbounded number of tasks
_ANSWERED_MAX = 10_000  # recent events this process answered (a retry of one is a repeat)


class ChatTransport(Protocol):
    """Where replies go (Slack's Web API, or a fake in tests)."""

    async def post(self, channel: str, text: str, *, thread_ts: str | None = None) -> str:
        """Post a message; returns its ts."""

    async def update(self, channel: str, ts: str, text: str) -> None:
        """Edit a posted message."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What :meth:`ChatService.handle` did with a message."""

    kind: str  # ignored | duplicate | limited | help | status | task | rejected
    task_ids: tuple[int, ...] = ()
    reply: str = ""


@dataclass(slots=True)
class _Counters:
    received: int = 0
    ignored: int = 0
    duplicates: int = 0
    redelivered: int = 0
    resumed: int = 0
    limited: int = 0
    tasks: int = 0
    replies: int = 0
    post_errors: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


class ChatService:
    """Routes chat messages to employees; an async context manager."""

    def __init__(self, store: Any, scheduler: Any, settings: ChatSettings, *,
                 project_root: Path, transport: ChatTransport, auto_hire: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.scheduler = scheduler
        self.settings = settings
        self.project_root = project_root
        self.transport = transport
        self.auto_hire = auto_hire
        self.limits = SenderLimits(settings.max_messages_per_hour, settings.min_interval_s,
                                   clock=clock)
        self.counters = _Counters()
        self._tasks: set[asyncio.Task[None]] = set()
        self._inflight: set[str] = set()  # event ids and message keys being handled
        self._answered: OrderedDict[str, None] = OrderedDict()  # events answered here
        self._closed = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self, timeout_s: float = 5.0) -> None:
        """Let replies in flight finish (within ``timeout_s``), then cancel the rest."""
        self._closed = True
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def stats(self) -> dict[str, Any]:
        """Counters for /performance (no secrets, no message text)."""
        c = self.counters
        return {"received": c.received, "ignored": c.ignored, "duplicates": c.duplicates,
                "redelivered": c.redelivered, "resumed": c.resumed,
                "limited": c.limited, "tasks": c.tasks, "replies": c.replies,
                "post_errors": c.post_errors, "following": len(self._tasks),
                "by_kind": dict(c.by_kind)}

    # ------------------------------------------------------------------ handling

    async def handle(self, msg: IncomingMessage) -> Outcome:
        """Act on one message (see the module doc); never raises for bad user input."""
        self.counters.received += 1
        mentions = parse_mentions(msg.text)
        if msg.from_bot or self._closed or not (msg.addressed or mentions):
            self.counters.ignored += 1
            return Outcome("ignored")
        keys = (msg.dedup_id, msg.message_key)
        if any(k in self._inflight for k in keys):  # its twin event is being handled here
            return self._duplicate()
        self._inflight.update(keys)
        try:
            state = await self._claim(msg)
            if state is None or state[1] != "received":
                return await self._handled_before(msg, state)
            record = state[0]
            outcome = await self._decide(msg, mentions, record)
            if outcome.kind == "duplicate" or (
                    not outcome.task_ids
                    and not await self.store.finish_chat_event(record, outcome.kind)):
                return self._duplicate()  # another delivery of it was handled meanwhile
        finally:
            self._inflight.difference_update(keys)
        self.counters.by_kind[outcome.kind] = self.counters.by_kind.get(outcome.kind, 0) + 1
        self._answer(msg, outcome, record)
        return outcome

    def _answer(self, msg: IncomingMessage, outcome: Outcome, record: str) -> None:
        self._answered[record] = None
        if len(self._answered) > _ANSWERED_MAX:
            self._answered.popitem(last=False)
        self._spawn(self._talk_back(msg, outcome))

    def _duplicate(self) -> Outcome:
        self.counters.duplicates += 1
        return Outcome("duplicate")

    async def _claim(self, msg: IncomingMessage) -> tuple[str, str, tuple[int, ...]] | None:
        """Record the event as pending: ``(event id, outcome, task ids)`` as recorded, or
        ``None``. A pending event (outcome ``received``) that is not being handled here
        is acted on again: its first delivery died with its process before its tasks
        were committed."""
        if await self.store.claim_chat_event(msg.dedup_id, msg.message_key,
                                             channel=msg.channel, user=msg.user):
            return msg.dedup_id, "received", ()
        state: tuple[str, str, tuple[int, ...]] | None = await self.store.chat_event_state(
            msg.dedup_id, msg.message_key)
        if state is not None and state[1] == "received":
            self.counters.redelivered += 1
        return state

    async def _handled_before(self, msg: IncomingMessage,
                              state: tuple[str, str, tuple[int, ...]] | None) -> Outcome:
        """A duplicate; unless Slack retries an event whose tasks were committed but which
        this process never answered (the one that did died first): then its thread gets
        the reply and the updates it missed."""
        if (state is None or state[1] != "task" or not state[2] or not msg.retry
                or state[0] in self._answered):
            return self._duplicate()
        tasks = [await self.store.get_task(i) for i in state[2]]
        self.counters.resumed += 1
        outcome = Outcome("task", state[2], taken_text(tasks))
        self._answer(msg, outcome, state[0])
        return outcome

    async def _decide(self, msg: IncomingMessage, mentions: list[str], record: str) -> Outcome:
        decision = self.limits.check(msg.user)
        if not decision.allowed:
            self.counters.limited += 1
            return Outcome("limited", reply=limited_text(msg.user, decision.reason,
                                                         decision.retry_after_s))
        text = strip_mentions(msg.text)
        intent = classify(text)
        try:
            if intent is Intent.HELP:
                return Outcome("help", reply=HELP_TEXT)
            if intent is Intent.STATUS:
                return Outcome("status", reply=await self._status(mentions))
            return await self._assign(text, mentions, record)
        except OrchestraError as exc:  # bad paths, over-long text, service draining ...
            # the server's own paths are not the channel's business
            message = exc.message.replace(str(self.project_root), "<project root>")
            return Outcome("rejected", reply=f"I could not take this on: {escape(message)}")

    async def _assign(self, text: str, mentions: list[str], record: str) -> Outcome:
        description = validate_description(text, "message text")
        paths = find_paths(text)
        files = validate_files(self.project_root, paths, "message paths") if paths else []
        if len(mentions) > MAX_MENTIONS:
            return Outcome("rejected", reply=f"That names {len(mentions)} people; a message "
                                             f"may give work to at most {MAX_MENTIONS}.")
        names = mentions or await self._volunteer()
        if not names:
            return Outcome("rejected", reply="Nobody is on the team yet: hire someone with "
                                             "`/hire alice developer`, then mention them.")
        known, unknown = await self._resolve(names)
        tasks: list[Task] = []
        if known:
            created = await self._create_tasks(record, known, description, files)
            if created is None:
                return Outcome("duplicate")
            tasks = created
        reply = taken_text(tasks) if tasks else ""
        if unknown:
            reply += (" " if reply else "") + " ".join(
                f"I don't know @{escape(n, 64)}: hire them with `/hire {escape(n, 64)} developer`."
                for n in unknown)
        return Outcome("task" if tasks else "rejected", tuple(t.id for t in tasks), reply)

    async def _create_tasks(self, record: str, names: list[str], description: str,
                            files: list[str]) -> list[Task] | None:
        """The tasks, committed with the event's "handled" mark (one transaction), then
        scheduled; ``None`` when another delivery of the event was handled already."""
        if not self.scheduler.accepting:
            raise ServiceUnavailableError("The service is stopping; it takes no new tasks")
        created: list[Task] | None = await self.store.create_chat_tasks(
            record, [{"employee": n, "description": description, "files": files}
                     for n in names])
        if created is not None:
            self.scheduler.adopt(created)
            self.counters.tasks += len(created)
        return created

    async def _resolve(self, names: list[str]) -> tuple[list[str], list[str]]:
        """``(employees, unknown names)``; unknown ones are hired when auto-hire is on."""
        known: list[str] = []
        unknown: list[str] = []
        for name in names:
            try:
                await self.store.get_employee(name)
            except NotFoundError:
                if not self.auto_hire:
                    unknown.append(name)
                    continue
                with contextlib.suppress(ConflictError):
                    await self.store.hire(name, AUTO_HIRE_ROLE, "normal")
            known.append(name)
        return known, unknown

    async def _volunteer(self) -> list[str]:
        """The original's "first volunteer": the first employee with nothing to do."""
        employees = await self.store.list_employees(limit=1000)
        if not employees:
            return []
        busy = {t.employee for s in ("running", "queued")
                for t in await self.store.list_tasks(status=s, limit=10_000)}
        free = [e.name for e in employees if e.name not in busy]
        return [(free or [employees[0].name])[0]]

    async def _status(self, mentions: list[str]) -> str:
        running = await self.store.list_tasks(status="running", limit=1000)
        queued = await self.store.list_tasks(status="queued", limit=1000)
        lines = []
        for t in [*running, *queued]:
            if not mentions or t.employee in mentions:
                lines.append(f"• task {t.id} for {escape(t.employee)}: {t.status}, "
                             f"{t.progress}% — {escape(t.description, 80)}")
        who = ", ".join(escape(m) for m in mentions) if mentions else "the team"
        return (f"Nothing queued or running for {who}." if not lines
                else f"Work for {who}:\n" + "\n".join(lines[:20]))

    # ------------------------------------------------------------------ talking back

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        t = asyncio.create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _talk_back(self, msg: IncomingMessage, outcome: Outcome) -> None:
        # The event, its outcome and its tasks are committed before the ack.
        if outcome.reply and not await self.post(msg.channel, outcome.reply, msg.reply_thread):
            return
        if outcome.task_ids:
            await follow_tasks(self, msg.channel, msg.reply_thread, outcome.task_ids)

    async def post(self, channel: str, text: str, thread_ts: str | None) -> str | None:
        """Post through the transport; ``None`` (logged, counted) when it fails."""
        try:
            ts = await self.transport.post(channel, text, thread_ts=thread_ts)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a chat outage must not stop the service
            self.counters.post_errors += 1
            log.warning("chat: posting to %s failed: %s", channel, type(exc).__name__)
            return None
        self.counters.replies += 1
        return ts

    async def edit(self, channel: str, ts: str, text: str) -> None:
        """Edit a posted message through the transport (failures logged, counted)."""
        try:
            await self.transport.update(channel, ts, text)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - progress edits are best effort
            self.counters.post_errors += 1
            log.warning("chat: editing in %s failed: %s", channel, type(exc).__name__)
