"""Batched progress-file writes: one worker-thread job for every file queued meanwhile,
written in order, never through a planted link, and none lost at shutdown."""

from __future__ import annotations

import asyncio
from pathlib import Path

from orchestra_kit.agents.base import AgentEvent, AgentRequest, AgentResult, Emit
from orchestra_kit.config import SchedulerSettings
from orchestra_kit.models import Task
from orchestra_kit.scheduler import Scheduler
from orchestra_kit.scheduler.progressfiles import BatchedWriter, WriteItem, write_batch
from orchestra_kit.store import Store


def task(task_id: int, employee: str) -> Task:
    return Task(id=task_id, employee=employee, description="d")


async def test_writes_queued_together_share_one_job_and_keep_their_order(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    writer = BatchedWriter(root)
    writes = [writer.write(task(1, "a"), "current_task.md", "running 1")]
    writes += [writer.write(task(i, f"e{i % 3}"), f"completed_tasks/task_{i}.md", f"done {i}",
                            remove="current_task.md") for i in range(1, 31)]
    await asyncio.gather(*writes)
    assert (writer.jobs, writer.files) == (1, 31)
    for i in range(1, 31):
        assert (root / f"e{i % 3}" / "completed_tasks" / f"task_{i}.md").read_text() == f"done {i}"
    assert (root / "a" / "current_task.md").read_text() == "running 1"
    assert not any((root / f"e{k}" / "current_task.md").exists() for k in range(3))


async def test_archive_then_remove_in_one_batch_leaves_no_current_file(tmp_path: Path) -> None:
    writer = BatchedWriter(tmp_path)
    await asyncio.gather(writer.write(task(1, "a"), "current_task.md", "running"),
                         writer.write(task(1, "a"), "completed_tasks/t1.md", "done",
                                      remove="current_task.md"))
    assert writer.jobs == 1
    assert not (tmp_path / "a" / "current_task.md").exists()
    assert (tmp_path / "a" / "completed_tasks" / "t1.md").read_text() == "done"


async def test_a_cancelled_writer_still_gets_its_file_by_aclose(tmp_path: Path) -> None:
    writer = BatchedWriter(tmp_path)
    waiter = asyncio.ensure_future(writer.write(task(7, "a"), "completed_tasks/t7.md", "done"))
    await asyncio.sleep(0)  # queued, the job created
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    await writer.aclose()
    assert (tmp_path / "a" / "completed_tasks" / "t7.md").read_text() == "done"


def test_a_planted_link_fails_only_its_own_items(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "ws"
    (root / "bad").mkdir(parents=True)
    (root / "bad" / "completed_tasks").symlink_to(outside, target_is_directory=True)
    (root / "gone").symlink_to(outside, target_is_directory=True)
    results = write_batch(root, [WriteItem("bad", "completed_tasks/x.md", "x"),
                                 WriteItem("good", "completed_tasks/y.md", "y"),
                                 WriteItem("gone", "current_task.md", "z"),
                                 WriteItem("bad", "current_task.md", "w")])
    assert [isinstance(r, OSError) for r in results] == [True, False, True, False]
    assert list(outside.iterdir()) == []
    assert (root / "good" / "completed_tasks" / "y.md").read_text() == "y"
    assert (root / "bad" / "current_task.md").read_text() == "w"


class QuickBackend:
    name = "quick"

    def __init__(self) -> None:
        self.gate = asyncio.Event()

    async def run(self, request: AgentRequest, emit: Emit) -> AgentResult:
        emit(AgentEvent(kind="started"))
        await self.gate.wait()
        return AgentResult(summary=f"did {request.task_id}")

    async def aclose(self) -> None:
        pass


async def test_every_finished_task_has_its_archive_after_close(store: Store, tmp_path: Path) -> None:
    names = [f"w{i}" for i in range(20)]
    await store.hire_many([{"name": n, "role": "dev"} for n in names])
    backend = QuickBackend()
    settings = SchedulerSettings(max_concurrent_tasks=20, shutdown_grace_s=5.0,
                                 progress_persist_interval_s=0.0, progress_files=True)
    sched = Scheduler(store, backend, settings, workspace_root=tmp_path / "sessions",
                      project_root=tmp_path / "project")
    await sched.start()
    tasks = await sched.submit_many([{"employee": n, "description": f"t{k}"}
                                     for n in names for k in range(2)])
    async with asyncio.timeout(5):
        while sched.stats()["running"] < 20:
            await asyncio.sleep(0.005)
    backend.gate.set()  # all end together, as close begins
    await sched.aclose()
    finished = []
    for t in tasks:
        assert isinstance(t, Task)
        now = await store.get_task(t.id)
        if now.terminal:
            finished.append(now)
            folder = tmp_path / "sessions" / now.employee / "completed_tasks"
            assert len(list(folder.glob(f"task_{now.id}_*.md"))) == 1, now.id
    assert len(finished) >= 20
