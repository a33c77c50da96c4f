"""The chat workload and lab (smoke sizes), and the `orchestra fake-slack` command."""

from __future__ import annotations

import asyncio
import math
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp
from chat_fixtures import SECRET, chat_service

from orchestra_kit.lab import load_chat_run, load_run, load_spec, run_chat_sweep, run_experiment
from orchestra_kit.lab.chat_lab import run_chat_point

ROOT = Path(__file__).resolve().parents[2]
FAST = {"agents.sim_latency_ms": 5.0, "agents.sim_jitter_ms": 0.0,
        "scheduler.max_api_requests_per_minute": 1e6, "scheduler.api_burst": 1000}


async def test_a_chat_point_times_ack_first_reply_and_completion() -> None:
    row, timings = await run_chat_point(3, overrides=FAST, duration_s=0.5, seed=1)
    assert row["users"] == 3 and row["messages"] == len(timings) >= 3
    assert row["completed"] == row["messages"] and row["acks_over_3s"] == 0
    for t in timings:
        assert t.status == 200 and t.outcome == "completed"
        assert 0 < t.ack_ms and 0 < t.first_reply_ms <= t.completion_ms
    worst = max(t.completion_ms for t in timings)
    assert row["completion_max_ms"] == round(worst, 3) >= row["completion_p50_ms"]


async def test_chat_sweep_saves_its_points_and_messages(tmp_path: Path) -> None:
    spec = load_spec(ROOT / "experiments" / "chat_sweep.toml", {
        "sweep.load.users": [1, 2], "load.duration_s": 0.3, "target.settings": FAST})
    rows, run_dir = await run_chat_sweep(spec, results_root=tmp_path)
    points, messages = load_chat_run(run_dir)
    assert list(points["users"]) == [1, 2] and [r["users"] for r in rows] == [1, 2]
    assert len(messages) == sum(r["messages"] for r in rows)
    assert set(messages["outcome"]) == {"completed"}
    assert not any(math.isnan(v) for v in messages["completion_ms"])


async def test_chat_workload_runs_in_the_generic_sweep(calibrated_results: Path) -> None:
    spec = load_spec(ROOT / "experiments" / "chat_sweep.toml", {
        "sweep.load.users": [2], "load.duration_s": 0.3, "target.settings": FAST})
    run = load_run(await run_experiment(spec, results_root=calibrated_results, progress=False))
    (point,) = run.points.to_dict("records")
    assert point["n"] >= 2 and point["success_rate"] == 1.0


async def _start(*args: str) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "orchestra_kit", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRA_")})
    assert proc.stdout is not None
    async with asyncio.timeout(20):
        line = (await proc.stdout.readline()).decode()
    return proc, line


async def test_fake_slack_command_serves_and_sends(tmp_path: Path) -> None:
    proc, line = await _start("fake-slack", "--port", "0")
    try:
        url = re.search(r"listening on (http://\S+)", line)
        assert url, line
        async with (aiohttp.ClientSession() as http,
                    http.post(f"{url.group(1)}/api/auth.test",
                              headers={"Authorization": "Bearer xoxb-x"}) as resp):
            assert (await resp.json())["user_id"] == "UFAKEBOT"
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            out, _ = await proc.communicate()
    assert proc.returncode == 0 and b"1 calls recorded" in out
    async with chat_service(tmp_path) as (svc, _slack):
        await svc.state.store.hire("alice", "developer")
        sender = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "orchestra_kit", "fake-slack", "send", "--target",
            f"{svc.url}/slack/events", "@alice write docs/a.md",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "ORCHESTRA_CHAT__SLACK_SIGNING_SECRET": SECRET})
        async with asyncio.timeout(30):
            out, err = await sender.communicate()
        assert sender.returncode == 0, err.decode()
        assert out.startswith(b"HTTP 200") and SECRET.encode() not in out + err
        assert [t.files for t in await svc.state.store.list_tasks()] == [("docs/a.md",)]
