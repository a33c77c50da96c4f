"""``orchestra bench generator``: how fast can the lab's own generator go?

A null server (:mod:`orchestra_kit.lab.nullserver`) runs in its own process; the
lab's generator workers (the same code as an experiment with ``[generator] processes``:
:func:`~orchestra_kit.lab.workers.run_workers`, uvloop when installed, the raw HTTP
client, ``GET /health``) drive it open-loop at rising rates. A
rate is *sustained* when the schedule lag p99 is at most ``max_lag_p99_ms`` (5 ms),
nothing was dropped, every request succeeded and the achieved throughput is at least
99 % of the offered rate. The capacity is the highest sustained rate found by
doubling, then bisecting; it is measured with 1 worker and with each worker count up
to the machine's cores, and the best is reported.

JSON keys: ``open_loop_capacity_rps`` (best), ``open_loop_capacity_rps_1proc``,
``lag_p99_ms_at_capacity``, ``processes`` (the best count), ``points`` (every
measurement). The result is cached for the lab's manifests
(:func:`orchestra_kit.lab.calibrate.cached_capacity`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from ..childproc import terminate
from .loadgen import OpenLoop
from .results import summarise_point
from .spec import WorkloadSpec
from .workers import WorkerSlice, run_workers, split
from .workloads import make_workload

__all__ = ["cli_main", "measure_generator", "null_server"]


@contextlib.asynccontextmanager
async def null_server() -> AsyncIterator[str]:
    """The null server in a child process; yields its URL."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "orchestra_kit.lab.nullserver", stdout=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            line = await proc.stdout.readline()
        yield f"http://127.0.0.1:{int(line)}"
    finally:
        await terminate(proc, timeout_s=5)


async def _measure(url: str, rate: float, processes: int, duration_s: float) -> dict[str, Any]:
    model = OpenLoop(rate_rps=rate, arrival="poisson", max_inflight=10_000)
    workload = make_workload(WorkloadSpec(kind="health"), 0)
    # Every count, 1 included, runs in worker processes: the generator in its own
    # process(es), as the null server is in its own.
    parts = split(model, duration_s, None, 0, processes)
    slices = [WorkerSlice(url=url, workload=workload, model=model, part=p, client="raw",
                          duration_s=duration_s, connections=10_000, grace_s=2.0)
              for p in parts]
    run = await run_workers(slices, model=model, duration_s=duration_s)
    row = summarise_point(run)
    # Achieved: ok requests over the real span (start to the last reply), against the
    # schedule actually drawn (a Poisson draw may hold fewer than rate × duration).
    achieved = row["throughput_rps"]
    offered = row["offered_rps"]
    point = {"rate_rps": rate, "processes": processes, "achieved_rps": round(achieved, 1),
             "lag_p99_ms": row["lag_p99_ms"], "loop_lag_p99_ms": row["gen_loop_lag_p99_ms"],
             "cpu_pct": row["gen_cpu_pct"], "dropped": row["dropped"],
             "loop": run.generator.get("loop", "asyncio"),
             "success_rate": row["success_rate"], "service_p99_ms": row["service_p99_ms"]}
    point["sustained"] = bool(point["lag_p99_ms"] <= 5.0 and row["dropped"] == 0
                              and row["success_rate"] >= 0.999 and achieved >= 0.99 * offered)
    return point


async def _capacity(url: str, processes: int, duration_s: float, start_rps: float,
                    steps: int, points: list[dict[str, Any]], max_rps: float
                    ) -> tuple[float, float | None]:
    """Double from ``start_rps`` until a rate fails, then bisect ``steps`` times."""
    good, good_lag, bad = 0.0, None, None
    rate = start_rps
    while bad is None and rate <= max_rps:
        point = await _measure(url, rate, processes, duration_s)
        points.append(point)
        if point["sustained"]:
            good, good_lag, rate = rate, point["lag_p99_ms"], rate * 2
        else:
            bad = rate
    for _ in range(steps if good and bad else 0):
        assert bad is not None
        middle = float(round((good + bad) / 2.0, -1))
        point = await _measure(url, middle, processes, duration_s)
        points.append(point)
        if point["sustained"]:
            good, good_lag = middle, point["lag_p99_ms"]
        else:
            bad = middle
    return good, good_lag


async def measure_generator(*, quick: bool = False, processes: list[int] | None = None,
                            start_rps: float = 500.0, max_rps: float = 200_000.0
                            ) -> dict[str, Any]:
    """The generator's open-loop capacity with 1 worker and the best worker count
    (rates from ``start_rps``, doubling, never above ``max_rps``)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    counts = processes or sorted({1, *range(2, max(2, cores) + 1)})
    duration_s, steps = (0.5, 1) if quick else (2.0, 3)
    points: list[dict[str, Any]] = []
    best: dict[int, tuple[float, float | None]] = {}
    async with null_server() as url:
        for n in counts:
            best[n] = await _capacity(url, n, duration_s, start_rps, steps, points, max_rps)
    top = max(best, key=lambda n: best[n][0])
    return {"open_loop_capacity_rps": best[top][0],
            "open_loop_capacity_rps_1proc": best.get(1, (0.0, None))[0],
            "lag_p99_ms_at_capacity": best[top][1], "processes": top, "cores": cores,
            "client": "raw", "max_lag_p99_ms": 5.0, "quick": quick, "points": points}


def cli_main(argv: list[str]) -> int:
    """``orchestra bench generator [--json] [--quick] [--results DIR]``."""
    p = argparse.ArgumentParser(prog="orchestra bench generator", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--quick", action="store_true", help="0.5 s per rate, fewer bisections")
    p.add_argument("--results", default="results",
                   help="where the calibration is cached for the lab (default results/)")
    args = p.parse_args(argv)
    from .calibrate import CACHE_NAME, _cache_key, store_capacity

    result = asyncio.run(measure_generator(quick=args.quick))
    store_capacity(Path(args.results) / CACHE_NAME, {**result, "key": _cache_key()})
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "points"}, indent=2))
        return 0
    for point in result["points"]:
        print(f"  {point['processes']} proc @ {point['rate_rps']:>8,.0f} req/s: achieved "
              f"{point['achieved_rps']:>8,.0f}, lag p99 {point['lag_p99_ms']:6.2f} ms, "
              f"cpu {point['cpu_pct']:5.0f} %, {'ok' if point['sustained'] else 'FAILED'}")
    for key, value in result.items():
        if key != "points":
            print(f"{key:<30} {value}")
    return 0
