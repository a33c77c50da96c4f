"""Per-sender message limits: at most N an hour and one every S seconds (0 turns one off).

The original allowed 20 messages an hour and one every 2 s per sender. A sliding window
of send times per sender; the clock is injectable so tests move it instead of sleeping.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["LimitDecision", "SenderLimits"]

_HOUR_S = 3600.0


@dataclass(frozen=True, slots=True)
class LimitDecision:
    """Whether a message may go through; if not, why and for how long."""

    allowed: bool
    retry_after_s: float = 0.0
    reason: str = ""


class SenderLimits:
    """Sliding-window limits per sender (memory: one deque per recent sender)."""

    def __init__(self, max_per_hour: int, min_interval_s: float, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_per_hour = max_per_hour
        self.min_interval_s = min_interval_s
        self._clock = clock
        self._sent: dict[str, deque[float]] = {}

    def check(self, sender: str) -> LimitDecision:
        """Count a message from ``sender`` if it is within the limits."""
        if self.max_per_hour <= 0 and self.min_interval_s <= 0:
            return LimitDecision(True)
        now = self._clock()
        times = self._sent.setdefault(sender, deque())
        while times and now - times[0] >= _HOUR_S:
            times.popleft()
        if self.min_interval_s > 0 and times and now - times[-1] < self.min_interval_s:
            wait = self.min_interval_s - (now - times[-1])
            return LimitDecision(False, wait, f"one message every {self.min_interval_s:g} s")
        if self.max_per_hour > 0 and len(times) >= self.max_per_hour:
            wait = _HOUR_S - (now - times[0])
            return LimitDecision(False, wait, f"{self.max_per_hour} messages an hour")
        times.append(now)
        if len(self._sent) > 10_000:
            self._forget_idle(now)
        return LimitDecision(True)

    def _forget_idle(self, now: float) -> None:
        idle = [s for s, t in self._sent.items() if not t or now - t[-1] >= _HOUR_S]
        for sender in idle:
            del self._sent[sender]
