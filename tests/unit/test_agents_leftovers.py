"""RunRecords: runs of a live server are left alone; a dead server's runs are ended."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from orchestra_kit.agents.leftovers import MARKER_ENV, RunRecords, process_start_ticks


async def test_runs_of_a_live_server_are_left_alone(tmp_path: Path) -> None:
    records = RunRecords(tmp_path / "runs")
    token = records.new(7)  # recorded by this (live) process
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import time; time.sleep(30)", env={**os.environ, MARKER_ENV: token})
    try:
        records.started(token, proc.pid)
        data = json.loads((tmp_path / "runs" / f"{token}.json").read_text())
        assert (data["task_id"], data["pid"], data["start"]) == (7, proc.pid,
                                                                process_start_ticks(proc.pid))
        assert await records.end_leftovers(grace_s=0.2) == []
        assert proc.returncode is None and (tmp_path / "runs" / f"{token}.json").exists()
    finally:
        proc.kill()
        await proc.wait()


async def test_runs_of_a_dead_server_are_ended_and_forgotten(tmp_path: Path) -> None:
    records = RunRecords(tmp_path / "runs")
    token = records.new(7)
    path = tmp_path / "runs" / f"{token}.json"
    data = json.loads(path.read_text())
    data["owner_start"] = -1  # the same pid, another life: that server is gone
    path.write_text(json.dumps(data))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        " time.sleep(30)", env={**os.environ, MARKER_ENV: token}, start_new_session=True)
    try:
        await asyncio.sleep(0.2)  # SIGTERM ignored from here on: SIGKILL must follow
        assert await records.end_leftovers(grace_s=0.3) == [proc.pid]
        async with asyncio.timeout(5):
            assert await proc.wait() == -9
        assert not path.exists()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
