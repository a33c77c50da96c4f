"""What the tuning panel draws: its chart (as PNG bytes) and its runs table (as HTML).

Both are plain values the kernel sets on widgets (``Image.value``, ``HTML.value``), so
JupyterLab renders every update, including those sent from a background task after the
request that started it has ended (output captured into ``ipywidgets.Output`` from such
a task is dropped by the front end).
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from .plot_common import COLORS, plain_log

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["RUN_COLUMNS", "figure_png", "panel_figure", "points_of", "run_row", "runs_html",
           "short_run_id"]

RUN_COLUMNS = ("#", "run", "label", "status", "points", "max throughput (req/s)",
               "p99 at max load (ms)", "changed settings")
_RUN_ID = re.compile(r"^\d{8}T(\d\d)(\d\d)(\d\d)Z-([0-9a-f]+)$")


def points_of(run_dir: Path) -> pd.DataFrame:
    """The run's points.csv (read directly: the panel needs no per-request rows)."""
    path = Path(run_dir) / "points.csv"
    return pd.read_csv(path) if path.exists() else pd.DataFrame(columns=["load"])


def panel_figure(series: Sequence[tuple[str, pd.DataFrame]], *, load_label: str) -> Figure:
    """Latency (p50 dotted, p99 solid; log y) and throughput vs load, one colour per run."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10.0, 3.6), layout="constrained")
    lat, tput = fig.subplots(1, 2, width_ratios=(3, 2))
    drawn = False
    for i, (label, pts) in enumerate(series):
        if pts.empty or "p99_ms" not in pts.columns:
            continue
        agg = pts.groupby("load")[["p50_ms", "p99_ms", "throughput_rps"]].mean().reset_index()
        color = COLORS[i % len(COLORS)]
        lat.plot(agg["load"], agg["p99_ms"], "o-", color=color, label=label)
        lat.plot(agg["load"], agg["p50_ms"], "o:", color=color, alpha=0.7)
        tput.plot(agg["load"], agg["throughput_rps"], "o-", color=color)
        drawn = True
    loads = sorted({float(v) for _, pts in series if "load" in pts for v in pts["load"]})
    if 0 < len(loads) <= 10:
        for ax in (lat, tput):
            ax.set_xticks(loads, [f"{v:g}" for v in loads])
    if drawn:
        lat.set_yscale("log")
        plain_log(lat.yaxis)
        fig.legend(loc="outside right upper", fontsize="small", title="p99 solid, p50 dotted")
    else:
        lat.text(0.5, 0.5, "No runs yet: press Run", ha="center", va="center",
                 transform=lat.transAxes, color="grey")
    lat.set(xlabel=load_label, ylabel="latency (ms)", title="Latency vs load")
    tput.set(xlabel=load_label, ylabel="throughput (req/s)", title="Throughput vs load")
    tput.set_ylim(bottom=0)
    for ax in (lat, tput):
        ax.grid(True, which="major", alpha=0.35)
    return fig


def figure_png(fig: Figure, *, dpi: int = 80) -> bytes:
    """The figure as PNG bytes (Agg: no pyplot backend needed)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def short_run_id(run_dir: Path | str) -> str:
    """A run id a person reads: ``20261203T143012Z-a1b2c3`` -> ``14:30:12 a1b2c3``.

    The start time (UTC) and the random part; other folder names are kept (cut to 16
    characters). The whole path goes in the table cell's tooltip.
    """
    name = Path(str(run_dir)).name
    m = _RUN_ID.match(name)
    if m:
        return f"{m[1]}:{m[2]}:{m[3]} {m[4]}"
    return name if len(name) <= 16 else name[:15] + "…"


def run_row(index: int, label: str, status: str, points: pd.DataFrame,
            changed: dict[str, Any], run_dir: Path | str) -> dict[str, Any]:
    """One row of the runs table (``run`` is the short id; ``run_dir`` the whole path)."""
    top = points.loc[points["load"].idxmax()] if not points.empty else None
    return {
        "#": index, "run": short_run_id(run_dir), "label": label, "status": status,
        "points": len(points),
        "max throughput (req/s)": (round(float(points["throughput_rps"].max()), 1)
                                   if top is not None else None),
        "p99 at max load (ms)": round(float(top["p99_ms"]), 1) if top is not None else None,
        "changed settings": ", ".join(f"{k}={v}" for k, v in changed.items()) or "—",
        "run_dir": _full_path(run_dir),
    }  # fmt: skip


def _full_path(run_dir: Path | str) -> str:
    """The run folder as an absolute path (the panel's results root is often relative)."""
    path = Path(run_dir)
    return str(path.resolve()) if path.exists() else str(run_dir)


_STATUS_COLORS = {"complete": "#2ca02c", "running": "#1f77b4", "stopped": "#ff7f0e",
                  "failed": "#d62728"}


# Cells stay on one line except the two free-text ones, which wrap within a width, so
# the table fits the notebook's width instead of running past the panel's edge.
_CELL = "padding:2px 8px;vertical-align:top;white-space:nowrap"
_WRAP = "padding:2px 8px;vertical-align:top;white-space:normal;min-width:10em;max-width:18em"
_WRAPPED = frozenset(("label", "changed settings"))


def _cell(col: str, row: dict[str, Any]) -> str:
    value = row.get(col)
    text = html.escape("" if value is None else str(value))
    if col == "status":
        text = f"<b style='color:{_STATUS_COLORS.get(str(value), '#333')}'>{text}</b>"
    elif col == "run":  # the short id; the whole path on hover
        text = f"<code title='{html.escape(str(row.get('run_dir', '')))}'>{text}</code>"
    return f"<td style='{_WRAP if col in _WRAPPED else _CELL}'>{text}</td>"


def runs_html(rows: Sequence[dict[str, Any]]) -> str:
    """The runs table as HTML (status coloured; newest run last; run id with path on hover)."""
    if not rows:
        return "<p class='orchestra-empty'><i>No runs yet.</i></p>"
    head = "".join(f"<th style='text-align:left;vertical-align:bottom;padding:2px 8px'>"
                   f"{html.escape(c)}</th>" for c in RUN_COLUMNS)  # headers may wrap
    body = "".join(f"<tr data-status='{html.escape(str(row.get('status')))}'>"
                   f"{''.join(_cell(c, row) for c in RUN_COLUMNS)}</tr>" for row in rows)
    return ("<div class='orchestra-runs-scroll' style='overflow-x:auto;max-width:100%'>"
            "<table class='orchestra-runs-table' style='border-collapse:collapse;"
            "line-height:1.4'>"
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")
