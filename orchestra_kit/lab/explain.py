"""Explaining a result: which requests make the tail, and what the settings allow.

- :func:`latency_by_priority`: corrected-latency percentiles per task priority, per
  load (from ``requests.csv``); with a priority scheduler, a tail made of low-priority
  work waiting behind high-priority work is the scheduler doing its job, not noise.
- :func:`priority_summary`: the same, compact: one row per priority (count and
  percentiles at the highest load; p99 at each other load as a column when there are few).
- :func:`priority_words`: one sentence naming that tail for the highest load.
- :func:`ceiling_words`: where the settings imply a throughput ceiling (the
  ``ceiling_rps`` column: for assign-and-wait with simulated agents,
  ``max_concurrent_tasks`` / agent latency), how close the peak came to it.
"""

from __future__ import annotations

import math

import pandas as pd

__all__ = ["ceiling_words", "latency_by_priority", "priority_summary", "priority_words"]

#: at most this many loads get a "p99 at load X" column in :func:`priority_summary`
MAX_LOAD_COLUMNS = 4


def latency_by_priority(requests: pd.DataFrame, points: pd.DataFrame | None = None
                        ) -> pd.DataFrame | None:
    """Per load and priority: count, p50, p90, p99 and max corrected latency of ok requests.

    None when the requests carry fewer than two distinct priorities.
    """
    if requests.empty or "priority" not in requests.columns:
        return None
    req = requests[requests["ok"].astype(str).str.lower() == "true"].copy()
    req["priority"] = pd.to_numeric(req["priority"], errors="coerce")
    req = req.dropna(subset=["priority"])
    if req["priority"].nunique() < 2:
        return None
    if points is not None and {"point", "load"} <= set(points.columns):
        loads = points.drop_duplicates("point").set_index("point")["load"]
        req["load"] = req["point"].map(loads)
    else:
        req["load"] = req["point"]
    grouped = req.groupby(["load", "priority"])["latency_ms"]
    table = pd.DataFrame({"n": grouped.size(), "p50_ms": grouped.quantile(0.5),
                          "p90_ms": grouped.quantile(0.9), "p99_ms": grouped.quantile(0.99),
                          "max_ms": grouped.max()})
    table = table.round(1).reset_index()
    table["priority"] = table["priority"].astype(int)
    return table


def priority_summary(table: pd.DataFrame | None, *,
                     max_load_columns: int = MAX_LOAD_COLUMNS) -> pd.DataFrame | None:
    """One row per priority, highest first: n, p50, p90, p99 and max at the highest load.

    With at most ``max_load_columns`` other loads, their p99 follow as columns
    ``p99_ms@LOAD`` (lowest load first), so the table stays one row per priority.
    """
    if table is None or table.empty:
        return None
    top_load = table["load"].max()
    cols = [c for c in ("n", "p50_ms", "p90_ms", "p99_ms", "max_ms") if c in table.columns]
    out = table[table["load"] == top_load].set_index("priority")[cols]
    others = sorted(v for v in table["load"].unique() if v != top_load)
    if 0 < len(others) <= max_load_columns:
        p99 = table.pivot_table(index="priority", columns="load", values="p99_ms")
        for load in others:
            out[f"p99_ms@{load:g}"] = p99[load]
    out = out.sort_index(ascending=False).reset_index()
    out["n"] = out["n"].astype(int)
    return out


def priority_words(table: pd.DataFrame | None) -> str:
    """A sentence about the highest load: which priorities hold the tail."""
    if table is None or table.empty:
        return ""
    top = table[table["load"] == table["load"].max()]
    slow = top.loc[top["p50_ms"].idxmax()]
    fast = top.loc[top["p50_ms"].idxmin()]
    if not slow["p50_ms"] > 2 * max(fast["p50_ms"], 1e-9):
        return ""
    load = f"{slow['load']:g}"
    return (f"At load {load} the tail is low-priority work waiting: priority "
            f"{int(slow['priority'])} tasks have median {slow['p50_ms']:,.0f} ms (p99 "
            f"{slow['p99_ms']:,.0f} ms) while priority {int(fast['priority'])} tasks have median "
            f"{fast['p50_ms']:,.0f} ms; the scheduler runs higher priorities first.")


def ceiling_words(points: pd.DataFrame) -> str:
    """How close the peak throughput came to the settings-implied ceiling."""
    if "ceiling_rps" not in points.columns or "throughput_rps" not in points.columns:
        return ""
    ceiling = pd.to_numeric(points["ceiling_rps"], errors="coerce").dropna()
    if ceiling.empty or not math.isfinite(float(ceiling.iloc[0])):
        return ""
    cap = float(ceiling.min())
    peak = float(pd.to_numeric(points["throughput_rps"], errors="coerce").max())
    return (f"The settings cap throughput at {cap:,.0f} tasks/s (max_concurrent_tasks / agent "
            f"latency); the peak, {peak:,.0f} req/s, is {100 * peak / cap:.0f} % of that ceiling.")
