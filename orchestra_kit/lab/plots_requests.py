"""Charts of individual requests and before/after bars (used through :mod:`.plots`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from orchestra_kit.errors import ValidationError
from orchestra_kit.lab.analysis import load_unit
from orchestra_kit.lab.plot_common import COLORS, new_figure, plain_log

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plot_before_after", "plot_distribution", "plot_timeline"]


def plot_before_after(
    df: pd.DataFrame, *, ylabel: str = "Value", title: str = "Before / after"
) -> Figure:
    """Grouped bars (label × variant) with lo–hi whiskers; columns label/variant/value/lo/hi."""
    missing = [c for c in ("label", "variant", "value") if c not in df.columns]
    if missing:
        raise ValidationError("df", f"missing column(s) {missing}", value=list(df.columns))
    fig, ax = new_figure()
    labels = list(dict.fromkeys(df["label"]))
    variants = list(dict.fromkeys(df["variant"]))
    width = 0.8 / len(variants)
    x = np.arange(len(labels))
    for vi, variant in enumerate(variants):
        rows = df[df["variant"] == variant].set_index("label").reindex(labels)
        values = rows["value"].to_numpy(dtype=float)
        lo = rows["lo"].to_numpy(dtype=float) if "lo" in rows else values
        hi = rows["hi"].to_numpy(dtype=float) if "hi" in rows else values
        err = np.vstack([np.nan_to_num(values - lo), np.nan_to_num(hi - values)])
        pos = x - 0.4 + width * (vi + 0.5)
        bars = ax.bar(
            pos,
            values,
            width * 0.92,
            yerr=err,
            capsize=4,
            color=COLORS[vi % len(COLORS)],
            label=str(variant),
        )
        ax.bar_label(
            bars,
            labels=[f"{v:,.3g}" if np.isfinite(v) else "" for v in values],
            fontsize="small",
            padding=2,
        )
    ax.set_xticks(x, [str(label) for label in labels])
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.35)
    ax.set_axisbelow(True)
    ax.legend(fontsize="small")
    return fig


def _point_labels(points: pd.DataFrame | None, load_col: str) -> dict[Any, str]:
    if points is None or "point" not in points.columns:
        return {}
    unit = load_unit(points, load_col)
    firsts = points.drop_duplicates("point")
    return {
        p: f"{load:g} {unit}".strip()
        for p, load in zip(firsts["point"], firsts[load_col], strict=True)
    }


def plot_distribution(
    requests: pd.DataFrame,
    *,
    points: pd.DataFrame | None = None,
    load_col: str = "load",
    max_lines: int = 12,
) -> Figure:
    """Latency CDF per point (ok requests, repeats merged); log x, logit y shows the tail."""
    from matplotlib import colormaps
    from matplotlib.ticker import NullLocator

    ok = requests[requests["ok"].astype(bool)] if "ok" in requests.columns else requests
    ok = ok[pd.to_numeric(ok["latency_ms"], errors="coerce") > 0]
    fig, ax = new_figure()
    names = _point_labels(points, load_col)
    ids = sorted(ok["point"].unique())
    if len(ids) > max_lines:  # keep an even spread of points, always the first and last
        ids = [
            ids[i] for i in np.unique(np.linspace(0, len(ids) - 1, max_lines).round().astype(int))
        ]
    cmap = colormaps["viridis"]
    for i, pid in enumerate(ids):
        values = np.sort(ok.loc[ok["point"] == pid, "latency_ms"].to_numpy(dtype=float))
        if values.size < 2:
            continue
        probs = (np.arange(values.size) + 0.5) / values.size
        color = cmap(i / max(len(ids) - 1, 1))
        ax.step(
            values,
            probs,
            where="post",
            color=color,
            linewidth=1.4,
            label=f"{names.get(pid, f'point {pid}')} (n={values.size:,})",
        )
    ax.set_xscale("log")
    plain_log(ax.xaxis)
    ax.set_yscale("logit")
    # the largest sample sets the visible tail, so every curve shows in full
    smallest = max(max((int((ok["point"] == pid).sum()) for pid in ids), default=2), 2)
    ax.set_ylim(0.4 / smallest, 1 - 0.4 / smallest)
    ticks = [
        t
        for t in (1e-4, 1e-3, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999)
        if 0.4 / smallest <= t <= 1 - 0.4 / smallest
    ]
    ax.set_yticks(ticks, [f"{t * 100:g} %" for t in ticks])
    ax.yaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("Latency from scheduled send (ms, log scale)")
    ax.set_ylabel("Requests at or below (percentile, logit scale)")
    ax.set_title("Latency distribution per point (CDF)")
    ax.grid(True, which="major", alpha=0.35)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
              title="load")
    return fig


def _laid_end_to_end(requests: pd.DataFrame) -> pd.DataFrame:
    """Add ``t_s``: times of successive (point, repeat) runs placed one after the other."""
    data = requests.copy()
    sent = pd.to_numeric(data["sent_s"], errors="coerce")
    data["t0"] = sent.fillna(pd.to_numeric(data["scheduled_s"], errors="coerce"))
    keys = [k for k in ("point", "repeat") if k in data.columns]
    offset, parts = 0.0, []
    for _, rows in data.groupby(keys, sort=True) if keys else [((), data)]:
        start = float(rows["t0"].min())
        parts.append(rows.assign(t_s=rows["t0"] - start + offset))
        offset += float(pd.to_numeric(rows["end_s"], errors="coerce").max() - start)
    return pd.concat(parts) if parts else data.assign(t_s=[])


def plot_timeline(requests: pd.DataFrame, *, max_points: int = 20_000, seed: int = 0) -> Figure:
    """Latency vs send time per request (runs laid end to end), errors marked with red ×."""
    if requests.empty:
        raise ValidationError("requests", "no rows to plot")
    data = _laid_end_to_end(requests)
    if len(data) > max_points:
        data = data.sample(max_points, random_state=seed).sort_values("t_s")
    lat = pd.to_numeric(data["latency_ms"], errors="coerce")
    data = data.assign(y=lat.where(lat > 0))
    ok = data["ok"].astype(bool)
    fig, ax = new_figure()
    good = data[ok]
    sc = ax.scatter(
        good["t_s"],
        good["y"],
        c=good["point"],
        cmap="viridis",
        s=4,
        alpha=0.6,
        linewidths=0,
        label="ok request",
    )
    bad = data[~ok]
    if len(bad):
        floor = float(data["y"].min()) if data["y"].notna().any() else 1.0
        ax.scatter(
            bad["t_s"],
            bad["y"].fillna(floor),
            color="#d62728",
            marker="x",
            s=16,
            linewidths=1,
            label=f"error ({len(bad):,})",
        )
    if data["point"].nunique() > 1:
        fig.colorbar(sc, ax=ax, label="sweep point (index)")
    ax.set_yscale("log")
    plain_log(ax.yaxis)
    ax.set_xlabel("Send time (s; points and repeats laid end to end)")
    ax.set_ylabel("Latency (ms, log scale)")
    ax.set_title("Latency over time")
    ax.grid(True, which="major", alpha=0.35)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
              markerscale=2)
    return fig
