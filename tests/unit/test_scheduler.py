"""Scheduler: priority order, per-employee serialisation, global limit, retries, timeouts,
cancellation, leases, events, drain and recovery — on a real Store (SQLite file)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestra_kit.agents.base import AgentEvent, AgentRequest, AgentResult, Emit
from orchestra_kit.config import SchedulerSettings
from orchestra_kit.errors import AgentError
from orchestra_kit.models import TaskStatus
from orchestra_kit.scheduler import Scheduler
from orchestra_kit.store import Store


class RecordingBackend:
    """A backend whose behaviour per task comes from a function; records what it saw."""

    name = "recording"

    def __init__(self, behave: Callable[[AgentRequest, int], Any] | None = None) -> None:
        self.behave = behave
        self.started: list[int] = []
        self.running: dict[int, str] = {}
        self.peak = 0
        self.peak_per_employee = 0
        self.calls: dict[int, int] = {}
        self.cancelled: list[int] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def run(self, request: AgentRequest, emit: Emit) -> AgentResult:
        self.calls[request.task_id] = self.calls.get(request.task_id, 0) + 1
        self.started.append(request.task_id)
        self.running[request.task_id] = request.employee
        self.peak = max(self.peak, len(self.running))
        per_emp = sum(1 for e in self.running.values() if e == request.employee)
        self.peak_per_employee = max(self.peak_per_employee, per_emp)
        emit(AgentEvent(kind="started"))
        try:
            await self.gate.wait()
            if self.behave is not None:
                out = self.behave(request, self.calls[request.task_id])
                if asyncio.iscoroutine(out):
                    out = await out
            else:
                await asyncio.sleep(0.001)
            emit(AgentEvent(kind="progress", progress=100))
            return AgentResult(summary=f"did {request.task_id}")
        except asyncio.CancelledError:
            self.cancelled.append(request.task_id)
            raise
        finally:
            del self.running[request.task_id]

    async def aclose(self) -> None:
        pass


def sched_settings(**kw: Any) -> SchedulerSettings:
    base: dict[str, Any] = {"max_concurrent_tasks": 50, "retry_backoff_s": 0.01,
                            "retry_backoff_max_s": 0.02, "shutdown_grace_s": 0.5,
                            "progress_persist_interval_s": 0.0}
    base.update(kw)
    return SchedulerSettings(**base)


def make_scheduler(store: Store, backend: Any, tmp_path: Path, **kw: Any) -> Scheduler:
    return Scheduler(store, backend, sched_settings(**kw), workspace_root=tmp_path / "sessions",
                     project_root=tmp_path / "project")


async def hire(store: Store, *names: str) -> None:
    results = await store.hire_many([{"name": n, "role": "dev"} for n in names])
    assert all(not isinstance(r, Exception) for r in results)


async def test_priority_order_and_fifo_within_priority(store: Store, tmp_path: Path) -> None:
    backend = RecordingBackend()
    backend.gate.clear()
    await hire(store, *(f"e{i}" for i in range(7)))
    async with make_scheduler(store, backend, tmp_path, max_concurrent_tasks=1) as sched:
        blocker = await sched.submit("e0", "occupy the only slot", priority=0)
        while backend.started != [blocker.id]:
            await asyncio.sleep(0.005)
        ids = {}
        for emp, prio in [("e1", 1), ("e2", 5), ("e3", 9), ("e4", 5), ("e5", 9), ("e6", 0)]:
            ids[emp] = (await sched.submit(emp, f"p{prio}", priority=prio)).id
        backend.gate.set()
        for tid in ids.values():
            assert (await sched.wait(tid, timeout_s=10)).status == TaskStatus.COMPLETED
    expected = [blocker.id] + [ids[e] for e in ("e3", "e5", "e2", "e4", "e1", "e6")]
    assert backend.started == expected


async def test_a_submitted_task_takes_a_free_slot_at_once(store: Store, tmp_path: Path) -> None:
    """With a slot free, submit() starts the task itself (no dispatcher wake-up between
    the commit and the start); a batch still starts in priority order."""
    backend = RecordingBackend()
    backend.gate.clear()
    await hire(store, "a", "b", "c", "d")
    async with make_scheduler(store, backend, tmp_path, max_concurrent_tasks=2) as sched:
        first = await sched.submit("a", "x")
        assert sched.running_count == 1  # reserved before submit() returned
        batch = await sched.submit_many([{"employee": e, "description": "y", "priority": p}
                                         for e, p in (("b", 1), ("c", 9), ("d", 5))])
        assert sched.running_count == 2
        ids = {t.priority: t.id for t in batch if not isinstance(t, Exception)}
        assert set(sched._runs) == {first.id, ids[9]}  # the batch's best took the slot
        backend.gate.set()
        for tid in (first.id, *ids.values()):
            assert (await sched.wait(tid, timeout_s=10)).status == TaskStatus.COMPLETED
    assert backend.started == [first.id, ids[9], ids[5], ids[1]]


async def test_one_running_task_per_employee_and_global_limit(store: Store, tmp_path: Path) -> None:
    async def slow(request: AgentRequest, attempt: int) -> None:
        await asyncio.sleep(0.01)

    backend = RecordingBackend(slow)
    await hire(store, *(f"e{i}" for i in range(20)))
    backend.gate.clear()  # hold the first runs so the limit is surely reached
    async with make_scheduler(store, backend, tmp_path, max_concurrent_tasks=6) as sched:
        tasks = [await sched.submit(f"e{i % 20}", f"t{i}") for i in range(120)]
        while len(backend.running) < 6:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)  # give a 7th run the chance to (wrongly) start
        assert len(backend.running) == 6
        backend.gate.set()
        finals = await asyncio.gather(*(sched.wait(t.id, timeout_s=30) for t in tasks))
    assert all(t.status == TaskStatus.COMPLETED for t in finals)
    assert backend.peak == 6  # the limit was reached and never exceeded
    assert backend.peak_per_employee == 1
    assert sorted(backend.calls) == sorted(t.id for t in tasks)  # each ran exactly once
    assert set(backend.calls.values()) == {1}
    assert sched.peak_running <= 6


async def test_retry_then_success_and_attempts_counted(store: Store, tmp_path: Path) -> None:
    def flaky(request: AgentRequest, attempt: int) -> None:
        if attempt < 3:
            err = AgentError(f"transient {attempt}")
            err.retryable = True
            raise err

    backend = RecordingBackend(flaky)
    await hire(store, "a")
    async with make_scheduler(store, backend, tmp_path, max_attempts=3) as sched:
        task = await sched.submit("a", "flaky")
        final = await sched.wait(task.id, timeout_s=10)
    assert final.status == TaskStatus.COMPLETED
    assert final.attempts == 3
    assert backend.calls[task.id] == 3


async def test_retry_budget_exhausted_fails(store: Store, tmp_path: Path) -> None:
    def always(request: AgentRequest, attempt: int) -> None:
        err = AgentError("provider down")
        err.retryable = True
        raise err

    backend = RecordingBackend(always)
    await hire(store, "a")
    async with make_scheduler(store, backend, tmp_path, max_attempts=2) as sched:
        final = await sched.wait((await sched.submit("a", "doomed")).id, timeout_s=10)
    assert final.status == TaskStatus.FAILED
    assert final.attempts == 2
    assert final.error is not None and "provider down" in final.error


async def test_non_retryable_error_fails_once(store: Store, tmp_path: Path) -> None:
    def broken(request: AgentRequest, attempt: int) -> None:
        raise AgentError("bad prompt")

    backend = RecordingBackend(broken)
    await hire(store, "a")
    async with make_scheduler(store, backend, tmp_path) as sched:
        final = await sched.wait((await sched.submit("a", "x")).id, timeout_s=10)
    assert (final.status, final.attempts) == (TaskStatus.FAILED, 1)


async def test_timeout(store: Store, tmp_path: Path) -> None:
    async def forever(request: AgentRequest, attempt: int) -> None:
        await asyncio.sleep(60)

    backend = RecordingBackend(forever)
    await hire(store, "a")
    async with make_scheduler(store, backend, tmp_path, task_timeout_s=0.2) as sched:
        final = await sched.wait((await sched.submit("a", "x")).id, timeout_s=10)
    assert final.status == TaskStatus.TIMED_OUT
    assert backend.cancelled == [final.id]  # the agent itself was stopped


async def test_cancel_queued_and_running(store: Store, tmp_path: Path) -> None:
    async def forever(request: AgentRequest, attempt: int) -> None:
        await asyncio.sleep(60)

    backend = RecordingBackend(forever)
    await hire(store, "a")
    async with make_scheduler(store, backend, tmp_path) as sched:
        running = await sched.submit("a", "long")
        queued = await sched.submit("a", "waits behind it")
        while running.id not in backend.running:
            await asyncio.sleep(0.005)
        assert (await sched.cancel(queued.id)).status == TaskStatus.CANCELLED
        assert (await sched.cancel(running.id)).status == TaskStatus.CANCELLED
        assert backend.cancelled == [running.id]
        assert queued.id not in backend.calls
        assert (await sched.cancel(running.id)).status == TaskStatus.CANCELLED  # idempotent


async def test_leases_taken_and_released_however_it_ends(store: Store, tmp_path: Path) -> None:
    seen: dict[int, list[str]] = {}

    async def check_lease(request: AgentRequest, attempt: int) -> None:
        seen[request.task_id] = [lease.path for lease in await store.list_leases(employee="a")]
        if "fail" in request.description:
            raise AgentError("boom")

    backend = RecordingBackend(check_lease)
    await hire(store, "a")
    async with make_scheduler(store, backend, tmp_path) as sched:
        ok = await sched.submit("a", "edit", files=["src/x.py"])
        bad = await sched.submit("a", "fail", files=["src/y.py"])
        assert (await sched.wait(ok.id, timeout_s=10)).status == TaskStatus.COMPLETED
        assert (await sched.wait(bad.id, timeout_s=10)).status == TaskStatus.FAILED
    assert seen[ok.id] == ["src/x.py"] and seen[bad.id] == ["src/y.py"]
    assert await store.list_leases() == []


async def test_task_waits_for_a_lease_held_by_another(store: Store, tmp_path: Path) -> None:
    backend = RecordingBackend()
    await hire(store, "a", "b")
    assert (await store.lock_files("b", ["src/shared.py"]))["src/shared.py"] == "locked"
    async with make_scheduler(store, backend, tmp_path) as sched:
        task = await sched.submit("a", "needs shared", files=["src/shared.py"])
        await asyncio.sleep(0.1)
        assert task.id not in backend.calls  # blocked, not failed
        assert (await store.get_task(task.id)).status == TaskStatus.QUEUED
        await store.release_files("b")
        assert (await sched.wait(task.id, timeout_s=10)).status == TaskStatus.COMPLETED


async def test_events_stream_until_terminal(store: Store, tmp_path: Path) -> None:
    backend = RecordingBackend()
    await hire(store, "a")
    async with make_scheduler(store, backend, tmp_path) as sched:
        task = await sched.submit("a", "watch me")
        events = [e async for e in sched.subscribe(task.id)]
    statuses = [e.status for e in events if e.kind == "status"]
    assert statuses[-1] == "completed"
    assert "running" in statuses
    assert any(e.kind == "progress" and e.progress == 100 for e in events)


async def test_progress_file_written_and_archived(store: Store, tmp_path: Path) -> None:
    backend = RecordingBackend()
    await hire(store, "a")
    async with make_scheduler(store, backend, tmp_path, progress_files=True) as sched:
        task = await sched.submit("a", "document it", files=["src/a.py"])
        await sched.wait(task.id, timeout_s=10)
    folder = tmp_path / "sessions" / "a"
    assert not (folder / "current_task.md").exists()
    archived = list((folder / "completed_tasks").glob(f"task_{task.id}_*.md"))
    assert len(archived) == 1
    assert "src/a.py: 100% complete" in archived[0].read_text()


async def test_drain_requeues_and_restart_resumes(store: Store, tmp_path: Path) -> None:
    async def forever(request: AgentRequest, attempt: int) -> None:
        await asyncio.sleep(60)

    backend = RecordingBackend(forever)
    await hire(store, "a", "b")
    sched = make_scheduler(store, backend, tmp_path, shutdown_grace_s=0.1)
    await sched.start()
    running = await sched.submit("a", "long")
    queued = await sched.submit("a", "behind")
    while running.id not in backend.running:
        await asyncio.sleep(0.005)
    await sched.aclose()
    assert (await store.get_task(running.id)).status == TaskStatus.QUEUED
    assert (await store.get_task(queued.id)).status == TaskStatus.QUEUED
    fast = RecordingBackend()
    async with make_scheduler(store, fast, tmp_path) as again:
        for tid in (running.id, queued.id):
            assert (await again.wait(tid, timeout_s=10)).status == TaskStatus.COMPLETED


async def test_recovery_of_tasks_left_running(store: Store, tmp_path: Path) -> None:
    await hire(store, "a", "b")
    t1 = await store.create_task("a", "crashed mid-run")
    t2 = await store.create_task("b", "crashed too often")
    await store.transition(t1.id, TaskStatus.RUNNING, count_attempt=True)
    for _ in range(2):
        await store.transition(t2.id, TaskStatus.RUNNING, count_attempt=True)
        await store.transition(t2.id, TaskStatus.QUEUED)
    await store.transition(t2.id, TaskStatus.RUNNING, count_attempt=True)
    backend = RecordingBackend()
    async with make_scheduler(store, backend, tmp_path, max_attempts=3) as sched:
        assert (await sched.wait(t1.id, timeout_s=10)).status == TaskStatus.COMPLETED
        failed = await store.get_task(t2.id)
    assert failed.status == TaskStatus.FAILED and "interrupted" in (failed.error or "")
    assert not await store.list_tasks(status="running")


async def test_firing_stops_the_running_agent(store: Store, tmp_path: Path) -> None:
    async def forever(request: AgentRequest, attempt: int) -> None:
        await asyncio.sleep(60)

    backend = RecordingBackend(forever)
    await hire(store, "a")
    async with make_scheduler(store, backend, tmp_path) as sched:
        task = await sched.submit("a", "long")
        while task.id not in backend.running:
            await asyncio.sleep(0.005)
        report = await store.fire("a")
        sched.fired(report)
        final = await sched.wait(task.id, timeout_s=10)
    assert final.status == TaskStatus.CANCELLED
    assert backend.cancelled == [task.id]


async def test_run_now_waits_for_the_end(store: Store, tmp_path: Path) -> None:
    backend = RecordingBackend()
    await hire(store, "a")
    async with make_scheduler(store, backend, tmp_path) as sched:
        final = await sched.run_now("a", "synchronous path")
    assert final.status == TaskStatus.COMPLETED and final.result == f"did {final.id}"


async def test_cancel_during_retry_backoff_ends_subscriptions(store: Store, tmp_path: Path) -> None:
    """A task cancelled while it waits to be retried is never run again, and anyone
    following it sees it end (no stale 'queued' state kept in memory)."""
    def fail_once(request: AgentRequest, attempt: int) -> None:
        if attempt == 1:
            err = AgentError("transient")
            err.retryable = True
            raise err

    backend = RecordingBackend(fail_once)
    await hire(store, "a")
    async with make_scheduler(store, backend, tmp_path, retry_backoff_s=0.3,
                              retry_backoff_max_s=0.3) as sched:
        task = await sched.submit("a", "flaky")
        while backend.calls.get(task.id) != 1 or task.id in backend.running:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.02)  # the failure is handled: the retry is scheduled
        assert (await sched.cancel(task.id)).status == TaskStatus.CANCELLED
        await asyncio.sleep(0.5)  # past the backoff: the timer fires
        final = await sched.wait(task.id, timeout_s=5)
    assert final.status == TaskStatus.CANCELLED
    assert backend.calls[task.id] == 1  # never ran again
