"""Reading a scale-out run (``experiments/scale_out.toml``): the USL over instances.

A run whose points carry ``database`` and ``instances`` columns (a process target with
``database = "postgresql"`` somewhere in its grid) and whose x-axis is the instance
count gets the Universal Scalability Law fitted over the PostgreSQL points, per series
(e.g. per ``workload.kind``), with the instance count as N: σ is the share of the work
the instances serialise on (the global slot, row locks, the shared cores), κ the cost
of keeping them coherent. One SQLite instance is the reference next to them.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from ..errors import ValidationError
from .analysis import series_columns
from .usl import UslFit, fit_usl

__all__ = ["instances_usl", "scaleout_words"]

_TARGET_COLS = ("database", "instances", "variant")


def _is_scaleout(points: pd.DataFrame) -> bool:
    if points.empty or not {"database", "instances", "load"} <= set(points.columns):
        return False
    inst = pd.to_numeric(points["instances"], errors="coerce")
    return bool((inst == pd.to_numeric(points["load"], errors="coerce")).all())


def _series(points: pd.DataFrame) -> list[str]:
    return [c for c in series_columns(points) if c not in _TARGET_COLS]


def _label(keys: list[str], values: Any) -> str:
    vals = values if isinstance(values, tuple) else (values,)
    return ", ".join(f"{k}={v}" for k, v in zip(keys, vals, strict=True))


def _prefix(label: str) -> str:
    return f"{label}: " if label else ""


def instances_usl(points: pd.DataFrame, *, bootstrap: int = 200) -> dict[str, UslFit | str]:
    """Per series (``"workload.kind=hire"``; ``""`` when there is one): the USL fitted
    over PostgreSQL instances (throughput per repeat), or a sentence saying why there is
    none. Empty when the run is not a scale-out run."""
    if not _is_scaleout(points):
        return {}
    ok = points[(points["database"] == "postgresql") & (points["n_ok"].fillna(0) > 0)]
    keys = _series(points)
    groups = ok.groupby(keys, sort=True) if keys else [((), ok)]
    out: dict[str, UslFit | str] = {}
    for values, rows in groups:
        label = _label(keys, values)
        try:
            out[label] = fit_usl(rows["instances"].astype(float), rows["throughput_rps"],
                                 bootstrap=bootstrap)
        except ValidationError as e:
            out[label] = f"no USL fit ({e})"
    return out


def _fit_words(label: str, fit: UslFit | str) -> str:
    if isinstance(fit, str):
        return f"{_prefix(label)}{fit}."
    peak = (f"peak at N*≈{fit.n_star:.1f} instances" if math.isfinite(fit.n_star)
            else "no peak")
    return (f"{_prefix(label)}λ={fit.lam:,.0f} req/s for one instance, σ={fit.sigma:.3g},"
            f" κ={fit.kappa:.3g}, {peak} (R²={fit.r2:.2f}, {fit.n_points} points).")


def scaleout_words(points: pd.DataFrame) -> str:
    """The run's databases and instance counts, SQLite next to the best PostgreSQL
    point per series, and the USL over instances ("" for any other run)."""
    if not _is_scaleout(points):
        return ""
    keys = _series(points)
    parts = []
    for values, rows in (points.groupby(keys, sort=True) if keys else [((), points)]):
        mean = rows.groupby(["database", "instances"])["throughput_rps"].mean()
        lite = mean.get(("sqlite", 1), math.nan)
        pg = mean.loc["postgresql"] if "postgresql" in mean.index.get_level_values(0) else None
        if pg is None or pg.dropna().empty:
            continue
        best = int(pg.idxmax())
        parts.append(f"{_prefix(_label(keys, values))}one SQLite instance {lite:,.0f} req/s;"
                     f" PostgreSQL best {pg.max():,.0f} req/s at {best} instance"
                     f"{'s' if best > 1 else ''} ({', '.join(f'{n}: {x:,.0f}' for n, x in pg.items())}).")
    fits = [_fit_words(k, f) for k, f in instances_usl(points).items()]
    if not parts and not fits:
        return ""
    return " ".join(["Throughput by database and instances —", *parts,
                     "USL over PostgreSQL instances —", *fits])
