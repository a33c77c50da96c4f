"""The load generator checked against truth: a server in its own process (truth_server.py)
that knows what it did and what it received.

a) known service latency (50 ms ± 2.5 ms): the client's p50/p99 within 5 % of the server's;
b) a server stalling 1 s every 4 s at 200 req/s: corrected p90 ≈ 600 ms, p99 ≈ 960 ms, the
   server still receives the scheduled rate during the stall, a closed loop hides it;
c) 120 requests needing to be in flight at once: the server sees 120 at once;
d) a starved generator (CPU burned on its loop) is flagged, in closed and open loops;
e) generator workers: two processes, one schedule, merged losslessly; a dead worker fails.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest
from lab_workloads import DieInWorker, GetPath
from lab_workloads import call as _call

from orchestra_kit.lab.analysis import audit
from orchestra_kit.lab.histogram import LatencyHistogram
from orchestra_kit.lab.loadgen import ClosedLoop, OpenLoop, run_load
from orchestra_kit.lab.results import summarise_point
from orchestra_kit.lab.workers import (
    WorkerFailed,
    WorkerSlice,
    lab_client,
    merged_histograms,
    run_workers,
    split,
)


async def _run(url: str, path: str, model: ClosedLoop | OpenLoop, duration_s: float, *,
               client: str = "raw", burn_s: float = 0.0) -> dict[str, Any]:
    connections = model.users if isinstance(model, ClosedLoop) else model.max_inflight
    async with lab_client(url, connections=connections, kind=client) as c:
        op = GetPath(path, burn_s).operation(c)
        if not burn_s:
            for _ in range(4):
                await op(0)
        await _reset(url)
        run = await run_load(op, model, duration_s=duration_s, grace_s=5.0)
    return summarise_point(run, params={})


def _audited(row: dict[str, Any], model: ClosedLoop | OpenLoop) -> tuple[bool, str]:
    """The self-audit's verdict on a point (generator health, lag, Little's law)."""
    loop = "closed" if isinstance(model, ClosedLoop) else "open"
    checked = audit(pd.DataFrame([{**row, "loop": loop,
                                   "rate_rps": getattr(model, "rate_rps", None)}]))
    return bool(checked["audit_ok"].iloc[0]), str(checked["audit_reason"].iloc[0])


def _skip_if_flagged(row: dict[str, Any], model: OpenLoop, flagged: list[str]) -> bool:
    """Whether to try again after a miss: only when the self-audit flagged the point.
    After 3 flagged misses, skip (the machine is too busy and the instrument said so);
    an unflagged miss (False) falls through to the asserts and fails the test."""
    ok, reason = _audited(row, model)
    if ok:
        return False
    flagged.append(reason)
    if len(flagged) == 3:
        pytest.skip(f"machine too busy: every miss was flagged by the self-audit: {flagged}")
    return True


async def _reset(url: str) -> None:
    import asyncio

    await asyncio.to_thread(_call, url + "/reset", "POST")


@pytest.mark.alone
async def test_known_latency_within_5_percent_of_the_servers_own(truth_url: str) -> None:
    # The claim under test: when the self-audit passes a point, its latencies are within
    # 5 % of the server's own. On a shared 2-core machine a preempted generator can miss;
    # the audit must then flag the point (schedule lag, loop lag): up to 3 attempts.
    reasons = []
    for _ in range(3):
        row = await _run(truth_url, "/known", OpenLoop(rate_rps=100, arrival="poisson"), 2.0)
        truth = LatencyHistogram.from_values_ms(_call(truth_url + "/stats")["slept_ms"])
        p50, p99 = truth.percentile_ms(50), truth.percentile_ms(99)
        checked = audit(pd.DataFrame([{**row, "loop": "open", "rate_rps": 100.0}]))
        print(f"\nknown: client {row['service_p50_ms']:.2f}/{row['service_p99_ms']:.2f} ms, "
              f"server {p50:.2f}/{p99:.2f} ms; audit: {checked['audit_reason'].iloc[0] or 'ok'}")
        assert row["n"] == row["n_ok"] == truth.count > 150
        if checked["audit_ok"].iloc[0]:
            assert row["service_p50_ms"] == pytest.approx(p50, rel=0.05)
            assert row["service_p99_ms"] == pytest.approx(p99, rel=0.05)
            return
        reasons.append(checked["audit_reason"].iloc[0])
    pytest.skip(f"machine too busy: every attempt was flagged by the self-audit: {reasons}")


@pytest.mark.alone
async def test_stall_shows_in_corrected_latency_and_the_rate_holds(truth_url: str) -> None:
    # Theory: a quarter of the arrivals wait out the rest of the stall, uniform on 0..1 s,
    # so p90 = 600 ms and p99 = 960 ms; releasing 200 replies at once adds tens of ms.
    # A preempted generator on a shared 2-core machine can miss: up to 3 attempts.
    flagged: list[str] = []
    for _ in range(3):
        row = await _run(truth_url, "/stall", OpenLoop(rate_rps=200, arrival="constant"), 4.0)
        stats = _call(truth_url + "/stats")
        rate = sum(1 for t in stats["arrivals"] if 1.05 <= t < 1.95) / 0.9
        print(f"\nstall: p90 {row['p90_ms']:.0f} ms, p99 {row['p99_ms']:.0f} ms, server saw "
              f"{rate:.0f} req/s during the stall, at most {stats['max_inflight']} at once")
        if 570 <= row["p90_ms"] <= 700 and 940 <= row["p99_ms"] <= 1060 and \
                abs(rate - 200) <= 10 and stats["max_inflight"] >= 190:
            break
        if not _skip_if_flagged(row, OpenLoop(rate_rps=200), flagged):
            break  # an unflagged miss: the asserts below fail
    assert row["n_ok"] == row["n"] == 800
    assert 570 <= row["p90_ms"] <= 700
    assert 940 <= row["p99_ms"] <= 1060
    assert rate == pytest.approx(200, rel=0.05)  # no client-side queue
    assert stats["max_inflight"] >= 190
    assert row["queue_p99_ms"] == 0.0
    closed = await _run(truth_url, "/stall", ClosedLoop(users=2), 2.5)
    print(f"closed loop: p90 {closed['p90_ms']:.1f} ms, max {closed['max_ms']:.0f} ms")
    assert closed["max_ms"] >= 500  # it met the stall ...
    assert closed["p90_ms"] < 50  # ... but its percentiles hide it


@pytest.mark.alone
async def test_120_requests_needed_in_flight_are_all_in_flight(truth_url: str) -> None:
    # 80 req/s, each held 1.5 s: 120 must be in flight at once (a 100-connection cap hid this).
    flagged: list[str] = []
    for _ in range(3):
        row = await _run(truth_url, "/hold", OpenLoop(rate_rps=80, arrival="constant"), 2.0,
                         client="aiohttp")
        stats = _call(truth_url + "/stats")
        print(f"\nhold: server saw {stats['max_inflight']} at once; queue p99 "
              f"{row['queue_p99_ms']}")
        if stats["max_inflight"] >= 120:
            break
        if not _skip_if_flagged(row, OpenLoop(rate_rps=80), flagged):
            break  # an unflagged miss: the asserts below fail
    assert row["n_ok"] == 160
    assert stats["max_inflight"] >= 120
    assert row["queue_p99_ms"] < 1.0


@pytest.mark.parametrize("model", [ClosedLoop(users=4), OpenLoop(rate_rps=50, arrival="constant")],
                         ids=["closed", "open"])
async def test_starved_generator_is_flagged(truth_url: str, model: ClosedLoop | OpenLoop) -> None:
    row = await _run(truth_url, "/health", model, 1.0, burn_s=0.03)
    flagged = audit(pd.DataFrame([{**row, "loop": "closed" if isinstance(model, ClosedLoop)
                                   else "open", "rate_rps": getattr(model, "rate_rps", None)}]))
    reason = flagged["audit_reason"].iloc[0]
    print(f"\nstarved: loop lag p99 {row['gen_loop_lag_p99_ms']:.0f} ms, CPU "
          f"{row['gen_cpu_pct']:.0f} %: {reason}")
    assert row["gen_loop_lag_p99_ms"] > 10.0 or row["gen_cpu_pct"] > 90.0
    assert not flagged["audit_ok"].iloc[0]
    assert "generator could not keep up" in reason


async def test_workers_split_one_schedule_and_merge_losslessly(truth_url: str) -> None:
    model = OpenLoop(rate_rps=200, arrival="poisson")
    parts = split(model, 1.0, None, 3, 2)
    slices = [WorkerSlice(url=truth_url, workload=GetPath("/health"), model=model, part=p,
                          duration_s=1.0, client="raw", connections=1000) for p in parts]
    seen: list[int] = []
    run = await run_workers(slices, model=model, duration_s=1.0, on_progress=seen.append)
    row = summarise_point(run)
    indexes = [r.index for r in run.records]
    print(f"\nworkers: n {row['n']}, workers {sorted({r.worker for r in run.records})}, "
          f"lag p99 {row['lag_p99_ms']:.2f} ms")
    assert indexes == list(range(sum(len(p.arrivals) for p in parts)))
    assert {r.worker for r in run.records} == {0, 1}
    assert row["n_ok"] == row["n"] and row["gen_processes"] == 2
    assert seen and seen[-1] == row["n"]


async def test_worker_histograms_merge_to_the_records(truth_url: str) -> None:
    from orchestra_kit.lab.workers import run_worker_slice  # noqa: F401 - the public entry

    model = ClosedLoop(users=4)
    parts = split(model, 0.5, 400, 0, 2)
    assert [p.users for p in parts] == [[(0, 0.0), (2, 0.0)], [(1, 0.0), (3, 0.0)]]
    slices = [WorkerSlice(url=truth_url, workload=GetPath("/health"), model=model, part=p,
                          duration_s=0.5, client="raw", connections=4) for p in parts]
    run = await run_workers(slices, model=model, duration_s=0.5)
    indexes = [r.index for r in run.records]
    assert len(indexes) == len(set(indexes)) <= 400
    assert {r.user for r in run.records} == {0, 1, 2, 3}


async def test_a_dead_worker_is_a_failure_not_a_hang(truth_url: str) -> None:
    model = OpenLoop(rate_rps=100, arrival="constant")
    parts = split(model, 1.0, None, 0, 2)
    slices = [WorkerSlice(url=truth_url, workload=DieInWorker("/health"), model=model, part=p,
                          duration_s=1.0, client="raw") for p in parts]
    with pytest.raises(WorkerFailed, match="died"):
        await run_workers(slices, model=model, duration_s=1.0)


def test_merged_histograms_equal_the_union() -> None:
    from orchestra_kit.lab.loadmodel import LoadRun
    from orchestra_kit.lab.workers import WorkerResult

    a = LatencyHistogram.from_values_ms([1.0, 2.0, 3.0])
    b = LatencyHistogram.from_values_ms([10.0, 20.0])
    empty = LoadRun(records=[], started_wall=0, duration_s=1, dropped=0,
                    model=ClosedLoop(users=1))
    res = [WorkerResult(0, empty, a.encode(), a.encode()), WorkerResult(1, empty, b.encode(), "")]
    latency, service = merged_histograms(res)
    union = LatencyHistogram.from_values_ms([1.0, 2.0, 3.0, 10.0, 20.0])
    assert latency.count == 5 and service.count == 3
    assert latency.percentiles_ms([50, 99]) == pytest.approx(union.percentiles_ms([50, 99]),
                                                             rel=1e-3)
