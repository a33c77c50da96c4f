"""`orchestra run | report | compare` end to end: a tiny real sweep, its report, and
compare's exit codes (0 = no significant regression, 1 = regression, 2 = bad input)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from orchestra_kit.cli import main

EXPERIMENTS = Path(__file__).parents[2] / "experiments"


def fake_run(root: Path, name: str, p99_by_repeat: list[float]) -> Path:
    """A run directory with a points table only (what compare reads)."""
    run = root / name / "20260101T000000Z-000000"
    run.mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps({"name": name, "run_id": run.name}))
    rows = [{"run_id": run.name, "point": 0, "repeat": r, "load": 8.0, "p99_ms": v,
             "throughput_rps": 1000.0 / v} for r, v in enumerate(p99_by_repeat)]
    pd.DataFrame(rows).to_csv(run / "points.csv", index=False)
    return run


@pytest.mark.timeout(120)
def test_run_then_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from orchestra_kit.lab.calibrate import CACHE_NAME, _cache_key, store_capacity

    store_capacity(tmp_path / CACHE_NAME, {"open_loop_capacity_rps": 1234.0, "processes": 2,
                                           "key": _cache_key()})
    code = main(["run", str(EXPERIMENTS / "lease_contention.toml"), "--results", str(tmp_path),
                 "--set", "load.duration_s=0.4", "--set", "sweep.load.users=[1,4]",
                 "--no-progress", "--no-charts", "--no-calibration"])
    out = capsys.readouterr().out
    assert code == 0
    run_dir = Path(out.strip().splitlines()[-1].removeprefix("results: "))
    points = pd.read_csv(run_dir / "points.csv")
    assert list(points["concurrency"]) == [1, 4]
    assert (points["n"] > 0).all() and (points["success_rate"] == 1.0).all()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["spec"]["name"] == "lease_contention"
    assert manifest["target_kind"] == "process"
    assert manifest["generator"]["calibration"]["open_loop_capacity_rps"] == 1234.0
    assert sorted(p.name for p in (run_dir / "service").iterdir()) == [
        "point000-repeat0.log", "point001-repeat0.log"]
    assert (points["target_kind"] == "process").all() and (points["service_exit_code"] == 0).all()
    assert main(["report", str(run_dir), "--no-charts"]) == 0
    assert "lease_contention" in capsys.readouterr().out


def test_run_refuses_a_bad_override_before_running(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", str(EXPERIMENTS / "lease_contention.toml"), "--results", str(tmp_path),
                 "--set", "load.users=0"])
    assert code == 2
    assert "load.users" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing ran, nothing written


def test_compare_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = fake_run(tmp_path / "a", "x", [40.0, 41.0, 39.5, 40.5, 40.2])
    same = fake_run(tmp_path / "b", "x", [40.3, 39.8, 40.9, 40.1, 39.9])
    slow = fake_run(tmp_path / "c", "x", [52.0, 53.1, 51.7, 52.6, 52.2])  # +30 %
    assert main(["compare", str(base), str(same)]) == 0
    assert "no significant" in capsys.readouterr().out.lower()
    assert main(["compare", str(base), str(slow)]) == 1
    assert "regression" in capsys.readouterr().out.lower()
    assert main(["compare", str(base), str(tmp_path / "missing")]) == 2
    capsys.readouterr()
    # +12 ms is over a 10 ms floor (still a regression), under a 15 ms one (not counted).
    p99 = ["--metric", "p99_ms"]
    assert main(["compare", str(base), str(slow), *p99, "--min-abs", "p99_ms=10"]) == 1
    assert main(["compare", str(base), str(slow), *p99, "--min-abs", "p99_ms=15"]) == 0
    assert "floor of 15 ms" in capsys.readouterr().out
    for bad in ("p99_ms", "p99_ms=-1", "p99_ms=x", "=5"):
        assert main(["compare", str(base), str(slow), "--min-abs", bad]) == 2
        assert "--min-abs" in capsys.readouterr().err
    assert main(["compare", str(base), str(slow), "--min-abs", "p50_ms=5"]) == 2
    assert "not compared" in capsys.readouterr().err
