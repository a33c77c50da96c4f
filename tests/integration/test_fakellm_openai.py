"""The fake LLM provider seen by real clients: the official ``openai`` package, the
``orchestra fake-llm`` CLI process and the real ``opencode`` CLI (offline)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest

from orchestra_kit.fakellm import FakeLLM, FakeLLMConfig, ScriptedReply, write_file_script

REPO = Path(__file__).resolve().parents[2]
FAST = {"ttft_ms": 1.0, "ttft_jitter_ms": 0.0, "tokens_per_s": 100_000.0}
USER: Any = [{"role": "user", "content": "hello"}]
WRITE_TOOL: Any = [{"type": "function", "function": {
    "name": "write", "parameters": {"type": "object", "properties": {}}}}]
ARGS = {"filePath": "/tmp/somewhere/a.txt", "content": "line one\nline two\n"}


@pytest.fixture
async def fake() -> AsyncIterator[FakeLLM]:
    script = (ScriptedReply(tool_calls=(("write", ARGS),)),) * 2
    config = FakeLLMConfig(output_tokens=6, output_tokens_jitter=0, script=script, **FAST)
    async with FakeLLM(config) as server:
        yield server


@pytest.fixture
async def client(fake: FakeLLM) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=fake.base_url, api_key="sk-local",
                                  max_retries=0) as api:
        yield api


async def test_openai_non_streaming(client: openai.AsyncOpenAI) -> None:
    result = await client.chat.completions.create(model="fake-model", messages=USER)
    assert result.choices[0].message.content == "Fake title"  # a script is set, no tools
    assert result.usage is not None and result.usage.completion_tokens == 2


async def test_openai_streaming_filler() -> None:
    config = FakeLLMConfig(output_tokens=6, output_tokens_jitter=0, **FAST)
    async with FakeLLM(config) as server, openai.AsyncOpenAI(
        base_url=server.base_url, api_key="sk-local", max_retries=0
    ) as api:
        stream = await api.chat.completions.create(
            model="fake-smart", messages=USER, stream=True,
            stream_options={"include_usage": True})
        pieces, usage, finish = [], None, None
        async for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                pieces.append(choice.delta.content or "")
                finish = choice.finish_reason or finish
    assert len("".join(pieces).split()) == 6
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens == 6


async def test_openai_models_list(client: openai.AsyncOpenAI) -> None:
    models = [model.id async for model in client.models.list()]
    assert models == ["fake-model", "fake-smart"]


async def test_openai_parses_scripted_tool_call(client: openai.AsyncOpenAI) -> None:
    result = await client.chat.completions.create(
        model="fake-model", messages=USER, tools=WRITE_TOOL)
    call = result.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert result.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "write" and json.loads(call.function.arguments) == ARGS

    stream = await client.chat.completions.create(
        model="fake-model", messages=USER, tools=WRITE_TOOL, stream=True)
    names: dict[int, str] = {}
    arguments: dict[int, str] = {}
    finish = None
    async for chunk in stream:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                if delta.function and delta.function.name:
                    names[delta.index] = delta.function.name
                if delta.function and delta.function.arguments:
                    arguments[delta.index] = arguments.get(delta.index, "") + delta.function.arguments
    assert finish == "tool_calls"
    assert names == {0: "write"} and json.loads(arguments[0]) == ARGS


async def test_openai_rate_limit_error() -> None:
    async with FakeLLM(FakeLLMConfig(rate_429=1.0, retry_after_s=3.0)) as server, \
            openai.AsyncOpenAI(base_url=server.base_url, api_key="sk-local",
                               max_retries=0) as api:
        with pytest.raises(openai.RateLimitError) as info:
            await api.chat.completions.create(model="fake-model", messages=USER)
    assert info.value.status_code == 429
    assert info.value.response.headers["retry-after"] == "3"


async def test_cli_serves_until_sigint(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps([{"text": "from the file"}]))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys; from orchestra_kit.fakellm import cli_main; "
        "sys.exit(cli_main(sys.argv[1:]))",
        "--port", "0", "--ttft-ms", "1", "--script", str(script),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(30):
            line = (await proc.stdout.readline()).decode().strip()
        assert line.startswith("fake-llm listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1]
        async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="sk-local",
                                      max_retries=0) as api:
            result = await api.chat.completions.create(
                model="fake-model", messages=USER, tools=WRITE_TOOL)
        assert result.choices[0].message.content == "from the file"
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            await proc.wait()
    assert proc.returncode == 0


# --- the real opencode CLI ------------------------------------------------------------------


def opencode_binary() -> str | None:
    """The pinned opencode from ``make opencode``, or one on PATH."""
    pinned = REPO / ".tools" / "opencode" / "node_modules" / ".bin" / "opencode"
    return str(pinned) if pinned.exists() else shutil.which("opencode")


def opencode_env(root: Path, workspace: Path, base_url: str) -> dict[str, str]:
    """Offline environment: own XDG folders, provider pointed at the fake."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "OPENCODE_"))}
    for name in ("DATA", "CONFIG", "CACHE", "STATE"):
        folder = root / name.lower()
        folder.mkdir()
        env[f"XDG_{name}_HOME"] = str(folder)
    env.update(
        OPENCODE_DISABLE_MODELS_FETCH="1", OPENCODE_DISABLE_AUTOUPDATE="1",
        OPENCODE_DISABLE_LSP_DOWNLOAD="1", OPENCODE_DISABLE_SHARE="1",
        PWD=str(workspace),  # opencode takes its project directory from $PWD, not getcwd()
        OPENCODE_CONFIG_CONTENT=json.dumps({
            "provider": {"local": {
                "npm": "@ai-sdk/openai-compatible", "name": "Local",
                "options": {"baseURL": base_url, "apiKey": "sk-local"},
                "models": {"fake-model": {"name": "Fake"}}}},
            "model": "local/fake-model", "autoupdate": False, "share": "disabled",
        }),
    )
    return env


@pytest.mark.opencode
async def test_real_opencode_writes_the_scripted_file(tmp_path: Path) -> None:
    binary = opencode_binary()
    if binary is None:
        pytest.skip("opencode binary absent (run `make opencode` to install opencode-ai)")
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    target = workspace / "hello.txt"
    config = FakeLLMConfig(script=write_file_script(str(target), "hello from fake\n"), **FAST)
    async with FakeLLM(config) as server:
        proc = await asyncio.create_subprocess_exec(
            binary, "run", "--pure", "--format", "json", "write hello.txt",
            cwd=workspace, env=opencode_env(tmp_path, workspace, server.base_url),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True,
        )
        try:
            async with asyncio.timeout(90):
                out, err = await proc.communicate()
        finally:
            if proc.returncode is None:
                os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        log = list(server.requests)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert target.read_text() == "hello from fake\n"
    events = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    assert [e["type"] for e in events] == [
        "step_start", "tool_use", "step_finish", "step_start", "text", "step_finish"]
    tool = events[1]["part"]
    assert tool["tool"] == "write" and tool["state"]["status"] == "completed"
    assert tool["state"]["input"] == {"filePath": str(target), "content": "hello from fake\n"}
    assert events[2]["part"]["reason"] == "tool-calls"
    assert events[-1]["part"]["reason"] == "stop"
    # the title call (no tools) may run concurrently with the agent calls: ignore order
    assert sorted((e.has_tools, e.reply_kind, e.stream) for e in log) == [
        (False, "title", True), (True, "script", True), (True, "script", True)]
