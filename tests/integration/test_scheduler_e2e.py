"""The scheduler end to end with real parts: the real opencode CLI against the fake
provider, the OpenAI backend against a faulty fake provider, and a SIGKILLed process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from orchestra_kit.agents import (
    HttpClientPool,
    OpenAIBackend,
    OpencodeBackend,
    SimulatedBackend,
    find_opencode,
)
from orchestra_kit.config import (
    AgentSettings,
    DatabaseSettings,
    OptimizationFlags,
    SchedulerSettings,
)
from orchestra_kit.errors import AgentUnavailableError
from orchestra_kit.fakellm import FakeLLM, FakeLLMConfig, write_file_script
from orchestra_kit.models import TaskStatus
from orchestra_kit.scheduler import Scheduler
from orchestra_kit.store import Store

FAST = {"ttft_ms": 5.0, "ttft_jitter_ms": 0.0, "tokens_per_s": 5000.0}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    root = tmp_path / "project"
    root.mkdir()
    async with Store(DatabaseSettings(path=str(tmp_path / "e2e.db")), OptimizationFlags(),
                     project_root=root) as s:
        yield s


def _opencode_bin() -> str:
    try:
        return str(find_opencode(AgentSettings()))
    except AgentUnavailableError as exc:
        pytest.skip(f"opencode CLI missing: {exc}")


@pytest.mark.opencode
@pytest.mark.timeout(300)
async def test_real_opencode_task_writes_file_and_releases_leases(store: Store, tmp_path: Path) -> None:
    root = tmp_path / "project"
    workspace_root = root / "sessions"
    target = workspace_root / "alice" / "hello.txt"
    content = "hello from a real opencode agent\n"
    config = FakeLLMConfig(script=write_file_script(str(target), content), **FAST)
    await store.hire("alice", "developer")
    async with FakeLLM(config) as fake:
        agents = AgentSettings(backend="opencode", base_url=fake.base_url, opencode_bin=_opencode_bin())
        backend = OpencodeBackend(agents, state_dir=tmp_path / "opencode-state")
        settings = SchedulerSettings(task_timeout_s=180.0, max_attempts=1, progress_files=True)
        async with Scheduler(store, backend, settings, agents=agents, workspace_root=workspace_root,
                             project_root=root) as sched:
            task = await sched.submit("alice", "Write hello.txt", files=["sessions/alice/hello.txt"])
            events = []
            async for event in sched.subscribe(task.id):
                events.append(event)
                if event.kind == "status" and event.status == "running":
                    leases = await store.list_leases(employee="alice")
                    assert [lease.path for lease in leases] == ["sessions/alice/hello.txt"]
            final = await store.get_task(task.id)
    assert final.status == TaskStatus.COMPLETED, final.error
    assert target.read_text() == content
    assert await store.list_leases() == []
    assert final.progress == 100
    assert any(e.kind == "file" and e.data.get("path") == "sessions/alice/hello.txt" for e in events)
    assert not backend.running


@pytest.mark.opencode
@pytest.mark.timeout(300)
async def test_cancelled_opencode_task_leaves_no_process(store: Store, tmp_path: Path) -> None:
    root = tmp_path / "project"
    await store.hire("bob", "developer")
    async with FakeLLM(FakeLLMConfig(rate_hang=1.0, hang_max_s=120.0, **FAST)) as fake:
        agents = AgentSettings(backend="opencode", base_url=fake.base_url, opencode_bin=_opencode_bin())
        backend = OpencodeBackend(agents, state_dir=tmp_path / "opencode-state")
        async with Scheduler(store, backend, SchedulerSettings(), agents=agents,
                             workspace_root=root / "sessions", project_root=root) as sched:
            task = await sched.submit("bob", "Think forever")
            for _ in range(1200):
                if task.id in backend.running:
                    break
                await asyncio.sleep(0.1)
            pid = backend.running[task.id]
            final = await sched.cancel(task.id)
    assert final.status == TaskStatus.CANCELLED
    assert not backend.running
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # the whole process group is gone


@pytest.mark.timeout(120)
async def test_faulty_provider_every_task_terminal_and_retry_after_respected(
        store: Store, tmp_path: Path) -> None:
    """20 % of provider calls fail (429 with Retry-After, 500, hangs)."""
    root = tmp_path / "project"
    retry_after_s = 0.3
    config = FakeLLMConfig(seed=5, rate_429=0.08, rate_500=0.06, rate_hang=0.06,
                           retry_after_s=retry_after_s, hang_max_s=30.0, record_bodies=True,
                           ttft_ms=10.0, ttft_jitter_ms=2.0, tokens_per_s=2000.0, output_tokens=10)
    names = [f"w{i}" for i in range(8)]
    await store.hire_many([{"name": n, "role": "dev"} for n in names])
    async with FakeLLM(config) as fake:
        agents = AgentSettings(backend="openai", base_url=fake.base_url, request_timeout=1.0,
                               max_retries=2)
        async with HttpClientPool(16, True, 5.0) as pool:
            backend = OpenAIBackend(agents, pool, backoff_base_s=0.05, backoff_max_s=1.0)
            settings = SchedulerSettings(max_attempts=3, retry_backoff_s=0.05, retry_backoff_max_s=0.2,
                                         task_timeout_s=20.0)
            async with Scheduler(store, backend, settings, agents=agents,
                                 workspace_root=root / "sessions", project_root=root) as sched:
                tasks = [await sched.submit(names[i % 8], f"fault task {i}") for i in range(40)]
                finals = await asyncio.gather(*(sched.wait(t.id, timeout_s=100) for t in tasks))
        log = list(fake.requests)
    assert all(t.terminal for t in finals)
    assert await store.list_tasks(status="running") == []
    assert sum(t.status == TaskStatus.COMPLETED for t in finals) >= 30  # retries rescue most
    outcomes = {e.outcome for e in log}
    assert {"429", "500", "hang"} <= outcomes, outcomes
    assert backend.retries <= backend.retry_budget_floor + agents.retry_budget_ratio * backend.calls
    by_task: dict[str, list[float]] = defaultdict(list)
    after_429: dict[str, set[int]] = defaultdict(set)
    for entry in log:
        text = str(entry.body)
        key = next((f"fault task {i}" for i in range(40) if f"fault task {i}'" in text
                    or f'fault task {i}"' in text or f"fault task {i}\\n" in text), None)
        if key is None:
            continue
        if entry.outcome == "429":
            after_429[key].add(len(by_task[key]))
        by_task[key].append(entry.t_received)
    checked = 0
    for key, times in by_task.items():
        for idx in after_429[key]:
            if idx + 1 < len(times):
                assert times[idx + 1] - times[idx] >= retry_after_s * 0.95, (key, times)
                checked += 1
    assert checked > 0


CHILD = textwrap.dedent("""
    import asyncio, sys
    from pathlib import Path
    from orchestra_kit.agents import SimulatedBackend
    from orchestra_kit.config import AgentSettings, DatabaseSettings, OptimizationFlags, SchedulerSettings
    from orchestra_kit.scheduler import Scheduler
    from orchestra_kit.store import Store

    async def main(db, root):
        async with Store(DatabaseSettings(path=db), OptimizationFlags(), project_root=Path(root)) as store:
            await store.hire_many([{"name": f"c{i}", "role": "dev"} for i in range(5)])
            backend = SimulatedBackend(AgentSettings(sim_latency_ms=60000.0, sim_jitter_ms=0.0))
            async with Scheduler(store, backend, SchedulerSettings(max_concurrent_tasks=3),
                                 workspace_root=Path(root) / "s", project_root=Path(root)) as sched:
                for i in range(20):
                    await sched.submit(f"c{i % 5}", f"crash task {i}")
                while sched.stats()["running"] < 3:
                    await asyncio.sleep(0.01)
                while len(await store.list_tasks(status="running")) < 3:
                    await asyncio.sleep(0.01)
                print("READY", flush=True)
                await asyncio.sleep(600)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
""")


@pytest.mark.timeout(120)
async def test_sigkill_with_tasks_queued_and_running_then_recovery(tmp_path: Path) -> None:
    root = tmp_path / "project"
    root.mkdir()
    db = tmp_path / "crash.db"
    proc = await asyncio.to_thread(subprocess.Popen, [sys.executable, "-c", CHILD, str(db), str(root)],
                                   stdout=subprocess.PIPE, text=True)
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)  # type: ignore[union-attr]
        assert line.strip() == "READY"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()  # type: ignore[union-attr]
    async with Store(DatabaseSettings(path=str(db)), OptimizationFlags(), project_root=root) as store:
        before = await store.list_tasks(status="running")
        assert len(before) == 3
        crashed = {t.id for t in before}
        report = await store.recover(max_attempts=3)
        assert set(report.requeued_task_ids) == crashed and not report.failed_task_ids
        assert await store.list_tasks(status="running") == []
        backend = SimulatedBackend(AgentSettings(sim_latency_ms=1.0, sim_jitter_ms=0.0))
        async with Scheduler(store, backend, SchedulerSettings(max_concurrent_tasks=5),
                             workspace_root=root / "s", project_root=root) as sched:
            tasks = await store.list_tasks(limit=100)
            finals = await asyncio.gather(*(sched.wait(t.id, timeout_s=60) for t in tasks))
        assert len(finals) == 20
        assert all(t.status == TaskStatus.COMPLETED for t in finals)
        assert all(t.attempts == 2 for t in finals if t.id in crashed)  # ran again after the crash
