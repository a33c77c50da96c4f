"""Crash safety: SIGKILL a writing child at random moments; nothing acknowledged is lost."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import sys
from pathlib import Path

from orchestra_kit.config import DatabaseSettings, OptimizationFlags
from orchestra_kit.store import Store

CHILD = Path(__file__).with_name("crash_writer.py")
TRIALS = 20


def acknowledged(out: Path) -> tuple[list[str], list[int], list[int]]:
    names, tasks, running = [], [], []
    text = out.read_text()
    complete = text if text.endswith("\n") else text.rsplit("\n", 1)[0]
    for line in complete.splitlines():
        kind, _, value = line.partition(" ")
        if kind == "E":
            names.append(value)
        elif kind == "T":
            tasks.append(int(value))
        elif kind == "R":
            running.append(int(value))
    return names, tasks, running


async def run_and_kill(db: Path, out: Path, delay_s: float) -> None:
    with out.open("w") as fh:
        proc = await asyncio.create_subprocess_exec(sys.executable, str(CHILD), str(db),
                                                    stdout=fh)
        try:
            async with asyncio.timeout(20):
                while "READY" not in out.read_text():
                    assert proc.returncode is None, "child died before READY"
                    await asyncio.sleep(0.01)
            await asyncio.sleep(delay_s)
        finally:
            proc.kill()  # SIGKILL
            await proc.wait()
    assert proc.returncode == -9


def check_present(db: Path, names: list[str], tasks: list[int]) -> None:
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        have_names = {r[0] for r in conn.execute("SELECT name FROM employees")}
        have_tasks = {r[0] for r in conn.execute("SELECT id FROM tasks")}
    assert set(names) <= have_names, set(names) - have_names
    assert set(tasks) <= have_tasks, set(tasks) - have_tasks


async def test_sigkill_loses_no_acknowledged_write(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    rng = random.Random(20261126)
    total_names = total_running = 0
    for trial in range(TRIALS):
        out = tmp_path / f"out-{trial}.txt"
        await run_and_kill(db, out, rng.uniform(0.0, 0.4))
        names, tasks, running = acknowledged(out)
        total_names += len(names)
        total_running += len(running)
        check_present(db, names, tasks)
        async with Store(DatabaseSettings(path=str(db)), OptimizationFlags(),
                         project_root=tmp_path) as store:
            await store.recover(max_attempts=3)
            assert (await store.counts())["tasks_running"] == 0
            for tid in running[-5:]:
                assert (await store.get_task(tid)).status in ("queued", "failed")
    assert total_names > TRIALS  # the child really wrote before being killed
    assert total_running > 0
