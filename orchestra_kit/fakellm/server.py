"""An OpenAI-compatible fake LLM provider for experiments and tests.

``FakeLLM`` serves ``POST /v1/chat/completions`` (streaming and not) and ``GET /v1/models``
on 127.0.0.1 with a seeded latency model (time to first token, tokens per second), a
capacity beyond which requests wait in a FIFO queue, injected faults and scripted replies
(including tool calls, so the real ``opencode`` CLI can be driven offline)::

    async with FakeLLM(FakeLLMConfig(script=write_file_script("/tmp/w/a.txt", "hi"))) as fake:
        client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="sk-local")

Replies:

- With no script configured, every request gets seeded filler text (one word = one token).
- With ``script`` configured, each request *that carries tools* takes the next scripted
  reply (a request answered with a fault does not consume it); requests without tools
  (opencode's title call) get ``title_reply``; after the script, ``done_reply``.
- With ``named_scripts``, a ``[[script:NAME]]`` marker in the last user message picks that
  script, indexed by the number of assistant messages already in the conversation: the
  choice is stateless, so concurrent conversations using the same script do not interfere.

Faults (fractions of requests, drawn per request): 429 (with ``Retry-After`` in seconds and
``retry-after-ms``), 500, 503 are answered at once without queueing; a hang holds the
request without answering (and without a capacity slot) until the client leaves or
``hang_max_s`` passes, then answers 504; a stream cut queues and generates normally, then
drops the connection half-way (no ``[DONE]``; non-streaming bodies are truncated).

Extra endpoints: ``GET /_fake/stats`` (counters) and ``GET /_fake/requests`` (the log).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import time
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from .config import (
    FakeLLMConfig,
)
from .protocol import (
    BadRequest,
    ChatRequest,
    completion_object,
    error_body,
    parse_chat_request,
    prompt_tokens,
    stream_chunks,
)
from .state import (
    FakeLLMStats,
    FakeState,
    RequestLogEntry,
    RequestPlan,
)

__all__ = ["FakeLLM", "make_app"]

STATE_KEY = web.AppKey("fakellm_state", FakeState)
_HANG_POLL_S = 0.05
_FAULTS: dict[str, tuple[int, str, str, str | None]] = {
    "429": (429, "Rate limit reached for requests (fake).", "requests", "rate_limit_exceeded"),
    "500": (500, "The server had an error while processing your request (fake).",
            "server_error", None),
    "503": (503, "The engine is currently overloaded (fake).", "server_error", "overloaded"),
}


def _json_error(status: int, message: str, err_type: str, param: str | None = None,
                code: str | None = None, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(error_body(message, err_type, param, code), status=status,
                             headers=headers)


def _sse(data: dict[str, Any] | str) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _abort(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()


class _PacedWriter:
    """Writes SSE chunks at their due times; chunks already due go out in one write."""

    def __init__(self, response: web.StreamResponse) -> None:
        self._response = response
        self._pending: list[bytes] = []
        self._loop = asyncio.get_running_loop()

    async def send(self, data: bytes, due: float) -> None:
        """Queue ``data`` for time ``due`` (loop clock), flushing and sleeping if it is later."""
        delay = due - self._loop.time()
        if delay > 0:
            await self.flush()
            await asyncio.sleep(delay)
        self._pending.append(data)

    async def flush(self) -> None:
        """Write everything queued so far."""
        if self._pending:
            data, self._pending = b"".join(self._pending), []
            await self._response.write(data)


async def _read_chat(request: web.Request) -> tuple[ChatRequest | None, Any, web.Response | None]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None, None, _json_error(400, "The request body is not valid JSON.",
                                       "invalid_request_error")
    try:
        return parse_chat_request(body), body, None
    except BadRequest as exc:
        return None, body, _json_error(400, exc.message, "invalid_request_error", exc.param)


def _entry(request: web.Request, state: FakeState, chat: ChatRequest | None,
           body: Any, plan: RequestPlan | None) -> RequestLogEntry:
    raw_model = body.get("model") if isinstance(body, dict) else None
    raw_messages = body.get("messages") if isinstance(body, dict) else None
    entry = RequestLogEntry(
        t_received=time.time(), path=request.path,
        model=raw_model if isinstance(raw_model, str) else None,
        stream=chat.stream if chat else False,
        n_messages=len(raw_messages) if isinstance(raw_messages, list) else 0,
        has_tools=chat.has_tools if chat else False,
        outcome=plan.outcome if plan else "bad_request",
        status=200 if plan else 400,
        body=body if state.config.record_bodies else None,
    )
    if plan is not None:
        entry.ttft_ms = plan.ttft_s * 1000.0
        entry.output_tokens = plan.reply.token_count()
        entry.reply_kind = plan.reply.kind
        entry.script_name = plan.script_name
    return state.record(entry)


async def _chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    chat, body, error = await _read_chat(request)
    if chat is None:
        _entry(request, state, None, body, None)
        assert error is not None
        return error
    plan = state.plan(chat)
    if plan.outcome == "ok" and state.queue_full():
        plan = dataclasses.replace(plan, outcome="429")  # shed: the queue is full
    entry = _entry(request, state, chat, body, plan)
    if plan.outcome in _FAULTS:
        return _fault_response(state, entry, plan.outcome)
    if plan.outcome == "hang":
        return await _hang(request, state, entry)
    async with state.slot(entry):
        if chat.stream:
            return await _stream(request, chat, plan)
        return await _complete(request, chat, plan)


def _fault_response(state: FakeState, entry: RequestLogEntry, outcome: str) -> web.Response:
    status, message, err_type, code = _FAULTS[outcome]
    entry.status = status
    headers = None
    if status == 429:
        retry_s = state.config.retry_after_s
        headers = {"Retry-After": f"{retry_s:g}",
                   "retry-after-ms": str(math.ceil(retry_s * 1000))}
    return _json_error(status, message, err_type, None, code, headers)


async def _hang(request: web.Request, state: FakeState, entry: RequestLogEntry) -> web.Response:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + state.config.hang_max_s
    state.hanging += 1
    try:
        while not _client_gone(request) and not state.closing.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(min(_HANG_POLL_S, remaining)):
                    await state.closing.wait()
            except TimeoutError:
                pass
    finally:
        state.hanging -= 1
    entry.status = 504
    return _json_error(504, "The fake provider hung and gave up (fake).", "timeout")


async def _complete(
    request: web.Request, chat: ChatRequest, plan: RequestPlan
) -> web.StreamResponse:
    tokens = plan.reply.token_count()
    rate = request.app[STATE_KEY].config.tokens_per_s
    await asyncio.sleep(plan.ttft_s + tokens / rate)
    document = completion_object(
        completion_id=plan.completion_id, created=int(time.time()), model=chat.model,
        reply=plan.reply, prompt=prompt_tokens(chat.messages),
    )
    if plan.outcome != "cut":
        return web.json_response(document)
    payload = json.dumps(document).encode()
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.content_length = len(payload)
    await response.prepare(request)
    try:
        await response.write(payload[: len(payload) // 2])
    except ConnectionResetError:
        return response
    _abort(request)
    return response


async def _stream(request: web.Request, chat: ChatRequest, plan: RequestPlan) -> web.StreamResponse:
    rate = request.app[STATE_KEY].config.tokens_per_s
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    cut_after = plan.reply.token_count() // 2 if plan.outcome == "cut" else None
    start = asyncio.get_running_loop().time() + plan.ttft_s
    sent_tokens = 0
    chunks = stream_chunks(
        completion_id=plan.completion_id, created=int(time.time()), model=chat.model,
        reply=plan.reply, prompt=prompt_tokens(chat.messages), include_usage=chat.include_usage,
    )
    writer = _PacedWriter(response)
    try:
        for index, (is_token, chunk) in enumerate(chunks):
            if cut_after is not None and index > 0 and sent_tokens >= cut_after:
                await writer.flush()
                _abort(request)
                return response
            await writer.send(_sse(chunk), start + sent_tokens / rate)
            sent_tokens += is_token
        await writer.send(_sse("[DONE]"), 0.0)
        await writer.flush()
    except ConnectionResetError:
        pass  # the client left; nothing more to send
    return response


async def _models(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    state.record(RequestLogEntry(t_received=time.time(), path=request.path, model=None,
                                 stream=False, n_messages=0, has_tools=False, outcome="ok"))
    data = [{"id": m, "object": "model", "created": 0, "owned_by": "fakellm"}
            for m in state.config.models]
    return web.json_response({"object": "list", "data": data})


async def _stats(request: web.Request) -> web.Response:
    stats = request.app[STATE_KEY].stats()
    return web.json_response(stats.__dict__)


async def _request_log(request: web.Request) -> web.Response:
    entries = [entry.to_dict() for entry in request.app[STATE_KEY].log]
    return web.json_response({"requests": entries})


@web.middleware
async def _json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except web.HTTPException as exc:
        if exc.status not in (404, 405):
            raise
        state = request.app[STATE_KEY]
        state.record(RequestLogEntry(
            t_received=time.time(), path=request.path, model=None, stream=False,
            n_messages=0, has_tools=False, outcome="not_found", status=exc.status))
        message = f"Unknown request: {request.method} {request.path}"
        return _json_error(exc.status, message, "invalid_request_error", None,
                           "not_found" if exc.status == 404 else "method_not_allowed")


async def _on_shutdown(app: web.Application) -> None:
    app[STATE_KEY].closing.set()  # let hanging requests finish at once


def make_app(config: FakeLLMConfig | None = None) -> web.Application:
    """The fake provider as an aiohttp application (state under ``app[STATE_KEY]``)."""
    app = web.Application(middlewares=[_json_errors], client_max_size=64 * 1024 * 1024)
    app[STATE_KEY] = FakeState(config or FakeLLMConfig())
    app.router.add_post("/v1/chat/completions", _chat_completions)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/_fake/stats", _stats)
    app.router.add_get("/_fake/requests", _request_log)
    app.on_shutdown.append(_on_shutdown)
    return app


class FakeLLM:
    """The fake provider served on a loopback port; an async context manager."""

    def __init__(self, config: FakeLLMConfig | None = None, *, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.config = config or FakeLLMConfig()
        self._host = host
        self._port = port
        self._app = make_app(self.config)
        self._runner: web.AppRunner | None = None
        self._bound_port: int | None = None
        self._closed = False

    @property
    def _state(self) -> FakeState:
        return self._app[STATE_KEY]

    async def start(self) -> None:
        """Bind and serve; the real port is read back when ``port`` is 0."""
        if self._closed:
            raise RuntimeError("Cannot start a FakeLLM after aclose()")
        if self._runner is not None:
            return
        runner = web.AppRunner(self._app, handler_cancellation=True, shutdown_timeout=2.0,
                               access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._bound_port = runner.addresses[0][1]

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` of the running server."""
        if self._bound_port is None:
            raise RuntimeError("FakeLLM is not started: call await start() first")
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._bound_port}"

    @property
    def base_url(self) -> str:
        """The OpenAI ``base_url`` (``url`` + ``/v1``)."""
        return self.url + "/v1"

    @property
    def requests(self) -> list[RequestLogEntry]:
        """Every request received so far, in arrival order."""
        return self._state.log

    @property
    def stats(self) -> FakeLLMStats:
        """Counters: total, in-flight, queued and their peaks."""
        return self._state.stats()

    def reset_log(self) -> None:
        """Forget the logged requests and the peak counters."""
        self._state.reset_log()

    def reset_script(self) -> None:
        """Start the configured ``script`` from its first reply again."""
        self._state.script_cursor = 0

    async def aclose(self) -> None:
        """Stop serving (hanging requests are released); safe to call twice."""
        self._closed = True
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()
