"""The soak with faults at smoke size: 15 s, SIGKILL + restart every 5 s, provider faults.

Nothing acknowledged may be lost and no task may stay stuck; the figures are present.
Full size: `orchestra run experiments/soak.toml` (10 minutes).
"""

from __future__ import annotations

import json
from pathlib import Path

from orchestra_kit.lab.soak import run_soak
from orchestra_kit.lab.soak_spec import load_soak_spec

SPEC = Path(__file__).parents[2] / "experiments" / "soak.toml"


async def test_soak_smoke_loses_nothing(tmp_path: Path) -> None:
    spec = load_soak_spec(SPEC, {"soak.duration_s": 15.0, "soak.restart_every_s": 5.0,
                                 "soak.settle_s": 60.0, "soak.users": 4})
    run_dir = await run_soak(spec, results_root=tmp_path, echo=lambda *_: None)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["restarts"] == 2
    assert summary["acked_hires"] > 0 and summary["acked_tasks"] > 0
    assert summary["lost_hires_count"] == 0 and summary["lost_tasks_count"] == 0, summary
    assert summary["stuck_tasks"] == 0, summary["task_statuses"]
    assert 0 < summary["availability"] < 1  # SIGKILLs cost something, and most succeeded
    assert summary["failed"] > 0 and summary["recovery_s_max"] < 60
    assert len(summary["rss_lives"]) == 3 and summary["rss_mb_end"] > 0
    for name in ("requests.csv", "restarts.csv", "rss.csv", "manifest.json"):
        assert (run_dir / name).stat().st_size > 0
    assert run_dir.parent.name == "soak"
