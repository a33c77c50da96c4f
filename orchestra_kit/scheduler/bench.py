"""``orchestra bench scheduler``: what orchestration costs, measured in one run.

- **overhead per task**: time from ``submit`` to the terminal event, minus the time the
  backend itself spent in ``run`` (measured inside a timing wrapper), in steady state with
  N clients each keeping one task in flight (N = 500, so 500 concurrent tasks) — with the
  simulated backend (1 s ± 0.5 s tasks) and with the OpenAI backend against the fake
  provider in its own process on loopback (0.5 s ± 0.25 s to first token, 20 tokens at
  200 tok/s); clients
  start staggered over the first second, so this is a steady state, not bursts of N;
  with the garbage collector set as ``orchestra serve`` sets it (young generation every
  ``server.gc_young_threshold`` allocations, start-up objects frozen), and two
  ablations at 500 in flight: the interpreter's default collector (``*_gc_default``), and
  the WAL checkpointed by SQLite inside commits instead of by the writer when idle
  (``*_commit_checkpoint``, ``database.idle_checkpoint_commits = 0``);
- **throughput**: 10,000 simulated tasks (10 ms each) at ``max_concurrent_tasks`` 50
  and 500, against the ideal ``limit / latency``;
- **token bucket accuracy**: grants achieved vs the configured rate over ≥ 10 s with
  many waiters, and the largest burst seen in any 10 ms window.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from ..agents import HttpClientPool, OpenAIBackend, SimulatedBackend
from ..agents.base import AgentBackend, AgentRequest, AgentResult, Emit
from ..childproc import terminate
from ..config import (
    AgentSettings,
    DatabaseSettings,
    OptimizationFlags,
    SchedulerSettings,
    ServerSettings,
)
from ..ratelimit import TokenBucket
from ..store import Store
from .core import Scheduler

__all__ = ["GcClock", "cli_main", "run_scheduler_bench", "serve_gc", "young_gc_threshold"]


class TimingBackend:
    """Wraps a backend and records how long each run spent inside it."""

    def __init__(self, inner: AgentBackend) -> None:
        self.inner = inner
        self.name = f"timed-{inner.name}"
        self.inner_s: dict[int, float] = {}

    async def run(self, request: AgentRequest, emit: Emit) -> AgentResult:
        t0 = time.perf_counter()
        try:
            return await self.inner.run(request, emit)
        finally:
            self.inner_s[request.task_id] = time.perf_counter() - t0

    async def aclose(self) -> None:
        await self.inner.aclose()


class GcClock:
    """CPU time spent in the cyclic garbage collector while installed (``gc.callbacks``;
    the collector runs on the thread that allocates, so its thread CPU time: a wall
    clock would also count the time other processes held the core)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = 0
        self._t0 = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t0 = time.thread_time()
        else:
            self.seconds += time.thread_time() - self._t0
            self.collections += 1

    @contextmanager
    def installed(self) -> Iterator[GcClock]:
        """Count while inside the block."""
        gc.callbacks.append(self)
        try:
            yield self
        finally:
            gc.callbacks.remove(self)


@contextmanager
def young_gc_threshold(threshold0: int) -> Iterator[None]:
    """Collect the youngest generation every ``threshold0`` allocations (the interpreter
    default is 700; 0 leaves it) inside the block."""
    saved = gc.get_threshold()
    if threshold0:
        gc.set_threshold(threshold0, *saved[1:])
    try:
        yield
    finally:
        gc.set_threshold(*saved)


@contextmanager
def serve_gc(on: bool) -> Iterator[None]:
    """The young generation's threshold as ``orchestra serve`` sets it
    (``server.gc_young_threshold``), or, off, the interpreter's default."""
    server = ServerSettings()
    with young_gc_threshold(server.gc_young_threshold if on else 0):
        yield


@contextmanager
def _frozen(on: bool) -> Iterator[None]:
    """What exists now moved out of the collector's sight, as ``orchestra serve`` does
    after start-up when ``server.gc_freeze`` is on; given back to it after the block. Not
    when something else froze objects already (unfreezing would undo theirs too). The
    server's own ``loops.freeze_startup_objects`` sits above this layer and never thaws."""
    if not on or not ServerSettings().gc_freeze or gc.get_freeze_count():
        yield
        return
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


@asynccontextmanager
async def _scheduler(tmp: Path, backend: AgentBackend, limit: int, team: int,
                     tag: str, idle_checkpoint: bool = True) -> AsyncIterator[Scheduler]:
    (tmp / tag).mkdir()
    db = DatabaseSettings(path=str(tmp / tag / "bench.db"))
    if not idle_checkpoint:
        db = dataclasses.replace(db, idle_checkpoint_commits=0)
    async with Store(db, OptimizationFlags(), project_root=tmp / tag) as store:
        await store.hire_many([{"name": f"e{i}", "role": "dev"} for i in range(team)])
        settings = SchedulerSettings(max_concurrent_tasks=limit, max_api_requests_per_minute=1e9,
                                     api_burst=100_000, progress_files=False)
        async with Scheduler(store, backend, settings, workspace_root=tmp / tag / "ws",
                             project_root=tmp / tag) as sched:
            yield sched


async def _overhead(tmp: Path, inner: AgentBackend, inflight: int, duration_s: float,
                    tag: str, *, as_served: bool = True,
                    idle_checkpoint: bool = True) -> dict[str, float]:
    """Steady state: ``inflight`` clients each submit a task and wait for its end, again
    and again, for ``duration_s`` (bounded by count too). Overhead = submit-to-done minus
    the time spent inside the backend. ``as_served``: the collector as ``orchestra
    serve`` sets it; else the interpreter's default."""
    backend = TimingBackend(inner)
    overheads: list[float] = []
    max_tasks = inflight * 200
    with serve_gc(as_served):
        async with _scheduler(tmp, backend, inflight, inflight, tag, idle_checkpoint) as sched:
            stop = time.perf_counter() + duration_s

            async def client(i: int) -> None:
                await asyncio.sleep(i / inflight)  # staggered starts: a steady state, not waves
                while time.perf_counter() < stop and len(overheads) < max_tasks:
                    t0 = time.perf_counter()
                    task = await sched.submit(f"e{i}", "bench")
                    await sched.wait(task.id)
                    overheads.append(time.perf_counter() - t0 - backend.inner_s[task.id])

            with _frozen(as_served):  # after set-up, as serve freezes after start-up
                cpu0 = time.process_time()
                with GcClock().installed() as gc_clock:
                    await asyncio.gather(*(client(i) for i in range(inflight)))
                cpu_s = time.process_time() - cpu0  # every thread of the process: loop + writer
    inner_ms = [v * 1000 for v in backend.inner_s.values()]
    ms = [v * 1000 for v in overheads[len(overheads) // 10:]]  # drop the warm-up tenth
    return {"p50_ms": _pct(ms, 50), "p99_ms": _pct(ms, 99), "backend_p50_ms": _pct(inner_ms, 50),
            "tasks": float(len(overheads)),
            "cpu_ms_per_task": cpu_s * 1000 / max(len(overheads), 1),
            "gc_ms_per_task": gc_clock.seconds * 1000 / max(len(overheads), 1)}


async def _throughput(tmp: Path, n_tasks: int, limit: int, latency_ms: float) -> float:
    agents = AgentSettings(sim_latency_ms=latency_ms, sim_jitter_ms=0.0)
    async with _scheduler(tmp, SimulatedBackend(agents), limit, max(limit, 1), f"tp{limit}") as sched:
        t0 = time.perf_counter()
        for start in range(0, n_tasks, 500):
            items = [{"employee": f"e{i % limit}", "description": "bench"}
                     for i in range(start, min(n_tasks, start + 500))]
            await sched.submit_many(items)
        deadline = t0 + 300
        while sched.stats()["completed"] < n_tasks and time.perf_counter() < deadline:
            await asyncio.sleep(0.02)
        done = int(sched.stats()["completed"])
        return done / (time.perf_counter() - t0)


async def _token_bucket(rate_per_min: float, burst: int, duration_s: float) -> dict[str, float]:
    bucket = TokenBucket(rate_per_min, burst)
    grants: list[float] = []
    t0 = time.perf_counter()
    stop = t0 + duration_s

    async def waiter() -> None:
        while time.perf_counter() < stop:
            await bucket.acquire()
            grants.append(time.perf_counter())

    await asyncio.gather(*(waiter() for _ in range(32)))
    grants = [g for g in grants if g <= stop]
    after = grants[burst:]
    achieved = (len(after) / (after[-1] - t0) * 60) if after else 0.0
    window = 0.010
    j = 0
    max_burst = 0
    for i, g in enumerate(grants):
        while grants[j] < g - window:
            j += 1
        max_burst = max(max_burst, i - j + 1)
    return {"configured_per_min": rate_per_min, "achieved_per_min": achieved,
            "error_pct": abs(achieved - rate_per_min) / rate_per_min * 100,
            "max_burst": float(max_burst), "burst": float(burst)}


@asynccontextmanager
async def _fake_provider_process() -> AsyncIterator[str]:
    """``orchestra fake-llm`` in a child process (its own core, as a real provider would
    be): 0.5 s ± 0.25 s to first token, 20 tokens at 200 tok/s. Yields its base URL."""
    args = [sys.executable, "-m", "orchestra_kit.cli", "fake-llm", "--port", "0",
            "--ttft-ms", "500", "--ttft-jitter-ms", "250", "--tokens-per-s", "200",
            "--output-tokens", "20", "--output-tokens-jitter", "0", "--capacity", "100000"]
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(60):
            line = (await proc.stdout.readline()).decode()
        if "listening on " not in line:
            raise RuntimeError(f"fake-llm did not start: {line!r}")
        yield line.rsplit("listening on ", 1)[1].strip() + "/v1"
    finally:
        await terminate(proc, timeout_s=10)


async def run_scheduler_bench(*, quick: bool = False, progress: bool = True) -> dict[str, Any]:
    """Every figure of the scheduler benchmark, measured in this one run."""
    def say(msg: str) -> None:
        if progress:
            print(f"  … {msg}", flush=True)

    inflight, duration_s = (50, 2.0) if quick else (500, 8.0)
    n_tasks = 1_000 if quick else 10_000
    out: dict[str, Any] = {"inflight": inflight, "tasks": n_tasks}
    with tempfile.TemporaryDirectory(prefix="orchestra-bench-") as tmpdir:
        tmp = Path(tmpdir)
        sim = SimulatedBackend(AgentSettings(sim_latency_ms=1000.0, sim_jitter_ms=500.0))
        if not quick:  # light load first: what one task costs when nothing queues
            say("overhead, simulated backend, 50 in flight")
            o = await _overhead(tmp, sim, 50, duration_s, "sim50")
            out |= {"overhead_p50_ms_c50": o["p50_ms"], "overhead_p99_ms_c50": o["p99_ms"]}
        say(f"overhead, simulated backend, {inflight} in flight")
        o = await _overhead(tmp, sim, inflight, duration_s, "sim")
        out |= {"overhead_p50_ms": o["p50_ms"], "overhead_p99_ms": o["p99_ms"],
                "sim_backend_p50_ms": o["backend_p50_ms"], "cpu_ms_per_task": o["cpu_ms_per_task"],
                "gc_ms_per_task": o["gc_ms_per_task"]}
        if not quick:  # the ablations, each one knob from the run above
            say(f"overhead, {inflight} in flight, the interpreter's default collector")
            o = await _overhead(tmp, sim, inflight, duration_s, "simgc", as_served=False)
            out |= {"overhead_p50_ms_gc_default": o["p50_ms"],
                    "overhead_p99_ms_gc_default": o["p99_ms"],
                    "cpu_ms_per_task_gc_default": o["cpu_ms_per_task"],
                    "gc_ms_per_task_gc_default": o["gc_ms_per_task"]}
            say(f"overhead, {inflight} in flight, WAL checkpointed inside commits")
            o = await _overhead(tmp, sim, inflight, duration_s, "simckpt", idle_checkpoint=False)
            out |= {"overhead_p50_ms_commit_checkpoint": o["p50_ms"],
                    "overhead_p99_ms_commit_checkpoint": o["p99_ms"]}
        say("overhead, openai backend against the fake provider (its own process)")
        async with _fake_provider_process() as base_url:
            agents = AgentSettings(backend="openai", base_url=base_url)
            async with HttpClientPool(inflight, True, 30.0) as pool:
                o = await _overhead(tmp, OpenAIBackend(agents, pool), inflight, duration_s,
                                    "llm")
        out |= {"llm_overhead_p50_ms": o["p50_ms"], "llm_overhead_p99_ms": o["p99_ms"],
                "llm_backend_p50_ms": o["backend_p50_ms"]}
        for limit in (50, 500):
            say(f"throughput, {n_tasks} simulated tasks of 10 ms, max_concurrent_tasks={limit}")
            rate = await _throughput(tmp, n_tasks, limit, 10.0)
            out[f"tasks_per_s_c{limit}"] = rate
            out[f"ideal_tasks_per_s_c{limit}"] = limit / 0.010
    say("token bucket: 3000/min, burst 20, 32 waiters")
    tb = await _token_bucket(3000.0, 20, 2.0 if quick else 10.0)
    out |= {"ratelimit_configured_per_min": tb["configured_per_min"],
            "ratelimit_achieved_per_min": tb["achieved_per_min"],
            "ratelimit_error_pct": tb["error_pct"], "max_burst": tb["max_burst"],
            "ratelimit_burst_capacity": tb["burst"]}
    return out


def _table(r: dict[str, Any]) -> str:
    rows = []
    if "overhead_p50_ms_c50" in r:
        rows.append(("overhead per task, simulated, 50 in flight",
                     f"p50 {r['overhead_p50_ms_c50']:.2f} ms, p99 {r['overhead_p99_ms_c50']:.2f} ms",
                     "light load: nothing queues"))
    rows += [
        (f"overhead per task, simulated, {r['inflight']} in flight",
         f"p50 {r['overhead_p50_ms']:.2f} ms, p99 {r['overhead_p99_ms']:.2f} ms",
         (f"backend itself p50 {r['sim_backend_p50_ms']:.1f} ms; process CPU"
          f" {r['cpu_ms_per_task']:.2f} ms per task, of it {r['gc_ms_per_task']:.2f} ms in the"
          " garbage collector")),
        *([("same, the interpreter's default collector (ablation)",
             (f"p50 {r['overhead_p50_ms_gc_default']:.2f} ms,"
              f" p99 {r['overhead_p99_ms_gc_default']:.2f} ms"),
             (f"process CPU {r['cpu_ms_per_task_gc_default']:.2f} ms per task, of it"
              f" {r['gc_ms_per_task_gc_default']:.2f} ms in the garbage collector")),
           ("same, WAL checkpointed inside commits (ablation)",
            (f"p50 {r['overhead_p50_ms_commit_checkpoint']:.2f} ms,"
             f" p99 {r['overhead_p99_ms_commit_checkpoint']:.2f} ms"),
            "database.idle_checkpoint_commits = 0: SQLite's auto-checkpoint")]
          if "overhead_p50_ms_gc_default" in r else []),
        ("overhead per task, openai backend → fake provider",
         f"p50 {r['llm_overhead_p50_ms']:.2f} ms, p99 {r['llm_overhead_p99_ms']:.2f} ms",
         f"backend itself p50 {r['llm_backend_p50_ms']:.1f} ms"),
    ]
    for limit in (50, 500):
        got, ideal = r[f"tasks_per_s_c{limit}"], r[f"ideal_tasks_per_s_c{limit}"]
        rows.append((f"throughput, {r['tasks']} tasks of 10 ms, limit {limit}",
                     f"{got:,.0f} tasks/s", f"{got / ideal:.0%} of ideal {ideal:,.0f}/s"))
    rows.append(("token bucket 3000/min, burst 20",
                 f"{r['ratelimit_achieved_per_min']:,.1f}/min ({r['ratelimit_error_pct']:.2f} % off)",
                 f"largest burst {r['max_burst']:.0f} (capacity {r['ratelimit_burst_capacity']:.0f})"))
    width = max(len(a) for a, _, _ in rows)
    return "\n".join(f"{a:<{width}}  {b:<34} {c}" for a, b, c in rows)


def cli_main(argv: list[str]) -> int:
    """``orchestra bench scheduler [--json] [--quick]``."""
    parser = argparse.ArgumentParser(prog="orchestra bench scheduler", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="small counts (a smoke run)")
    args = parser.parse_args(argv)
    result = asyncio.run(run_scheduler_bench(quick=args.quick, progress=not args.json))
    print(json.dumps(result, sort_keys=True) if args.json else _table(result))
    return 0

