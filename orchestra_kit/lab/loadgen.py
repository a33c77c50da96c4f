"""An asyncio load generator: closed loop (virtual users) and open loop (seeded arrivals).

Open loop follows wrk2: every arrival has a *planned* send time from a precomputed,
seeded schedule, and latency is measured from that planned time
(coordinated-omission corrected, ``latency_ms``) as well as from the actual send
(``service_ms``); the difference is the schedule lag (``lag_ms``). A closed-loop
user sends its next request when the previous one returned (plus think time), so
there ``scheduled_s == sent_s`` and both latencies are equal.

Runs are bounded by ``duration_s`` and ``max_requests`` and stop by themselves:
sending stops at the duration (closed loop) or when the schedule is exhausted
(open loop), in-flight requests then get ``grace_s`` to finish and are cancelled
after it (recorded with ``error_type="cancelled"``).

Dropped arrivals (open loop) are *recorded*, not only counted: an arrival that
finds ``max_inflight`` requests in flight (k6's ``dropped_iterations``), or that is
still unsent ``max_lag_s`` after its planned time because the generator fell behind,
becomes a record with ``ok=False``, ``error_type="dropped"``, ``service_ms=0``.
They count as failed requests in success rate and SLO attainment (a user who was
never served was not served well) and ``LoadRun.dropped`` counts them.

The library never calls ``asyncio.run``: ``await run_load(...)`` works at the top
level of a Jupyter cell and inside the CLI's ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from orchestra_kit.errors import ValidationError
from orchestra_kit.lab.loadmodel import (
    MAX_SCHEDULE,
    ClosedLoop,
    LoadModel,
    LoadRun,
    OpenLoop,
    Operation,
    OpResult,
    RequestRecord,
    _check_bounds,
    _check_non_negative,
    schedule,
)
from orchestra_kit.lab.probe import LoopProbe, SendStamp, current_stamp

__all__ = [
    "MAX_SCHEDULE",
    "ClosedLoop",
    "LoadModel",
    "LoadRun",
    "OpResult",
    "OpenLoop",
    "Operation",
    "RequestRecord",
    "Slice",
    "full_slice",
    "run_load",
    "run_slice",
    "schedule",
]

class _Progress:
    """A lazily imported ``tqdm.auto`` bar refreshed by a ticker (no per-request cost)."""

    def __init__(self, total: float, unit: str, desc: str) -> None:
        from tqdm.auto import tqdm  # lazy: the core package does not need tqdm

        self.total = total
        self._bar = tqdm(total=total, unit=unit, desc=desc or "load", leave=True)

    def set(self, value: float, requests: int | None = None) -> None:
        self._bar.n = value
        if requests is not None:
            self._bar.set_postfix_str(f"{requests} req", refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()


YIELD_EVERY = 32
"""When the generator is behind its schedule, it still yields to the loop after this many
back-to-back sends, so replies are read (and the loop-lag probe runs) during a catch-up."""


async def _sleep_until(loop: asyncio.AbstractEventLoop, when: float) -> bool:
    """Sleep on a timer until loop time ``when``; whether it slept at all.

    A timer wakes up to ~1 ms late (epoll's millisecond timeout), which shows as schedule
    lag; spinning instead would burn a core that, on a small machine, the service needs.
    """
    delay = when - loop.time()
    if delay <= 0:
        return False
    await asyncio.sleep(delay)
    return True


@dataclass(frozen=True, kw_only=True)
class Slice:
    """The part of a run one generator process sends (all of it with one process).

    Open loop: ``arrivals`` are (global index, planned offset s) pairs of the shared
    schedule. Closed loop: ``users`` are (user id, start offset s); request indexes
    are ``index_start + k * index_stride`` so they stay unique across workers.
    """

    arrivals: list[tuple[int, float]] = field(default_factory=list)
    users: list[tuple[int, float]] = field(default_factory=list)
    index_start: int = 0
    index_stride: int = 1
    max_requests: int | None = None
    worker: int = 0


class _Runner:
    """The mutable state of one run; not reused."""

    def __init__(
        self, operation: Operation, *, label: str, grace_s: float, max_lag_s: float,
        worker: int = 0, t0: float | None = None,
    ) -> None:  # fmt: skip
        self.operation = operation
        self.default_op = label or "op"
        self.grace_s = grace_s
        self.max_lag_s = max_lag_s
        self.worker = worker
        self.records: list[RequestRecord] = []
        self.inflight: set[asyncio.Task[None]] = set()
        self.t0 = time.perf_counter() if t0 is None else t0
        loop = asyncio.get_running_loop()
        self.loop_t0 = loop.time() + (self.t0 - time.perf_counter())
        self.dropped = 0
        self.cancelled = 0

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def _record(
        self, index: int, sched: float, sent: float, res: OpResult, end: float | None = None,
        *, queue_ms: float = 0.0, user: int = -1,
    ) -> None:  # fmt: skip
        end = self.now() if end is None else end
        self.records.append(
            RequestRecord(
                index=index,
                op=res.op,
                scheduled_s=sched,
                sent_s=sent,
                end_s=end,
                latency_ms=(end - sched) * 1000.0,
                service_ms=(end - sent) * 1000.0,
                lag_ms=(sent - sched) * 1000.0,
                status=res.status,
                ok=res.ok,
                error_type=res.error_type,
                queue_ms=queue_ms,
                worker=self.worker,
                user=user,
                priority=res.priority,
            )
        )

    async def one(self, index: int, scheduled_s: float | None, user: int = -1) -> None:
        """Send one request and record it, whatever happens.

        ``sent`` is when the request really went out when the operation's client
        stamps it (:mod:`orchestra_kit.lab.probe`), else when this task started.
        """
        start = self.now()
        sched = start if scheduled_s is None else scheduled_s
        if start - sched > self.max_lag_s:  # the loop was too busy to even start it in time
            self.drop(index, sched)
            return
        stamp = SendStamp()
        token = current_stamp.set(stamp)
        try:
            res = await self.operation(index)
            if not isinstance(res, OpResult):
                raise TypeError(f"operation returned {type(res).__name__}, not OpResult")
        except asyncio.CancelledError:
            self.cancelled += 1
            sent = self._sent(stamp, start)
            self._record(index, sched, sent, OpResult(self.default_op, False, 0, "cancelled"),
                         queue_ms=stamp.queued_s * 1000.0, user=user)
            raise
        except Exception as exc:  # noqa: BLE001 - an operation failure is data, not a crash
            res = OpResult(self.default_op, False, 0, type(exc).__name__)
        finally:
            current_stamp.reset(token)
        sent = self._sent(stamp, start)
        # A closed-loop user's schedule is when it was ready: a client queue counts as lag.
        self._record(index, sched, sent, res, queue_ms=stamp.queued_s * 1000.0, user=user)

    def _sent(self, stamp: SendStamp, start: float) -> float:
        return start if stamp.sent is None else max(start, stamp.sent - self.t0)

    def drop(self, index: int, scheduled_s: float) -> None:
        self.dropped += 1
        now = self.now()
        self._record(index, scheduled_s, now, OpResult(self.default_op, False, 0, "dropped"), now)

    async def drain(self, tasks: set[asyncio.Task[None]], timeout_s: float) -> None:
        """Wait for ``tasks`` up to ``timeout_s``, then cancel the rest (they record it)."""
        pending = {t for t in tasks if not t.done()}
        if pending:  # even with timeout 0 this yields once, so every task starts and records
            _, pending = await asyncio.wait(pending, timeout=max(0.0, timeout_s))
        for task in pending:
            task.cancel()

    async def run_open(self, model: OpenLoop, arrivals: list[tuple[int, float]]) -> None:
        loop = asyncio.get_running_loop()
        back_to_back = 0
        async with asyncio.TaskGroup() as tg:
            for index, offset in arrivals:
                if await _sleep_until(loop, self.loop_t0 + offset):
                    back_to_back = 0
                else:
                    back_to_back += 1
                    if back_to_back >= YIELD_EVERY:
                        back_to_back = 0
                        await asyncio.sleep(0)
                if self.now() - offset > self.max_lag_s or len(self.inflight) >= model.max_inflight:
                    self.drop(index, offset)
                    continue
                task = tg.create_task(self.one(index, offset))
                self.inflight.add(task)
                task.add_done_callback(self.inflight.discard)
            await self.drain(self.inflight, self.grace_s)

    async def run_closed(self, model: ClosedLoop, part: Slice, duration_s: float) -> None:
        limit = part.max_requests if part.max_requests is not None else 2**62
        counter = iter(range(limit))

        async def user(user_id: int, start_s: float) -> None:
            await asyncio.sleep(max(0.0, start_s - self.now()))
            while self.now() < duration_s:
                k = next(counter, None)
                if k is None:
                    return
                await self.one(part.index_start + k * part.index_stride, None, user_id)
                if model.think_time_s:
                    if self.now() + model.think_time_s >= duration_s:
                        return
                    await asyncio.sleep(_think(model, user_id, k))

        async with asyncio.TaskGroup() as tg:
            users = {tg.create_task(user(u, s)) for u, s in part.users}
            await self.drain(users, duration_s + self.grace_s - self.now())


def _think(model: ClosedLoop, user_id: int, k: int) -> float:
    """Think time with a seeded uniform jitter of ±``think_jitter_s`` (as Locust's between)."""
    if not model.think_jitter_s:
        return model.think_time_s
    u = random.Random(user_id * 1_000_003 + k).uniform(-1.0, 1.0)
    return max(0.0, model.think_time_s + u * model.think_jitter_s)


def full_slice(model: LoadModel, duration_s: float, max_requests: int | None, seed: int) -> Slice:
    """The whole run as one :class:`Slice` (what a single generator process sends)."""
    offsets = schedule(model, duration_s, max_requests, seed)
    if isinstance(model, OpenLoop):
        return Slice(arrivals=list(enumerate(offsets)))
    return Slice(users=list(enumerate(offsets)), max_requests=max_requests)


async def run_slice(
    operation: Operation,
    model: LoadModel,
    part: Slice,
    *,
    duration_s: float,
    t0: float | None = None,
    label: str = "",
    grace_s: float = 10.0,
    max_lag_s: float = 10.0,
    on_tick: Callable[[int, float], None] | None = None,
) -> LoadRun:
    """Send ``part`` of a run (from perf-counter time ``t0``, default now); record all.

    The building block of :func:`run_load` and of the generator workers
    (:mod:`orchestra_kit.lab.workers`); ``on_tick(requests_done, elapsed_s)`` is called
    about every 0.2 s (for progress bars).
    """
    runner = _Runner(operation, label=label, grace_s=grace_s, max_lag_s=max_lag_s,
                     worker=part.worker, t0=t0)
    if runner.now() < 0:
        await asyncio.sleep(-runner.now())
    started_wall = time.time()
    async with LoopProbe() as probe, asyncio.TaskGroup() as tg:
        ticker = tg.create_task(_tick(runner, on_tick)) if on_tick else None
        if isinstance(model, OpenLoop):
            await runner.run_open(model, part.arrivals)
        else:
            await runner.run_closed(model, part, duration_s)
        if ticker is not None:
            ticker.cancel()
    records = sorted(runner.records, key=lambda r: r.index)
    end = max((r.end_s for r in records), default=runner.now())
    planned = len(part.arrivals) if isinstance(model, OpenLoop) else len(records)
    return LoadRun(records=records, started_wall=started_wall, duration_s=max(end, 1e-9),
                   dropped=runner.dropped, model=model, label=label, cancelled=runner.cancelled,
                   planned=planned, send_window_s=duration_s,
                   generator={**probe.stats(), "processes": 1})


async def _tick(runner: _Runner, on_tick: Callable[[int, float], None]) -> None:
    while True:
        on_tick(len(runner.records), runner.now())
        await asyncio.sleep(0.2)


async def run_load(
    operation: Operation,
    model: LoadModel,
    *,
    duration_s: float,
    max_requests: int | None = None,
    seed: int = 0,
    progress: bool = False,
    label: str = "",
    grace_s: float = 10.0,
    max_lag_s: float = 10.0,
) -> LoadRun:
    """Drive ``operation`` with ``model`` until ``duration_s`` or ``max_requests``; record all.

    ``grace_s``: how long in-flight requests may finish after sending stops before
    they are cancelled. ``max_lag_s`` (open loop): an arrival still unsent this long
    after its planned time is dropped instead of sent.
    """
    _check_bounds(duration_s, max_requests)
    _check_non_negative("grace_s", grace_s)
    _check_non_negative("max_lag_s", max_lag_s)
    if not isinstance(model, ClosedLoop | OpenLoop):
        raise ValidationError("model", "must be a ClosedLoop or an OpenLoop", value=model)
    part = full_slice(model, duration_s, max_requests, seed)
    by_time = isinstance(model, ClosedLoop)
    bar: _Progress | None = None
    if progress:
        total = len(part.arrivals) if isinstance(model, OpenLoop) else duration_s
        bar = _Progress(total, "s" if by_time else "req", label)

    def tick(done: int, elapsed: float) -> None:
        if bar is not None:
            bar.set(round(min(elapsed, bar.total), 1) if by_time else done, done)

    try:
        run = await run_slice(operation, model, part, duration_s=duration_s, label=label,
                              grace_s=grace_s, max_lag_s=max_lag_s,
                              on_tick=tick if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    return run
