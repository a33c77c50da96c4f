"""Progress of running tasks is written in batches by one flusher, never after the end,
and current_task.md exists only for a task that outlives the persist interval."""

from __future__ import annotations

import asyncio
from pathlib import Path

from orchestra_kit.agents.base import AgentEvent, AgentRequest, AgentResult, Emit
from orchestra_kit.config import DatabaseSettings, OptimizationFlags, SchedulerSettings
from orchestra_kit.models import TaskStatus
from orchestra_kit.scheduler import Scheduler
from orchestra_kit.store import Store


class HoldingBackend:
    """Emits a progress and then waits for ``release`` (per task)."""

    name = "holding"

    def __init__(self) -> None:
        self.release: dict[int, asyncio.Event] = {}

    async def run(self, request: AgentRequest, emit: Emit) -> AgentResult:
        gate = self.release.setdefault(request.task_id, asyncio.Event())
        emit(AgentEvent(kind="progress", progress=40))
        await gate.wait()
        emit(AgentEvent(kind="progress", progress=90))
        return AgentResult(summary="done")

    async def aclose(self) -> None:
        """Nothing held."""


async def test_progress_flushed_while_running_and_never_after_the_end(tmp_path: Path) -> None:
    backend = HoldingBackend()
    settings = SchedulerSettings(progress_persist_interval_s=0.05, progress_files=True)
    async with Store(DatabaseSettings(path=str(tmp_path / "s.db")), OptimizationFlags(),
                     project_root=tmp_path) as store:
        await store.hire_many([{"name": n, "role": "dev"} for n in ("a", "b")])
        async with Scheduler(store, backend, settings, workspace_root=tmp_path / "ws",
                             project_root=tmp_path) as sched:
            tasks = [await sched.submit(n, "work") for n in ("a", "b")]
            current = tmp_path / "ws" / "a" / "current_task.md"
            for _ in range(300):  # both running, 40 % written by the flusher, the file made
                got = [await store.get_task(t.id) for t in tasks]
                if current.exists() and all(
                        t.status == TaskStatus.RUNNING and t.progress == 40 for t in got):
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError(f"progress or current_task.md never written: {got}")
            for t in tasks:
                backend.release[t.id].set()
            done = [await sched.wait(t.id, timeout_s=5) for t in tasks]
            await asyncio.sleep(0.15)  # flushes after the end must not touch them
        assert [t.status for t in done] == [TaskStatus.COMPLETED] * 2
        assert [(await store.get_task(t.id)).progress for t in tasks] == [100, 100]
        assert not (tmp_path / "ws" / "a" / "current_task.md").exists()


async def test_set_progress_many_skips_tasks_not_running(tmp_path: Path) -> None:
    async with Store(DatabaseSettings(path=str(tmp_path / "s.db")), OptimizationFlags(),
                     project_root=tmp_path) as store:
        await store.hire("a", "dev")
        running, queued = (await store.create_task("a", "x"), await store.create_task("a", "y"))
        await store.transition(running.id, TaskStatus.RUNNING)
        await store.set_progress_many({running.id: 30, queued.id: 60})
        assert (await store.get_task(running.id)).progress == 30
        assert (await store.get_task(queued.id)).progress == 0
