"""Token buckets: an async, FIFO-fair one for LLM calls, a keyed one for HTTP clients.

:class:`TokenBucket` holds up to ``burst`` tokens and refills at ``rate_per_minute``.
``await acquire(n)`` takes ``n`` tokens, waiting in line behind earlier callers: the
waiters sit in a FIFO queue of futures and a single loop timer wakes the head of the
queue when enough tokens have accumulated (no polling, no per-waiter sleep loop). A
cancelled waiter leaves the queue; if its tokens were already granted they are given
back and passed on, so cancellation never loses a token nor stalls the line.

:class:`KeyedTokenBucket` is the non-blocking per-client variant behind the HTTP API's
429 answers: ``check(key)`` says allowed or not, with the numbers for the
``X-RateLimit-*`` and ``Retry-After`` headers; idle keys are evicted LRU-first.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from .errors import ConfigError

__all__ = ["Clock", "Decision", "KeyedTokenBucket", "TokenBucket"]

#: Returns "now" in seconds on a monotonic scale.
Clock = Callable[[], float]


def _check_rate(rate_per_minute: float, burst: int, *, allow_zero: bool = False) -> None:
    ok = rate_per_minute >= 0 if allow_zero else rate_per_minute > 0
    if not ok or math.isnan(rate_per_minute) or math.isinf(rate_per_minute):
        raise ConfigError("rate_per_minute", rate_per_minute,
                          "must be a finite number " + (">= 0" if allow_zero else "> 0"))
    if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
        raise ConfigError("burst", burst, "must be an integer >= 1")


class _Waiter:
    __slots__ = ("future", "n")

    def __init__(self, n: int, future: asyncio.Future[None]) -> None:
        self.n = n
        self.future = future


class TokenBucket:
    """An async token bucket: ``burst`` capacity, refilled at ``rate_per_minute``; FIFO-fair."""

    def __init__(self, rate_per_minute: float, burst: int, *, clock: Clock | None = None) -> None:
        _check_rate(rate_per_minute, burst)
        self._loop = asyncio.get_running_loop()  # fails fast when built outside a loop
        self._clock: Clock = clock or self._loop.time
        self.rate_per_minute = float(rate_per_minute)
        self.burst = burst
        self._rate_per_s = self.rate_per_minute / 60.0
        self._tokens = float(burst)
        self._updated = self._clock()
        self._waiters: deque[_Waiter] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return (f"TokenBucket(rate_per_minute={self.rate_per_minute:g}, burst={self.burst}, "
                f"tokens={self.tokens:.2f}, waiters={len(self._waiters)})")

    # ------------------------------------------------------------------ state

    def _refill(self) -> None:
        now = self._clock()
        elapsed = now - self._updated
        if elapsed > 0:
            self._tokens = min(float(self.burst), self._tokens + elapsed * self._rate_per_s)
        self._updated = now

    @property
    def tokens(self) -> float:
        """Tokens available now (fractional)."""
        self._refill()
        return self._tokens

    @property
    def waiting(self) -> int:
        """How many callers are queued in ``acquire``."""
        return sum(1 for w in self._waiters if not w.future.done())

    def _seconds_until(self, n: float) -> float:
        return max(0.0, (n - self._tokens) / self._rate_per_s)

    def retry_after_s(self) -> float:
        """Seconds until one token is free for a new caller (queued callers come first)."""
        self._refill()
        needed = 1.0 + sum(w.n for w in self._waiters if not w.future.done())
        return self._seconds_until(needed)

    # ------------------------------------------------------------------ taking tokens

    def try_acquire(self, n: int = 1) -> bool:
        """Take ``n`` tokens if available now and nobody is waiting; never blocks."""
        self._check_n(n)
        self._refill()
        if self._waiters or self._tokens < n:
            return False
        self._tokens -= n
        return True

    async def acquire(self, n: int = 1) -> None:
        """Take ``n`` tokens, waiting in FIFO order behind earlier callers."""
        if self.try_acquire(n):
            return
        future: asyncio.Future[None] = self._loop.create_future()
        waiter = _Waiter(n, future)
        self._waiters.append(waiter)
        self._schedule()
        try:
            await future
        except asyncio.CancelledError:
            self._on_cancel(waiter)
            raise

    def _check_n(self, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= self.burst:
            raise ValueError(f"Cannot acquire n={n!r} tokens: must be 1..burst ({self.burst})")

    def _on_cancel(self, waiter: _Waiter) -> None:
        if waiter.future.done() and not waiter.future.cancelled():
            # Granted just before the cancel arrived: give the tokens back.
            self._refill()
            self._tokens = min(float(self.burst), self._tokens + waiter.n)
        else:
            try:
                self._waiters.remove(waiter)
            except ValueError:
                pass
        self._wake()

    # ------------------------------------------------------------------ the one timer

    def _schedule(self) -> None:
        """Arm the timer for the moment the head waiter can be served."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiters and self._waiters[0].future.done():
            self._waiters.popleft()
        if not self._waiters:
            return
        self._refill()
        delay = self._seconds_until(self._waiters[0].n)
        self._timer = self._loop.call_later(delay, self._wake)

    def _wake(self) -> None:
        """Serve waiters from the head while tokens last, then re-arm the timer."""
        self._timer = None
        self._refill()
        while self._waiters:
            head = self._waiters[0]
            if head.future.done():
                self._waiters.popleft()
                continue
            # A tiny epsilon absorbs float error from rate arithmetic.
            if self._tokens + 1e-9 < head.n:
                break
            self._waiters.popleft()
            self._tokens = max(0.0, self._tokens - head.n)
            head.future.set_result(None)
        self._schedule()

    async def aclose(self) -> None:
        """Stop the timer; queued callers are cancelled (idempotent)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiters:
            self._waiters.popleft().future.cancel()


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """The answer of :meth:`KeyedTokenBucket.check` (numbers for the X-RateLimit headers)."""

    allowed: bool
    limit: int
    remaining: int
    reset_s: float  # seconds until the bucket is full again
    retry_after_s: float  # 0 when allowed


class _State:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, updated: float) -> None:
        self.tokens = tokens
        self.updated = updated


class KeyedTokenBucket:
    """One token bucket per key (client), checked without waiting; LRU-bounded.

    ``rate_per_minute == 0`` disables the limit: every check is allowed.
    """

    def __init__(self, rate_per_minute: float, burst: int, *, max_keys: int = 10_000,
                 clock: Clock | None = None) -> None:
        _check_rate(rate_per_minute, burst, allow_zero=True)
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
            raise ConfigError("max_keys", max_keys, "must be an integer >= 1")
        self.rate_per_minute = float(rate_per_minute)
        self.burst = burst
        self.max_keys = max_keys
        self._rate_per_s = self.rate_per_minute / 60.0
        self._clock: Clock = clock or time.monotonic
        self._buckets: OrderedDict[str, _State] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    @property
    def enabled(self) -> bool:
        """False when the rate is 0 (no limit)."""
        return self._rate_per_s > 0

    def check(self, key: str, cost: int = 1) -> Decision:
        """Take ``cost`` tokens from ``key``'s bucket if it has them; never blocks."""
        if not self.enabled:
            return Decision(allowed=True, limit=self.burst, remaining=self.burst,
                            reset_s=0.0, retry_after_s=0.0)
        now = self._clock()
        state = self._get(key, now)
        allowed = state.tokens + 1e-9 >= cost
        if allowed:
            state.tokens = max(0.0, state.tokens - cost)
        missing = max(0.0, self.burst - state.tokens)
        return Decision(
            allowed=allowed,
            limit=self.burst,
            remaining=math.floor(state.tokens + 1e-9),
            reset_s=missing / self._rate_per_s,
            retry_after_s=0.0 if allowed else (cost - state.tokens) / self._rate_per_s,
        )

    def _get(self, key: str, now: float) -> _State:
        state = self._buckets.get(key)
        if state is None:
            state = _State(float(self.burst), now)
            self._buckets[key] = state
            self._evict(now)
        else:
            elapsed = now - state.updated
            if elapsed > 0:
                state.tokens = min(float(self.burst), state.tokens + elapsed * self._rate_per_s)
            state.updated = now
            self._buckets.move_to_end(key)
        return state

    def _evict(self, now: float) -> None:
        """Drop least-recently-used keys beyond ``max_keys``, and full idle ones at the front."""
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        full_after_s = self.burst / self._rate_per_s
        while len(self._buckets) > 1:
            oldest_key, oldest = next(iter(self._buckets.items()))
            if now - oldest.updated < full_after_s:
                break
            del self._buckets[oldest_key]  # refilled completely: same as a fresh bucket
