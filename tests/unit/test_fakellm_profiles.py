"""Named latency profiles, lognormal TTFT, the bounded queue and [[file:]] markers."""

from __future__ import annotations

import asyncio
import math
import statistics
from typing import Any

import aiohttp
import pytest

from orchestra_kit.errors import ConfigError
from orchestra_kit.fakellm import FakeLLM, FakeLLMConfig, write_file_script
from orchestra_kit.fakellm.cli import _config_from_args, _parser, cli_main
from orchestra_kit.fakellm.profiles import PROFILES
from orchestra_kit.fakellm.protocol import parse_chat_request
from orchestra_kit.fakellm.state import FakeState

TOOLS = [{"type": "function", "function": {"name": "write", "parameters": {}}}]


def _plans(config: FakeLLMConfig, n: int) -> list[Any]:
    state = FakeState(config)
    chat = parse_chat_request({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    return [state.plan(chat) for _ in range(n)]


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_profile_builds_and_names_its_source(name: str) -> None:
    config = FakeLLMConfig.from_profile(name)
    assert isinstance(config, FakeLLMConfig)
    assert PROFILES[name].source  # documented: where the numbers come from


def test_seed_profile_mean_call_is_the_seeds_2_1_s() -> None:
    config = FakeLLMConfig.from_profile("seed-2.1s", seed=3)
    calls = [p.ttft_s + p.reply.token_count() / config.tokens_per_s for p in _plans(config, 4000)]
    assert statistics.fmean(calls) == pytest.approx(2.1, rel=0.04)


def test_lognormal_ttft_has_the_median_and_a_long_tail() -> None:
    config = FakeLLMConfig(ttft_ms=400.0, ttft_sigma=0.35, seed=1)
    ttfts = sorted(p.ttft_s * 1000 for p in _plans(config, 4000))
    median, p99 = ttfts[len(ttfts) // 2], ttfts[int(0.99 * len(ttfts))]
    assert median == pytest.approx(400.0, rel=0.05)
    assert p99 / median == pytest.approx(math.exp(2.326 * 0.35), rel=0.1)


def test_profile_values_are_overridden_and_bad_names_are_named() -> None:
    assert FakeLLMConfig.from_profile("limited", capacity=3).capacity == 3
    with pytest.raises(ConfigError, match="profile"):
        FakeLLMConfig.from_profile("nope")
    with pytest.raises(ConfigError, match="max_queue"):
        FakeLLMConfig(max_queue=-1)


def test_cli_profile_then_flags() -> None:
    args = _parser().parse_args(["--profile", "limited", "--capacity", "2",
                                 "--write-file-script", "w"])
    config = _config_from_args(args)
    assert (config.capacity, config.max_queue, config.ttft_ms) == (2, 16, 300.0)
    assert "w" in config.named_scripts
    assert cli_main(["--profile", "nope"]) == 2


async def test_a_full_queue_sheds_with_429() -> None:
    config = FakeLLMConfig(capacity=1, max_queue=1, ttft_ms=200.0, ttft_jitter_ms=0.0,
                           output_tokens=2, output_tokens_jitter=0, retry_after_s=0.5)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    async with FakeLLM(config) as fake, aiohttp.ClientSession() as s:
        async def post() -> tuple[int, str | None]:
            async with s.post(fake.base_url + "/chat/completions", json=body) as r:
                await r.read()
                return r.status, r.headers.get("Retry-After")

        first = asyncio.ensure_future(post())
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(post())
        await asyncio.sleep(0.05)
        third = await post()
        statuses = [(await first)[0], (await second)[0], third[0]]
    assert statuses == [200, 200, 429]  # one generating, one queued, the third shed
    assert third[1] == "0.5"


async def test_file_marker_fills_the_named_write_script() -> None:
    script = write_file_script("{file}", "content of {file}", resolve=False)
    config = FakeLLMConfig(named_scripts={"w": script}, ttft_ms=0.0, ttft_jitter_ms=0.0)
    body = {"model": "m", "tools": TOOLS, "stream": False, "messages": [
        {"role": "user", "content": "go [[script:w]] [[file:out/task-7.txt]]"}]}
    async with FakeLLM(config) as fake, aiohttp.ClientSession() as s, s.post(
            fake.base_url + "/chat/completions", json=body) as r:
        doc = await r.json()
    call = doc["choices"][0]["message"]["tool_calls"][0]["function"]
    assert call["name"] == "write"
    assert '"filePath": "out/task-7.txt"' in call["arguments"]
    assert "content of out/task-7.txt" in call["arguments"]
