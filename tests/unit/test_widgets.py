"""The tuning panel driven headless: knob values reach the run's manifest; errors show."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

pytest.importorskip("ipywidgets")

import pandas as pd

from orchestra_kit.errors import ConfigError
from orchestra_kit.lab.widgets import SETTINGS_KNOBS, TuningPanel
from orchestra_kit.lab.widgets_knobs import KNOB_GROUPS, KNOBS, parse_levels
from orchestra_kit.lab.widgets_view import runs_html, short_run_id

PNG = b"\x89PNG"


def _small(panel: TuningPanel) -> None:
    panel.workload.value = "hire"
    panel.levels.value = "1, 2"
    panel.duration_s.value = 0.3


def test_panel_has_every_knob_and_builds_a_spec(tmp_path: Path) -> None:
    panel = TuningPanel(results_root=tmp_path)
    assert set(panel.knobs) == set(SETTINGS_KNOBS)
    panel.knobs["database.batch_size"].value = 37
    panel.knobs["flags.enable_wal_mode"].value = False
    panel.levels.value = "3; 5"
    spec = panel.build_spec()
    assert spec.target.settings["database.batch_size"] == 37
    assert spec.target.settings["flags.enable_wal_mode"] is False
    assert spec.sweep == {"load.users": [3, 5]}
    panel.model.value = "open"
    panel.levels.value = "50, 100.5"
    assert panel.build_spec().sweep == {"load.rate_rps": [50.0, 100.5]}


async def test_clicked_run_records_the_knobs_and_redraws_chart_and_table(
        calibrated_results: Path) -> None:
    """One clicked run (each run starts a service per point) checks the click path, the
    knob values in the run's manifest, and the chart and table redrawn as points finish."""
    panel = TuningPanel(results_root=calibrated_results)
    _small(panel)
    panel.knobs["database.batch_size"].value = 50
    panel.knobs["flags.enable_query_caching"].value = False
    assert bytes(panel.chart.value).startswith(PNG)  # a placeholder chart before any run
    charts: list[bytes] = []
    tables: list[str] = []
    panel.chart.observe(lambda c: charts.append(bytes(c["new"])), names="value")
    panel.table.observe(lambda c: tables.append(c["new"]), names="value")
    panel.run_button.click()
    assert panel.task is not None
    panel.run_button.click()  # a second click while running is ignored
    run = await panel.task
    assert run is not None and panel.runs == [run]
    assert run.settings["database.batch_size"] == 50
    manifest = json.loads((run.run_dir / "manifest.json").read_text())
    assert manifest["settings"]["database"]["batch_size"] == 50
    assert manifest["settings"]["flags"]["enable_query_caching"] is False
    points = pd.read_csv(run.run_dir / "points.csv")
    assert sorted(points["load"]) == [1.0, 2.0]
    assert panel.progress.value == panel.progress.max == 2
    assert not panel.run_button.disabled and panel.stop_button.disabled
    assert (run.label, 0) in panel.runs_select.options and panel.runs_select.value == (0,)
    short = short_run_id(run.run_dir)
    assert f"<code title='{run.run_dir}'>{short}</code>" in panel.table.value
    assert "data-status='complete'" in panel.table.value
    assert panel.last_error == ""
    assert run.status == "complete" and run.points == 2
    assert "settings" not in repr(run) and run.label in repr(run)  # concise, no wall of text
    table = panel.runs_table()
    assert list(table["status"]) == ["complete"] and list(table["points"]) == [2]
    assert list(table["run_dir"]) == [str(run.run_dir)] and list(table["run"]) == [short]
    # one redraw per finished point, then the recorded run selected in the overlay
    assert len(charts) >= 3 and len(set(charts)) >= 3 and all(c.startswith(PNG) for c in charts)
    assert any("data-status='running'" in t for t in tables)
    assert "data-status='running'" not in panel.table.value
    assert panel.figure().axes[0].get_lines()  # the recorded run is selected and overlaid


@pytest.mark.parametrize(("knob", "value", "words"), [
    ("database.batch_size", 0, "database.batch_size"),
    ("agents.connection_pool_size", -3, "agents.connection_pool_size"),
])
async def test_invalid_knob_shows_an_error_and_records_nothing(
        tmp_path: Path, knob: str, value: int, words: str) -> None:
    panel = TuningPanel(results_root=tmp_path)
    _small(panel)
    panel.knobs[knob].value = value
    assert await panel.run() is None
    assert panel.runs == []
    assert words in panel.last_error and words in panel.status.value
    assert not panel.run_button.disabled
    assert not (tmp_path / "tuning").exists()


async def test_bad_levels_text_is_reported(tmp_path: Path) -> None:
    panel = TuningPanel(results_root=tmp_path)
    panel.levels.value = "two, 4"
    assert await panel.run() is None
    assert "load.users" in panel.last_error


def test_knobs_are_grouped_labelled_and_name_their_key_and_default(tmp_path: Path) -> None:
    panel = TuningPanel(results_root=tmp_path)
    assert {k.group for k in KNOBS} <= set(KNOB_GROUPS)
    for knob in KNOBS:
        widget = panel.knobs[knob.key]
        assert widget.description == knob.label and "." not in knob.label
        assert widget.tooltip.startswith(f"{knob.key} — default ")
    assert panel.knobs["database.batch_size"].tooltip == "database.batch_size — default 100"
    tip = panel.knobs["scheduler.max_api_requests_per_minute"].tooltip
    assert "default 100" in tip and "1,000,000" in tip
    shown = panel.widget()
    assert "orchestra-panel" in shown._dom_classes


@pytest.mark.parametrize(("text", "model", "words"), [
    ("2.5", "closed", "levels must be whole numbers"),
    ("two, 4", "closed", "'two' is not a number"),
    ("4, -1", "open", "levels must be greater than 0"),
    ("", "closed", "at least one load level"),
    ("nan", "open", "greater than 0"),
])
def test_parse_levels_names_the_rule(text: str, model: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        parse_levels(text, model)


def test_parse_levels_accepts_whole_floats_and_rates() -> None:
    assert parse_levels("2.0; 8", "closed") == [2, 8]
    assert parse_levels("0.5, 10", "open") == [0.5, 10.0]


async def test_bad_level_resets_the_progress_bar(tmp_path: Path) -> None:
    panel = TuningPanel(results_root=tmp_path)
    panel.progress.max, panel.progress.value = 2, 2  # as a finished run leaves it
    panel.levels.value = "2.5"
    assert await panel.run() is None
    assert "whole numbers" in panel.last_error and "whole numbers" in panel.status.value
    assert panel.progress.value == 0 and panel.progress.bar_style == "danger"


async def test_stop_cancels_cleanly_and_keeps_the_partial_run(calibrated_results: Path) -> None:
    panel = TuningPanel(results_root=calibrated_results)
    panel.workload.value, panel.levels.value, panel.duration_s.value = "hire", "1, 2, 4", 0.8
    panel.run_button.click()
    await asyncio.sleep(0)  # the clicked task starts
    assert panel.task is not None and panel.running and not panel.stop_button.disabled
    assert panel.run_button.disabled and panel.run_button.description == "Running…"
    async with asyncio.timeout(30):
        while panel.progress.value < 1:  # the first point is saved
            await asyncio.sleep(0.05)
    buttons_when_stopped: list[tuple[bool, bool]] = []  # the order the page receives them

    def on_status(change: dict[str, object]) -> None:
        if "Stopped" in str(change["new"]):
            buttons_when_stopped.append((panel.stop_button.disabled, panel.run_button.disabled))

    panel.status.observe(on_status, names="value")
    run = await panel.stop()
    assert buttons_when_stopped == [(True, False)], "Stop must be greyed out before 'Stopped'"
    assert run is not None and run.status == "stopped" and 1 <= run.points < 3
    manifest = json.loads((run.run_dir / "manifest.json").read_text())
    assert manifest["status"] == "stopped"
    assert len(pd.read_csv(run.run_dir / "points.csv")) == run.points
    assert not panel.running and panel.stop_button.disabled and not panel.run_button.disabled
    assert "Stopped" in panel.status.value and "data-status='stopped'" in panel.table.value
    assert panel.task.done() and not panel.task.cancelled()


def test_each_recorded_run_joins_the_overlay_selection(tmp_path: Path) -> None:
    panel = TuningPanel(results_root=tmp_path)
    spec = panel.build_spec()
    for i in range(3):
        (tmp_path / f"r{i}").mkdir()
        panel._record(spec, tmp_path / f"r{i}", "complete")
    assert panel.runs_select.value == (0, 1, 2)
    assert [r.label for r in panel.runs] == ["run 1: hire, 2, 8", "run 2: hire, 2, 8",
                                             "run 3: hire, 2, 8"]


def test_runs_table_shows_a_short_run_id_with_the_path_on_hover() -> None:
    assert short_run_id("/r/tuning/20261203T143012Z-a1b2c3") == "14:30:12 a1b2c3"
    assert short_run_id("r7") == "r7" and short_run_id("x" * 30) == "x" * 15 + "…"
    row = {"#": 1, "run": "14:30:12 a1b2c3", "label": "run 1: hire, 1, 2 (batch_size=7)",
           "status": "complete", "changed settings": "database.batch_size=7",
           "run_dir": "/r/tuning/20261203T143012Z-a1b2c3"}
    page = runs_html([row])
    assert "<code title='/r/tuning/20261203T143012Z-a1b2c3'>14:30:12 a1b2c3</code>" in page
    assert page.count("<tr data-status='complete'>") == 1 and "run_dir" not in page
    label_cell = page.split("run 1: hire")[0].rsplit("<td", 1)[1]
    assert "white-space:normal" in label_cell  # free text wraps instead of widening the table
