"""Measure the seed's "Performance Improvements Summary" instead of quoting it.

``await measure_seed_table(size="smoke")`` rebuilds every row of the seed's table
(reference/seed-performance-optimizations.md) from load runs against the in-process
service: "before" is the same build with all five optimisation flags off, "after"
with all on. Each row is a small experiment run through :func:`run_experiment`
(every run directory is kept under ``results/seed_table_*``), repeated, and reduced
to mean and min–max over the repeats. The per-flag ablation runs
``experiments/seed_table.toml``. The table is saved under
``results/seed_table_summary/STAMP/`` so the charts re-plot without re-measuring.

Task rows use the simulated backend with faults off (a provider fault rate would
fail tasks in both columns alike); the LLM rows use the openai backend against the
fake provider (:mod:`orchestra_kit.fakellm`) with a 300 ms time to first token and
60 tokens at 200 tokens/s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import ConfigError
from ..fakellm import FakeLLM, FakeLLMConfig
from .analysis import slo_knee
from .seedtable_model import CLAIMS, SeedTable, make_row, spread
from .spec import load_spec, parse_spec
from .sweep import PointDone, run_experiment

__all__ = ["SIZES", "SeedTable", "SeedTableSize", "measure_seed_table"]

FLAGS = ("connection_pooling", "wal_mode", "batch_operations", "query_caching",
         "async_llm_processing")
BEFORE = {f"flags.enable_{f}": False for f in FLAGS}
COMMON = {"scheduler.max_api_requests_per_minute": 1_000_000.0, "scheduler.api_burst": 1000,
          "scheduler.progress_files": False, "agents.sim_latency_ms": 50.0,
          "agents.sim_failure_rate": 0.0}
VARIANTS = {"before": BEFORE, "after": {}}
SPEC_PATH = Path(__file__).resolve().parents[2] / "experiments" / "seed_table.toml"


@dataclass(frozen=True, kw_only=True)
class SeedTableSize:
    """How big each row's experiment is."""

    repeats: int
    llm_requests: int
    db_users: int
    duration_s: float
    employee_levels: tuple[int, ...]
    health_levels: tuple[int, ...]
    assign_levels: tuple[int, ...]
    user_ladder: tuple[int, ...]
    inflight_ladder: tuple[int, ...]
    users_duration_s: float
    target: str = "process"  # smoke: "inprocess" (seconds, not figures; the audit marks it)
    ablation_sets: dict[str, Any] = field(default_factory=dict)


SIZES: dict[str, SeedTableSize] = {
    "smoke": SeedTableSize(repeats=2, llm_requests=1, db_users=8, duration_s=0.3,
                          employee_levels=(10, 50), health_levels=(50, 200),
                          assign_levels=(15, 50), user_ladder=(5, 20), inflight_ladder=(5, 20),
                          users_duration_s=1.0, target="inprocess",
                          ablation_sets={"repeats": 1, "load.duration_s": 0.3,
                                         "sweep.load.users": [10]}),
    "full": SeedTableSize(repeats=3, llm_requests=5, db_users=16, duration_s=2.0,
                         employee_levels=(10, 50, 500), health_levels=(50, 500, 2000),
                         assign_levels=(15, 50, 500),
                         user_ladder=(10, 50, 100, 250, 500, 1000),
                         inflight_ladder=(10, 25, 50, 100, 200), users_duration_s=6.0,
                         ablation_sets={}),
}


@dataclass(kw_only=True)
class _Ctx:
    """What every row needs: the size, where results go, the repeats, progress."""

    size: SeedTableSize
    repeats: int
    root: Path
    seed: int
    tick: Callable[[str], None]
    runs: dict[str, str] = field(default_factory=dict)

    async def run(self, name: str, doc: dict[str, Any]) -> pd.DataFrame:
        """Run one experiment document (repeats and seed filled in) and read its points."""
        doc = {**doc, "target": {"kind": self.size.target, **doc.get("target", {})}}
        spec = parse_spec({"name": name, "seed": self.seed, "repeats": self.repeats, **doc})
        return await self.run_spec(spec)

    async def run_spec(self, spec: Any) -> pd.DataFrame:
        """Run a parsed spec; keep its run directory; return points.csv as a DataFrame."""
        def on_point(done: PointDone) -> None:
            self.tick(f"{spec.name} {done.done}/{done.total}")

        run_dir = await run_experiment(spec, results_root=self.root, progress=False,
                                       on_point=on_point)
        self.runs[spec.name] = str(run_dir)
        return await asyncio.to_thread(pd.read_csv, run_dir / "points.csv")


def _doc(workload: dict[str, Any], load: dict[str, Any], sweep: dict[str, Any],
         settings: dict[str, Any] | None = None,
         variants: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"target": {"settings": {**COMMON, **(settings or {})}}, "workload": workload,
            "load": {"model": "closed", **load}, "variants": variants or VARIANTS,
            "sweep": {"variant": list(variants or VARIANTS), **sweep}}


def _values(points: pd.DataFrame, col: str, scale: float = 1.0, **where: Any) -> list[float]:
    """Per-repeat values of ``col`` for the rows matching ``where`` (column=value)."""
    rows = points
    for key, value in where.items():
        rows = rows[rows[key.replace("__", ".")] == value]
    return [float(v) * scale for v in rows.sort_values("repeat")[col]]


async def _llm_rows(ctx: _Ctx) -> list[dict[str, Any]]:
    """POST /tasks wait and time to done, openai backend against the fake provider."""
    fake_cfg = FakeLLMConfig(seed=ctx.seed, ttft_ms=300.0, ttft_jitter_ms=30.0, tokens_per_s=200.0,
                             output_tokens=60, output_tokens_jitter=0)
    async with FakeLLM(fake_cfg) as fake:
        settings = {"agents.backend": "openai", "agents.base_url": fake.base_url,
                    "agents.api_key": "sk-local"}
        load = {"users": 1, "duration_s": 60.0, "max_requests": ctx.size.llm_requests}
        post = await ctx.run("seed_table_llm_post", _doc(
            {"kind": "assign", "team_size": 4}, load, {}, settings))
        done = await ctx.run("seed_table_llm_done", _doc(
            {"kind": "assign_wait", "team_size": 4}, load, {}, settings, {"after": {}}))
    before = _values(post, "mean_ms", variant="before")  # the handler returned when done
    return [
        make_row("llm_post", "1 client", before, _values(post, "mean_ms", variant="after"),
                 "after = the 202 answer; the work continues in the scheduler"),
        make_row("llm_done", "1 client", before, _values(done, "mean_ms", variant="after"),
                 "POST /tasks until the task's events report completed"),
    ]


async def _db_row(ctx: _Ctx) -> list[dict[str, Any]]:
    """Mean latency of a committed hire (one row written) at moderate concurrency."""
    n = ctx.size.db_users
    pts = await ctx.run("seed_table_db", _doc(
        {"kind": "hire"}, {"users": n, "duration_s": ctx.size.duration_s}, {}))
    return [make_row("db", f"{n} concurrent", _values(pts, "mean_ms", variant="before"),
                     _values(pts, "mean_ms", variant="after"))]


async def _capacity_rows(ctx: _Ctx, key: str, workload: dict[str, Any],
                         levels: tuple[int, ...]) -> list[dict[str, Any]]:
    """Success % of N concurrent closed-loop clients for ``duration_s``, before/after."""
    pts = await ctx.run(f"seed_table_{key}", _doc(
        workload, {"users": levels[0], "duration_s": ctx.size.duration_s},
        {"load.users": list(levels)}))
    return [make_row(key, f"{n} concurrent",
                     _values(pts, "success_rate", 100.0, variant="before", load__users=n),
                     _values(pts, "success_rate", 100.0, variant="after", load__users=n))
            for n in levels]


def _knees(points: pd.DataFrame, variant: str) -> list[float]:
    """Per repeat: the highest users count meeting p95 ≤ 150 ms and 95 % success."""
    out = []
    for _, rows in points[points["variant"] == variant].groupby("repeat"):
        knee = slo_knee(rows, p95_ms=150.0, min_success_rate=0.95).knee_load
        out.append(0.0 if knee is None else float(knee))
    return out


MIXED = {"kind": "mix", "team_size": 64,
         "mix": {"hire": 2.0, "read_mix": 6.0, "assign_wait": 2.0}}
THINK = {"think_time_s": 1.0, "think_jitter_s": 0.5}  # Locust's between(0.5, 1.5)


async def _users_row(ctx: _Ctx) -> list[dict[str, Any]]:
    """Highest count of *users* (closed loop, thinking 1 s ± 0.5 s between requests, as
    Locust's users do) at p95 ≤ 150 ms on the mixed workload; and, on its own line, the
    highest zero-think in-flight concurrency meeting the same SLO."""
    ladder, inflight = list(ctx.size.user_ladder), list(ctx.size.inflight_ladder)
    pts = await ctx.run("seed_table_users", {**_doc(
        MIXED, {"users": ladder[0], "duration_s": ctx.size.users_duration_s, **THINK},
        {"load.users": ladder}), "slo": {"p95_ms": 150.0}})
    busy = await ctx.run("seed_table_inflight", {**_doc(
        MIXED, {"users": inflight[0], "duration_s": ctx.size.duration_s},
        {"load.users": inflight}), "slo": {"p95_ms": 150.0}})
    return [_knee_row("users", pts, ladder, "think 1 s ± 0.5 s"),
            _knee_row("users_inflight", busy, inflight, "think 0")]


def _knee_row(key: str, pts: pd.DataFrame, ladder: list[int], what: str) -> dict[str, Any]:
    before, after = _knees(pts, "before"), _knees(pts, "after")
    note = f"ladder {ladder}; 0 = no level met the SLO"
    if max(after, default=0.0) >= ladder[-1]:
        note += f"; {ladder[-1]} is the top of the ladder (it may hold more)"
    return make_row(key, f"mixed workload, {what}", before, after, note)


def _ablation_frame(points: pd.DataFrame) -> pd.DataFrame:
    """variant × metric: mean/lo/hi over repeats and the ratio to all_on."""
    records = []
    for metric in ("p95_ms", "p99_ms", "throughput_rps", "success_rate"):
        base = spread(_values(points, metric, variant="all_on"))[0]
        for variant in dict.fromkeys(points["variant"]):
            mean, lo, hi = spread(_values(points, metric, variant=variant))
            records.append({"variant": variant, "metric": metric, "value": mean, "lo": lo,
                            "hi": hi, "ratio": mean / base, "ratio_lo": lo / base,
                            "ratio_hi": hi / base})
    return pd.DataFrame(records)


async def _ablation(ctx: _Ctx, spec_path: Path) -> pd.DataFrame:
    spec = load_spec(spec_path, {**ctx.size.ablation_sets, "target.kind": ctx.size.target})
    return _ablation_frame(await ctx.run_spec(spec))


def _progress_bar(enabled: bool, total: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="seed table", unit="row", disable=not enabled)


async def measure_seed_table(*, size: str = "smoke", repeats: int | None = None,
                             results_root: str | Path = "results", progress: bool = True,
                             spec_path: str | Path = SPEC_PATH, seed: int = 0) -> SeedTable:
    """Measure every row of the seed's table, before (flags off) vs after (flags on)."""
    if size not in SIZES:
        raise ConfigError("size", size, f"must be one of {', '.join(SIZES)}")
    if repeats is not None and (not isinstance(repeats, int) or repeats < 1):
        raise ConfigError("repeats", repeats, "must be an integer >= 1")
    plan = SIZES[size]
    bar = _progress_bar(progress, 7)
    ctx = _Ctx(size=plan, repeats=repeats or plan.repeats, root=Path(results_root), seed=seed,
               tick=lambda text: bar.set_postfix_str(text, refresh=True))
    started, rows = time.perf_counter(), []
    steps: list[Callable[[_Ctx], Awaitable[list[dict[str, Any]]]]] = [
             _llm_rows, _db_row, _users_row,
             lambda c: _capacity_rows(c, "employees", {"kind": "hire"}, plan.employee_levels),
             lambda c: _capacity_rows(c, "http", {"kind": "health"}, plan.health_levels),
             lambda c: _capacity_rows(c, "assign", {"kind": "assign_wait",
                                                    "team_size": max(plan.assign_levels)},
                                      plan.assign_levels)]
    try:
        for step in steps:
            rows += await step(ctx)
            bar.update(1)
        ablation = await _ablation(ctx, Path(spec_path))
        bar.update(1)
    finally:
        bar.close()
    order = {CLAIMS[k].row: i for i, k in enumerate(CLAIMS)}
    rows.sort(key=lambda r: order[r["row"]])
    meta = {"size": size, "repeats": ctx.repeats, "seed": seed, "runs": ctx.runs,
            "elapsed_s": round(time.perf_counter() - started, 1),
            "measured": datetime.now(UTC).isoformat(timespec="seconds")}
    table = SeedTable.from_rows(rows, ablation=ablation, meta=meta)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    await asyncio.to_thread(table.save, Path(results_root) / "seed_table_summary" / f"{stamp}-{size}")
    return table
