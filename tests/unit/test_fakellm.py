"""Unit tests of the fake LLM provider (real server on 127.0.0.1:0, aiohttp client)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestra_kit.errors import ConfigError
from orchestra_kit.fakellm import (
    FakeLLM,
    FakeLLMConfig,
    ScriptedReply,
    cli_main,
    scripts_from_json,
    write_file_script,
)
from orchestra_kit.fakellm.protocol import BadRequest, parse_chat_request
from orchestra_kit.fakellm.state import FifoGate

FAST = {"ttft_ms": 1.0, "ttft_jitter_ms": 0.0, "tokens_per_s": 100_000.0}
USER = [{"role": "user", "content": "hello"}]
TOOLS = [{"type": "function", "function": {"name": "write", "parameters": {}}}]


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": "fake-model", "messages": USER, **extra}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def post_chat(session: aiohttp.ClientSession, fake: FakeLLM, body: Any) -> Any:
    async with session.post(fake.base_url + "/chat/completions", json=body) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def stream_chat(session: aiohttp.ClientSession, fake: FakeLLM, body: Any) -> list[Any]:
    """Decoded SSE data items ("[DONE]" kept as a string)."""
    async with session.post(fake.base_url + "/chat/completions", json=body) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        raw = (await resp.read()).decode()
    items = [block.removeprefix("data: ") for block in raw.split("\n\n") if block]
    return [item if item == "[DONE]" else json.loads(item) for item in items]


# --- configuration ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ttft_ms", -1.0), ("ttft_jitter_ms", float("nan")), ("tokens_per_s", 0.0),
        ("output_tokens", 0), ("output_tokens_jitter", -1), ("capacity", 0),
        ("capacity", 2.5), ("seed", True), ("rate_429", 1.5), ("rate_hang", -0.1),
        ("retry_after_s", -1.0), ("hang_max_s", 0.0), ("models", ()),
        ("script", ("not a reply",)), ("title_reply", 3),
    ],
)
def test_config_rejects_bad_values_naming_the_field(field: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        FakeLLMConfig(**{field: value})
    assert info.value.key == field
    assert field in str(info.value)


def test_config_rejects_fault_rates_summing_over_one() -> None:
    with pytest.raises(ConfigError, match="sum"):
        FakeLLMConfig(rate_429=0.6, rate_500=0.5)
    FakeLLMConfig(rate_429=0.5, rate_500=0.5)  # exactly 1 is fine


def test_config_rejects_bad_named_script() -> None:
    with pytest.raises(ConfigError) as info:
        FakeLLMConfig(named_scripts={"a": ["x"]})  # type: ignore[dict-item]
    assert "named_scripts" in info.value.key


def test_scripted_reply_needs_text_or_tool_calls() -> None:
    with pytest.raises(ConfigError):
        ScriptedReply()
    reply = ScriptedReply(tool_calls=[("write", {"a": 1})])  # type: ignore[arg-type]
    assert reply.tool_calls == (("write", {"a": 1}),)


def test_write_file_script_uses_opencode_write_parameters(tmp_path: Any) -> None:
    call, final = write_file_script(str(tmp_path / "a.txt"), "hi")
    assert call.tool_calls == (("write", {"filePath": str(tmp_path / "a.txt"), "content": "hi"}),)
    assert final.text and not final.tool_calls


def test_scripts_from_json_list_and_named() -> None:
    script, named = scripts_from_json([{"text": "a"}, {"tool_calls": [{"name": "t"}]}])
    assert script is not None and script[1].tool_calls == (("t", {}),)
    script, named = scripts_from_json({"named_scripts": {"w": [{"text": "b"}]}})
    assert script is None and named["w"][0].text == "b"
    with pytest.raises(ConfigError) as info:
        scripts_from_json([{"txt": "typo"}])
    assert info.value.key == "script[0]"


@settings(max_examples=150, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["model", "messages", "stream", "tools", "role", "content"]), inner,
        max_size=4),
    max_leaves=12,
))
def test_parse_chat_request_accepts_or_names_a_field(body: Any) -> None:
    try:
        chat = parse_chat_request(body)
    except BadRequest as exc:
        assert exc.param in (None, "model", "messages", "stream", "tools") or (
            exc.param or "").startswith("messages[")
    else:
        assert isinstance(chat.model, str) and chat.messages


# --- the FIFO gate (no clock) -----------------------------------------------------------


async def test_fifo_gate_admits_in_arrival_order_and_survives_cancel() -> None:
    gate = FifoGate(2)
    admitted: list[int] = []

    async def worker(i: int) -> None:
        await gate.acquire()
        admitted.append(i)

    await gate.acquire()
    await gate.acquire()
    tasks = [asyncio.create_task(worker(i)) for i in range(4)]
    await asyncio.sleep(0)
    assert admitted == []
    tasks[1].cancel()  # a waiter leaving the line must not lose or leak a slot
    await asyncio.gather(tasks[1], return_exceptions=True)
    gate.release()
    gate.release()
    await asyncio.gather(tasks[0], tasks[2])
    assert admitted == [0, 2]
    gate.release()
    await tasks[3]
    assert admitted == [0, 2, 3]
    assert not gate.is_free()
    gate.release()
    gate.release()
    assert gate.is_free()


# --- replies ------------------------------------------------------------------------------


async def run_sequence(seed: int, session: aiohttp.ClientSession) -> tuple[list[str], list[Any]]:
    async with FakeLLM(FakeLLMConfig(seed=seed, **FAST)) as fake:
        texts = []
        for _ in range(3):
            doc = await post_chat(session, fake, chat_body())
            texts.append(doc["choices"][0]["message"]["content"])
        sampled = [(e.ttft_ms, e.output_tokens) for e in fake.requests]
    return texts, sampled


async def test_same_seed_same_text_and_latencies(session: aiohttp.ClientSession) -> None:
    first = await run_sequence(7, session)
    assert first == await run_sequence(7, session)
    assert first != await run_sequence(8, session)
    texts, sampled = first
    assert [len(t.split()) for t in texts] == [n for _t, n in sampled]
    assert all(30 <= n <= 50 for _t, n in sampled)


async def test_non_streaming_completion_has_usage(session: aiohttp.ClientSession) -> None:
    async with FakeLLM(FakeLLMConfig(output_tokens=5, output_tokens_jitter=0, **FAST)) as fake:
        doc = await post_chat(session, fake, chat_body())
    assert doc["object"] == "chat.completion"
    assert doc["choices"][0]["finish_reason"] == "stop"
    assert doc["usage"] == {"prompt_tokens": 1, "completion_tokens": 5, "total_tokens": 6}


async def test_streaming_chunks_usage_and_done(session: aiohttp.ClientSession) -> None:
    async with FakeLLM(FakeLLMConfig(output_tokens=4, output_tokens_jitter=0, **FAST)) as fake:
        items = await stream_chat(session, fake, chat_body(
            stream=True, stream_options={"include_usage": True}))
        plain = await stream_chat(session, fake, chat_body(stream=True))
    assert items[-1] == "[DONE]"
    assert all(i["object"] == "chat.completion.chunk" for i in items[:-1])
    assert items[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(i["choices"][0]["delta"].get("content", "") for i in items[:-3])
    assert len(text.split()) == 4
    assert items[-3]["choices"][0]["finish_reason"] == "stop"
    assert items[-2]["choices"] == [] and items[-2]["usage"]["completion_tokens"] == 4
    assert "usage" not in plain[-2] and plain[-2]["choices"][0]["finish_reason"] == "stop"


async def test_scripted_tool_call_stream_shape(session: aiohttp.ClientSession) -> None:
    args = {"filePath": "/tmp/x/a.txt", "content": "some content that spans pieces " * 3}
    script = (ScriptedReply(tool_calls=(("write", args),)), ScriptedReply(text="All good"))
    async with FakeLLM(FakeLLMConfig(script=script, **FAST)) as fake:
        title = await post_chat(session, fake, chat_body())
        items = await stream_chat(session, fake, chat_body(stream=True, tools=TOOLS))
        second = await post_chat(session, fake, chat_body(tools=TOOLS))
        after = await post_chat(session, fake, chat_body(tools=TOOLS))
        kinds = [e.reply_kind for e in fake.requests]
    assert title["choices"][0]["message"]["content"] == "Fake title"
    deltas = [i["choices"][0]["delta"] for i in items[:-1] if i["choices"]]
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    head, pieces = calls[0], calls[1:]
    assert head["index"] == 0 and head["type"] == "function" and head["id"].startswith("call_")
    assert head["function"] == {"name": "write", "arguments": ""}
    assert len(pieces) > 1 and all(p["index"] == 0 and "id" not in p for p in pieces)
    assert json.loads("".join(p["function"]["arguments"] for p in pieces)) == args
    assert items[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert items[-1] == "[DONE]"
    assert second["choices"][0]["message"]["content"] == "All good"
    assert after["choices"][0]["message"]["content"] == "Done."
    assert kinds == ["title", "script", "script", "done"]


async def test_non_streaming_tool_call(session: aiohttp.ClientSession) -> None:
    script = (ScriptedReply(tool_calls=(("bash", {"command": "ls"}),)),)
    async with FakeLLM(FakeLLMConfig(script=script, **FAST)) as fake:
        doc = await post_chat(session, fake, chat_body(tools=TOOLS))
    choice = doc["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["function"]["name"] == "bash"
    assert json.loads(call["function"]["arguments"]) == {"command": "ls"}


async def test_named_script_follows_the_conversation(session: aiohttp.ClientSession) -> None:
    named = {"w": (ScriptedReply(text="first"), ScriptedReply(text="second"))}
    config = FakeLLMConfig(named_scripts=named, **FAST)
    marked = [{"role": "user", "content": "do it [[script:w]]"}]
    turn2 = marked + [{"role": "assistant", "content": "first"},
                      {"role": "user", "content": "again [[script:w]]"}]
    async with FakeLLM(config) as fake:
        replies = []
        for messages in (marked, turn2, marked, USER):
            doc = await post_chat(session, fake, chat_body(messages=messages, tools=TOOLS))
            replies.append(doc["choices"][0]["message"]["content"])
        names = [e.script_name for e in fake.requests]
    assert replies[:3] == ["first", "second", "first"]
    assert replies[3] != "first" and len(replies[3].split()) >= 30  # filler: no marker
    assert names == ["w", "w", "w", None]


# --- capacity -----------------------------------------------------------------------------


async def test_capacity_queues_beyond_the_limit(session: aiohttp.ClientSession) -> None:
    config = FakeLLMConfig(capacity=2, ttft_ms=100.0, ttft_jitter_ms=0.0,
                           tokens_per_s=100_000.0, output_tokens=3)
    async with FakeLLM(config) as fake:
        await asyncio.gather(*(post_chat(session, fake, chat_body()) for _ in range(6)))
        stats = fake.stats
        queued = sorted(e.queued_ms for e in fake.requests)
    assert stats.total == 6 and stats.in_flight == 0 and stats.queued == 0
    assert stats.max_in_flight == 2
    assert stats.max_queued >= 1
    # a request that waited, waited at least for one generation to end (>= ttft)
    assert queued[-1] >= 50.0
    assert queued[0] < 50.0  # the first ones did not wait


# --- faults and errors ----------------------------------------------------------------------


@pytest.mark.parametrize(("rate", "status"), [("rate_429", 429), ("rate_500", 500),
                                              ("rate_503", 503)])
async def test_error_faults(session: aiohttp.ClientSession, rate: str, status: int) -> None:
    async with FakeLLM(FakeLLMConfig(**{rate: 1.0}, retry_after_s=2.0)) as fake:
        async with session.post(fake.base_url + "/chat/completions", json=chat_body()) as resp:
            body = await resp.json()
            headers = resp.headers
        entry = fake.requests[0]
    assert resp.status == status
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert entry.outcome == str(status) and entry.status == status
    if status == 429:
        assert headers["Retry-After"] == "2" and headers["retry-after-ms"] == "2000"


async def test_hang_holds_until_client_gives_up(session: aiohttp.ClientSession) -> None:
    async with FakeLLM(FakeLLMConfig(rate_hang=1.0, hang_max_s=30.0)) as fake:
        with pytest.raises(asyncio.TimeoutError):
            await session.post(fake.base_url + "/chat/completions", json=chat_body(),
                               timeout=aiohttp.ClientTimeout(total=0.3))
        assert [e.outcome for e in fake.requests] == ["hang"]
        assert fake.stats.in_flight == 0  # a hang holds no capacity slot
        for _ in range(100):  # the server notices the client left (bounded wait)
            if fake.stats.hanging == 0:
                break
            await asyncio.sleep(0.02)
        assert fake.stats.hanging == 0


async def test_hang_gives_up_after_hang_max_s(session: aiohttp.ClientSession) -> None:
    async with (
        FakeLLM(FakeLLMConfig(rate_hang=1.0, hang_max_s=0.1)) as fake,
        session.post(fake.base_url + "/chat/completions", json=chat_body()) as resp,
    ):
        assert resp.status == 504


async def test_stream_cut_has_no_done(session: aiohttp.ClientSession) -> None:
    async with FakeLLM(FakeLLMConfig(rate_stream_cut=1.0, **FAST)) as fake:
        received = b""
        with pytest.raises(aiohttp.ClientPayloadError):
            async with session.post(fake.base_url + "/chat/completions",
                                    json=chat_body(stream=True)) as resp:
                assert resp.status == 200
                async for line in resp.content:
                    received += line
        with pytest.raises((aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError)):
            async with session.post(fake.base_url + "/chat/completions",
                                    json=chat_body()) as resp:
                await resp.read()
        assert [e.outcome for e in fake.requests] == ["cut", "cut"]
    assert received.startswith(b"data: {")
    assert b"[DONE]" not in received and b"finish_reason\":\"stop" not in received


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": USER}, "model"),
        ({"model": 5, "messages": USER}, "model"),
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": ["hi"]}, "messages[0]"),
        ({"model": "m", "messages": USER, "stream": "yes"}, "stream"),
        ({"model": "m", "messages": USER, "tools": {}}, "tools"),
        ([1, 2], None),
    ],
)
async def test_bad_bodies_are_400(session: aiohttp.ClientSession, body: Any,
                                  param: str | None) -> None:
    async with FakeLLM(FakeLLMConfig(**FAST)) as fake:
        async with session.post(fake.base_url + "/chat/completions", json=body) as resp:
            doc = await resp.json()
        assert fake.requests[0].outcome == "bad_request"
    assert resp.status == 400
    assert doc["error"]["type"] == "invalid_request_error"
    assert doc["error"]["param"] == param


async def test_models_unknown_paths_and_log(session: aiohttp.ClientSession) -> None:
    async with FakeLLM(FakeLLMConfig(models=("a", "b"))) as fake:
        async with session.get(fake.base_url + "/models") as resp:
            models = await resp.json()
        async with session.get(fake.url + "/nope") as resp:
            missing = (resp.status, await resp.json())
        async with session.post(fake.url + "/v1/chat/completions", data=b"{") as resp:
            assert resp.status == 400
        async with session.get(fake.url + "/_fake/stats") as resp:
            assert (await resp.json())["total"] == 3
        assert [e.outcome for e in fake.requests] == ["ok", "not_found", "bad_request"]
        fake.reset_log()
        assert fake.requests == [] and fake.stats.total == 0
    assert [m["id"] for m in models["data"]] == ["a", "b"]
    assert missing[0] == 404 and missing[1]["error"]["code"] == "not_found"


async def test_lifecycle() -> None:
    fake = FakeLLM()
    with pytest.raises(RuntimeError, match="not started"):
        _ = fake.url
    await fake.start()
    assert fake.base_url.startswith("http://127.0.0.1:") and fake.base_url.endswith("/v1")
    await fake.aclose()
    await fake.aclose()
    with pytest.raises(RuntimeError, match="after aclose"):
        await fake.start()


# --- CLI argument checks (serving is tested in integration) -------------------------------


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--rate-429", "2"], "--rate-429"),
        (["--rate-500", "0.6", "--rate-503", "0.6"], "--rate-*"),
        (["--capacity", "0"], "--capacity"),
        (["--tokens-per-s", "abc"], "--tokens-per-s"),
        (["--host", "10.1.2.3"], "--host"),
        (["--port", "70000"], "--port"),
        (["--script", "/nonexistent/script.json"], "--script"),
    ],
)
def test_cli_bad_values_exit_2_naming_the_flag(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(argv) == 2
    assert flag in capsys.readouterr().err


def test_cli_bad_script_content(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps([{"tool_calls": [{"name": ""}]}]))
    assert cli_main(["--script", str(path)]) == 2
    assert "--script" in capsys.readouterr().err
