"""The generator watching itself: when a request really went out, and how busy the loop was.

- :class:`SendStamp` / :func:`mark_sent` / :func:`add_queue_time`: the load generator
  puts a fresh stamp in a context variable around each operation; whoever actually
  writes the request (the aiohttp :func:`trace_config` hooks, or the raw HTTP client)
  stamps the moment the request headers went out and the time spent waiting for a
  free connection. So ``sent_s`` is when the request left, not when its task started,
  and a client-side queue shows up as ``queue_ms`` instead of hiding inside
  ``service_ms``.
- :class:`LoopProbe`: a timer that measures its own lateness every ``interval_s``
  (the event loop's lag: how long a ready callback waits for the loop) plus the
  process's CPU time over the run. A generator whose loop lags or whose process uses
  a whole core measures itself, not the service; :func:`orchestra_kit.lab.analysis.audit`
  flags such points in closed and open loops alike.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Self

__all__ = [
    "LoopProbe",
    "SendStamp",
    "add_queue_time",
    "current_stamp",
    "mark_sent",
    "trace_config",
]


@dataclass(slots=True)
class SendStamp:
    """Set around one operation: when its first request went out, its connection wait."""

    sent: float | None = None  # time.perf_counter() when the request headers went out
    queued_s: float = 0.0  # time spent waiting for a free connection
    queue_started: float | None = None


current_stamp: contextvars.ContextVar[SendStamp | None] = contextvars.ContextVar(
    "orchestra_lab_send_stamp", default=None
)


def mark_sent(now: float | None = None) -> None:
    """Stamp the current operation's send time (only the first request of it counts)."""
    stamp = current_stamp.get()
    if stamp is not None and stamp.sent is None:
        stamp.sent = time.perf_counter() if now is None else now


def add_queue_time(seconds: float) -> None:
    """Add time the current operation spent waiting for a connection."""
    stamp = current_stamp.get()
    if stamp is not None and stamp.sent is None:
        stamp.queued_s += max(0.0, seconds)


async def _queued_start(_s: Any, _c: SimpleNamespace, _p: Any) -> None:
    stamp = current_stamp.get()
    if stamp is not None:
        stamp.queue_started = time.perf_counter()


async def _queued_end(_s: Any, _c: SimpleNamespace, _p: Any) -> None:
    stamp = current_stamp.get()
    if stamp is not None and stamp.queue_started is not None:
        add_queue_time(time.perf_counter() - stamp.queue_started)
        stamp.queue_started = None


async def _headers_sent(_s: Any, _c: SimpleNamespace, _p: Any) -> None:
    mark_sent()


def trace_config() -> Any:
    """An ``aiohttp.TraceConfig`` feeding :class:`SendStamp` (pass it to the ClientSession)."""
    import aiohttp

    cfg = aiohttp.TraceConfig()
    cfg.on_connection_queued_start.append(_queued_start)
    cfg.on_connection_queued_end.append(_queued_end)
    cfg.on_request_headers_sent.append(_headers_sent)
    return cfg


def _nearest_rank(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    rank = max(1, int(q * len(sorted_values) / 100.0 + 0.5))
    return sorted_values[min(rank, len(sorted_values)) - 1]


class LoopProbe:
    """Measures event-loop lag (a timer's lateness) and process CPU while it is entered.

    ``async with LoopProbe() as probe: ...`` then ``probe.stats()``: ``loop_lag_p50_ms``,
    ``loop_lag_p99_ms``, ``loop_lag_max_ms``, ``cpu_s`` and ``cpu_pct`` (CPU seconds of
    this process / wall seconds × 100: 100 means one whole core).
    """

    def __init__(self, interval_s: float = 0.01) -> None:
        self.interval_s = interval_s
        self.lags_ms: list[float] = []
        self._task: asyncio.Task[None] | None = None
        self._cpu0 = self._wall0 = 0.0
        self._cpu_s = self._wall_s = 0.0

    async def _run(self) -> None:
        while True:
            planned = time.perf_counter() + self.interval_s
            await asyncio.sleep(self.interval_s)
            self.lags_ms.append(max(0.0, time.perf_counter() - planned) * 1000.0)

    async def __aenter__(self) -> Self:
        self._cpu0, self._wall0 = time.process_time(), time.perf_counter()
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the timer and take the CPU reading (idempotent)."""
        task, self._task = self._task, None
        if task is None:
            return
        self._cpu_s = time.process_time() - self._cpu0
        self._wall_s = time.perf_counter() - self._wall0
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            if not task.cancelled():  # pragma: no cover - our own cancel, re-raise others
                raise
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise

    def stats(self) -> dict[str, float]:
        """The loop-lag percentiles and CPU use measured while entered."""
        lags = sorted(self.lags_ms)
        wall = max(self._wall_s, 1e-9)
        return {
            "loop_lag_p50_ms": _nearest_rank(lags, 50.0),
            "loop_lag_p99_ms": _nearest_rank(lags, 99.0),
            "loop_lag_max_ms": lags[-1] if lags else math.nan,
            "cpu_s": self._cpu_s,
            "cpu_pct": 100.0 * self._cpu_s / wall,
        }
