"""State of one fake LLM provider: seeded request plans, FIFO capacity, request log, counters.

Everything random about a request (fault, time to first token, output length, filler words)
is drawn from the server's own ``random.Random(seed)`` synchronously when the request
arrives, in one fixed order, so the same sequence of requests gives the same answers and
the same latencies on every run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any, Literal

from .config import FakeLLMConfig, ScriptedReply
from .protocol import (
    ChatRequest,
    ReplyContent,
    assistant_turns,
    file_marker,
    fill_file,
    filler_words,
    script_marker,
)

__all__ = ["FakeLLMStats", "FakeState", "FifoGate", "Outcome", "RequestLogEntry", "RequestPlan"]

Outcome = Literal["ok", "429", "500", "503", "hang", "cut", "bad_request", "not_found"]


@dataclass(kw_only=True)
class RequestLogEntry:
    """One request the fake received; ``queued_ms`` is filled in once it leaves the queue."""

    t_received: float  # wall clock (time.time()), for storage
    path: str
    model: str | None
    stream: bool
    n_messages: int
    has_tools: bool
    outcome: Outcome
    queued_ms: float = 0.0
    status: int = 200
    ttft_ms: float = 0.0  # the sampled time to first token
    output_tokens: int = 0
    reply_kind: str | None = None  # filler | script | title | done
    script_name: str | None = None
    body: Any = None  # the decoded request body when config.record_bodies

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy."""
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class FakeLLMStats:
    """A snapshot of the counters."""

    total: int
    in_flight: int
    queued: int
    max_in_flight: int
    max_queued: int
    hanging: int


@dataclass(frozen=True, kw_only=True)
class RequestPlan:
    """What the fake will do with one valid chat request."""

    outcome: Outcome
    ttft_s: float
    reply: ReplyContent
    script_name: str | None
    completion_id: str


class FifoGate:
    """A counting gate that admits waiters strictly first-in, first-out."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    def is_free(self) -> bool:
        """True when an acquire would not wait."""
        return self._in_use < self._capacity and not self._waiters

    async def acquire(self) -> None:
        """Take a slot, waiting in line behind earlier callers."""
        if self.is_free():
            self._in_use += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot was handed over just before the cancel: pass it on
            else:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        """Give a slot back, handing it straight to the oldest waiter if there is one."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._in_use -= 1


class FakeState:
    """Everything one fake provider remembers between requests."""

    def __init__(self, config: FakeLLMConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.gate = FifoGate(config.capacity)
        self.log: list[RequestLogEntry] = []
        self.closing = asyncio.Event()
        self.script_cursor = 0
        self._completion_seq = 0
        self._in_flight = 0
        self._queued = 0
        self._max_in_flight = 0
        self._max_queued = 0
        self.hanging = 0  # requests held open by a "hang" fault right now

    def stats(self) -> FakeLLMStats:
        """Current counters."""
        return FakeLLMStats(
            total=len(self.log), in_flight=self._in_flight, queued=self._queued,
            max_in_flight=self._max_in_flight, max_queued=self._max_queued,
            hanging=self.hanging,
        )

    def queue_full(self) -> bool:
        """Whether ``max_queue`` requests already wait (the next one is shed with a 429)."""
        limit = self.config.max_queue
        return limit > 0 and not self.gate.is_free() and self._queued >= limit

    def reset_log(self) -> None:
        """Forget logged requests and the peak counters."""
        self.log.clear()
        self._max_in_flight = self._in_flight
        self._max_queued = self._queued

    def _draw_outcome(self) -> Outcome:
        u = self.rng.random()
        cfg = self.config
        for outcome, rate in (("429", cfg.rate_429), ("500", cfg.rate_500),
                              ("503", cfg.rate_503), ("hang", cfg.rate_hang),
                              ("cut", cfg.rate_stream_cut)):
            if u < rate:
                return outcome  # type: ignore[return-value]
            u -= rate
        return "ok"

    def _pick_script(
        self, chat: ChatRequest
    ) -> tuple[str | None, ScriptedReply | None, bool]:
        """(script name, reply or None, whether a script applies) for a request with tools."""
        name = script_marker(chat.messages)
        if name is not None and name in self.config.named_scripts:
            script = self.config.named_scripts[name]
            turn = assistant_turns(chat.messages)
            return name, (script[turn] if turn < len(script) else None), True
        default = self.config.script
        if default is None:
            return None, None, False
        reply = default[self.script_cursor] if self.script_cursor < len(default) else None
        return None, reply, True

    def plan(self, chat: ChatRequest) -> RequestPlan:
        """Draw everything random about ``chat`` (synchronously, in a fixed order)."""
        cfg = self.config
        outcome = self._draw_outcome()
        if cfg.ttft_sigma > 0:  # lognormal around the median: the long tail of real APIs
            ttft_ms = cfg.ttft_ms * math.exp(self.rng.gauss(0.0, cfg.ttft_sigma))
        else:
            ttft_ms = max(0.0, cfg.ttft_ms + self.rng.uniform(-cfg.ttft_jitter_ms,
                                                              cfg.ttft_jitter_ms))
        low = max(1, cfg.output_tokens - cfg.output_tokens_jitter)
        n_tokens = self.rng.randint(low, cfg.output_tokens + cfg.output_tokens_jitter)
        name, scripted, script_applies = self._pick_script(chat)
        if script_applies and not chat.has_tools:
            reply = ReplyContent.from_text("title", cfg.title_reply)
        elif scripted is not None:
            reply = ReplyContent.from_script(scripted)
            path = file_marker(chat.messages) if name is not None else None
            if path is not None:
                reply = dataclasses.replace(reply, tool_calls=fill_file(reply.tool_calls, path))
            if outcome == "ok" and name is None:
                self.script_cursor += 1  # failed answers are retried: do not consume
        elif script_applies:
            reply = ReplyContent.from_text("done", cfg.done_reply)
        elif outcome in ("ok", "cut"):
            reply = ReplyContent(kind="filler", words=filler_words(self.rng, n_tokens))
        else:
            reply = ReplyContent(kind="filler")
        self._completion_seq += 1
        return RequestPlan(
            outcome=outcome, ttft_s=ttft_ms / 1000.0, reply=reply, script_name=name,
            completion_id=f"chatcmpl-fake{self.config.seed}x{self._completion_seq}",
        )

    def record(self, entry: RequestLogEntry) -> RequestLogEntry:
        """Append ``entry`` to the log and return it."""
        self.log.append(entry)
        return entry

    @asynccontextmanager
    async def slot(self, entry: RequestLogEntry) -> AsyncIterator[None]:
        """Hold one of ``capacity`` generation slots (FIFO queue), timing the wait."""
        started = time.perf_counter()
        if self.gate.is_free():
            await self.gate.acquire()
        else:
            self._queued += 1
            self._max_queued = max(self._max_queued, self._queued)
            try:
                await self.gate.acquire()
            finally:
                self._queued -= 1
        entry.queued_ms = (time.perf_counter() - started) * 1000.0
        self._in_flight += 1
        self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            yield
        finally:
            self._in_flight -= 1
            self.gate.release()
