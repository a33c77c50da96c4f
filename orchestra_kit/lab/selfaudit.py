"""The self-audit: is a point's number about the service, or about the instrument?

:func:`audit` adds ``audit_ok`` / ``audit_reason`` to a points table. A point is
flagged when (bounds in :data:`AUDIT_BOUNDS`, overridable per call):

- the point failed (``point_error``: the service did not start, a worker died);
- the service shared the generator's process (``target_kind = "inprocess"``);
- open loop: the schedule lag p99 exceeds ``max_lag_p99_ms`` (the generator sent late);
- requests waited for a client connection (``queue_p99_ms`` > ``max_queue_p99_ms``):
  a client-side queue, not the service;
- the generator was saturated, in closed and open loops alike: its event loop's lag
  p99 (``gen_loop_lag_p99_ms``, a timer measuring its own lateness) exceeds
  ``max_gen_loop_lag_p99_ms`` or a generator process used more than
  ``max_gen_cpu_pct`` % of a core (``gen_cpu_pct``);
- Little's law disagrees (measured in flight vs throughput × latency);
- arrivals were dropped, or there are too few samples for tail percentiles;
- the point asks for more than ``max_capacity_share`` of the generator's calibrated
  capacity (``capacity_rps``, from the manifest; see ``orchestra bench generator``).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

__all__ = ["AUDIT_BOUNDS", "audit", "capacity_of"]

AUDIT_BOUNDS: dict[str, float] = {
    "max_lag_p99_ms": 5.0,
    "max_littles_residual": 0.2,
    "min_samples": 20,
    "max_queue_p99_ms": 1.0,
    "max_gen_loop_lag_p99_ms": 10.0,
    "max_gen_cpu_pct": 90.0,
    "max_capacity_share": 0.7,
}


def _is_open_loop(points: pd.DataFrame) -> pd.Series:
    if "loop" in points.columns:
        return points["loop"].astype(str) == "open"
    if "rate_rps" in points.columns:
        rate = pd.to_numeric(points["rate_rps"], errors="coerce")
        return rate.notna() & (rate > 0)
    return pd.Series(False, index=points.index)


def capacity_of(manifest: dict[str, Any]) -> dict[str, float] | None:
    """The calibrated capacity recorded in a run's manifest (None when absent)."""
    cal = (manifest.get("generator") or {}).get("calibration") or {}
    best = cal.get("open_loop_capacity_rps")
    if not best:
        return None
    return {"best": float(best), "one": float(cal.get("open_loop_capacity_rps_1proc") or 0.0),
            "processes": float(cal.get("processes") or 1)}


def audit(
    points: pd.DataFrame,
    *,
    capacity: dict[str, float] | None = None,
    **bounds: float,
) -> pd.DataFrame:
    """A copy of ``points`` with ``audit_ok`` and ``audit_reason``: is the point trustworthy?

    ``capacity``: :func:`capacity_of` a manifest. ``bounds``: any key of
    :data:`AUDIT_BOUNDS` (e.g. ``max_lag_p99_ms=10``).
    """
    unknown = sorted(set(bounds) - set(AUDIT_BOUNDS))
    if unknown:
        raise TypeError(f"audit() got unknown bound(s) {unknown}; known: {sorted(AUDIT_BOUNDS)}")
    limits = {**AUDIT_BOUNDS, **bounds}
    out = points.copy()
    open_loop = _is_open_loop(points).to_numpy(dtype=bool)
    reasons = ["; ".join(_audit_row(row, bool(open_loop[pos]), limits, capacity))
               for pos, (_, row) in enumerate(points.iterrows())]
    out["audit_ok"] = [not r for r in reasons]
    out["audit_reason"] = reasons
    return out


def _num(row: pd.Series, col: str) -> float:
    value = row.get(col, math.nan)
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _audit_row(row: pd.Series, open_loop: bool, lim: dict[str, float],
               capacity: dict[str, float] | None) -> list[str]:
    found = []
    error = row.get("point_error", "")
    if isinstance(error, str) and error:
        found.append(f"the point failed: {error.splitlines()[0]}")
    if str(row.get("target_kind", "")) == "inprocess":
        found.append("service shares the generator's process")
    lag = _num(row, "lag_p99_ms")
    if open_loop and lag > lim["max_lag_p99_ms"]:
        found.append(f"schedule lag p99 {lag:.1f} ms > {lim['max_lag_p99_ms']:g} ms: "
                     "the generator fell behind")
    found += _generator_findings(row, lim)
    resid = abs(_num(row, "littles_residual"))
    if resid > lim["max_littles_residual"]:
        text = f"Little's law residual {resid:.2f} > {lim['max_littles_residual']:g}"
        inflight, expected = _num(row, "mean_inflight"), _num(row, "littles_inflight")
        if math.isfinite(inflight) and math.isfinite(expected):
            text += f" (in flight {inflight:.1f} vs throughput × latency {expected:.1f})"
        found.append(text + ": the client, not the service, limited the load")
    dropped = _num(row, "dropped")
    if dropped > 0:
        found.append(f"{dropped:.0f} request(s) dropped: the generator could not send them on time")
    n = _num(row, "n")
    if n < lim["min_samples"]:
        found.append(f"only {n:.0f} requests (< {lim['min_samples']:g}): too few samples for "
                     "tail percentiles")
    if open_loop and capacity:
        found += _capacity_findings(row, capacity, lim["max_capacity_share"])
    return found


def _generator_findings(row: pd.Series, lim: dict[str, float]) -> list[str]:
    found = []
    queue = _num(row, "queue_p99_ms")
    if queue > lim["max_queue_p99_ms"]:
        found.append(f"requests waited for a client connection (queue p99 {queue:.1f} ms > "
                     f"{lim['max_queue_p99_ms']:g} ms): a client-side queue")
    loop_lag, cpu = _num(row, "gen_loop_lag_p99_ms"), _num(row, "gen_cpu_pct")
    lag_bound, cpu_bound = lim["max_gen_loop_lag_p99_ms"], lim["max_gen_cpu_pct"]
    if loop_lag > lag_bound or cpu > cpu_bound:
        why = (f"it used {cpu:.0f} % of a core (bound {cpu_bound:g} %)" if cpu > cpu_bound
               else f"it used only {cpu:.0f} % of a core: the machine was busy")
        found.append(f"generator could not keep up (its event loop ran {loop_lag:.1f} ms late at "
                     f"p99, bound {lag_bound:g} ms; {why}): latencies include the generator's "
                     "own wait")
    return found


def _capacity_findings(row: pd.Series, capacity: dict[str, float], share: float) -> list[str]:
    rate = _num(row, "rate_rps")
    procs = max(1.0, _num(row, "gen_processes") if math.isfinite(_num(row, "gen_processes"))
                else 1.0)
    cap = min(capacity["best"], capacity["one"] * procs) if capacity["one"] else capacity["best"]
    if math.isfinite(rate) and cap > 0 and rate > share * cap:
        return [(f"asks {rate:,.0f} req/s, over {share * 100:g} % of the generator's calibrated "
                f"capacity ({cap:,.0f} req/s with {procs:.0f} process(es))")]
    return []
