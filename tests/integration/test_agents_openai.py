"""OpenAIBackend against the real fake provider (and a tiny scripted-status server)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from orchestra_kit.agents import HttpClientPool, OpenAIBackend
from orchestra_kit.agents.base import AgentEvent, AgentRequest
from orchestra_kit.config import AgentSettings
from orchestra_kit.errors import AgentTimeoutError, ProviderError
from orchestra_kit.fakellm import FakeLLM, FakeLLMConfig


class SleepRecorder:
    """An injected sleep that records the delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def request(tmp_path: Path, task_id: int = 1) -> AgentRequest:
    return AgentRequest(task_id=task_id, employee="alice", description="Say hello",
                        model="fake-model", files=("src/a.py",), workspace=tmp_path,
                        project_root=tmp_path)


def settings(base_url: str, **kw: object) -> AgentSettings:
    return AgentSettings(backend="openai", base_url=base_url, **kw)  # type: ignore[arg-type]


FAST: dict[str, Any] = {"ttft_ms": 5.0, "ttft_jitter_ms": 0.0, "tokens_per_s": 5000.0,
                        "output_tokens": 20, "output_tokens_jitter": 0}


@pytest.fixture
async def pool() -> AsyncIterator[HttpClientPool]:
    async with HttpClientPool(4, True, 10.0) as p:
        yield p


async def test_success_records_ttft_and_tokens(tmp_path: Path, pool: HttpClientPool) -> None:
    acquired = 0

    async def acquire() -> None:
        nonlocal acquired
        acquired += 1

    events: list[AgentEvent] = []
    async with FakeLLM(FakeLLMConfig(ttft_ms=30.0, ttft_jitter_ms=0.0, tokens_per_s=5000.0,
                                     output_tokens=40, output_tokens_jitter=0)) as fake:
        backend = OpenAIBackend(settings(fake.base_url), pool, acquire=acquire)
        result = await backend.run(request(tmp_path), events.append)
    assert result.ttft_ms is not None and result.ttft_ms >= 25.0  # the fake's 30 ms TTFT
    assert result.tokens_out == 40
    assert len(result.summary.split()) == 40
    assert result.llm_calls == 1 and acquired == 1
    kinds = [e.kind for e in events]
    assert kinds[0] == "started" and kinds[-1] == "finished" and "tokens" in kinds
    assert [e.tokens for e in events if e.kind == "tokens"][-1] == 40
    assert fake.requests[0].stream and fake.requests[0].model == "fake-model"


async def test_429_retry_after_is_honoured_then_gives_up(tmp_path: Path,
                                                         pool: HttpClientPool) -> None:
    sleep = SleepRecorder()
    async with FakeLLM(FakeLLMConfig(rate_429=1.0, retry_after_s=2.5, **FAST)) as fake:
        backend = OpenAIBackend(settings(fake.base_url, max_retries=3), pool, sleep=sleep)
        with pytest.raises(ProviderError) as info:
            await backend.run(request(tmp_path), lambda e: None)
    assert info.value.status == 429 and info.value.retry_after_s == pytest.approx(2.5)
    assert info.value.retryable
    assert "max_retries" in str(info.value)
    assert len(sleep.delays) == 3 and all(d >= 2.5 for d in sleep.delays)
    assert len(fake.requests) == 4 and backend.retries == 3


async def test_stream_cut_is_retried(tmp_path: Path, pool: HttpClientPool) -> None:
    sleep = SleepRecorder()
    async with FakeLLM(FakeLLMConfig(rate_stream_cut=1.0, **FAST)) as fake:
        backend = OpenAIBackend(settings(fake.base_url, max_retries=2), pool, sleep=sleep)
        with pytest.raises(ProviderError, match="stream cut|connection error"):
            await backend.run(request(tmp_path), lambda e: None)
    assert len(fake.requests) == 3 and len(sleep.delays) == 2


async def test_hang_times_out(tmp_path: Path, pool: HttpClientPool) -> None:
    async with FakeLLM(FakeLLMConfig(rate_hang=1.0, hang_max_s=10.0, **FAST)) as fake:
        backend = OpenAIBackend(settings(fake.base_url, request_timeout=0.3), pool)
        with pytest.raises(AgentTimeoutError, match="request_timeout=0.3"):
            await backend.run(request(tmp_path), lambda e: None)


async def test_unpooled_backend_works(tmp_path: Path) -> None:
    async with FakeLLM(FakeLLMConfig(**FAST)) as fake, HttpClientPool(4, False, 5.0) as pool:
        backend = OpenAIBackend(settings(fake.base_url), pool)
        for i in range(3):
            await backend.run(request(tmp_path, i), lambda e: None)
    assert pool.sessions_created == 3 and pool.in_use == 0


# ---------------------------------------------------------------------- scripted statuses


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[str, list[int]]]:
    """A server answering the statuses in ``statuses`` in turn (then 200 with a stream)."""
    statuses: list[int] = []

    async def handler(req: web.Request) -> web.StreamResponse:
        await req.read()
        status = statuses.pop(0) if statuses else 200
        if status != 200:
            headers = {"Retry-After": "0.25"} if status == 429 else None
            return web.json_response({"error": {"message": f"scripted {status}"}},
                                     status=status, headers=headers)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(req)
        for word in ("all ", "good"):
            await resp.write(b'data: {"choices":[{"delta":{"content":"%s"}}]}\n\n'
                             % word.encode())
        await resp.write(b"data: [DONE]\n\n")
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/v1", statuses
    finally:
        await runner.cleanup()


async def test_500_then_success(tmp_path: Path, pool: HttpClientPool,
                                scripted: tuple[str, list[int]]) -> None:
    url, statuses = scripted
    statuses.extend([500, 503])
    sleep = SleepRecorder()
    backend = OpenAIBackend(settings(url), pool, sleep=sleep, backoff_base_s=1.0)
    result = await backend.run(request(tmp_path), lambda e: None)
    assert result.summary == "all good" and result.llm_calls == 3
    assert len(sleep.delays) == 2
    assert 0 <= sleep.delays[0] <= 1.0 and 0 <= sleep.delays[1] <= 2.0  # capped, jittered


async def test_429_then_success_waits_retry_after(tmp_path: Path, pool: HttpClientPool,
                                                  scripted: tuple[str, list[int]]) -> None:
    url, statuses = scripted
    statuses.append(429)
    sleep = SleepRecorder()
    backend = OpenAIBackend(settings(url), pool, sleep=sleep, backoff_base_s=0.01)
    result = await backend.run(request(tmp_path), lambda e: None)
    assert result.summary == "all good"
    assert sleep.delays == [pytest.approx(0.25)]


async def test_400_is_not_retried(tmp_path: Path, pool: HttpClientPool,
                                  scripted: tuple[str, list[int]]) -> None:
    url, statuses = scripted
    statuses.append(400)
    sleep = SleepRecorder()
    backend = OpenAIBackend(settings(url), pool, sleep=sleep)
    with pytest.raises(ProviderError, match="scripted 400") as info:
        await backend.run(request(tmp_path), lambda e: None)
    assert info.value.status == 400 and not info.value.retryable and sleep.delays == []


async def test_retry_budget_exhausted(tmp_path: Path, pool: HttpClientPool,
                                      scripted: tuple[str, list[int]]) -> None:
    url, statuses = scripted
    sleep = SleepRecorder()
    backend = OpenAIBackend(settings(url, max_retries=5, retry_budget_ratio=0.0), pool,
                            sleep=sleep, retry_budget_floor=2)
    statuses.extend([500] * 10)
    with pytest.raises(ProviderError, match="retry budget exhausted") as info:
        await backend.run(request(tmp_path), lambda e: None)
    assert info.value.status == 500 and backend.retries == 2
    # The budget is per backend: the next call gets no retry at all.
    with pytest.raises(ProviderError, match="retry budget exhausted"):
        await backend.run(request(tmp_path, 2), lambda e: None)
    assert backend.retries == 2 and len(sleep.delays) == 2


async def test_connection_refused_is_retried_then_fails(tmp_path: Path,
                                                        pool: HttpClientPool) -> None:
    async with FakeLLM(FakeLLMConfig(**FAST)) as fake:
        url = fake.base_url  # a port that is closed once the fake stops
    sleep = SleepRecorder()
    backend = OpenAIBackend(settings(url, max_retries=1), pool, sleep=sleep)
    with pytest.raises(ProviderError, match="connection error") as info:
        await backend.run(request(tmp_path), lambda e: None)
    assert info.value.retryable and len(sleep.delays) == 1


async def test_cancellation_propagates(tmp_path: Path, pool: HttpClientPool) -> None:
    async with FakeLLM(FakeLLMConfig(rate_hang=1.0, hang_max_s=10.0, **FAST)) as fake:
        backend = OpenAIBackend(dataclasses.replace(settings(fake.base_url),
                                                    request_timeout=30.0), pool)
        task = asyncio.create_task(backend.run(request(tmp_path), lambda e: None))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert pool.in_use == 0
