"""Reading a run: SLO and throughput knees, the self-audit, a summary table, a description.

All functions take the per-point table of a run (one row per point and repeat; see
:mod:`orchestra_kit.lab.results`) and average over repeats where a single value per
load is needed. The USL fit lives in :mod:`orchestra_kit.lab.usl` and run-to-run
comparison in :mod:`orchestra_kit.lab.comparison`; both are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from orchestra_kit.errors import ValidationError
from orchestra_kit.lab.comparison import Comparison, compare
from orchestra_kit.lab.results import SUMMARY_COLUMNS
from orchestra_kit.lab.selfaudit import AUDIT_BOUNDS, _is_open_loop, audit
from orchestra_kit.lab.usl import UslFit, fit_usl

__all__ = [
    "AUDIT_BOUNDS",
    "Comparison",
    "KneeResult",
    "UslFit",
    "audit",
    "compare",
    "describe_run",
    "fit_usl",
    "fit_usl_points",
    "geometric_knee",
    "load_label",
    "load_unit",
    "series_columns",
    "slo_knee",
    "summary_table",
    "throughput_knee",
]

# Columns the results loader writes; anything else that varies within a load is a series.
#: Measured per-point columns (lab/agentstats.py, lab/provider.py), never sweep series.
MEASURED_PREFIXES = ("agent_", "agents_", "task_", "machine_", "provider_", "files_found",
                     "leftover_processes")
STANDARD_COLUMNS = frozenset(
    ("run_id", "point", "repeat", "load", "concurrency", "rate_rps", "loop", "audit_ok",
     "audit_reason", *SUMMARY_COLUMNS)
)  # every summary column (the results schema) is a measurement, never a series


def _require(points: pd.DataFrame, *cols: str) -> None:
    missing = [c for c in cols if c not in points.columns]
    if missing:
        raise ValidationError("points", f"missing column(s) {missing}", value=list(points.columns))


def _by_load(points: pd.DataFrame, cols: list[str], load_col: str) -> pd.DataFrame:
    """Mean over repeats of ``cols`` per load, sorted by load."""
    _require(points, load_col, *cols)
    grouped = points.groupby(load_col, sort=True)[cols].mean()
    return grouped.reset_index()


def load_unit(points: pd.DataFrame, load_col: str = "load") -> str:
    """``users`` for a concurrency sweep, ``req/s`` for a rate sweep, else empty."""
    if load_col not in points.columns:
        return ""
    load = points[load_col].to_numpy(dtype=float)
    for col, unit in (("rate_rps", "req/s"), ("concurrency", "users")):
        if col in points.columns:
            other = pd.to_numeric(points[col], errors="coerce").to_numpy(dtype=float)
            if np.isfinite(other).all() and np.allclose(other, load):
                return unit
    if "loop" in points.columns and (points["loop"] == "open").all():
        return "req/s"
    return ""


def load_label(points: pd.DataFrame, load_col: str = "load") -> str:
    """An axis label for the load column, with its unit."""
    return {"users": "Concurrency (virtual users)", "req/s": "Offered rate (req/s)"}.get(
        load_unit(points, load_col), load_col.replace("_", " ").capitalize()
    )


def _fmt_load(value: float, unit: str) -> str:
    text = f"{value:,.0f}" if float(value).is_integer() else f"{value:,.3g}"
    return f"{text} {unit}".strip()


def series_columns(points: pd.DataFrame, load_col: str = "load") -> list[str]:
    """Sweep columns that take several values at one load (e.g. ``settings.enable_wal_mode``)."""
    out = []
    for col in points.columns:
        if col in STANDARD_COLUMNS or col == load_col or col.startswith(MEASURED_PREFIXES):
            continue
        values = points[col].astype(str)
        if values.groupby(points[load_col]).nunique().max() > 1:
            out.append(col)
    return _drop_redundant(points, out, load_col)


def _drop_redundant(points: pd.DataFrame, cols: list[str], load_col: str) -> list[str]:
    """Leave out a column the others and the load already determine (a variant named
    after its database and instances): it would split no series, only lengthen labels."""
    kept = list(cols)
    for col in reversed(cols):
        others = [c for c in kept if c != col]
        keys = [points[c].astype(str) for c in (*others, load_col)]
        if others and points[col].astype(str).groupby(keys).nunique().max() <= 1:
            kept = others
    return kept


@dataclass(frozen=True, kw_only=True)
class KneeResult:
    """The SLO knee: highest load meeting every SLO with all lower loads meeting it too."""

    knee_load: float | None
    highest_meeting: float | None
    first_violation: float | None
    violation_reason: str | None
    slo: dict[str, float]
    table: pd.DataFrame = field(repr=False)
    unit: str = ""

    def summary(self) -> str:
        """One sentence about where the SLO holds and where it first breaks."""
        slo = _slo_words(self.slo)
        if self.knee_load is None:
            where = _fmt_load(self.first_violation or math.nan, self.unit)
            return f"No load meets the SLO ({slo}); already at {where}: {self.violation_reason}."
        text = f"The SLO ({slo}) holds up to {_fmt_load(self.knee_load, self.unit)} (knee)"
        if self.first_violation is None:
            return text + ", the highest load tested."
        text += (
            f"; first violation at {_fmt_load(self.first_violation, self.unit)} "
            f"({self.violation_reason})"
        )
        if self.highest_meeting is not None and self.highest_meeting > self.knee_load:
            text += f"; a higher load, {_fmt_load(self.highest_meeting, self.unit)}, meets it again"
        return text + "."


def _slo_words(slo: Mapping[str, float]) -> str:
    words = [f"{k.removesuffix('_ms')} ≤ {v:g} ms" for k, v in slo.items() if k.endswith("_ms")]
    if "min_success_rate" in slo:
        words.append(f"success ≥ {slo['min_success_rate'] * 100:g} %")
    return ", ".join(words)


def slo_knee(
    points: pd.DataFrame,
    *,
    p99_ms: float | None = None,
    p95_ms: float | None = None,
    min_success_rate: float | None = 0.95,
    load_col: str = "load",
) -> KneeResult:
    """Highest load whose repeat-mean meets every given SLO, every lower load meeting too."""
    slo: dict[str, float] = {
        k: v for k, v in (("p95_ms", p95_ms), ("p99_ms", p99_ms)) if v is not None
    }
    if min_success_rate is not None:
        slo["min_success_rate"] = min_success_rate
    cols = [c for c in slo if c != "min_success_rate"] + (
        ["success_rate"] if min_success_rate is not None else []
    )
    table = _by_load(points, cols, load_col)
    reasons = [_violations(row, slo) for _, row in table.iterrows()]
    table["meets"] = [not r for r in reasons]
    table["reason"] = ["; ".join(r) for r in reasons]
    loads = table[load_col].to_numpy(dtype=float)
    meets = table["meets"].to_numpy(dtype=bool)
    bad = np.flatnonzero(~meets)
    first_bad = int(bad[0]) if bad.size else None
    knee_idx = (first_bad - 1) if first_bad is not None else len(loads) - 1
    return KneeResult(
        knee_load=float(loads[knee_idx]) if knee_idx >= 0 else None,
        highest_meeting=float(loads[meets].max()) if meets.any() else None,
        first_violation=float(loads[first_bad]) if first_bad is not None else None,
        violation_reason=table["reason"].iloc[first_bad] if first_bad is not None else None,
        slo=slo, table=table, unit=load_unit(points, load_col),
    )  # fmt: skip


def _violations(row: pd.Series, slo: Mapping[str, float]) -> list[str]:
    out = []
    for key, limit in slo.items():
        if key == "min_success_rate":
            value = row["success_rate"]
            if not value >= limit:
                out.append(f"success {value * 100:.1f} % < {limit * 100:g} %")
        elif not row[key] <= limit:
            out.append(f"{key.removesuffix('_ms')} {row[key]:,.1f} ms > {limit:g} ms")
    return out


def throughput_knee(
    points: pd.DataFrame, *, col: str = "throughput_rps", load_col: str = "load"
) -> float | None:
    """The load with the highest mean throughput (None for an empty table)."""
    table = _by_load(points, [col], load_col).dropna()
    if table.empty:
        return None
    return float(table.loc[table[col].idxmax(), load_col])


def geometric_knee(
    points: pd.DataFrame, *, col: str = "p99_ms", load_col: str = "load"
) -> float | None:
    """Kneedle knee of a convex rising curve (latency vs load); None without a clear bend."""
    table = _by_load(points, [col], load_col).dropna()
    if len(table) < 3:
        return None
    x = table[load_col].to_numpy(dtype=float)
    y = table[col].to_numpy(dtype=float)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    xn = (x - x.min()) / np.ptp(x)
    yn = (y - y.min()) / np.ptp(y)
    diff = xn - yn  # convex increasing: the knee is where the curve is furthest below the chord
    i = int(np.argmax(diff))
    return float(x[i]) if diff[i] > 0.05 and 0 < i < len(x) - 1 else None


def fit_usl_points(
    points: pd.DataFrame, *, col: str = "throughput_rps", bootstrap: int = 500, seed: int = 0
) -> UslFit | None:
    """USL fit of a closed-loop sweep (per repeat); None when it is not one or too short."""
    if "concurrency" not in points.columns or col not in points.columns:
        return None
    closed = ~_is_open_loop(points).to_numpy(dtype=bool)
    data = points.loc[closed, ["concurrency", col]].apply(pd.to_numeric, errors="coerce").dropna()
    data = data[(data["concurrency"] > 0) & (data[col] > 0)]
    if data["concurrency"].nunique() < 4:
        return None
    return fit_usl(data["concurrency"], data[col], bootstrap=bootstrap, seed=seed)


def summary_table(points: pd.DataFrame, *, load_col: str = "load") -> pd.DataFrame:
    """Per load (and series), repeat means of the key columns, rounded for display."""
    _require(points, load_col)
    audited = points if "audit_ok" in points.columns else audit(points)
    # A scale-out run: every row says which database and how many instances, first.
    target = [c for c in ("database", "instances") if c in points.columns and c != load_col]
    keys = [*target, *(c for c in series_columns(points, load_col) if c not in target), load_col]
    wanted = ["n", "success_rate", "throughput_rps", "goodput_rps", "p50_ms", "p95_ms", "p99_ms",
              "p999_ms", "service_p99_ms", "lag_p99_ms"]  # fmt: skip
    cols = [c for c in wanted if c in audited.columns]
    grouped = audited.groupby(keys, sort=True)
    table = grouped[cols].mean()
    table.insert(0, "repeats", grouped.size())
    if "success_rate" in table.columns:
        table["success_rate"] = table["success_rate"] * 100.0
        table = table.rename(columns={"success_rate": "success_%"})
    flagged = grouped["audit_ok"].apply(lambda s: int((~s.astype(bool)).sum()))
    table["audit"] = [
        "ok" if f == 0 else f"{f}/{r} flagged"
        for f, r in zip(flagged, table["repeats"], strict=True)
    ]
    decimals = {
        c: (0 if c == "n" else 2 if c == "success_%" else 1) for c in table.columns if c != "audit"
    }
    table = table.round(decimals).reset_index()
    loads = pd.to_numeric(table[load_col], errors="coerce")
    if loads.notna().all() and (loads % 1 == 0).all():
        table[load_col] = loads.astype(int)
    return table


def _slo_kwargs(slo: Any) -> dict[str, float | None]:
    """Accept a mapping or an object with p99_ms / p95_ms / min_success_rate."""
    keys = ("p99_ms", "p95_ms", "min_success_rate")
    if slo is None:
        return {}
    if isinstance(slo, Mapping):
        return {k: slo[k] for k in keys if slo.get(k) is not None}
    return {k: getattr(slo, k) for k in keys if getattr(slo, k, None) is not None}


def describe_run(
    points: pd.DataFrame, slo: Any = None, *, fit: UslFit | None = None, load_col: str = "load"
) -> str:
    """A short generated reading of a run: throughput shape, USL peak, SLO knee, audit."""
    if points.empty:
        return "The run has no points."
    unit = load_unit(points, load_col)
    parts = [_throughput_words(points, unit, load_col)]
    if fit is None and unit == "users":
        try:
            fit = fit_usl_points(points, bootstrap=200)
        except ValidationError:
            fit = None
    if fit is not None:
        parts.append(_usl_words(fit))
    kwargs = _slo_kwargs(slo)
    if kwargs.get("p99_ms") is not None or kwargs.get("p95_ms") is not None:
        parts.append(slo_knee(points, load_col=load_col, **kwargs).summary())
    parts.append(_audit_words(points, unit, load_col))
    return " ".join(p for p in parts if p)


def _throughput_words(points: pd.DataFrame, unit: str, load_col: str) -> str:
    if "throughput_rps" not in points.columns:
        return ""
    table = _by_load(points, ["throughput_rps"], load_col).dropna()
    if table.empty:
        return ""
    peak = table.loc[table["throughput_rps"].idxmax()]
    last = table.iloc[-1]
    peak_x, peak_at = f"{peak['throughput_rps']:,.0f} req/s", _fmt_load(peak[load_col], unit)
    if peak[load_col] == last[load_col]:
        return f"Throughput keeps rising through the sweep, to {peak_x} at {peak_at}."
    head = f"Throughput rises to {peak_x} at {peak_at}"
    if last["throughput_rps"] < 0.9 * peak["throughput_rps"]:
        last_at = _fmt_load(last[load_col], unit)
        return head + f", then falls to {last['throughput_rps']:,.0f} req/s at {last_at}."
    return head + ", then flattens."


def _usl_words(fit: UslFit) -> str:
    if fit.has_peak:
        lo, hi = fit.n_star_ci
        hi_text = "∞" if not math.isfinite(hi) else f"{hi:.0f}"
        return (
            f"The USL fit puts the peak at N*≈{fit.n_star:.0f} [{lo:.0f}, {hi_text}] "
            f"(σ={fit.sigma:.3g}, κ={fit.kappa:.2g})."
        )
    return (
        f"The USL fit predicts no peak (σ={fit.sigma:.3g}, κ=0): "
        "throughput levels off rather than falls."
    )


def _audit_words(points: pd.DataFrame, unit: str, load_col: str) -> str:
    audited = points if "audit_ok" in points.columns else audit(points)
    bad = audited[~audited["audit_ok"].astype(bool)]
    if bad.empty:
        return "The self-audit found no problem with the generator or the sample sizes."
    items = [
        f"{_fmt_load(r[load_col], unit)} (repeat {r.get('repeat', '?')}): {r['audit_reason']}"
        for _, r in bad.head(3).iterrows()
    ]
    more = f"; and {len(bad) - 3} more" if len(bad) > 3 else ""
    noun = "point was" if len(bad) == 1 else "points were"
    return f"{len(bad)} {noun} flagged by the self-audit: " + "; ".join(items) + more + "."
