"""The load generator's data: load models, per-request records, runs and the arrival schedule.

Split from :mod:`orchestra_kit.lab.loadgen` (which re-exports every name here) so
that the generator workers (:mod:`orchestra_kit.lab.workers`) can pickle these
plain dataclasses between processes.
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from orchestra_kit.errors import ConfigError, ValidationError

__all__ = [
    "MAX_SCHEDULE",
    "ClosedLoop",
    "LoadModel",
    "LoadRun",
    "OpResult",
    "OpenLoop",
    "Operation",
    "RequestRecord",
    "schedule",
]

MAX_SCHEDULE = 10_000_000  # precomputed arrivals; beyond this, set max_requests


@dataclass(frozen=True, kw_only=True)
class ClosedLoop:
    """N virtual users, each looping request → think → request."""

    users: int
    think_time_s: float = 0.0
    think_jitter_s: float = 0.0  # each think is think_time_s ± up to this (uniform, seeded)
    ramp_s: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.users, int) or isinstance(self.users, bool) or self.users < 1:
            raise ConfigError("users", self.users, "an integer >= 1")
        _check_non_negative("think_time_s", self.think_time_s)
        _check_non_negative("think_jitter_s", self.think_jitter_s)
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
    priority: int | None = None  # a workload field that explains a tail (a task's priority)


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
    queue_ms: float = 0.0  # time spent waiting for a client connection (part of lag_ms)
    worker: int = 0  # the generator process that sent it
    user: int = -1  # closed loop: the virtual user; -1 in an open loop
    priority: int | None = None  # from OpResult.priority


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
    send_window_s: float = 0.0  # how long sending lasted by plan (the spec's duration)
    generator: dict[str, Any] = field(default_factory=dict)  # LoopProbe stats, processes
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
