"""The opencode sweep at smoke size: the real CLI, every task's file, no process left."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import psutil
import pytest

from orchestra_kit.agents import find_opencode
from orchestra_kit.config import AgentSettings
from orchestra_kit.errors import AgentUnavailableError
from orchestra_kit.lab import load_run, load_spec, run_experiment
from orchestra_kit.lab.agentstats import load_agents
from orchestra_kit.lab.capacity import agent_capacity

SPEC = Path(__file__).resolve().parents[2] / "experiments" / "opencode_sweep.toml"
USERS = 2  # one point: two real opencode agents at once (~15 s idle, ~40 s loaded)


def _our_opencode_processes(since: float, under: Path) -> list[str]:
    """opencode processes started since ``since`` in a lab workspace under ``under``
    (not another test's, run by a parallel xdist worker), still alive."""
    found = []
    for proc in psutil.process_iter(["name", "create_time"]):
        try:
            if proc.info["create_time"] < since - 1 or "opencode" not in proc.info["name"]:
                continue
            cwd = proc.cwd()
            if cwd.startswith(f"{under}/") and "orchestra-lab-" in cwd:
                found.append(f"{proc.pid} {proc.cwd()}")
        except psutil.Error:
            continue
    return found


@pytest.mark.opencode
@pytest.mark.timeout(240)
async def test_smoke_opencode_sweep_writes_every_file_and_leaves_nothing(
        calibrated_results: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        find_opencode(AgentSettings())
    except AgentUnavailableError as exc:
        pytest.skip(f"opencode CLI missing: {exc}")
    started = time.time()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the lab's workspaces go here
    spec = load_spec(SPEC, {"sweep.load.users": [USERS]})
    run_dir = await run_experiment(spec, results_root=calibrated_results,
                                   progress=False)
    run = load_run(run_dir)
    point = run.points.iloc[0]
    agents = load_agents(run_dir)
    assert run.manifest["status"] == "complete"
    assert point["n"] == USERS and point["success_rate"] == 1.0
    assert point["files_found"] == USERS  # every task's file, written by opencode's tool
    assert point["leftover_processes"] == 0
    assert point["agents_alive_max"] >= 1 and point["provider_requests"] >= 2 * USERS
    assert len(agents) == USERS and set(agents["status"]) == {"completed"}
    assert (agents["exit_code"] == 0).all() and (agents["backend"] == "opencode").all()
    assert (agents["peak_rss_mb"] > 20).all() and (agents["cpu_s"] > 0.1).all()
    assert ((agents["startup_s"] > 0) & (agents["startup_s"] < agents["wall_s"])).all()
    assert _our_opencode_processes(started, tmp_path) == []
    reading = agent_capacity(run.points)
    assert reading.max_agents == USERS and "opencode agents at most" in reading.sentence()
