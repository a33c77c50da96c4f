"""Shared pieces of the lab's charts: a GUI-free Figure, colours, log axes, saving."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["COLORS", "new_figure", "plain_log", "save_figure"]

SIZE = (8.0, 4.8)
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def new_figure() -> tuple[Figure, Axes]:
    """A Figure (constrained layout, no pyplot) and its single Axes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=SIZE, layout="constrained")
    return fig, fig.subplots()


def save_figure(
    fig: Figure,
    outdir: Path | str,
    name: str,
    *,
    formats: Sequence[str] = ("png", "svg"),
    dpi: int = 120,
) -> list[Path]:
    """Write ``fig`` as ``outdir/name.png`` and ``.svg`` (creating ``outdir``); the paths."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = out / f"{name}.{fmt}"
        fig.savefig(path, format=fmt, dpi=dpi)
        paths.append(path)
    return paths


def plain_log(axis: Any) -> None:
    """Log axis with 1-2-5 ticks as plain numbers (no mathtext: clearer and faster)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.10g}"))
    axis.set_minor_formatter(NullFormatter())
