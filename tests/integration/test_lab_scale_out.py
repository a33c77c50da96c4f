"""``experiments/scale_out.toml`` at smoke size: one SQLite instance and PostgreSQL with
1..4 instances (``serve --workers N``) on the session's PostgreSQL, a fresh schema per
point, one row per (database, instances) in the report, the USL over instances."""

from __future__ import annotations

import json
import math
from pathlib import Path

from test_scale_out import db_rows

from orchestra_kit.lab.report import build_report
from orchestra_kit.lab.spec import load_spec
from orchestra_kit.lab.sweep import run_experiment
from orchestra_kit.store.pgserver import PgServer

SPEC = Path(__file__).parents[2] / "experiments" / "scale_out.toml"


async def test_scale_out_spec_runs_every_database_and_instance_count(
        tmp_path: Path, pg_server: PgServer) -> None:
    spec = load_spec(SPEC, {"target.database_url": pg_server.url,
                            "sweep.workload.kind": ["hire"], "load.users": 4,
                            "load.duration_s": 0.3, "load.grace_s": 5.0})
    run_dir = await run_experiment(spec, results_root=tmp_path, progress=False,
                                   calibration=False)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["failed_points"] == []
    assert manifest["database"] == ["postgresql", "sqlite"]
    assert manifest["instances"] == [1, 2, 3, 4]
    report = build_report(run_dir, charts=False)
    table = report.table
    rows = sorted(zip(table["database"], table["instances"], strict=True))
    assert rows == [("postgresql", 1), ("postgresql", 2), ("postgresql", 3),
                    ("postgresql", 4), ("sqlite", 1)]
    assert (table["n"] > 0).all() and (table["success_%"] == 100).all()
    assert "USL over PostgreSQL instances" in report.reading
    points = report.run.points
    four = points[points["instances"] == 4].iloc[0]
    assert math.isfinite(four["service_cpu_s"]) and four["service_cpu_s"] > 0  # the workers'
    assert four["service_exit_code"] == 0  # the supervisor and its workers drained
    leftover = await db_rows(pg_server.url, "SELECT nspname FROM pg_namespace"
                                            " WHERE nspname LIKE 'lab_p%'")
    assert leftover == []  # each point's schema dropped after it
