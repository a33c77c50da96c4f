"""Capacity planning from agent sweeps: how many agents, what each costs, what limits them.

:func:`agent_capacity` reads an opencode sweep (one task per user, so a point with N
users is N agents at once): per concurrency, time to done, each agent's peak RSS and
CPU, the machine's CPU and memory, the provider's queue and the scheduler's; the
highest concurrency before the median time to done doubles (against the lowest
concurrency); and the resource that limits it, named from the evidence of the first
point past it (or of the last point, when nothing doubled within the sweep):

- ``max_concurrent_tasks``: tasks waited for a scheduler slot for ≥ 25 % of their time;
- ``the LLM bucket``: agents waited for the token bucket for ≥ 25 % of their time;
- ``provider capacity``: the provider queued requests for ≥ 25 % of the time, or shed
  them with 429s;
- ``memory``: less than 10 % of the machine's memory was left;
- ``CPU``: the machine's CPU was ≥ 85 % busy on average;
- otherwise "nothing measured here" (say so rather than guess).

It also projects the ceilings one agent's cost implies: memory (80 % of RAM ÷ peak RSS
per agent) and CPU (cores ÷ CPU seconds per second of an agent's run).

:func:`llm_limits` reads the LLM sweep: per series (variant), the throughput plateau,
the knee (the lowest concurrency reaching 90 % of it) and which limit the plateau
matches: the bucket (rate/60), the HTTP pool or the scheduler's slots (size ÷ call
time), or the provider (capacity ÷ call time), with the measured evidence. The call
time is the provider profile's mean (TTFT + tokens ÷ tokens/s) for a run's reading.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["AgentCapacity", "agent_capacity", "agent_table", "llm_limits"]

_SHARE = 0.25
_CPU_BUSY = 85.0
_MEM_LEFT = 0.10
_TABLE_COLS = {
    "task_done_s_p50": "done_p50_s", "task_done_s_p99": "done_p99_s",
    "success_rate": "success_rate", "agent_peak_rss_mb_p50": "rss_per_agent_mb",
    "agents_rss_max_mb": "agents_rss_total_mb", "agent_cpu_s_mean": "cpu_s_per_agent",
    "agent_cpu_per_wall": "cpu_per_wall", "agent_startup_s_p50": "startup_p50_s",
    "agent_startup_s_p99": "startup_p99_s", "machine_cpu_pct_mean": "machine_cpu_pct",
    "machine_mem_available_min_mb": "mem_available_mb", "task_queue_s_p50": "slot_wait_p50_s",
    "agent_bucket_wait_s_mean": "bucket_wait_s", "provider_max_queued": "provider_queued_max",
    "provider_429": "provider_429", "files_found": "files_found",
    "leftover_processes": "leftover_processes", "agent_exit_nonzero": "exit_nonzero",
}


def agent_table(points: pd.DataFrame) -> pd.DataFrame:
    """Per concurrency (mean over repeats): time to done, agent and machine costs."""
    cols = [c for c in _TABLE_COLS if c in points.columns]
    grouped = points.groupby("load", sort=True)[cols].mean(numeric_only=True)
    out = grouped.rename(columns=_TABLE_COLS).reset_index().rename(columns={"load": "agents"})
    out["agents"] = out["agents"].astype(int)
    return out.round(3)


@dataclass(frozen=True, kw_only=True)
class AgentCapacity:
    """What an opencode sweep says about this machine."""

    table: Any  # pandas DataFrame from agent_table
    max_agents: int  # highest concurrency before time to done doubled (or the last one)
    doubled_at: int | None  # the first concurrency where it had doubled, if any
    limited_by: str
    evidence: str
    rss_per_agent_mb: float
    cpu_s_per_agent: float
    startup_p50_s: float  # at the lowest concurrency (the table has every level)
    startup_p99_s: float
    memory_ceiling: int | None
    cpu_ceiling: int | None
    cores: int
    memory_mb: float

    def sentence(self) -> str:
        """The capacity-planning sentence, generated from the numbers."""
        t = self.table
        base = t.iloc[0]
        far = self.doubled_at if self.doubled_at else int(t["agents"].iloc[-1])
        top = t[t["agents"] == far].iloc[0]
        reach = (f"time to done doubled at {self.doubled_at}" if self.doubled_at
                 else "time to done never doubled within the sweep, so this is a floor")
        limit = "limited by" if self.doubled_at else "and the pressure at the top was"
        ceilings = ", ".join(p for p in (
            f"memory alone would allow ~{self.memory_ceiling}" if self.memory_ceiling else "",
            f"CPU alone ~{self.cpu_ceiling}" if self.cpu_ceiling else "") if p)
        noun = "agent" if self.max_agents == 1 else "agents"
        return (f"On this machine ({self.cores} cores, {self.memory_mb / 1024:.1f} GiB, shared "
                f"with other work while measured), {self.max_agents} opencode {noun} at most: "
                f"{reach} ({base['done_p50_s']:.1f} s at {int(base['agents'])} → "
                f"{top['done_p50_s']:.1f} s at {far}), {limit} {self.limited_by} "
                f"({self.evidence}). Each agent costs ~{self.rss_per_agent_mb:.0f} MB peak RSS "
                f"and {self.cpu_s_per_agent:.1f} CPU-s per task, so the cores finish at most "
                f"{self.throughput_ceiling:.2f} tasks/s (measured best "
                f"{self.best_throughput:.2f}); start-up at {int(base['agents'])}: p50 "
                f"{self.startup_p50_s:.1f} s, p99 {self.startup_p99_s:.1f} s"
                + (f"; {ceilings}." if ceilings else "."))

    def costs(self) -> dict[str, Any]:
        """What one agent costs and the machine-level ceilings it implies."""
        return {"peak RSS per agent (MB)": round(self.rss_per_agent_mb, 1),
                "CPU seconds per task": round(self.cpu_s_per_agent, 2),
                "start-up p50 / p99 (s)": f"{self.startup_p50_s:.1f} / {self.startup_p99_s:.1f}",
                "agents at most (time to done < 2x)": self.max_agents,
                "limited by": self.limited_by,
                "memory ceiling (agents)": self.memory_ceiling,
                "CPU ceiling (agents at once)": self.cpu_ceiling,
                "CPU ceiling (tasks/s)": round(self.throughput_ceiling, 3),
                "best measured (tasks/s)": round(self.best_throughput, 3)}

    @property
    def throughput_ceiling(self) -> float:
        """Tasks per second the cores allow: cores ÷ CPU seconds per task."""
        return self.cores / self.cpu_s_per_agent if self.cpu_s_per_agent > 0 else math.inf

    @property
    def best_throughput(self) -> float:
        """The best measured tasks per second: agents ÷ median time to done."""
        t = self.table
        return float((t["agents"] / t["done_p50_s"]).max())


def _num(row: Any, col: str) -> float:
    value = row.get(col, math.nan)
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _limit(row: Any) -> tuple[str, str]:
    """The limiting resource at one point and the evidence for it."""
    done = _num(row, "done_p50_s")
    shares = [("max_concurrent_tasks", _num(row, "slot_wait_p50_s") / done,
               "tasks waited {:.0%} of their time for a scheduler slot"),
              ("the LLM bucket", _num(row, "bucket_wait_s") / done,
               "agents waited {:.0%} of their time for the LLM token bucket")]
    for name, share, words in shares:
        if share >= _SHARE:
            return name, words.format(share)
    if _num(row, "provider_429") > 0 or _num(row, "provider_queued_max") > 0:
        return "provider capacity", (f"the provider queued up to "
                                     f"{_num(row, 'provider_queued_max'):.0f} requests and "
                                     f"shed {_num(row, 'provider_429'):.0f} with 429")
    total, avail = _num(row, "memory_total_mb"), _num(row, "mem_available_mb")
    if total > 0 and avail / total < _MEM_LEFT:
        return "memory", f"only {avail:.0f} MB of {total:.0f} MB left"
    if _num(row, "machine_cpu_pct") >= _CPU_BUSY:
        return "CPU", f"the machine's CPU was {_num(row, 'machine_cpu_pct'):.0f} % busy"
    return "nothing measured here", "no queue, bucket, memory or CPU limit was reached"


def agent_capacity(points: pd.DataFrame) -> AgentCapacity:
    """Read an opencode sweep's points (see the module doc)."""
    table = agent_table(points)
    if table.empty:
        raise ValueError("agent_capacity: the run has no points with agent columns")
    base = float(table["done_p50_s"].iloc[0])
    doubled = table[(table["done_p50_s"] >= 2 * base) | (table["success_rate"] < 1.0)]
    first_bad = int(doubled["agents"].iloc[0]) if not doubled.empty else None
    ok = table if first_bad is None else table[table["agents"] < first_bad]
    max_agents = int(ok["agents"].iloc[-1]) if not ok.empty else int(table["agents"].iloc[0])
    judged = (table[table["agents"] == first_bad] if first_bad else table.tail(1)).iloc[0].copy()
    judged["memory_total_mb"] = float(points["machine_mem_total_mb"].max())
    limited_by, evidence = _limit(judged)
    one = table.iloc[0]
    rss, cpu = float(table["rss_per_agent_mb"].median()), float(table["cpu_s_per_agent"].median())
    memory_mb = float(points["machine_mem_total_mb"].max())
    cores = int(points["machine_cores"].max())
    cpu_per_wall = float(one["cpu_per_wall"])
    return AgentCapacity(
        table=table, max_agents=max_agents, doubled_at=first_bad, limited_by=limited_by,
        evidence=evidence, rss_per_agent_mb=rss, cpu_s_per_agent=cpu,
        startup_p50_s=float(one["startup_p50_s"]), startup_p99_s=float(one["startup_p99_s"]),
        memory_ceiling=int(0.8 * memory_mb / rss) if rss > 0 else None,
        cpu_ceiling=int(cores / cpu_per_wall) if cpu_per_wall > 0 else None,
        cores=cores, memory_mb=memory_mb)


def _ceilings(settings: dict[str, Any], provider_capacity: float, call_s: float) -> dict[str, float]:
    """Tasks/s each limit allows for calls of ``call_s`` seconds."""
    rpm = float(settings.get("scheduler.max_api_requests_per_minute", math.inf))
    pooled = bool(settings.get("flags.enable_connection_pooling", True))
    pool = float(settings.get("agents.connection_pool_size", math.inf)) if pooled else math.inf
    slots = float(settings.get("scheduler.max_concurrent_tasks", math.inf))
    return {"the LLM bucket": rpm / 60.0, "the HTTP pool": pool / call_s,
            "max_concurrent_tasks": slots / call_s,
            "provider capacity": provider_capacity / call_s}


def llm_limits(points: pd.DataFrame, settings_by_series: dict[str, dict[str, Any]],
               provider_capacity: float, call_s: float | None = None) -> pd.DataFrame:
    """Per series: plateau throughput, knee concurrency, predicted limit and its ceiling.

    ``call_s``: one unqueued call's time (the provider's mean); by default the median
    time to done at the series' lowest concurrency (an over-estimate if that queued).
    """
    series_col = "variant" if "variant" in points.columns else None
    rows = []
    groups = points.groupby(series_col) if series_col else [("all", points)]
    for name, grp in groups:
        by_load = grp.groupby("load").mean(numeric_only=True).sort_index()
        plateau = float(by_load["throughput_rps"].max())
        knee = float(by_load.index[by_load["throughput_rps"] >= 0.9 * plateau][0])
        measured = float(by_load["task_done_s_p50"].iloc[0])
        one = call_s if call_s is not None else measured
        ceilings = _ceilings(settings_by_series.get(str(name), {}), provider_capacity, one)
        limit = min(ceilings, key=lambda k: ceilings[k])
        top = by_load.iloc[-1]
        rows.append({
            "series": str(name), "plateau_rps": round(plateau, 2), "knee_users": knee,
            "call_s": round(one, 3), "done_s_at_lowest": round(measured, 3),
            "predicted_limit": limit,
            "ceiling_rps": round(ceilings[limit], 2),
            "bucket_wait_s_at_top": round(float(top.get("agent_bucket_wait_s_mean", math.nan)), 3),
            "slot_wait_s_at_top": round(float(top.get("task_queue_s_p50", math.nan)), 3),
            "provider_429_at_top": float(top.get("provider_429", math.nan)),
            "provider_queued_at_top": float(top.get("provider_max_queued", math.nan)),
            "done_p50_s_at_top": round(float(top.get("task_done_s_p50", math.nan)), 3),
        })
    import pandas as pd

    return pd.DataFrame(rows)


def llm_limits_of_run(run: Any) -> pd.DataFrame:
    """:func:`llm_limits` with the settings and provider capacity read from the manifest."""
    from ..fakellm import FakeLLMConfig

    spec = run.manifest.get("spec", {})
    base = dict(spec.get("target", {}).get("settings", {}))
    variants = spec.get("variants", {}) or {}
    by_series = {name: {**base, **over} for name, over in variants.items()} or {"all": base}
    provider = spec.get("provider", {}) or {}
    config = FakeLLMConfig.from_profile(provider.get("profile", "default"),
                                        **provider.get("config", {}))
    ttft_s = config.ttft_ms / 1000 * (math.exp(config.ttft_sigma**2 / 2) if config.ttft_sigma else 1)
    call_s = ttft_s + config.output_tokens / config.tokens_per_s  # the provider's mean call
    return llm_limits(run.points, by_series, float(config.capacity), call_s)


def agent_reading(run: Any) -> str:
    """The agent part of a run's report: the capacity sentence or the LLM limits, or ""."""
    if "agent_tasks" not in run.points.columns or run.points.empty:
        return ""
    settings = run.manifest.get("spec", {}).get("target", {}).get("settings", {})
    backend = settings.get("agents.backend", "")
    if backend == "opencode":
        reading = agent_capacity(run.points)
        return reading.sentence() + "\n\n" + str(reading.table.to_string(index=False))
    if backend == "openai":
        from .seedtable_llm import llm_calls_rows

        limits = llm_limits_of_run(run)
        lines = [f"{r.series}: plateau {r.plateau_rps:g} tasks/s from {r.knee_users:g} clients; "
                 f"predicted limit {r.predicted_limit} ({r.ceiling_rps:g}/s)"
                 for r in limits.itertuples()]
        return "\n".join([*lines, "", llm_calls_rows(run.points).to_string(index=False)])
    return ""
