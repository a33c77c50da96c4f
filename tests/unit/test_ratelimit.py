"""Token buckets, driven by a fake clock patched into the running loop (no real sleeps)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from orchestra_kit.errors import ConfigError
from orchestra_kit.ratelimit import KeyedTokenBucket, TokenBucket


class FakeClock:
    """A manual clock that also drives the loop's timers (``loop.time`` is patched)."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    async def advance(self, dt: float) -> None:
        """Move time forward and let due timers and woken tasks run."""
        self.now += dt
        for _ in range(10):
            await asyncio.sleep(0)


@pytest.fixture
async def clock(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeClock]:
    loop = asyncio.get_running_loop()
    fake = FakeClock(loop.time())
    monkeypatch.setattr(loop, "time", fake)
    yield fake


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def test_created_outside_a_loop_fails() -> None:
    with pytest.raises(RuntimeError):
        TokenBucket(60, 1)


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (float("nan"), 1), (60, 0)])
async def test_bad_parameters(rate: float, burst: int) -> None:
    with pytest.raises(ConfigError):
        TokenBucket(rate, burst)


async def test_burst_then_wait(clock: FakeClock) -> None:
    bucket = TokenBucket(60, 3, clock=clock)  # one token per second
    assert [bucket.try_acquire() for _ in range(4)] == [True, True, True, False]
    assert bucket.retry_after_s() == pytest.approx(1.0)
    await clock.advance(0.5)
    assert not bucket.try_acquire()
    await clock.advance(0.5)
    assert bucket.try_acquire()


async def test_never_exceeds_burst(clock: FakeClock) -> None:
    bucket = TokenBucket(600, 5, clock=clock)
    await clock.advance(3600)
    assert bucket.tokens == 5
    assert sum(bucket.try_acquire() for _ in range(10)) == 5


async def test_acquire_rejects_n_above_burst(clock: FakeClock) -> None:
    bucket = TokenBucket(60, 2, clock=clock)
    with pytest.raises(ValueError, match="burst"):
        await bucket.acquire(3)


async def test_fifo_order(clock: FakeClock) -> None:
    bucket = TokenBucket(60, 1, clock=clock)
    await bucket.acquire()
    order: list[int] = []

    async def worker(i: int) -> None:
        await bucket.acquire()
        order.append(i)

    tasks = []
    for i in range(5):
        tasks.append(asyncio.create_task(worker(i)))
        await settle()  # enqueue in a known order
    assert bucket.waiting == 5
    for expected in range(1, 6):
        await clock.advance(0.999)
        assert len(order) == expected - 1  # not yet
        await clock.advance(0.002)
        assert order == list(range(expected))
    await asyncio.gather(*tasks)


async def test_big_request_blocks_later_small_ones(clock: FakeClock) -> None:
    """FIFO: a waiter asking for 3 tokens is not overtaken by later 1-token waiters."""
    bucket = TokenBucket(60, 3, clock=clock)
    assert bucket.try_acquire(3)
    order: list[str] = []

    async def take(name: str, n: int) -> None:
        await bucket.acquire(n)
        order.append(name)

    big = asyncio.create_task(take("big", 3))
    await settle()
    small = asyncio.create_task(take("small", 1))
    await settle()
    assert not bucket.try_acquire()  # nobody jumps the queue
    await clock.advance(1.0)
    assert order == []
    await clock.advance(2.0)
    assert order == ["big"]
    await clock.advance(1.0)
    assert order == ["big", "small"]
    await asyncio.gather(big, small)


async def test_rate_accuracy(clock: FakeClock) -> None:
    """Over 100 simulated seconds at 120/min with burst 10: exactly 10 + 200 grants."""
    bucket = TokenBucket(120, 10, clock=clock)
    granted = 0

    async def worker() -> None:
        nonlocal granted
        while True:
            await bucket.acquire()
            granted += 1

    tasks = [asyncio.create_task(worker()) for _ in range(20)]
    await settle()
    for _ in range(1000):
        await clock.advance(0.1)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert 209 <= granted <= 210


async def test_cancelled_waiter_does_not_stall_or_lose_tokens(clock: FakeClock) -> None:
    bucket = TokenBucket(60, 1, clock=clock)
    assert bucket.try_acquire()
    first = asyncio.create_task(bucket.acquire())
    await settle()
    second = asyncio.create_task(bucket.acquire())
    await settle()
    first.cancel()
    await settle()
    assert first.cancelled()
    await clock.advance(1.001)
    assert second.done() and second.exception() is None  # the line moved on
    assert bucket.waiting == 0


async def test_cancel_after_grant_returns_the_token(clock: FakeClock) -> None:
    bucket = TokenBucket(60, 1, clock=clock)
    assert bucket.try_acquire()
    granted = asyncio.create_task(bucket.acquire())
    await settle()
    waiting = asyncio.create_task(bucket.acquire())
    await settle()
    clock.now += 1.0
    bucket._wake()  # the timer fires: the token goes to `granted`...
    granted.cancel()  # ...which is cancelled before it resumes
    await settle()
    assert granted.cancelled()
    assert waiting.done() and waiting.exception() is None  # the token was passed on
    assert bucket.tokens == pytest.approx(0.0)


async def test_aclose_cancels_waiters(clock: FakeClock) -> None:
    bucket = TokenBucket(60, 1, clock=clock)
    assert bucket.try_acquire()
    waiter = asyncio.create_task(bucket.acquire())
    await settle()
    await bucket.aclose()
    await bucket.aclose()
    with pytest.raises(asyncio.CancelledError):
        await waiter


async def test_real_loop_smoke() -> None:
    """With the real clock a waiter is released by the timer (fast rate keeps this short)."""
    bucket = TokenBucket(6000, 1)  # 100 per second
    await bucket.acquire()
    async with asyncio.timeout(2):
        await bucket.acquire()


# ---------------------------------------------------------------------- keyed


def test_keyed_allows_burst_then_denies() -> None:
    now = [100.0]
    limiter = KeyedTokenBucket(60, 2, clock=lambda: now[0])
    a = limiter.check("a")
    assert (a.allowed, a.limit, a.remaining) == (True, 2, 1)
    b = limiter.check("a")
    assert (b.allowed, b.remaining) == (True, 0)
    assert b.reset_s == pytest.approx(2.0)
    c = limiter.check("a")
    assert not c.allowed and c.retry_after_s == pytest.approx(1.0)
    assert limiter.check("other").allowed  # keys are independent
    now[0] += 1.0
    assert limiter.check("a").allowed


def test_keyed_evicts_lru() -> None:
    now = [0.0]
    limiter = KeyedTokenBucket(60, 1, max_keys=3, clock=lambda: now[0])
    for key in "abcd":
        limiter.check(key)
    assert len(limiter) == 3
    assert limiter.check("a").allowed  # "a" was evicted: it starts full again
    assert not limiter.check("d").allowed  # "d" was kept


def test_keyed_drops_idle_full_buckets() -> None:
    now = [0.0]
    limiter = KeyedTokenBucket(60, 1, clock=lambda: now[0])
    limiter.check("a")
    now[0] += 10.0
    limiter.check("b")
    assert len(limiter) == 1


def test_keyed_zero_rate_is_unlimited() -> None:
    limiter = KeyedTokenBucket(0, 5)
    assert not limiter.enabled
    assert all(limiter.check("a").allowed for _ in range(100))
