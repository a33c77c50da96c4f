"""The seed's resource metrics: process CPU %, RSS, open connections and files, and the
event loop's lag, for ``/performance`` and ``/metrics``.

One probe task per application wakes every ``interval_s`` and records how late it woke
(a loop busy with other work wakes it late: that delay is what every request and
timer of the process waits too); once a second it also samples the process CPU time.
Lag percentiles are over the last ``window`` samples (a minute by default). Reading is
cheap (a sort of ≤ 600 floats and two ``psutil`` calls), done at scrape time only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Self

import psutil

__all__ = ["ResourceProbe"]


class ResourceProbe:
    """Samples loop lag and CPU use in the background; :meth:`snapshot` reads them."""

    def __init__(self, *, interval_s: float = 0.1, window: int = 600,
                 connections: Callable[[], int] | None = None) -> None:
        self.interval_s = interval_s
        self._lags_s: deque[float] = deque(maxlen=window)
        self._proc = psutil.Process(os.getpid())
        self._cpu_percent = 0.0
        self._task: asyncio.Task[None] | None = None
        self.connections = connections  # set by the Service once it listens

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run(), name="resource-probe")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop sampling (idempotent)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        every = max(1, round(1.0 / self.interval_s))
        wall0, cpu0 = time.monotonic(), self._cpu_s()
        n = 0
        while True:
            due = loop.time() + self.interval_s
            await asyncio.sleep(self.interval_s)
            self._lags_s.append(max(0.0, loop.time() - due))
            n += 1
            if n % every == 0:
                wall, cpu = time.monotonic(), self._cpu_s()
                self._cpu_percent = 100.0 * (cpu - cpu0) / max(wall - wall0, 1e-9)
                wall0, cpu0 = wall, cpu

    def _cpu_s(self) -> float:
        t = self._proc.cpu_times()
        return float(t.user + t.system)

    def snapshot(self) -> dict[str, Any]:
        """CPU % (of one core, over the last second), RSS, threads, open files and
        connections, loop lag p50/p99/max (ms) over the window."""
        lags = sorted(self._lags_s)
        with self._proc.oneshot():
            rss = self._proc.memory_info().rss
            fds = self._proc.num_fds()
            threads = self._proc.num_threads()
        return {
            "cpu_percent": round(self._cpu_percent, 1),
            "rss_bytes": rss,
            "rss_mb": round(rss / 2**20, 1),
            "threads": threads,
            "open_fds": fds,
            "open_connections": self.connections() if self.connections is not None else -1,
            "loop_lag_p50_ms": round(_pct_ms(lags, 0.50), 3),
            "loop_lag_p99_ms": round(_pct_ms(lags, 0.99), 3),
            "loop_lag_max_ms": round(lags[-1] * 1000.0, 3) if lags else 0.0,
            "loop_lag_samples": len(lags),
        }


def _pct_ms(ordered: list[float], q: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000.0
