"""Tests for orchestra_kit.lab.plots: every chart builds with labels, lines and files."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure

from orchestra_kit.errors import ValidationError
from orchestra_kit.lab.analysis import audit, fit_usl_points, slo_knee
from orchestra_kit.lab.plots import (
    plot_before_after,
    plot_distribution,
    plot_latency,
    plot_report,
    plot_success,
    plot_throughput,
    plot_timeline,
    save_figure,
)

LOADS = (1, 2, 4, 8, 16, 32, 64)


def make_points(repeats: int = 2, **extra: object) -> pd.DataFrame:
    """A closed-loop sweep following the USL (σ=0.05, κ=0.001) with Little's-law latency."""
    rows = []
    for i, load in enumerate(LOADS):
        for rep in range(repeats):
            x = (
                100.0
                * load
                / (1 + 0.05 * (load - 1) + 0.001 * load * (load - 1))
                * (1 + 0.01 * rep)
            )
            mean_ms = load / x * 1000.0
            rows.append(
                {
                    "run_id": "r",
                    "point": i,
                    "repeat": rep,
                    "load": float(load),
                    "loop": "closed",
                    "concurrency": load,
                    "n": 500,
                    "success_rate": 1.0 if load < 64 else 0.9,
                    "throughput_rps": x,
                    "goodput_rps": x * 0.95,
                    "slo_attainment": 0.97,
                    "p50_ms": mean_ms,
                    "p90_ms": 1.5 * mean_ms,
                    "p95_ms": 1.8 * mean_ms,
                    "p99_ms": 2.5 * mean_ms,
                    "p999_ms": 4 * mean_ms,
                    "service_p99_ms": 2 * mean_ms,
                    "lag_p99_ms": 0.2,
                    "littles_residual": 0.01,
                    "dropped": 0,
                    **extra,
                }
            )
    return pd.DataFrame(rows)


def make_requests(per_run: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    parts = []
    for point in range(len(LOADS)):
        for rep in range(2):
            sched = np.sort(rng.uniform(0, 5, per_run))
            lat = rng.lognormal(np.log(10 * (point + 1)), 0.4, per_run)
            ok = np.arange(per_run) % 20 != 0
            parts.append(
                pd.DataFrame(
                    {
                        "run_id": "r",
                        "point": point,
                        "repeat": rep,
                        "op": "hire",
                        "scheduled_s": sched,
                        "sent_s": sched,
                        "end_s": sched + lat / 1000,
                        "latency_ms": lat,
                        "service_ms": lat,
                        "lag_ms": 0.0,
                        "status": np.where(ok, 200, 500),
                        "ok": ok,
                        "error_type": np.where(ok, "", "http_500"),
                    }
                )
            )
    return pd.concat(parts, ignore_index=True)


def labels(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_latency_chart() -> None:
    points = make_points()
    points.loc[points.index[-1], "n"] = 5  # flagged by the audit: drawn hollow
    fig = plot_latency(points, slo_p99_ms=150)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and ax.get_xscale() == "log"
    assert ax.get_ylabel() == "Latency (ms, log scale)"
    assert ax.get_xlabel() == "Concurrency (virtual users)"
    assert labels(fig)[:5] == ["p50", "p90", "p99", "p99.9", "p99 service time (from actual send)"]
    assert labels(fig)[-2:] == ["p99 SLO 150 ms", "flagged by self-audit"]
    markers = [c for c in ax.collections if isinstance(c, PathCollection) and len(c.get_offsets())]
    hollow = [c for c in markers if (c.get_facecolor()[:, :3] == 1).all()]
    assert len(hollow) == 5  # the last load of each of the five curves
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 1  # service-time p99
    assert [t.get_text() for t in ax.get_xticklabels()] == [f"{v:g}" for v in LOADS]


def test_latency_chart_per_series() -> None:
    points = pd.concat(
        [make_points(**{"settings.wal": True}), make_points(**{"settings.wal": False})]
    )
    fig = plot_latency(points)
    assert "wal=True: p99" in labels(fig) and "wal=False: p50" in labels(fig)
    assert len(labels(fig)) == 6  # p50, p99, service p99 per variant


def test_success_chart() -> None:
    fig = plot_success(make_points(), target=0.99)
    ax = fig.axes[0]
    assert ax.get_ylabel() == "Requests (%)"
    assert (
        "target 99 %" in labels(fig)
        and "success rate" in labels(fig)
        and "SLO attainment" in labels(fig)
    )
    assert ax.get_ylim()[0] <= 90 and ax.get_ylim()[1] == 101


def test_throughput_chart_with_fit_and_knees() -> None:
    points = make_points()
    fit = fit_usl_points(points, bootstrap=30)
    assert fit is not None
    knee = slo_knee(points, p99_ms=120)
    fig = plot_throughput(
        points, fit, {"SLO knee": knee.knee_load, "max throughput": 32.0, "none": None}
    )
    ax = fig.axes[0]
    found = labels(fig)
    assert ax.get_ylabel() == "Throughput (req/s)"
    assert any(s.startswith("USL fit (σ=") for s in found) and "USL 95 % band" in found
    assert any(s.startswith("N*≈") for s in found)
    assert f"SLO knee: {knee.knee_load:g}" in found and "max throughput: 32" in found
    assert len(ax.get_lines()) >= 5  # fit curve, N*, two knees, data lines
    bare = plot_throughput(points)
    assert not any(s.startswith("USL") for s in labels(bare))
    assert "throughput (ok req/s)" in labels(bare) and "goodput (within SLO)" in labels(bare)


def test_before_after_bars() -> None:
    df = pd.DataFrame(
        {
            "label": ["p99 @32", "p99 @32", "p99 @64", "p99 @64"],
            "variant": ["before", "after"] * 2,
            "value": [80.0, 50, 200, 120],
            "lo": [70.0, 45, 180, 100],
            "hi": [90.0, 56, 230, 130],
        }
    )
    fig = plot_before_after(df, ylabel="Latency (ms)")
    ax = fig.axes[0]
    assert len(ax.patches) == 4
    assert [p.get_height() for p in ax.patches] == [80.0, 200.0, 50.0, 120.0]
    assert labels(fig) == ["before", "after"] and ax.get_ylabel() == "Latency (ms)"
    with pytest.raises(ValidationError, match="variant"):
        plot_before_after(df.drop(columns=["variant"]))


def test_distribution_chart() -> None:
    fig = plot_distribution(make_requests(), points=make_points())
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "logit"
    assert len(ax.get_lines()) == len(LOADS)
    assert labels(fig)[0] == "1 users (n=114)"  # 2 repeats x 60, minus 6 errors
    few = plot_distribution(make_requests(), max_lines=3)
    assert [s.split(" (")[0] for s in labels(few)] == ["point 0", "point 3", "point 6"]


def test_timeline_chart() -> None:
    requests = make_requests()
    fig = plot_timeline(requests)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and ax.get_xlabel().startswith("Send time (s")
    assert labels(fig) == ["ok request", "error (42)"]
    assert len(fig.axes) == 2  # the colour bar of the points
    xs = ax.collections[0].get_offsets()[:, 0]
    assert xs.max() > 5 * len(LOADS)  # runs laid end to end, not overlapping
    sampled = plot_timeline(requests, max_points=100)
    assert sum(len(c.get_offsets()) for c in sampled.axes[0].collections) == 100
    with pytest.raises(ValidationError, match="requests"):
        plot_timeline(requests.iloc[0:0])


def test_save_figure_writes_png_and_svg(tmp_path: Path) -> None:
    paths = save_figure(plot_success(make_points()), tmp_path / "charts", "success")
    assert [p.name for p in paths] == ["success.png", "success.svg"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in paths[1].read_text(encoding="utf-8")[:500]


def test_plot_report_draws_every_chart(tmp_path: Path) -> None:
    run = SimpleNamespace(
        points=audit(make_points()),
        requests=make_requests(),
        manifest={"spec": {"slo": {"p99_ms": 120, "min_success_rate": 0.95}}},
    )
    paths = plot_report(run, tmp_path, formats=("png",))
    assert [p.stem for p in paths] == [
        "latency",
        "success",
        "throughput",
        "distribution",
        "timeline",
    ]
    assert all(p.stat().st_size > 10_000 for p in paths)
    assert plot_report({"points": make_points().iloc[0:0]}, tmp_path / "c") == []


def _visible_labelled_ticks(fig: Figure, axis: str = "y") -> list[str]:
    fig.draw_without_rendering()
    ax = fig.axes[0]
    lo, hi = sorted(ax.get_ylim() if axis == "y" else ax.get_xlim())
    getter = ax.yaxis if axis == "y" else ax.xaxis
    return [t.label1.get_text() for t in getter.get_major_ticks()
            if lo <= t.get_loc() <= hi and t.label1.get_text()]


@pytest.mark.parametrize(("lo_ms", "hi_ms"), [(54.0, 76.0), (99.0, 101.0), (0.8, 3000.0),
                                               (3.0, 9.0), (120.0, 480.0)])
def test_log_latency_axis_labels_several_ticks_at_any_range(lo_ms: float, hi_ms: float) -> None:
    points = make_points()
    scale = np.linspace(lo_ms, hi_ms, len(points))
    for col in ("p50_ms", "p90_ms", "p99_ms", "p999_ms", "service_p99_ms"):
        points[col] = scale
    ticks = _visible_labelled_ticks(plot_latency(points))
    assert 3 <= len(ticks) <= 10, ticks


def test_log_ticks_are_round_numbers_inside_the_range() -> None:
    from orchestra_kit.lab.plot_common import log_ticks

    assert log_ticks(54, 76) == [55.0, 60.0, 65.0, 70.0, 75.0]
    assert log_ticks(10, 100) == [10.0, 20.0, 50.0, 100.0]
    assert log_ticks(1, 1e6)[0] == 1.0 and len(log_ticks(1, 1e6)) <= 9
    assert log_ticks(0, 0) == [] and log_ticks(-5, -1) == []


@pytest.mark.parametrize("chart", ["latency", "success", "throughput"])
def test_legend_sits_outside_the_data_area(chart: str) -> None:
    points = make_points()
    fig = {"latency": lambda: plot_latency(points, slo_p99_ms=150),
           "success": lambda: plot_success(points),
           "throughput": lambda: plot_throughput(points)}[chart]()
    fig.draw_without_rendering()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1  # right of the plot: covers no line
