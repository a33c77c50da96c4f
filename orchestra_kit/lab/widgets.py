"""A JupyterLab tuning panel: grouped knobs, Run / Stop, progress, live chart and runs table.

``TuningPanel()`` builds the widgets; ``panel.show()`` (or leaving it as the last
expression of a cell) displays them. Run builds an :class:`ExperimentSpec` from the
widget values through :func:`parse_spec` (so a bad value is reported exactly as a
bad TOML key would be), then awaits :func:`run_experiment` in a task the panel owns.

Every live update is a widget value the kernel sets: the chart is an
``ipywidgets.Image`` holding a PNG, the runs table an ``HTML`` widget. JupyterLab renders
those from a background task; it drops output captured into an ``ipywidgets.Output``
once the request that started the task has ended (see the ipywidgets guide on output
from background threads). The chart is redrawn as each point finishes and after each
run; selecting runs in *overlay* re-plots them from their saved ``points.csv``.
**Stop** cancels the run: the points finished so far stay saved and the run's
manifest says ``"stopped"``.

Headless use (tests, nbmake)::

    panel = TuningPanel(results_root=tmp)
    panel.knobs["database.batch_size"].value = 50
    run = await panel.run()          # or: panel.run_button.click(); await panel.task
"""

from __future__ import annotations

import asyncio
import html
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as w
import pandas as pd

from ..config import Settings
from ..errors import OrchestraError
from .spec import WORKLOAD_KINDS, ExperimentSpec, parse_spec
from .sweep import PointDone, run_experiment
from .widgets_knobs import (
    KNOB_GROUPS,
    KNOBS,
    LAB_DEFAULTS,
    SETTINGS_KNOBS,
    knob_widget,
    parse_levels,
)
from .widgets_view import figure_png, panel_figure, points_of, run_row, runs_html

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["LAB_DEFAULTS", "SETTINGS_KNOBS", "PanelRun", "TuningPanel", "watch_tasks"]

_FIXED = {k: v for k, v in LAB_DEFAULTS.items() if k not in SETTINGS_KNOBS}
_DEFAULT_MIX = {"hire": 2.0, "read_mix": 6.0, "assign_wait": 2.0}
_LOAD_STYLE = {"description_width": "170px"}


@dataclass(frozen=True, kw_only=True)
class PanelRun:
    """One run started from the panel: label, Settings overrides, where it lives, how it ended."""

    label: str
    settings: dict[str, Any]
    run_dir: Path
    status: str = "complete"
    points: int = 0

    def __repr__(self) -> str:
        return (f"PanelRun({self.label!r}, {self.status}, {self.points} point(s), "
                f"run_dir={str(self.run_dir)!r})")


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
        self._running: asyncio.Task[Any] | None = None
        self._stop_requested = False
        self._live: list[dict[str, Any]] = []
        self._running_label = ""
        self._points: dict[Path, pd.DataFrame] = {}
        start = Settings().with_overrides(LAB_DEFAULTS).flat()
        self.knobs: dict[str, w.Widget] = {k.key: knob_widget(k, start[k.key]) for k in KNOBS}
        self._build_load_widgets()
        self._build_output_widgets()
        self.redraw()

    def _build_load_widgets(self) -> None:
        def labelled(widget: w.Widget, tip: str) -> w.Widget:
            widget.style, widget.tooltip = _LOAD_STYLE, tip
            return widget

        self.workload = labelled(w.Dropdown(options=list(WORKLOAD_KINDS), value="hire",
                                            description="Workload"), "workload.kind")
        self.model = w.ToggleButtons(options=["closed", "open"], value="closed",
                                     description="Load model", tooltip="load.model",
                                     style={"description_width": "170px", "button_width": "62px"},
                                     layout=w.Layout(width="320px"))
        self.levels = labelled(w.Text(value="2, 8", description="Levels (users or req/s)",
                                      placeholder="e.g. 2, 8, 32"),
                               "load.users (closed: whole numbers) or load.rate_rps (open)")
        self.duration_s = labelled(w.FloatText(value=2.0, description="Duration per point (s)"),
                                   "load.duration_s")
        self.label = labelled(w.Text(value="", description="Run label", placeholder="(auto)"),
                              "a name for this run in the table and the chart")
        self.levels.add_class("orchestra-levels")
        self.duration_s.add_class("orchestra-duration")

    def _build_output_widgets(self) -> None:
        self.run_button = w.Button(description="Run", button_style="primary", icon="play",
                                   tooltip="run the experiment these knobs describe")
        self.stop_button = w.Button(description="Stop", button_style="danger", icon="stop",
                                    disabled=True, tooltip="cancel the run (finished points stay saved)")
        self.progress = w.IntProgress(value=0, min=0, max=1, description="Points")
        self.status = w.HTML(value="<i>idle</i>")
        self.chart = w.Image(format="png", layout=w.Layout(max_width="820px"))
        self.runs_select = w.SelectMultiple(options=[], description="Overlay", rows=5,
                                            layout=w.Layout(width="420px"))
        self.table = w.HTML(value=runs_html([]))
        for widget, css in ((self.run_button, "run"), (self.stop_button, "stop"),
                            (self.progress, "progress"), (self.status, "status"),
                            (self.chart, "chart"), (self.table, "runs"),
                            (self.runs_select, "overlay")):
            widget.add_class(f"orchestra-{css}")
        self.run_button.on_click(self._on_click)
        self.stop_button.on_click(lambda _b: self.request_stop())
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
            "sweep": {key: parse_levels(str(self.levels.value), model)},
        }  # fmt: skip
        return parse_spec(doc)

    # ------------------------------------------------------------------ running

    @property
    def running(self) -> bool:
        """True while a run is in progress (or a clicked one is about to start)."""
        return self._running is not None or (self.task is not None and not self.task.done())

    def _on_click(self, _button: w.Button | None = None) -> None:
        if self.running:
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
        if self._running is not None:
            self._show_error("A run is already in progress: wait for it or press Stop.")
            return None
        try:
            spec = self.build_spec()
        except OrchestraError as exc:
            self._show_error(f"{type(exc).__name__}: {exc}")
            return None
        self._start(spec)
        before = self._run_dirs()
        try:
            run_dir = await run_experiment(spec, results_root=self.results_root,
                                           progress=False, on_point=self._on_point)
        except asyncio.CancelledError:
            own = self._own_stop()
            self._finish()  # the buttons are idle before the run's row says it ended
            if not own:
                raise
            return self._record(spec, self._new_run_dir(before), "stopped")
        except Exception as exc:
            self._finish()
            self._show_error(f"{type(exc).__name__}: {exc}")
            self._record(spec, self._new_run_dir(before), "failed")
            if isinstance(exc, OrchestraError):
                return None
            raise
        finally:
            self._finish()
        return self._record(spec, run_dir, "complete")

    def request_stop(self) -> None:
        """Cancel the run in progress (what Stop does); its finished points stay saved."""
        if self._running is None or self._stop_requested:
            return
        self._stop_requested = True
        self.status.value = "<b style='color:#ff7f0e'>Stopping…</b>"
        self._running.cancel()

    async def stop(self) -> PanelRun | None:
        """Stop the clicked run and wait for it; the stopped run (or None)."""
        task = self.task
        if self._running is None and task is not None and not task.done():
            await asyncio.sleep(0)  # a just-clicked run starts first, so it can stop cleanly
        self.request_stop()
        return await task if task is not None else None

    def _own_stop(self) -> bool:
        """Whether this cancellation is the panel's own Stop (then it is handled, not raised)."""
        task = asyncio.current_task()
        return self._stop_requested and task is not None and task.uncancel() == 0

    def _start(self, spec: ExperimentSpec) -> None:
        self._running, self._stop_requested = asyncio.current_task(), False
        self._live, self.last_error = [], ""
        total = len(spec.points()) * spec.repeats
        self.progress.max, self.progress.value, self.progress.bar_style = total, 0, "info"
        self.run_button.disabled, self.run_button.description = True, "Running…"
        self.run_button.icon = "spinner"
        self.stop_button.disabled = False
        self.status.value = f"<b style='color:#1f77b4'>Running</b>: 0 of {total} point(s) done…"
        self._running_label = f"{self._label(spec)} (running)"
        self._refresh_table(running=self._running_label)

    def _finish(self) -> None:
        """Idle buttons (Stop greyed out before Run comes back); safe to call twice."""
        self._running, self._stop_requested = None, False
        self.stop_button.disabled = True
        self.run_button.disabled, self.run_button.description = False, "Run"
        self.run_button.icon = "play"

    def _run_dirs(self) -> set[Path]:
        base = self.results_root / self.name
        return {p for p in base.glob("*") if (p / "manifest.json").is_file()} if base.is_dir() else set()

    def _new_run_dir(self, before: set[Path]) -> Path | None:
        new = self._run_dirs() - before
        return max(new, key=lambda p: p.name) if new else None

    def _record(self, spec: ExperimentSpec, run_dir: Path | None, status: str) -> PanelRun | None:
        self._live = []
        if run_dir is None:
            self._refresh_table()
            return None
        label = self._label(spec)
        points = len(self._points_of(run_dir))
        run = PanelRun(label=label, settings=dict(spec.target.settings), run_dir=run_dir,
                       status=status, points=points)
        self.runs.append(run)
        if status == "complete":
            self.progress.bar_style = "success"
            self.status.value = f"<b style='color:#2ca02c'>Done</b>: <code>{html.escape(str(run_dir))}</code>"
        elif status == "stopped":
            self.progress.bar_style = "warning"
            self.status.value = (f"<b style='color:#ff7f0e'>Stopped</b> after {points} point(s); "
                                 f"saved in <code>{html.escape(str(run_dir))}</code>")
        chosen = tuple(self.runs_select.value)  # new options clear the selection: keep it
        self.runs_select.options = [(r.label, i) for i, r in enumerate(self.runs)]
        self.runs_select.value = (*chosen, len(self.runs) - 1)  # redraws
        self._refresh_table()
        return run

    def _label(self, spec: ExperimentSpec) -> str:
        return str(self.label.value) or f"run {len(self.runs) + 1}: {self._describe(spec)}"

    def _describe(self, spec: ExperimentSpec) -> str:
        changed = self._changed(spec.target.settings)
        words = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in changed.items())
        return f"{spec.workload.kind}, {self.levels.value}" + (f" ({words})" if words else "")

    @staticmethod
    def _changed(settings: dict[str, Any]) -> dict[str, Any]:
        base = Settings().with_overrides(LAB_DEFAULTS).flat()
        return {k: v for k, v in settings.items() if k in base and base[k] != v}

    def _on_point(self, done: PointDone) -> None:
        self.progress.max, self.progress.value = done.total, done.done
        self._live.append({"load": done.point.load_value, **done.summary})
        s = done.summary
        self.status.value = (f"<b style='color:#1f77b4'>Running</b>: {done.done} of {done.total} "
                             f"point(s) done (last: load {done.point.load_value:g}, "
                             f"p99 {float(s.get('p99_ms') or 0):.1f} ms, "
                             f"{float(s.get('throughput_rps') or 0):.1f} req/s)…")
        self.redraw()
        self._refresh_table(running=self._running_label)

    def _show_error(self, message: str) -> None:
        self.last_error = message
        self.progress.value, self.progress.bar_style = 0, "danger"
        self.status.value = f"<b style='color:#b00'>{html.escape(message)}</b>"

    # ------------------------------------------------------------------ charts and table

    def _points_of(self, run_dir: Path) -> pd.DataFrame:
        if run_dir not in self._points:
            self._points[run_dir] = points_of(run_dir)
        return self._points[run_dir]

    def runs_table(self) -> pd.DataFrame:
        """One row per recorded run (and one for the run in progress), as a DataFrame."""
        return pd.DataFrame(self._rows())

    def _rows(self, running: str | None = None) -> list[dict[str, Any]]:
        rows = [run_row(i + 1, r.label, r.status, self._points_of(r.run_dir),
                        self._changed(r.settings), r.run_dir) for i, r in enumerate(self.runs)]
        if running is not None:
            rows.append(run_row(len(rows) + 1, running, "running", pd.DataFrame(self._live),
                                {}, "…"))
        return rows

    def _refresh_table(self, running: str | None = None) -> None:
        self.table.value = runs_html(self._rows(running))

    def figure(self) -> Figure:
        """Latency and throughput vs load of the selected runs plus the live one."""
        chosen = set(self.runs_select.value)
        series = [(r.label, self._points_of(r.run_dir)) for i, r in enumerate(self.runs)
                  if i in chosen]
        if self._live:
            series.append(("running", pd.DataFrame(self._live)))
        unit = "users" if self.model.value == "closed" else "req/s"
        return panel_figure(series, load_label=f"load ({unit})")

    def redraw(self) -> None:
        """Redraw the chart: new PNG bytes in the Image widget (rendered by the front end)."""
        self.chart.value = figure_png(self.figure())

    # ------------------------------------------------------------------ display

    def widget(self) -> w.Widget:
        """The whole panel as one widget box: knob groups, load, controls, chart, table."""
        boxes = {g: [w.HTML(f"<b>{g}</b>")] for g in KNOB_GROUPS}
        for knob in KNOBS:
            boxes[knob.group].append(self.knobs[knob.key])
        boxes["Load"] += [self.workload, self.model, self.levels, self.duration_s, self.label]
        left = w.VBox([*boxes["Database"], *boxes["Scheduler"], *boxes["Agents"]])
        middle = w.VBox(boxes["Flags"])
        right = w.VBox(boxes["Load"])
        controls = w.HBox([self.run_button, self.stop_button, self.progress])
        panel = w.VBox([w.HBox([left, middle, right]), controls, self.status, self.chart,
                        w.HBox([self.runs_select]), w.HTML("<b>Runs</b>"), self.table])
        panel.add_class("orchestra-panel")
        return panel

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
