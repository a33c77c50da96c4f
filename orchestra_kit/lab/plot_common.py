"""Shared pieces of the lab's charts: a GUI-free Figure, colours, log axes, saving."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["COLORS", "log_ticks", "new_figure", "plain_log", "save_figure"]

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


_MANTISSAS = ((1.0,), (1.0, 2.0, 5.0), (1.0, 2.0, 3.0, 5.0, 7.0), tuple(float(m) for m in range(1, 10)))


def log_ticks(vmin: float, vmax: float, *, min_ticks: int = 3, max_ticks: int = 9) -> list[float]:
    """Tick values for a log axis showing [vmin, vmax]: at least ``min_ticks`` inside it.

    Tries 1, 1-2-5, 1-2-3-5-7 and 1…9 per decade (the coarsest set giving ``min_ticks``
    or more); a range too narrow for those (54–76 ms) gets evenly spaced round numbers.
    """
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    lo, hi = sorted((float(vmin), float(vmax)))
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= 0:
        return []
    lo = max(lo, hi * 1e-12)
    decades = range(int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi))) + 1)
    for subs in _MANTISSAS:
        ticks = [m * 10.0**d for d in decades for m in subs]
        inside = [t for t in ticks if lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9)]
        if len(inside) >= min_ticks:
            return inside if len(inside) <= max_ticks else _thin(inside, max_ticks)
    linear = MaxNLocator(nbins=min_ticks + 2, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi)
    return [float(t) for t in linear if lo <= t <= hi and t > 0]


def _thin(ticks: list[float], max_ticks: int) -> list[float]:
    step = -(-len(ticks) // max_ticks)
    return ticks[::step]


def plain_log(axis: Any) -> None:
    """Log axis with enough labelled ticks at any range, as plain numbers (no mathtext)."""
    from matplotlib.ticker import FuncFormatter, Locator, NullFormatter

    class _NiceLogLocator(Locator):
        def __call__(self) -> list[float]:
            if self.axis is None:
                return []
            vmin, vmax = self.axis.get_view_interval()
            return self.tick_values(vmin, vmax)

        def tick_values(self, vmin: float, vmax: float) -> list[float]:
            return log_ticks(vmin, vmax)

    axis.set_major_locator(_NiceLogLocator())
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.10g}"))
    axis.set_minor_formatter(NullFormatter())
