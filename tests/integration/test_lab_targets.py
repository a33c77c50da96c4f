"""The lab's targets and failure paths: `orchestra serve` as a child process per point, a
service that cannot start (a recorded point failure, never a hang), a point with no
successful request (the run completes and reports), an external server answering 200."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from orchestra_kit.cli import main
from orchestra_kit.config import Settings
from orchestra_kit.lab import target as target_mod
from orchestra_kit.lab.report import build_report
from orchestra_kit.lab.spec import parse_spec
from orchestra_kit.lab.sweep import run_experiment
from orchestra_kit.lab.target import ServiceProcess, ServiceStartError, open_target


def _spec(**sections: object) -> dict[str, object]:
    doc: dict[str, object] = {"name": "t", "seed": 1,
                              "load": {"model": "closed", "users": 2, "duration_s": 0.4}}
    doc.update(sections)
    return doc


async def test_process_target_serves_and_reports_its_facts(tmp_path: Path) -> None:
    log = tmp_path / "svc.log"
    async with open_target("process", overrides={"database.batch_size": 7},
                           log_path=log) as target:
        assert target.url.startswith("http://127.0.0.1:")
        import aiohttp

        async with aiohttp.ClientSession() as s, s.get(target.url + "/status") as resp:
            assert resp.status == 200
    facts = target.facts
    assert facts["kind"] == "process" and facts["exit_code"] == 0
    assert facts["cpu_s"] >= 0 and facts["peak_rss_mb"] > 10
    assert "serving on" in log.read_text()


async def test_a_service_that_cannot_start_raises_with_its_log(tmp_path: Path) -> None:
    bad = Settings().with_overrides({"server.host": "192.0.2.1", "server.port": 0,
                                     "database.path": str(tmp_path / "x.db"),
                                     "project_root": str(tmp_path)})
    with pytest.raises(ServiceStartError, match="cannot listen") as info:
        async with ServiceProcess(bad, log_path=tmp_path / "bad.log", start_timeout_s=20):
            pass
    assert "exited with status 1" in str(info.value)


async def test_failed_points_are_recorded_and_the_run_reports(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(target_mod, "serve_command", lambda config: [
        sys.executable, "-c", "import sys; print('boom: no database'); sys.exit(3)"])
    spec = parse_spec(_spec(sweep={"load.users": [1, 2]}))
    run_dir = await run_experiment(spec, results_root=tmp_path, progress=False,
                                   calibration=False)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["target_kind"] == "process"
    assert [f["point"] for f in manifest["failed_points"]] == [0, 1]
    assert "boom: no database" in manifest["failed_points"][0]["error"]
    report = build_report(run_dir, charts=True)
    assert "the point failed" in report.reading
    assert report.charts == []  # nothing to draw, and no crash trying


def test_zero_success_point_completes_and_reports(tmp_path: Path, truth_url: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "zero.toml"
    spec.write_text(f'name = "zero"\n[target]\nkind = "url"\nurl = "{truth_url}"\n'
                    '[workload]\nkind = "read_mix"\nteam_size = 1\n'
                    '[load]\nmodel = "open"\nrate_rps = 50.0\nduration_s = 0.4\n')
    # read_mix's setup hires through /employees/batch, which the truth server lacks (404):
    # the point fails at setup; the run still completes, reports and exits 0.
    code = main(["run", str(spec), "--results", str(tmp_path), "--no-progress",
                 "--no-calibration"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "1 point(s) failed" in captured.err and "point 0 repeat 0" in captured.err
    run_dir = Path(captured.out.strip().splitlines()[-1].removeprefix("results: "))
    points = pd.read_csv(run_dir / "points.csv")
    assert points["n_ok"].tolist() == [0]
    assert main(["report", str(run_dir)]) == 0


def test_zero_success_requests_still_report(tmp_path: Path, truth_url: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    # Every request answers 404 (the URL has a prefix the server does not know).
    spec = tmp_path / "none.toml"
    spec.write_text(f'name = "none"\n[target]\nkind = "url"\nurl = "{truth_url}/missing"\n'
                    '[workload]\nkind = "health"\n'
                    '[load]\nmodel = "closed"\nusers = 2\nduration_s = 0.3\n'
                    '[sweep]\n"load.users" = [1, 2]\n[slo]\np99_ms = 50.0\n')
    code = main(["run", str(spec), "--results", str(tmp_path), "--no-progress",
                 "--no-calibration"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    run_dir = Path(captured.out.strip().splitlines()[-1].removeprefix("results: "))
    points = pd.read_csv(run_dir / "points.csv")
    assert (points["n"] > 0).all() and (points["n_ok"] == 0).all()
    assert points["p99_ms"].isna().all()
    assert main(["report", str(run_dir)]) == 0
    assert "No load meets the SLO" in capsys.readouterr().out


async def test_hire_against_a_server_answering_200_is_all_success(
        tmp_path: Path, truth_url: str) -> None:
    spec = parse_spec(_spec(target={"kind": "url", "url": truth_url},
                            workload={"kind": "hire"},
                            load={"model": "open", "rate_rps": 100.0, "duration_s": 0.5}))
    run_dir = await run_experiment(spec, results_root=tmp_path, progress=False,
                                   calibration=False)
    points = pd.read_csv(run_dir / "points.csv")
    assert points["n"].iloc[0] >= 30
    assert points["success_rate"].tolist() == [1.0]
