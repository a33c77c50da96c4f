"""Charts of a run (matplotlib, no GUI): each function returns a ``Figure``.

Figures are built with ``matplotlib.figure.Figure`` directly, so no pyplot state or
interactive backend is involved; Jupyter displays a returned Figure inline. Save with
:func:`save_figure` (PNG and SVG). :func:`plot_report` draws every standard chart of a run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from orchestra_kit.errors import ValidationError
from orchestra_kit.lab.analysis import (
    KneeResult,
    audit,
    fit_usl_points,
    load_label,
    load_unit,
    series_columns,
    slo_knee,
    throughput_knee,
)
from orchestra_kit.lab.plot_common import COLORS, new_figure, plain_log, save_figure
from orchestra_kit.lab.plots_requests import plot_before_after, plot_distribution, plot_timeline
from orchestra_kit.lab.usl import UslFit

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "plot_before_after",
    "plot_distribution",
    "plot_latency",
    "plot_report",
    "plot_success",
    "plot_throughput",
    "plot_timeline",
    "save_figure",
]

_PERCENTILES = (("p50_ms", "p50"), ("p90_ms", "p90"), ("p99_ms", "p99"), ("p999_ms", "p99.9"))


def _series(points: pd.DataFrame, load_col: str) -> list[tuple[str, pd.DataFrame]]:
    """(label, rows) per combination of the sweep columns that vary within a load."""
    cols = series_columns(points, load_col)
    if not cols:
        return [("", points)]
    out = []
    for key, rows in points.groupby(cols, sort=True, dropna=False):
        values = key if isinstance(key, tuple) else (key,)
        out.append(
            (
                ", ".join(
                    f"{c.removeprefix('settings.')}={v}" for c, v in zip(cols, values, strict=True)
                ),
                rows,
            )
        )
    return out


def _aggregate(rows: pd.DataFrame, col: str, load_col: str, scale: float = 1.0) -> pd.DataFrame:
    """Per load: mean, min and max over repeats, and whether any repeat failed the audit."""
    flagged = (
        ~rows["audit_ok"].astype(bool)
        if "audit_ok" in rows.columns
        else pd.Series(False, index=rows.index)
    )
    data = pd.DataFrame(
        {
            "load": rows[load_col].astype(float),
            "v": pd.to_numeric(rows[col], errors="coerce") * scale,
            "flagged": flagged,
        }
    )
    grouped = data.groupby("load", sort=True)
    agg = pd.DataFrame(
        {
            "mean": grouped["v"].mean(),
            "lo": grouped["v"].min(),
            "hi": grouped["v"].max(),
            "flagged": grouped["flagged"].any(),
        }
    )
    return agg.reset_index().dropna(subset=["mean"])


def _draw(
    ax: Axes, agg: pd.DataFrame, *, color: str, label: str, style: str = "-", marker: str = "o"
) -> None:
    """Mean line with min–max whiskers; audit-flagged points drawn hollow."""
    x, y = agg["load"].to_numpy(), agg["mean"].to_numpy()
    err = np.vstack([y - agg["lo"].to_numpy(), agg["hi"].to_numpy() - y])
    ax.errorbar(
        x,
        y,
        yerr=err,
        color=color,
        linestyle=style,
        marker="none",
        capsize=3,
        linewidth=1.6,
        label=label,
    )
    bad = agg["flagged"].to_numpy(dtype=bool)
    ax.scatter(x[~bad], y[~bad], color=color, marker=marker, s=28, zorder=3)
    if bad.any():
        ax.scatter(
            x[bad],
            y[bad],
            facecolors="white",
            edgecolors=color,
            marker=marker,
            s=44,
            linewidths=1.5,
            zorder=4,
        )


def _style_load_axis(ax: Axes, points: pd.DataFrame, load_col: str) -> None:
    from matplotlib.ticker import NullLocator, ScalarFormatter

    loads = pd.to_numeric(points[load_col], errors="coerce").dropna()
    loads = loads[loads > 0]
    if len(loads) and loads.max() / loads.min() >= 16:
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(ScalarFormatter())
    unique = np.unique(loads.to_numpy(dtype=float))
    if 0 < unique.size <= 12:
        ax.set_xticks(unique, [f"{v:g}" for v in unique])
        ax.minorticks_off() if ax.get_xscale() == "linear" else ax.xaxis.set_minor_locator(
            NullLocator()
        )
    ax.set_xlabel(load_label(points, load_col))
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", alpha=0.12)


def _audit_note(ax: Axes, points: pd.DataFrame) -> None:
    if "audit_ok" in points.columns and not points["audit_ok"].astype(bool).all():
        ax.scatter(
            [], [], facecolors="white", edgecolors="grey", marker="o", label="flagged by self-audit"
        )


_REFERENCE_LABELS = ("p99 SLO", "target", "flagged by self-audit", "offered rate")


def _legend(ax: Axes, loc: Literal["upper left", "lower left"]) -> None:
    """Legend outside the plot, right of it (it never covers data or the SLO line); the
    data series first, reference lines (SLO, audit note) last. ``loc`` is its corner."""
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: labels[i].startswith(_REFERENCE_LABELS))
    anchor = (1.02, 1.0) if loc == "upper left" else (1.02, 0.0)
    ax.legend([handles[i] for i in order], [labels[i] for i in order], fontsize="small",
              loc=loc, bbox_to_anchor=anchor, borderaxespad=0.0)


def _audited(points: pd.DataFrame) -> pd.DataFrame:
    if points.empty:
        raise ValidationError("points", "no rows to plot")
    return points if "audit_ok" in points.columns else audit(points)


def plot_latency(
    points: pd.DataFrame, *, load_col: str = "load", slo_p99_ms: float | None = None
) -> Figure:
    """Corrected latency percentiles vs load (log y), service p99 dashed, min–max whiskers."""
    points = _audited(points)
    fig, ax = new_figure()
    groups = _series(points, load_col)
    for gi, (name, rows) in enumerate(groups):
        prefix = f"{name}: " if name else ""
        shown = _PERCENTILES if len(groups) == 1 else (("p50_ms", "p50"), ("p99_ms", "p99"))
        for pi, (col, label) in enumerate(shown):
            if col in rows.columns:
                color = COLORS[pi] if len(groups) == 1 else COLORS[gi % len(COLORS)]
                style = "-" if len(groups) == 1 or col == "p99_ms" else ":"
                _draw(
                    ax,
                    _aggregate(rows, col, load_col),
                    color=color,
                    style=style,
                    label=f"{prefix}{label}",
                )
        if "service_p99_ms" in rows.columns:
            color = COLORS[2] if len(groups) == 1 else COLORS[gi % len(COLORS)]
            _draw(
                ax,
                _aggregate(rows, "service_p99_ms", load_col),
                color=color,
                style="--",
                marker="s",
                label=f"{prefix}p99 service time (from actual send)",
            )
    if slo_p99_ms is not None:
        ax.axhline(
            slo_p99_ms,
            color="black",
            linestyle="-.",
            linewidth=1,
            label=f"p99 SLO {slo_p99_ms:g} ms",
        )
    _audit_note(ax, points)
    ax.set_yscale("log")
    plain_log(ax.yaxis)
    _style_load_axis(ax, points, load_col)
    ax.set_ylabel("Latency (ms, log scale)")
    ax.set_title("Latency percentiles vs load (corrected: from the scheduled send)")
    _legend(ax, "upper left")
    return fig


def plot_success(
    points: pd.DataFrame, *, load_col: str = "load", target: float | None = 0.95
) -> Figure:
    """Success rate (%) vs load with the SLO target line; SLO attainment dotted if present."""
    points = _audited(points)
    fig, ax = new_figure()
    low = 100.0
    for gi, (name, rows) in enumerate(_series(points, load_col)):
        color = COLORS[gi % len(COLORS)]
        agg = _aggregate(rows, "success_rate", load_col, scale=100.0)
        _draw(ax, agg, color=color, label=f"{name + ': ' if name else ''}success rate")
        low = min(low, float(agg["lo"].min()))
        if "slo_attainment" in rows.columns and rows["slo_attainment"].notna().any():
            att = _aggregate(rows, "slo_attainment", load_col, scale=100.0)
            _draw(
                ax,
                att,
                color=color,
                style=":",
                marker="^",
                label=f"{name + ': ' if name else ''}SLO attainment",
            )
            low = min(low, float(att["lo"].min()))
    if target is not None:
        ax.axhline(
            target * 100.0,
            color="black",
            linestyle="-.",
            linewidth=1,
            label=f"target {target * 100:g} %",
        )
        low = min(low, target * 100.0)
    _audit_note(ax, points)
    ax.set_ylim(max(0.0, low - 5.0), 101.0)
    _style_load_axis(ax, points, load_col)
    ax.set_ylabel("Requests (%)")
    ax.set_title("Success rate vs load")
    _legend(ax, "lower left")
    return fig


def _knee_lines(knees: KneeResult | Mapping[str, float | None] | None) -> dict[str, float]:
    if knees is None:
        return {}
    if isinstance(knees, KneeResult):
        return {"SLO knee": knees.knee_load} if knees.knee_load is not None else {}
    return {k: float(v) for k, v in knees.items() if v is not None and math.isfinite(float(v))}


def _draw_ceiling(ax: Any, points: pd.DataFrame) -> None:
    """The settings-implied ceiling (``ceiling_rps``), when the run recorded one."""
    if "ceiling_rps" not in points.columns:
        return
    ceiling = pd.to_numeric(points["ceiling_rps"], errors="coerce").dropna()
    if not ceiling.empty:
        ax.axhline(float(ceiling.min()), color="grey", linestyle=":", linewidth=1.2,
                   label=f"settings ceiling {float(ceiling.min()):,.0f}/s "
                         "(max_concurrent_tasks ÷ agent latency)")


def plot_throughput(
    points: pd.DataFrame,
    fit: UslFit | None = None,
    knees: KneeResult | Mapping[str, float | None] | None = None,
    *,
    load_col: str = "load",
) -> Figure:
    """Throughput and goodput vs load, the USL curve with its 95 % band, knees and N*."""
    points = _audited(points)
    fig, ax = new_figure()
    series = _series(points, load_col)
    for gi, (name, rows) in enumerate(series):
        color = COLORS[gi % len(COLORS)]
        prefix = f"{name}: " if name else ""
        _draw(
            ax,
            _aggregate(rows, "throughput_rps", load_col),
            color=color,
            label=f"{prefix}throughput (ok req/s)",
        )
        if "goodput_rps" in rows.columns and len(series) <= 3:  # more: the legend would drown
            _draw(
                ax,
                _aggregate(rows, "goodput_rps", load_col),
                color=color,
                style=":",
                marker="^",
                label=f"{prefix}goodput (within SLO)",
            )
    loads = points[load_col].astype(float)
    if load_unit(points, load_col) == "req/s":
        grid = np.unique(loads.to_numpy(dtype=float))
        ax.plot(grid, grid, color="grey", linewidth=1, linestyle="--", label="offered rate")
    if fit is not None:
        _draw_fit(ax, fit, float(loads.min()), float(loads.max()))
    _draw_ceiling(ax, points)
    for i, (label, x) in enumerate(_knee_lines(knees).items()):
        ax.axvline(
            x,
            color=COLORS[(i + 3) % len(COLORS)],
            linestyle="-.",
            linewidth=1.2,
            label=f"{label}: {x:g}",
        )
    _audit_note(ax, points)
    ax.set_ylim(bottom=0)
    _style_load_axis(ax, points, load_col)
    ax.set_ylabel("Throughput (req/s)")
    ax.set_title("Throughput vs load" + (" with USL fit" if fit is not None else ""))
    _legend(ax, "upper left")
    return fig


def _draw_fit(ax: Axes, fit: UslFit, lo: float, hi: float) -> None:
    top = hi * 1.15
    if fit.has_peak and fit.n_star <= 3 * hi:
        top = max(top, fit.n_star * 1.1)
    grid = np.geomspace(max(lo, 1.0), top, 120) if lo > 0 else np.linspace(lo, top, 120)
    band_lo, band_hi = fit.predict_band(grid)
    ax.fill_between(
        grid, band_lo, band_hi, color="grey", alpha=0.22, linewidth=0, label="USL 95 % band"
    )
    ax.plot(
        grid,
        fit.predict(grid),
        color="black",
        linewidth=1.3,
        label=f"USL fit (σ={fit.sigma:.3g}, κ={fit.kappa:.2g})",
    )
    if fit.has_peak and fit.n_star <= 3 * hi:
        c_lo, c_hi = fit.n_star_ci
        ax.axvline(
            fit.n_star,
            color="black",
            linestyle="--",
            linewidth=1,
            label=f"N*≈{fit.n_star:.0f} [{c_lo:.0f}, {c_hi:.0f}]".replace("inf", "∞"),
        )
        if math.isfinite(c_hi):
            ax.axvspan(c_lo, min(c_hi, top), color="black", alpha=0.05)


def _slo_value(run_data: Any, key: str) -> float | None:
    manifest = getattr(run_data, "manifest", None) or {}
    slo = (manifest.get("spec") or {}).get("slo") or {}
    value = slo.get(key) if isinstance(slo, Mapping) else None
    return float(value) if isinstance(value, int | float) else None


def _parts(run_data: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    if isinstance(run_data, Mapping):
        return run_data["points"], run_data.get("requests", pd.DataFrame())
    return run_data.points, getattr(run_data, "requests", pd.DataFrame())


def plot_report(
    run_data: Any, outdir: Path | str, *, formats: Sequence[str] = ("png", "svg")
) -> list[Path]:
    """Draw and save every standard chart of a run (``RunData`` or {points, requests})."""
    points, requests = _parts(run_data)
    if points.empty:
        return []
    points = _audited(points)
    p99, min_ok = _slo_value(run_data, "p99_ms"), _slo_value(run_data, "min_success_rate")
    fit = _try_fit(points)
    knees: dict[str, float | None] = {"max throughput": throughput_knee(points)}
    if p99 is not None:
        knees["SLO knee"] = slo_knee(points, p99_ms=p99, min_success_rate=min_ok or 0.95).knee_load
    charts: list[tuple[str, Figure]] = [
        ("latency", plot_latency(points, slo_p99_ms=p99)),
        ("success", plot_success(points, target=min_ok if min_ok is not None else 0.95)),
        ("throughput", plot_throughput(points, fit, knees)),
    ]
    if not requests.empty:
        charts += [
            ("distribution", plot_distribution(requests, points=points)),
            ("timeline", plot_timeline(requests)),
        ]
    paths: list[Path] = []
    for name, fig in charts:
        paths += save_figure(fig, outdir, name, formats=formats)
    return paths


def _try_fit(points: pd.DataFrame) -> UslFit | None:
    if len(_series(points, "load")) > 1:
        return None  # one curve per variant would be needed; skip rather than mix them
    try:
        return fit_usl_points(points, bootstrap=200)
    except ValidationError:
        return None
