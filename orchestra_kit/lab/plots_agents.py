"""Charts of agent sweeps: what agents cost vs concurrency, and the LLM sweep's limits.

- :func:`plot_agents` (opencode sweep): three panels against the number of agents —
  time to done (p50, p99) with the doubling line; memory (peak RSS per agent, and all
  agents together against the machine's memory); CPU (CPU seconds per agent, and the
  machine's CPU busy %).
- :func:`plot_llm_limits` (LLM sweep): throughput vs concurrency, one line per series,
  each with its predicted ceiling (the bucket, the pool, the provider) dashed.

Both return a ``matplotlib.figure.Figure`` (no pyplot state).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestra_kit.lab.capacity import AgentCapacity, agent_capacity, llm_limits_of_run
from orchestra_kit.lab.plot_common import COLORS, plain_log, save_figure

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = ["plot_agent_report", "plot_agents", "plot_llm_limits"]


def _figure(ncols: int) -> tuple[Figure, list[Any]]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * ncols, 4.0), layout="constrained")
    return fig, list(fig.subplots(1, ncols, squeeze=False)[0])


def plot_agents(reading: AgentCapacity) -> Figure:
    """Time to done, memory and CPU vs the number of opencode agents."""
    t = reading.table
    fig, (done, mem, cpu) = _figure(3)
    x = t["agents"]
    done.plot(x, t["done_p50_s"], "o-", color=COLORS[0], label="p50")
    done.plot(x, t["done_p99_s"], "s--", color=COLORS[1], label="p99")
    done.axhline(2 * t["done_p50_s"].iloc[0], color="grey", ls=":", label="2 × p50 at start")
    done.axvline(reading.max_agents, color=COLORS[3], lw=1, label=f"max {reading.max_agents}")
    done.set(xlabel="agents at once", ylabel="time to done (s)", title="Time to done")
    mem.plot(x, t["rss_per_agent_mb"], "o-", color=COLORS[0], label="peak RSS per agent")
    mem.plot(x, t["agents_rss_total_mb"], "s-", color=COLORS[2], label="all agents (sampled)")
    mem.axhline(reading.memory_mb, color="grey", ls=":", label="machine memory")
    mem.set(xlabel="agents at once", ylabel="MB", title="Memory", yscale="log")
    cpu.plot(x, t["cpu_s_per_agent"], "o-", color=COLORS[0], label="CPU-s per agent")
    twin = cpu.twinx()
    twin.plot(x, t["machine_cpu_pct"], "s--", color=COLORS[3], label="machine CPU busy %")
    twin.set(ylim=(0, 105), ylabel="machine CPU busy %")
    cpu.set(xlabel="agents at once", ylabel="CPU seconds per task", title="CPU")
    for ax in (done, mem, cpu):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    twin.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"opencode agents on this machine: limited by {reading.limited_by}", fontsize=10)
    return fig


def plot_llm_limits(points: pd.DataFrame, limits: pd.DataFrame) -> Figure:
    """Throughput vs concurrency per series, each with its predicted ceiling."""
    fig, (ax,) = _figure(1)
    fig.set_size_inches(6.5, 4.2)
    series_col = "variant" if "variant" in points.columns else None
    for i, row in enumerate(limits.itertuples()):
        grp = points if series_col is None else points[points[series_col] == row.series]
        by_load = grp.groupby("load")["throughput_rps"].mean().sort_index()
        color = COLORS[i % len(COLORS)]
        ax.plot(by_load.index, by_load.values, "o-", color=color,
                label=f"{row.series} (knee {row.knee_users:g})")
        ax.axhline(row.ceiling_rps, color=color, ls="--", lw=1,
                   label=f"{row.predicted_limit}: {row.ceiling_rps:g}/s")
    ax.set(xscale="log", xlabel="concurrent clients (assign and wait)",
           ylabel="tasks done per second", title="LLM sweep: throughput and each limit")
    plain_log(ax.xaxis)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def plot_agent_report(run: Any, outdir: Path | str) -> list[Path]:
    """Save the agent chart of an opencode sweep or the limits chart of an LLM sweep."""
    settings = run.manifest.get("spec", {}).get("target", {}).get("settings", {})
    backend = settings.get("agents.backend", "")
    if backend == "opencode":
        return save_figure(plot_agents(agent_capacity(run.points)), outdir, "agents")
    if backend == "openai":
        fig = plot_llm_limits(run.points, llm_limits_of_run(run))
        return save_figure(fig, outdir, "llm_limits")
    return []
