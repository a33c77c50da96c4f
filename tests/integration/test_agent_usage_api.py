"""A task's usage through the API and /performance: openai backend against the fake."""

from __future__ import annotations

from pathlib import Path

from server_fixtures import make_settings

from orchestra_kit.client import OrchestraClient
from orchestra_kit.fakellm import FakeLLM, FakeLLMConfig
from orchestra_kit.server.app import Service


async def test_openai_usage_on_the_task_and_in_performance(tmp_path: Path) -> None:
    fake_cfg = FakeLLMConfig(ttft_ms=40.0, ttft_jitter_ms=0.0, tokens_per_s=2000.0,
                             output_tokens=12, output_tokens_jitter=0)
    async with FakeLLM(fake_cfg) as fake:
        settings = make_settings(tmp_path, **{"agents.backend": "openai",
                                              "agents.base_url": fake.base_url})
        async with Service(settings) as svc, OrchestraClient(svc.url) as c:
            await c.hire("ada", "dev")
            tasks = [await c.assign("ada", f"task {i}") for i in range(3)]
            done = [await c.wait_task(t.id) for t in tasks]
            status, body = await c.request("GET", f"/tasks/{done[0].id}")
            _, perf = await c.request("GET", "/performance")
    assert [t.status for t in done] == ["completed"] * 3
    usage = body["usage"]
    assert status == 200 and usage["backend"] == "openai"
    assert usage["ttft_ms"] >= 40.0 and usage["tokens_out"] == 12
    assert usage["retries"] == 0 and usage["llm_calls"] == 1
    assert usage["bucket_wait_s"] >= 0 and usage["wall_s"] >= usage["ttft_ms"] / 1000
    agents = perf["session_metrics"]["agent_usage"]
    assert agents["runs"] == 3 and agents["backends"] == ["openai"]
    assert agents["ttft_ms"]["n"] == 3 and agents["ttft_ms"]["p50"] >= 40.0


async def test_a_failed_call_keeps_its_retries_on_the_task(tmp_path: Path) -> None:
    fake_cfg = FakeLLMConfig(rate_500=1.0)
    async with FakeLLM(fake_cfg) as fake:
        settings = make_settings(tmp_path, **{"agents.backend": "openai",
                                              "agents.base_url": fake.base_url,
                                              "agents.max_retries": 2,
                                              "scheduler.max_attempts": 1})
        async with Service(settings) as svc, OrchestraClient(svc.url) as c:
            await c.hire("bob", "dev")
            task = await c.wait_task((await c.assign("bob", "fails")).id)
    assert task.status == "failed"
    assert task.usage is not None
    assert task.usage["llm_calls"] == 3 and task.usage["retries"] == 2
    assert "ttft_ms" not in task.usage  # no token ever arrived
