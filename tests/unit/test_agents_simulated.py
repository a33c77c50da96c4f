"""SimulatedBackend: seeded, reproducible, cheap, cancellable; and the backend factory."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from orchestra_kit.agents import (
    AgentBackend,
    HttpClientPool,
    OpenAIBackend,
    SimulatedBackend,
    make_backend,
    model_for,
)
from orchestra_kit.agents.base import AgentEvent, AgentRequest
from orchestra_kit.config import AgentSettings
from orchestra_kit.errors import AgentError, AgentUnavailableError


def req(task_id: int = 1) -> AgentRequest:
    return AgentRequest(task_id=task_id, employee="bob", description="do it", model="m",
                        files=("a.py",))


async def test_success_events_and_result() -> None:
    backend = SimulatedBackend(AgentSettings(sim_latency_ms=4, sim_jitter_ms=0))
    events: list[AgentEvent] = []
    result = await backend.run(req(), events.append)
    assert [e.kind for e in events] == ["started"] + ["progress"] * 4 + ["finished"]
    assert [e.progress for e in events if e.kind == "progress"] == [25, 50, 75, 100]
    assert result.files_touched == ("a.py",) and result.llm_calls == 1
    assert isinstance(backend, AgentBackend)


def test_plan_is_reproducible_per_task_and_seed() -> None:
    a = SimulatedBackend(AgentSettings(seed=7, sim_latency_ms=50, sim_jitter_ms=20,
                                       sim_failure_rate=0.3))
    b = SimulatedBackend(AgentSettings(seed=7, sim_latency_ms=50, sim_jitter_ms=20,
                                       sim_failure_rate=0.3))
    other = SimulatedBackend(AgentSettings(seed=8, sim_latency_ms=50, sim_jitter_ms=20,
                                           sim_failure_rate=0.3))
    plans = [a.plan(i) for i in range(200)]
    assert plans == [b.plan(i) for i in reversed(range(200))][::-1]  # order-independent
    assert plans != [other.plan(i) for i in range(200)]
    assert all(0.030 <= lat <= 0.070 for lat, _ in plans)
    failures = sum(fails for _, fails in plans)
    assert 30 <= failures <= 90  # ~30 % of 200


async def test_failure_is_retryable_agent_error() -> None:
    backend = SimulatedBackend(AgentSettings(sim_latency_ms=0, sim_jitter_ms=0,
                                             sim_failure_rate=1.0))
    events: list[AgentEvent] = []
    with pytest.raises(AgentError, match="Simulated failure") as info:
        await backend.run(req(), events.append)
    assert info.value.retryable
    assert "finished" not in [e.kind for e in events]


async def test_acquire_is_awaited_and_cancellation_propagates() -> None:
    calls = 0

    async def acquire() -> None:
        nonlocal calls
        calls += 1

    backend = SimulatedBackend(AgentSettings(sim_latency_ms=10_000, sim_jitter_ms=0),
                               acquire=acquire)
    task = asyncio.create_task(backend.run(req(), lambda e: None))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls == 1


async def test_many_tasks_are_cheap() -> None:
    backend = SimulatedBackend(AgentSettings(sim_latency_ms=1, sim_jitter_ms=0))
    results = await asyncio.gather(*(backend.run(req(i), lambda e: None) for i in range(2000)))
    assert len(results) == 2000 and backend.runs == 2000


async def test_make_backend(tmp_path: Path) -> None:
    sim = make_backend(AgentSettings(), pool=None, acquire=None, state_dir=tmp_path)
    assert isinstance(sim, SimulatedBackend)
    settings = AgentSettings(backend="openai", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(AgentUnavailableError, match="HttpClientPool"):
        make_backend(settings, pool=None, acquire=None, state_dir=tmp_path)
    async with HttpClientPool(2, True, 5.0) as pool:
        assert isinstance(make_backend(settings, pool=pool, acquire=None, state_dir=tmp_path),
                          OpenAIBackend)
    with pytest.raises(AgentUnavailableError, match="base_url"):
        async with HttpClientPool(2, True, 5.0) as pool:
            make_backend(AgentSettings(backend="openai"), pool=pool, acquire=None,
                         state_dir=tmp_path)


def test_model_for() -> None:
    s = AgentSettings(model_smart="big", model_normal="small")
    assert model_for(s, "smart", None) == "big"
    assert model_for(s, "normal", "") == "small"
    assert model_for(s, "normal", "explicit") == "explicit"
