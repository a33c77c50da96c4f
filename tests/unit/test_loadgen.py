"""Load models, arrival schedules and run_load bounds, errors, drops and cancellation."""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time

import pytest

from orchestra_kit.errors import ConfigError, ValidationError
from orchestra_kit.lab.loadgen import (
    ClosedLoop,
    OpenLoop,
    OpResult,
    run_load,
    schedule,
)


def _gaps(offsets: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(offsets)]


# --- models ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"rate_rps": 0}, "rate_rps"),
        ({"rate_rps": float("inf")}, "rate_rps"),
        ({"rate_rps": 10, "arrival": "uniform"}, "arrival"),
        ({"rate_rps": 10, "burstiness": 0}, "burstiness"),
        ({"rate_rps": 10, "ramp_s": -1}, "ramp_s"),
        ({"rate_rps": 10, "max_inflight": 0}, "max_inflight"),
    ],
)
def test_open_loop_validation_names_the_key(kwargs: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        OpenLoop(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"users": 0}, "users"),
        ({"users": 2.0}, "users"),
        ({"users": 1, "think_time_s": -0.1}, "think_time_s"),
    ],
)
def test_closed_loop_validation_names_the_key(kwargs: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        ClosedLoop(**kwargs)  # type: ignore[arg-type]


def test_models_are_frozen_keyword_only() -> None:
    with pytest.raises(TypeError):
        OpenLoop(10.0)  # type: ignore[misc]
    model = OpenLoop(rate_rps=10)
    with pytest.raises(AttributeError):
        model.rate_rps = 20  # type: ignore[misc]


# --- schedules ------------------------------------------------------------------------


def test_constant_schedule_is_exact() -> None:
    offsets = schedule(OpenLoop(rate_rps=100, arrival="constant"), 1.0)
    assert len(offsets) == 100
    assert offsets == pytest.approx([i / 100 for i in range(100)])


def test_poisson_schedule_statistics() -> None:
    offsets = schedule(OpenLoop(rate_rps=1000), 30.0, max_requests=20_000, seed=7)
    assert len(offsets) == 20_000
    gaps = _gaps(offsets)
    mean = statistics.fmean(gaps)
    assert mean == pytest.approx(1e-3, rel=0.03)  # se ≈ 0.7 %
    assert statistics.stdev(gaps) / mean == pytest.approx(1.0, abs=0.05)  # exponential: CV 1


def test_gamma_burstiness_quarter_has_cv_two() -> None:
    model = OpenLoop(rate_rps=1000, arrival="gamma", burstiness=0.25)
    gaps = _gaps(schedule(model, 60.0, max_requests=20_000, seed=3))
    mean = statistics.fmean(gaps)
    assert mean == pytest.approx(1e-3, rel=0.08)
    assert statistics.stdev(gaps) / mean == pytest.approx(2.0, rel=0.15)  # CV = 1/sqrt(k)


def test_gamma_with_burstiness_one_matches_poisson() -> None:
    a = schedule(OpenLoop(rate_rps=50, arrival="gamma", burstiness=1.0), 5.0, seed=1)
    b = schedule(OpenLoop(rate_rps=50, arrival="poisson"), 5.0, seed=1)
    assert a == b


def test_schedule_is_seeded_and_deterministic() -> None:
    model = OpenLoop(rate_rps=200, arrival="gamma", burstiness=0.5)
    assert schedule(model, 2.0, seed=42) == schedule(model, 2.0, seed=42)
    assert schedule(model, 2.0, seed=42) != schedule(model, 2.0, seed=43)


def test_schedule_respects_duration_and_count() -> None:
    offsets = schedule(OpenLoop(rate_rps=500), 2.0, seed=0)
    assert offsets == sorted(offsets) and offsets[0] == 0.0 and offsets[-1] < 2.0
    assert len(schedule(OpenLoop(rate_rps=500), 2.0, max_requests=17)) == 17


def test_open_ramp_increases_rate_linearly() -> None:
    model = OpenLoop(rate_rps=100, arrival="constant", ramp_s=2.0)
    offsets = schedule(model, 4.0)
    # Arrivals in the ramp: rate*ramp/2 = 100; after it: 100/s for 2 s = 200.
    assert sum(1 for t in offsets if t < 2.0) == pytest.approx(100, abs=1)
    assert len(offsets) == pytest.approx(300, abs=1)
    first_half = sum(1 for t in offsets if t < 1.0)
    assert first_half == pytest.approx(25, abs=1)  # quadratic growth: (1/2)^2 of the ramp


def test_closed_schedule_gives_user_start_times() -> None:
    assert schedule(ClosedLoop(users=4, ramp_s=2.0), 10.0) == [0.0, 0.5, 1.0, 1.5]
    assert schedule(ClosedLoop(users=3), 1.0) == [0.0, 0.0, 0.0]


def test_bounds_are_validated() -> None:
    with pytest.raises(ValidationError, match="duration_s"):
        schedule(OpenLoop(rate_rps=1), 0.0)
    with pytest.raises(ValidationError, match="max_requests"):
        schedule(OpenLoop(rate_rps=1), 1.0, max_requests=0)
    with pytest.raises(ValidationError, match="max_requests"):
        schedule(OpenLoop(rate_rps=1e9), 100.0)  # would precompute 1e11 arrivals


# --- run_load ---------------------------------------------------------------------------


async def _instant(index: int) -> OpResult:
    return OpResult("noop", True, 200)


async def test_open_loop_sends_every_scheduled_arrival_and_stops_by_duration() -> None:
    model = OpenLoop(rate_rps=200, arrival="constant")
    run = await run_load(_instant, model, duration_s=0.25, seed=1)
    assert [r.index for r in run.records] == list(range(50))
    assert run.planned == 50 and run.dropped == 0
    for rec in run.records:
        assert rec.ok and rec.op == "noop" and rec.status == 200
        assert rec.scheduled_s == pytest.approx(rec.index / 200)
        assert rec.lag_ms >= 0.0  # never sent early
        assert rec.latency_ms == pytest.approx(rec.service_ms + rec.lag_ms, abs=1e-6)
        assert rec.end_s >= rec.sent_s >= rec.scheduled_s
    assert run.duration_s >= run.records[-1].end_s


async def test_open_loop_stops_by_count() -> None:
    run = await run_load(_instant, OpenLoop(rate_rps=1000), duration_s=30.0, max_requests=20)
    assert len(run.records) == 20
    assert run.duration_s < 5.0


async def test_closed_loop_stops_by_count() -> None:
    run = await run_load(_instant, ClosedLoop(users=5), duration_s=30.0, max_requests=123)
    assert sorted(r.index for r in run.records) == list(range(123))
    assert all(r.scheduled_s == r.sent_s and r.lag_ms == 0.0 for r in run.records)


async def test_closed_loop_stops_by_duration_with_bounded_concurrency() -> None:
    inflight = 0
    peak = 0

    async def op(index: int) -> OpResult:
        nonlocal inflight, peak
        inflight += 1
        peak = max(peak, inflight)
        await asyncio.sleep(0.01)
        inflight -= 1
        return OpResult("sleep", True, 200)

    run = await run_load(op, ClosedLoop(users=3, think_time_s=0.005), duration_s=0.3)
    assert peak == 3
    assert 3 <= len(run.records) <= 3 * 0.3 / 0.015 + 3
    assert all(r.sent_s < 0.3 for r in run.records)


async def test_exceptions_are_recorded_and_bad_results_are_errors() -> None:
    async def op(index: int) -> OpResult:
        if index % 3 == 0:
            raise ConnectionResetError("boom")
        if index % 3 == 1:
            return "not a result"  # type: ignore[return-value]
        return OpResult("good", True, 200)

    run = await run_load(op, ClosedLoop(users=1), duration_s=5.0, max_requests=9, label="mix")
    kinds = {r.index: (r.ok, r.error_type, r.op) for r in run.records}
    assert kinds[0] == (False, "ConnectionResetError", "mix")
    assert kinds[1] == (False, "TypeError", "mix")
    assert kinds[2] == (True, "", "good")


async def test_max_inflight_drops_are_counted_and_recorded() -> None:
    async def slow(index: int) -> OpResult:
        await asyncio.sleep(0.3)
        return OpResult("slow", True, 200)

    model = OpenLoop(rate_rps=200, arrival="constant", max_inflight=2)
    run = await run_load(slow, model, duration_s=0.05)
    assert run.planned == 10
    assert run.dropped == 8
    dropped = [r for r in run.records if r.error_type == "dropped"]
    assert len(dropped) == 8 and not any(r.ok for r in dropped)
    assert all(r.service_ms == 0.0 for r in dropped)
    assert sum(r.ok for r in run.records) == 2


async def test_grace_expiry_cancels_and_records_in_flight_requests() -> None:
    async def hang(index: int) -> OpResult:
        await asyncio.sleep(60)
        return OpResult("hang", True, 200)

    run = await run_load(
        hang, OpenLoop(rate_rps=100, arrival="constant"), duration_s=0.05, grace_s=0.1
    )
    assert len(run.records) == 5 and run.cancelled == 5
    assert all(r.error_type == "cancelled" and not r.ok for r in run.records)
    closed = await run_load(hang, ClosedLoop(users=2), duration_s=0.05, grace_s=0.05)
    assert [r.error_type for r in closed.records] == ["cancelled", "cancelled"]


async def test_outer_cancellation_propagates() -> None:
    async def hang(index: int) -> OpResult:
        await asyncio.sleep(60)
        return OpResult("hang", True, 200)

    task = asyncio.ensure_future(run_load(hang, ClosedLoop(users=2), duration_s=30.0))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_progress_bar_is_optional_and_works() -> None:
    pytest.importorskip("tqdm")
    run = await run_load(
        _instant, ClosedLoop(users=2), duration_s=5.0, max_requests=10, progress=True
    )
    assert len(run.records) == 10
    by_time = await run_load(
        _instant, ClosedLoop(users=1, think_time_s=0.01), duration_s=0.1, progress=True
    )
    assert 1 <= len(by_time.records) <= 11


async def test_arrivals_too_far_behind_schedule_are_dropped() -> None:
    async def hog(index: int) -> OpResult:
        time.sleep(0.01)  # noqa: ASYNC251 - on purpose: the generator cannot keep up
        return OpResult("hog", True, 200)

    model = OpenLoop(rate_rps=400, arrival="constant")
    run = await run_load(hog, model, duration_s=0.25, max_lag_s=0.05)
    assert run.planned == 100 and len(run.records) == 100
    assert 10 < run.dropped < 100
    late = [r for r in run.records if r.error_type == "dropped"]
    assert len(late) == run.dropped
    assert all(r.lag_ms > 50.0 for r in late)
    assert all(r.lag_ms <= 50.0 for r in run.records if r.ok)


async def test_run_load_validates_arguments() -> None:
    with pytest.raises(ValidationError, match="duration_s"):
        await run_load(_instant, ClosedLoop(users=1), duration_s=-1.0)
    with pytest.raises(ValidationError, match="model"):
        await run_load(_instant, "open", duration_s=1.0)  # type: ignore[arg-type]


async def test_zero_grace_still_records_every_arrival() -> None:
    async def hang(index: int) -> OpResult:
        await asyncio.sleep(60)
        return OpResult("hang", True, 200)

    model = OpenLoop(rate_rps=1000, arrival="constant")
    run = await run_load(hang, model, duration_s=0.02, grace_s=0.0)
    assert len(run.records) == run.planned == 20
    assert {r.error_type for r in run.records} == {"cancelled"}


async def test_closed_loop_ramp_starts_users_in_turn() -> None:
    seen: list[float] = []
    loop = asyncio.get_running_loop()
    t0 = loop.time()

    async def op(index: int) -> OpResult:
        seen.append(loop.time() - t0)
        await asyncio.sleep(1.0)  # each user sends exactly one request
        return OpResult("ramp", True, 200)

    run = await run_load(op, ClosedLoop(users=3, ramp_s=0.3), duration_s=0.5, grace_s=0.0)
    assert len(run.records) == 3
    assert seen[0] < 0.05 and 0.1 <= seen[1] < 0.2 + 0.05 and 0.2 <= seen[2]


async def test_hire_counts_200_and_201_and_a_duplicate_400_is_a_conflict() -> None:
    from orchestra_kit.lab.spec import WorkloadSpec
    from orchestra_kit.lab.workloads import make_workload

    class Replies:
        def __init__(self, *replies: tuple[int, object]) -> None:
            self.replies = list(replies)

        async def request(self, method: str, path: str, json: object = None
                          ) -> tuple[int, object]:
            return self.replies.pop(0)

        def events(self, task_id: int) -> object:
            raise AssertionError("not used")

    client = Replies((200, {}), (201, {}), (400, {"error": "Employee x already exists"}),
                     (409, {}), (400, {"error": "name: required"}))
    op = make_workload(WorkloadSpec(kind="hire"), 0).operation(client)
    results = [await op(i) for i in range(5)]
    assert [r.ok for r in results] == [True, True, False, False, False]
    assert [r.error_type for r in results] == ["", "", "conflict", "conflict", "http_400"]


async def test_sent_is_when_the_request_went_out_and_queue_time_is_its_own() -> None:
    from orchestra_kit.lab.probe import add_queue_time, mark_sent

    async def queued(index: int) -> OpResult:
        await asyncio.sleep(0.05)  # waits for a "connection"
        add_queue_time(0.05)
        mark_sent()
        await asyncio.sleep(0.02)
        return OpResult("q", True, 200)

    run = await run_load(queued, OpenLoop(rate_rps=20, arrival="constant"), duration_s=0.2)
    for rec in run.records:
        assert rec.lag_ms >= 50.0 and rec.queue_ms == pytest.approx(50.0, abs=1)
        assert 15.0 <= rec.service_ms < 45.0  # the wait is not service time
        assert rec.latency_ms == pytest.approx(rec.service_ms + rec.lag_ms, abs=1e-6)
