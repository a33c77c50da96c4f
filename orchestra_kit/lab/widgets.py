"""A JupyterLab tuning panel: Settings and load knobs, Run, progress, live chart, runs table.

``TuningPanel()`` builds the widgets; ``panel.show()`` (or leaving it as the last
expression of a cell) displays them. Run builds an :class:`ExperimentSpec` from the
widget values through :func:`parse_spec` (so a bad value is reported exactly as a
bad TOML key would be), then awaits :func:`run_experiment` in a task the panel owns.
The chart is redrawn as each point finishes; selecting earlier runs in the list
overlays them (re-plotted from their saved ``points.csv``, never re-run).

Headless use (tests, nbmake)::

    panel = TuningPanel(results_root=tmp)
    panel.knobs["database.batch_size"].value = 50
    run = await panel.run()          # or: panel.run_button.click(); await panel.task
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as w
import pandas as pd

from ..config import Settings
from ..errors import ConfigError, OrchestraError
from .spec import WORKLOAD_KINDS, ExperimentSpec, parse_spec
from .sweep import PointDone, run_experiment

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["LAB_DEFAULTS", "SETTINGS_KNOBS", "PanelRun", "TuningPanel", "watch_tasks"]

#: The Settings keys the panel exposes, in display order.
SETTINGS_KNOBS: tuple[str, ...] = (
    "database.max_connections", "database.batch_size", "database.cache_ttl_seconds",
    "scheduler.max_api_requests_per_minute", "server.requests_per_minute",
    "scheduler.max_concurrent_tasks", "agents.connection_pool_size", "agents.sim_latency_ms",
    "flags.enable_connection_pooling", "flags.enable_wal_mode", "flags.enable_batch_operations",
    "flags.enable_query_caching", "flags.enable_async_llm_processing",
)  # fmt: skip

#: Lab starting values: the seed's 100 LLM calls/min and 1000 HTTP req/min per client
#: would make the rate limiters the only thing a load test measures.
LAB_DEFAULTS: dict[str, Any] = {
    "scheduler.max_api_requests_per_minute": 1_000_000.0,
    "scheduler.api_burst": 1000,
    "scheduler.progress_files": False,
    "server.requests_per_minute": 0.0,
}
_FIXED = {k: v for k, v in LAB_DEFAULTS.items() if k not in SETTINGS_KNOBS}
_DEFAULT_MIX = {"hire": 2.0, "read_mix": 6.0, "assign_wait": 2.0}


@dataclass(frozen=True, kw_only=True)
class PanelRun:
    """One run started from the panel: its label, the Settings overrides and where it lives."""

    label: str
    settings: dict[str, Any]
    run_dir: Path


def _knob_widget(key: str, value: Any) -> w.Widget:
    style = {"description_width": "260px"}
    layout = w.Layout(width="420px")
    if isinstance(value, bool):
        return w.Checkbox(value=value, description=key, style=style, layout=layout, indent=False)
    if isinstance(value, int):
        return w.IntText(value=value, description=key, style=style, layout=layout)
    return w.FloatText(value=float(value), description=key, style=style, layout=layout)


def _parse_levels(text: str, model: str) -> list[int] | list[float]:
    """``"1, 4, 16"`` -> [1, 4, 16]; users are integers, rates numbers."""
    key = "load.users" if model == "closed" else "load.rate_rps"
    parts = [p for p in text.replace(";", ",").split(",") if p.strip()]
    try:
        values = [int(p) if model == "closed" else float(p) for p in parts]
    except ValueError:
        raise ConfigError(key, text, "a comma-separated list of numbers, e.g. '2, 8, 32'") from None
    if not values:
        raise ConfigError(key, text, "at least one load level")
    return values


class TuningPanel:
    """ipywidgets panel that runs small experiments from knob values and charts them."""

    def __init__(self, *, results_root: str | Path = "results", name: str = "tuning",
                 seed: int = 0) -> None:
        self.results_root = Path(results_root)
        self.name = name
        self.seed = seed
        self.runs: list[PanelRun] = []
        self.task: asyncio.Task[PanelRun | None] | None = None
        self.last_error: str = ""
        start = Settings().with_overrides(LAB_DEFAULTS).flat()
        self.knobs: dict[str, w.Widget] = {k: _knob_widget(k, start[k]) for k in SETTINGS_KNOBS}
        self.workload = w.Dropdown(options=list(WORKLOAD_KINDS), value="hire", description="workload")
        self.model = w.ToggleButtons(options=["closed", "open"], value="closed", description="model")
        self.levels = w.Text(value="2, 8", description="users / rate",
                             placeholder="comma-separated: users (closed) or req/s (open)")
        self.duration_s = w.FloatText(value=2.0, description="duration_s")
        self.label = w.Text(value="", description="label", placeholder="(auto)")
        self.run_button = w.Button(description="Run", button_style="primary", icon="play")
        self.progress = w.IntProgress(value=0, min=0, max=1, description="points")
        self.status = w.HTML(value="")
        self.chart = w.Output()
        self.runs_select = w.SelectMultiple(options=[], description="overlay", rows=6)
        self.table = w.HTML(value="")
        self._live: list[dict[str, Any]] = []
        self.run_button.on_click(self._on_click)
        self.runs_select.observe(lambda _change: self.redraw(), names="value")

    # ------------------------------------------------------------------ building a spec

    def overrides(self) -> dict[str, Any]:
        """The Settings overrides the knobs describe (plus the fixed lab values)."""
        return {**_FIXED, **{k: widget.value for k, widget in self.knobs.items()}}

    def build_spec(self) -> ExperimentSpec:
        """An ExperimentSpec from the widget values; ConfigError names a bad one."""
        model = str(self.model.value)
        key = "load.users" if model == "closed" else "load.rate_rps"
        workload: dict[str, Any] = {"kind": self.workload.value}
        if self.workload.value == "mix":
            workload["mix"] = dict(_DEFAULT_MIX)
        doc = {
            "name": self.name, "seed": self.seed, "repeats": 1, "x": key,
            "target": {"kind": "process", "settings": self.overrides()},
            "workload": workload,
            "load": {"model": model, "duration_s": float(self.duration_s.value)},
            "sweep": {key: _parse_levels(str(self.levels.value), model)},
        }  # fmt: skip
        return parse_spec(doc)

    # ------------------------------------------------------------------ running

    def _on_click(self, _button: w.Button | None = None) -> None:
        if self.task is not None and not self.task.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._show_error("Run needs a running event loop (a Jupyter kernel or an async test).")
            return
        self.task = loop.create_task(self.run())
        self.task.add_done_callback(_retrieve)

    async def run(self) -> PanelRun | None:
        """Build the spec, run it, record it; errors are shown in the panel and re-raised."""
        self.run_button.disabled = True
        self.status.value = "<i>running…</i>"
        try:
            spec = self.build_spec()
            self.progress.value, self.progress.max = 0, len(spec.points()) * spec.repeats
            self._live = []
            run_dir = await run_experiment(spec, results_root=self.results_root,
                                           progress=False, on_point=self._on_point)
        except OrchestraError as exc:
            self._show_error(f"{type(exc).__name__}: {exc}")
            return None
        except Exception as exc:
            self._show_error(f"{type(exc).__name__}: {exc}")
            raise
        finally:
            self.run_button.disabled = False
        return self._record(spec, run_dir)

    def _record(self, spec: ExperimentSpec, run_dir: Path) -> PanelRun:
        label = str(self.label.value) or f"run {len(self.runs) + 1}: {self._describe(spec)}"
        run = PanelRun(label=label, settings=dict(spec.target.settings), run_dir=run_dir)
        self.runs.append(run)
        self._live = []
        self.last_error = ""
        self.status.value = f"done: <code>{run_dir}</code>"
        self.runs_select.options = [r.label for r in self.runs]
        self.runs_select.value = (label,)  # triggers redraw
        self.table.value = self.runs_table().to_html(index=False)
        return run

    def _describe(self, spec: ExperimentSpec) -> str:
        base = Settings().with_overrides(LAB_DEFAULTS).flat()
        changed = [f"{k.split('.')[-1]}={v}" for k, v in spec.target.settings.items()
                   if k in base and base[k] != v]
        return f"{spec.workload.kind}, {self.levels.value}" + (f" ({', '.join(changed)})"
                                                              if changed else "")

    def _on_point(self, done: PointDone) -> None:
        self.progress.max, self.progress.value = done.total, done.done
        self._live.append({"load": done.point.load_value, **done.summary})
        self.redraw()

    def _show_error(self, message: str) -> None:
        self.last_error = message
        self.status.value = f"<b style='color:#b00'>{_escape(message)}</b>"

    # ------------------------------------------------------------------ charts and table

    def runs_table(self) -> pd.DataFrame:
        """One row per recorded run: label, best throughput, p99 at the highest load, dir."""
        rows = []
        for run in self.runs:
            points = _points(run.run_dir)
            top = points.loc[points["load"].idxmax()] if not points.empty else {}
            rows.append({"label": run.label, "points": len(points),
                         "max throughput (req/s)": round(float(points["throughput_rps"].max()), 1)
                         if not points.empty else None,
                         "p99 at max load (ms)": round(float(top["p99_ms"]), 1)
                         if not points.empty else None,
                         "run_dir": str(run.run_dir)})
        return pd.DataFrame(rows)

    def figure(self) -> Figure:
        """p50 and p99 latency vs load of the selected runs plus the live one."""
        from .plot_common import COLORS, new_figure

        fig, ax = new_figure()
        series = [(r.label, _points(r.run_dir)) for r in self.runs
                  if r.label in set(self.runs_select.value)]
        if self._live:
            series.append(("running", pd.DataFrame(self._live)))
        for i, (label, pts) in enumerate(series):
            if pts.empty:
                continue
            agg = pts.groupby("load")[["p50_ms", "p99_ms"]].mean().reset_index()
            color = COLORS[i % len(COLORS)]
            ax.plot(agg["load"], agg["p99_ms"], "o-", color=color, label=f"{label}: p99")
            ax.plot(agg["load"], agg["p50_ms"], "o:", color=color, label=f"{label}: p50")
        ax.set_xlabel("load (users or req/s)")
        ax.set_ylabel("latency (ms)")
        ax.set_title("Latency vs load")
        if series:
            ax.legend(fontsize="small")
        return fig

    def redraw(self) -> None:
        """Redraw the chart in the Output widget (as a PNG: no pyplot backend needed)."""
        from IPython.display import Image, clear_output, display

        buf = io.BytesIO()
        self.figure().savefig(buf, format="png", dpi=80, bbox_inches="tight")
        with self.chart:
            clear_output(wait=True)  # type: ignore[no-untyped-call]
            display(Image(buf.getvalue()))  # type: ignore[no-untyped-call]

    # ------------------------------------------------------------------ display

    def widget(self) -> w.Widget:
        """The whole panel as one widget box."""
        knobs = w.VBox(list(self.knobs.values()))
        load = w.VBox([self.workload, self.model, self.levels, self.duration_s, self.label,
                       w.HBox([self.run_button, self.progress]), self.status])
        return w.VBox([w.HBox([knobs, load]), w.HBox([self.chart, self.runs_select]), self.table])

    def show(self) -> None:
        """Display the panel in the notebook."""
        from IPython.display import display

        display(self.widget())  # type: ignore[no-untyped-call]

    def _ipython_display_(self) -> None:
        self.show()

    async def aclose(self) -> None:
        """Cancel a run in progress and wait for it (idempotent)."""
        task, self.task = self.task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])  # waits without re-raising the task's cancellation


async def watch_tasks(client: Any, task_ids: list[int], *, progress: bool = True,
                      timeout_s: float = 300.0) -> pd.DataFrame:
    """Follow each task's events until it ends, with a progress bar; one row per task."""
    from tqdm.auto import tqdm

    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(task_ids), desc="tasks done", unit="task", disable=not progress)

    async def one(task_id: int) -> None:
        task = await client.wait_task(task_id)
        rows.append({"task_id": task.id, "employee": task.employee, "status": str(task.status),
                     "attempts": task.attempts, "result": task.result,
                     "time_to_done_s": round((task.finished_at or 0.0) - task.created_at, 3)})
        bar.update(1)

    try:
        async with asyncio.timeout(timeout_s), asyncio.TaskGroup() as tg:
            for task_id in task_ids:
                tg.create_task(one(task_id))
    finally:
        bar.close()
    return pd.DataFrame(rows).sort_values("task_id", ignore_index=True)


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a clicked run's exception as seen (the panel already shows it; awaiting re-raises)."""
    if not task.cancelled():
        task.exception()


def _points(run_dir: Path) -> pd.DataFrame:
    """The run's points.csv (read directly: the panel needs no per-request rows)."""
    path = Path(run_dir) / "points.csv"
    return pd.read_csv(path) if path.exists() else pd.DataFrame(columns=["load"])


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
