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
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from orchestra_kit.errors import ConfigError, ValidationError

__all__ = [
    "ClosedLoop",
    "LoadModel",
    "LoadRun",
    "OpResult",
    "OpenLoop",
    "Operation",
    "RequestRecord",
    "run_load",
    "schedule",
]

MAX_SCHEDULE = 10_000_000  # precomputed arrivals; beyond this, set max_requests


@dataclass(frozen=True, kw_only=True)
class ClosedLoop:
    """N virtual users, each looping request → think → request."""

    users: int
    think_time_s: float = 0.0
    ramp_s: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.users, int) or isinstance(self.users, bool) or self.users < 1:
            raise ConfigError("users", self.users, "an integer >= 1")
        _check_non_negative("think_time_s", self.think_time_s)
        _check_non_negative("ramp_s", self.ramp_s)


@dataclass(frozen=True, kw_only=True)
class OpenLoop:
    """Arrivals at ``rate_rps`` from a seeded schedule, whatever the replies do."""

    rate_rps: float
    arrival: Literal["constant", "poisson", "gamma"] = "poisson"
    burstiness: float = 1.0
    ramp_s: float = 0.0
    max_inflight: int = 10_000

    def __post_init__(self) -> None:
        if not _is_finite_number(self.rate_rps) or self.rate_rps <= 0:
            raise ConfigError("rate_rps", self.rate_rps, "a finite number > 0")
        if self.arrival not in ("constant", "poisson", "gamma"):
            raise ConfigError("arrival", self.arrival, "one of 'constant', 'poisson', 'gamma'")
        if not _is_finite_number(self.burstiness) or self.burstiness <= 0:
            raise ConfigError("burstiness", self.burstiness, "a finite number > 0")
        _check_non_negative("ramp_s", self.ramp_s)
        mi = self.max_inflight
        if not isinstance(mi, int) or isinstance(mi, bool) or mi < 1:
            raise ConfigError("max_inflight", mi, "an integer >= 1")


LoadModel = ClosedLoop | OpenLoop


@dataclass(slots=True)
class OpResult:
    """What one operation reports: its name, success, HTTP status (0 if none), error type."""

    op: str
    ok: bool
    status: int = 0
    error_type: str = ""


Operation = Callable[[int], Awaitable[OpResult]]
"""One request: called with the request index, returns an :class:`OpResult`."""


@dataclass(slots=True)
class RequestRecord:
    """One request; times in seconds from the run start, durations in ms."""

    index: int
    op: str
    scheduled_s: float
    sent_s: float
    end_s: float
    latency_ms: float  # end - scheduled: coordinated-omission corrected
    service_ms: float  # end - sent
    lag_ms: float  # sent - scheduled
    status: int
    ok: bool
    error_type: str


@dataclass(slots=True)
class LoadRun:
    """The outcome of :func:`run_load`: every request record plus run facts."""

    records: list[RequestRecord]
    started_wall: float  # epoch seconds
    duration_s: float  # actual: from start until the last request ended
    dropped: int
    model: LoadModel
    label: str = ""
    cancelled: int = 0
    planned: int = 0  # open loop: scheduled arrivals; closed loop: requests started
    extra: dict[str, Any] = field(default_factory=dict)


def _is_finite_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_non_negative(key: str, value: object) -> None:
    if not _is_finite_number(value) or value < 0:  # type: ignore[operator]
        raise ConfigError(key, value, "a finite number >= 0")


def _check_bounds(duration_s: float, max_requests: int | None) -> None:
    if not _is_finite_number(duration_s) or duration_s <= 0:
        raise ValidationError("duration_s", "must be a finite number > 0", value=duration_s)
    if max_requests is not None and (
        not isinstance(max_requests, int) or isinstance(max_requests, bool) or max_requests < 1
    ):
        raise ValidationError("max_requests", "must be an integer >= 1 or None", value=max_requests)


def _ramp_inverse(work: float, rate: float, ramp_s: float) -> float:
    """The time at which cumulative arrivals-at-rate reach ``work`` under a linear ramp."""
    ramp_work = rate * ramp_s / 2.0
    if work < ramp_work:
        return math.sqrt(2.0 * ramp_s * work / rate)
    return ramp_s + (work - ramp_work) / rate


def schedule(
    model: LoadModel, duration_s: float, max_requests: int | None = None, seed: int = 0
) -> list[float]:
    """Planned send offsets (s, ascending) for an open loop; user start offsets for a closed one.

    Open loop: gaps in "unit work" are 1 (constant), Exp(1) (poisson) or
    Gamma(shape=burstiness, scale=1/burstiness) (gamma), i.e. Gamma(burstiness,
    1/(rate·burstiness)) seconds at full rate; the first arrival is at 0. A ramp
    makes the rate grow linearly from 0 to ``rate_rps`` over ``ramp_s`` (time
    rescaling of the arrival process). Closed loop: user k starts at
    ``k * ramp_s / users``, capped by ``max_requests`` users.
    """
    _check_bounds(duration_s, max_requests)
    cap = max_requests if max_requests is not None else MAX_SCHEDULE
    if isinstance(model, ClosedLoop):
        starts = [k * model.ramp_s / model.users for k in range(model.users)]
        return [s for s in starts if s < duration_s][:cap]
    if max_requests is None and model.rate_rps * duration_s > MAX_SCHEDULE:
        raise ValidationError(
            "max_requests",
            f"rate_rps*duration_s={model.rate_rps * duration_s:.0f} arrivals exceed "
            f"{MAX_SCHEDULE}; set max_requests",
        )
    rng = random.Random(seed)
    shape = 1.0 if model.arrival == "poisson" else model.burstiness
    offsets: list[float] = []
    work = 0.0
    while len(offsets) < cap:
        t = (
            _ramp_inverse(work, model.rate_rps, model.ramp_s)
            if model.ramp_s
            else work / model.rate_rps
        )
        if t >= duration_s:
            break
        offsets.append(t)
        if model.arrival == "constant":
            work += 1.0
        else:
            work += rng.gammavariate(shape, 1.0 / shape)
    return offsets


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


SPIN_WINDOW_S = 0.002
"""asyncio timers fire up to ~1 ms late (epoll's millisecond timeout, the loop's clock
resolution), so the open loop sleeps on a timer until this close to a planned send and
then yields to the loop (``sleep(0)``) until the moment: sub-millisecond send precision
for a little CPU, without blocking other tasks."""


async def _sleep_until(loop: asyncio.AbstractEventLoop, when: float) -> None:
    """Return at loop time ``when`` (precisely), letting other tasks run meanwhile."""
    delay = when - loop.time()
    if delay > SPIN_WINDOW_S:
        await asyncio.sleep(delay - SPIN_WINDOW_S)
    while loop.time() < when:
        await asyncio.sleep(0)


class _Runner:
    """The mutable state of one run; not reused."""

    def __init__(
        self, operation: Operation, *, label: str, grace_s: float, max_lag_s: float
    ) -> None:
        self.operation = operation
        self.default_op = label or "op"
        self.grace_s = grace_s
        self.max_lag_s = max_lag_s
        self.records: list[RequestRecord] = []
        self.inflight: set[asyncio.Task[None]] = set()
        self.t0 = time.perf_counter()
        self.loop_t0 = asyncio.get_running_loop().time()
        self.dropped = 0
        self.cancelled = 0

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def _record(
        self, index: int, sched: float, sent: float, res: OpResult, end: float | None = None
    ) -> None:
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
            )
        )

    async def one(self, index: int, scheduled_s: float | None) -> None:
        """Send one request and record it, whatever happens."""
        sent = self.now()
        sched = sent if scheduled_s is None else scheduled_s
        if sent - sched > self.max_lag_s:  # the loop was too busy to even start it in time
            self.drop(index, sched)
            return
        try:
            res = await self.operation(index)
            if not isinstance(res, OpResult):
                raise TypeError(f"operation returned {type(res).__name__}, not OpResult")
        except asyncio.CancelledError:
            self.cancelled += 1
            self._record(index, sched, sent, OpResult(self.default_op, False, 0, "cancelled"))
            raise
        except Exception as exc:  # noqa: BLE001 - an operation failure is data, not a crash
            res = OpResult(self.default_op, False, 0, type(exc).__name__)
        self._record(index, sched, sent, res)

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

    async def run_open(self, model: OpenLoop, offsets: list[float]) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.TaskGroup() as tg:
            for index, offset in enumerate(offsets):
                await _sleep_until(loop, self.loop_t0 + offset)
                if self.now() - offset > self.max_lag_s or len(self.inflight) >= model.max_inflight:
                    self.drop(index, offset)
                    continue
                task = tg.create_task(self.one(index, offset))
                self.inflight.add(task)
                task.add_done_callback(self.inflight.discard)
            await self.drain(self.inflight, self.grace_s)

    async def run_closed(
        self, model: ClosedLoop, starts: list[float], duration_s: float, max_requests: int | None
    ) -> None:
        counter = iter(range(max_requests if max_requests is not None else 2**62))

        async def user(start_s: float) -> None:
            await asyncio.sleep(max(0.0, start_s - self.now()))
            while self.now() < duration_s:
                index = next(counter, None)
                if index is None:
                    return
                await self.one(index, None)
                if model.think_time_s:
                    if self.now() + model.think_time_s >= duration_s:
                        return
                    await asyncio.sleep(model.think_time_s)

        async with asyncio.TaskGroup() as tg:
            users = {tg.create_task(user(s)) for s in starts}
            await self.drain(users, duration_s + self.grace_s - self.now())


async def _ticker(runner: _Runner, bar: _Progress, by_time: bool) -> None:
    while True:
        if by_time:
            bar.set(round(min(runner.now(), bar.total), 1), len(runner.records))
        else:
            bar.set(len(runner.records))
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
    offsets = schedule(model, duration_s, max_requests, seed)
    started_wall = time.time()
    runner = _Runner(operation, label=label, grace_s=grace_s, max_lag_s=max_lag_s)
    # A closed loop's request count is unknown in advance: show time, with the count.
    by_time = isinstance(model, ClosedLoop)
    bar: _Progress | None = None
    if progress:
        total = len(offsets) if isinstance(model, OpenLoop) else duration_s
        bar = _Progress(total, "s" if by_time else "req", label)
    try:
        async with asyncio.TaskGroup() as tg:
            ticker = tg.create_task(_ticker(runner, bar, by_time)) if bar else None
            if isinstance(model, OpenLoop):
                await runner.run_open(model, offsets)
            else:
                await runner.run_closed(model, offsets, duration_s, max_requests)
            if ticker is not None:
                ticker.cancel()
    finally:
        if bar is not None:
            bar.set(duration_s if by_time else len(runner.records), len(runner.records))
            bar.close()
    records = sorted(runner.records, key=lambda r: r.index)
    end = max((r.end_s for r in records), default=runner.now())
    return LoadRun(
        records=records,
        started_wall=started_wall,
        duration_s=max(end, 1e-9),
        dropped=runner.dropped,
        model=model,
        label=label,
        cancelled=runner.cancelled,
        planned=len(offsets) if isinstance(model, OpenLoop) else len(records),
    )
