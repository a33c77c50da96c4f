"""A run's report (summary table, generated reading, charts) and run-to-run comparison."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ValidationError
from .analysis import audit, compare, describe_run, summary_table
from .capacity import agent_reading
from .comparison import Comparison
from .explain import ceiling_words, latency_by_priority, priority_summary, priority_words
from .results import RunData, Slo, load_run
from .scaleout_fit import scaleout_words
from .selfaudit import capacity_of

__all__ = ["Report", "build_report", "compare_runs"]

#: metric -> whether higher is better (what `orchestra compare` checks by default)
DEFAULT_METRICS: dict[str, bool] = {"p99_ms": False, "throughput_rps": True}


@dataclass(frozen=True, kw_only=True)
class Report:
    """What `orchestra report` prints and writes."""

    run: RunData
    table: Any  # pandas DataFrame
    reading: str
    charts: list[Path] = field(default_factory=list)
    agents: str = ""  # agent sweeps: the capacity sentence or the LLM limits
    by_priority: Any = None  # pandas DataFrame of latency per priority, or None

    def text(self) -> str:
        """The report as terminal text."""
        import pandas as pd

        m = self.run.manifest
        with pd.option_context("display.width", 200, "display.max_columns", 30):
            table = self.table.to_string(index=False)
        lines = [(f"{m.get('name', '?')} — run {m.get('run_id', '?')} ({m.get('status', '?')}, "
                 f"target: {m.get('target_kind', '?')})"), "", table]
        compact = priority_summary(self.by_priority)
        if compact is not None:
            lines += ["", "corrected latency by task priority at the highest load (ok requests):",
                      compact.to_string(index=False)]
        lines += ["", self.reading]
        if self.agents:
            lines += ["", self.agents]
        if self.charts:
            lines += ["", "charts:"] + [f"  {p}" for p in self.charts]
        return "\n".join(lines)


def _slo_of(run: RunData) -> Slo | None:
    raw = run.manifest.get("spec", {}).get("slo")
    return Slo(**raw) if isinstance(raw, dict) else None


def build_report(run_dir: str | Path, *, charts: bool = True) -> Report:
    """Load a run, audit it, tabulate it, describe it and (optionally) chart it."""
    run = load_run(run_dir)
    capacity = capacity_of(run.manifest)
    points = audit(run.points, capacity=capacity) if not run.points.empty else run.points
    paths: list[Path] = []
    # A run whose every point failed has no latency to draw (log axes need a value > 0).
    drawable = not points.empty and bool((points["n_ok"].fillna(0) > 0).any())
    if charts and drawable:
        from .plots import plot_report

        paths = plot_report(run, run.path / "charts")
    table = summary_table(points) if not points.empty else points
    reading = describe_run(points, _slo_of(run)) if not points.empty else "The run has no points."
    by_priority = latency_by_priority(run.requests, run.points)
    extra = [w for w in (ceiling_words(points), priority_words(by_priority),
                         scaleout_words(points)) if w]
    reading = " ".join([reading, *extra])
    agents = agent_reading(run)
    if charts and agents:
        from .plots_agents import plot_agent_report

        paths += plot_agent_report(run, run.path / "charts")
    return Report(run=run, table=table, reading=reading, charts=paths, by_priority=by_priority,
                  agents=agents)


def compare_runs(base_dir: str | Path, new_dir: str | Path, *, metrics: list[str] | None = None,
                 threshold: float = 0.10, alpha: float = 0.05,
                 min_abs: dict[str, float] | None = None) -> list[Comparison]:
    """Compare two runs point by point on each metric (threshold AND significance, AND a
    change larger than ``min_abs[metric]`` in the metric's unit where one is given)."""
    base, new = load_run(base_dir), load_run(new_dir)
    chosen = metrics or list(DEFAULT_METRICS)
    floors = min_abs or {}
    unknown = sorted(set(floors) - set(chosen))
    if unknown:
        raise ValidationError("min_abs", f"a floor for a metric not compared: {unknown}; "
                              f"compared: {chosen}", value=floors)
    return [compare(base.points, new.points, metric=m, higher_is_better=DEFAULT_METRICS.get(
        m, m.endswith("_rps") or m == "success_rate"), threshold=threshold, alpha=alpha,
        min_abs=floors.get(m, 0.0)) for m in chosen]
