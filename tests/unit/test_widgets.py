"""The tuning panel driven headless: knob values reach the run's manifest; errors show."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("ipywidgets")

import pandas as pd

from orchestra_kit.lab.widgets import SETTINGS_KNOBS, TuningPanel


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


async def test_run_records_the_knob_values(tmp_path: Path) -> None:
    panel = TuningPanel(results_root=tmp_path)
    _small(panel)
    panel.knobs["database.batch_size"].value = 50
    panel.knobs["flags.enable_query_caching"].value = False
    run = await panel.run()
    assert run is not None and panel.runs == [run]
    assert run.settings["database.batch_size"] == 50
    manifest = json.loads((run.run_dir / "manifest.json").read_text())
    assert manifest["settings"]["database"]["batch_size"] == 50
    assert manifest["settings"]["flags"]["enable_query_caching"] is False
    points = pd.read_csv(run.run_dir / "points.csv")
    assert sorted(points["load"]) == [1.0, 2.0]
    assert panel.progress.value == panel.progress.max == 2
    assert not panel.run_button.disabled
    assert run.label in panel.runs_select.options
    assert str(run.run_dir) in panel.table.value
    assert panel.last_error == ""


async def test_button_click_runs_in_a_panel_task(tmp_path: Path) -> None:
    panel = TuningPanel(results_root=tmp_path)
    _small(panel)
    panel.levels.value = "2"
    panel.knobs["database.batch_size"].value = 7
    panel.run_button.click()
    assert panel.task is not None
    panel.run_button.click()  # a second click while running is ignored
    run = await panel.task
    assert run is not None and len(panel.runs) == 1
    manifest = json.loads((run.run_dir / "manifest.json").read_text())
    assert manifest["settings"]["database"]["batch_size"] == 7
    fig = panel.figure()  # the recorded run is selected and overlaid
    assert fig.axes[0].get_lines()


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
