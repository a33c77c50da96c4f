"""An agent that calls any OpenAI-compatible ``/chat/completions`` endpoint, streaming.

One task is one chat call: ``POST {base_url}/chat/completions`` with ``stream=true``,
read as Server-Sent Events. The backend records time to first token and output
tokens, and emits ``tokens`` events as they arrive.

Failures: 429, 5xx, connection errors and streams cut before ``[DONE]`` are retried with
capped exponential backoff and full jitter (``uniform(0, min(cap, base * 2**n))``),
never sooner than the provider's ``Retry-After``/``retry-after-ms``. Each call makes at
most ``max_retries`` retries, and the whole backend at most
``retry_budget_floor + retry_budget_ratio * calls`` retries, so an outage is not
amplified into a retry storm. Each attempt takes a token from the shared LLM bucket
(``acquire``) first, then runs under ``asyncio.timeout(request_timeout)`` (the wait for
the token is not counted) and ends in :class:`~orchestra_kit.errors.AgentTimeoutError`
when it expires (timeouts are not retried here: the scheduler decides). Other 4xx answers
fail at once with :class:`~orchestra_kit.errors.ProviderError`.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from ..config import AgentSettings
from ..errors import AgentError, AgentTimeoutError, AgentUnavailableError, ProviderError
from .base import Acquire, AgentEvent, AgentRequest, AgentResult, Emit
from .http import HttpClientPool
from .usage import AgentUsage

__all__ = ["Completion", "OpenAIBackend", "parse_retry_after"]

Sleep = Callable[[float], Awaitable[None]]
_TOKENS_EVENT_EVERY = 16
_ERROR_BODY_LIMIT = 2048


@dataclass(frozen=True, slots=True, kw_only=True)
class Completion:
    """The outcome of one chat call (after retries)."""

    text: str
    tokens_out: int
    ttft_ms: float | None
    attempts: int
    bucket_wait_s: float = 0.0  # summed over attempts


@dataclass(slots=True)
class _Meter:
    """One call's running accounting: attempts made and time spent waiting for the bucket."""

    attempts: int = 0
    bucket_wait_s: float = 0.0


class _Retryable(Exception):
    """One attempt failed in a way worth retrying."""

    def __init__(self, message: str, *, status: int, retry_after_s: float | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after_s = retry_after_s


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (numeric), else None."""
    for name, scale in (("retry-after-ms", 0.001), ("Retry-After", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            value = float(raw) * scale
        except ValueError:
            continue  # an HTTP date: not worth parsing for a local provider
        if value >= 0:
            return value
    return None


class OpenAIBackend:
    """Runs a task as one streaming chat completion against an OpenAI-compatible API."""

    name = "openai"

    def __init__(self, settings: AgentSettings, pool: HttpClientPool, *,
                 acquire: Acquire | None = None, sleep: Sleep = asyncio.sleep,
                 backoff_base_s: float = 0.5, backoff_max_s: float = 30.0,
                 retry_budget_floor: int = 10) -> None:
        if not settings.base_url:
            raise AgentUnavailableError(
                "The openai backend needs agents.base_url (e.g. http://127.0.0.1:8000/v1); "
                "it is empty")
        self.settings = settings
        self._pool = pool
        self._acquire = acquire
        self._sleep = sleep
        self._rng = random.Random(settings.seed)
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.retry_budget_floor = retry_budget_floor
        self.url = settings.base_url.rstrip("/") + "/chat/completions"
        self.calls = 0  # logical calls (one per complete())
        self.attempts = 0  # HTTP requests sent
        self.retries = 0

    # ------------------------------------------------------------------ the task

    async def run(self, request: AgentRequest, emit: Emit) -> AgentResult:
        """Ask the model to do the task; the reply text is the summary."""
        emit(AgentEvent(kind="started"))
        started = time.perf_counter()
        meter = _Meter()
        try:
            done = await self.complete(request.model, build_messages(request), emit, meter=meter)
        except AgentError as err:
            err.usage = _usage(meter, started, None, None).to_dict()
            raise
        emit(AgentEvent(kind="progress", progress=100))
        emit(AgentEvent(kind="finished"))
        return AgentResult(summary=done.text, llm_calls=done.attempts,
                           tokens_out=done.tokens_out, ttft_ms=done.ttft_ms,
                           usage=_usage(meter, started, done.ttft_ms, done.tokens_out))

    async def aclose(self) -> None:
        """The pool belongs to the caller: nothing to release here."""

    # ------------------------------------------------------------------ one call, retried

    async def complete(self, model: str, messages: list[dict[str, str]],
                       emit: Emit | None = None, *, meter: _Meter | None = None) -> Completion:
        """One chat call with retries; ProviderError / AgentTimeoutError when it gives up."""
        self.calls += 1
        body = {"model": model, "messages": messages, "stream": True,
                "stream_options": {"include_usage": True}}
        meter = meter if meter is not None else _Meter()
        attempt = 0
        while True:
            attempt += 1
            meter.attempts = attempt
            try:
                text, tokens, ttft_ms = await self._attempt(body, emit, meter)
                return Completion(text=text, tokens_out=tokens, ttft_ms=ttft_ms,
                                  attempts=attempt, bucket_wait_s=meter.bucket_wait_s)
            except _Retryable as failure:
                delay = self._retry_delay(failure, attempt)
                if delay is None:
                    raise self._give_up(failure, attempt) from None
            self.retries += 1
            await self._sleep(delay)

    def _retry_delay(self, failure: _Retryable, attempt: int) -> float | None:
        """Seconds to wait before the next attempt, or None to give up."""
        if attempt > self.settings.max_retries:
            return None
        if self.retries >= self.retry_budget_floor + self.settings.retry_budget_ratio * self.calls:
            return None
        cap = min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1))
        delay = self._rng.uniform(0.0, cap)
        if failure.retry_after_s is not None:
            if failure.retry_after_s > self.backoff_max_s:
                return None  # the provider asks for longer than we wait: let the caller decide
            delay = max(delay, failure.retry_after_s)
        return delay

    def _give_up(self, failure: _Retryable, attempt: int) -> ProviderError:
        budget = self.retry_budget_floor + self.settings.retry_budget_ratio * self.calls
        why = ("max_retries reached" if attempt > self.settings.max_retries
               else "Retry-After too long" if (failure.retry_after_s or 0) > self.backoff_max_s
               else f"retry budget exhausted ({self.retries} retries, budget {budget:g})")
        return ProviderError(
            f"LLM call to {self.url} failed after {attempt} attempt(s) ({why}): {failure.message}",
            status=failure.status, retry_after_s=failure.retry_after_s)

    async def _attempt(self, body: dict[str, Any], emit: Emit | None,
                       meter: _Meter) -> tuple[str, int, float | None]:
        if self._acquire is not None:
            waited = time.perf_counter()
            await self._acquire()
            meter.bucket_wait_s += time.perf_counter() - waited
        self.attempts += 1
        timeout_s = self.settings.request_timeout
        try:
            async with asyncio.timeout(timeout_s) as scope:
                return await self._post(body, emit)
        except TimeoutError:
            if scope.expired():
                raise AgentTimeoutError(
                    f"LLM call to {self.url} took longer than request_timeout={timeout_s:g}s"
                ) from None
            raise

    async def _post(self, body: dict[str, Any], emit: Emit | None) -> tuple[str, int, float | None]:
        headers = {"Authorization": f"Bearer {self.settings.api_key or 'sk-local'}",
                   "Accept": "text/event-stream"}
        started = time.perf_counter()
        try:
            async with self._pool.session() as session, session.post(
                self.url, json=body, headers=headers
            ) as response:
                if response.status != 200:
                    await _raise_for_status(response)
                return await _read_stream(response, started, emit)
        except aiohttp.ClientResponseError as e:
            raise _Retryable(f"HTTP {e.status}: {e.message}", status=e.status) from None
        except (aiohttp.ClientError, ConnectionError) as e:
            raise _Retryable(f"connection error: {type(e).__name__}: {e}", status=502) from None


def _usage(meter: _Meter, started: float, ttft_ms: float | None,
           tokens: int | None) -> AgentUsage:
    return AgentUsage(backend="openai", wall_s=round(time.perf_counter() - started, 4),
                      ttft_ms=None if ttft_ms is None else round(ttft_ms, 3), tokens_out=tokens,
                      llm_calls=meter.attempts, retries=max(0, meter.attempts - 1),
                      bucket_wait_s=round(meter.bucket_wait_s, 4))


def build_messages(request: AgentRequest) -> list[dict[str, str]]:
    """The chat messages for a task: who the agent is, then the task and its files."""
    files = ", ".join(request.files) if request.files else "(none named)"
    system = (f"You are {request.employee}, a software engineer on a team "
              f"(mode: {request.mode}). Answer with what you did, briefly.")
    user = f"Task: {request.description}\nFiles: {files}"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


async def _raise_for_status(response: aiohttp.ClientResponse) -> None:
    raw = await response.content.read(_ERROR_BODY_LIMIT)
    detail = raw.decode("utf-8", "replace").strip()
    try:
        detail = json.loads(detail)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        pass
    status = response.status
    message = f"HTTP {status}: {detail}" if detail else f"HTTP {status}"
    if status == 429 or status >= 500:
        raise _Retryable(message, status=status, retry_after_s=parse_retry_after(response.headers))
    raise ProviderError(f"LLM provider refused the call: {message}", status=status)


async def _read_stream(response: aiohttp.ClientResponse, started: float,
                       emit: Emit | None) -> tuple[str, int, float | None]:
    parts: list[str] = []
    chunks = 0
    usage_tokens: int | None = None
    ttft_ms: float | None = None
    async for raw in response.content:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue  # blank separators, comments, event names
        data = line[5:].strip()
        if data == b"[DONE]":
            tokens = usage_tokens if usage_tokens is not None else chunks
            if emit is not None:
                emit(AgentEvent(kind="tokens", tokens=tokens))
            return "".join(parts), tokens, ttft_ms
        try:
            chunk = json.loads(data)
        except ValueError:
            raise _Retryable(f"malformed stream chunk: {data[:80]!r}", status=502) from None
        usage = chunk.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
            usage_tokens = usage["completion_tokens"]
        piece = _delta_text(chunk)
        if piece:
            if ttft_ms is None:
                ttft_ms = (time.perf_counter() - started) * 1000.0
            parts.append(piece)
            chunks += 1
            if emit is not None and chunks % _TOKENS_EVENT_EVERY == 0:
                emit(AgentEvent(kind="tokens", tokens=chunks))
    raise _Retryable(f"stream cut after {chunks} chunk(s) without [DONE]", status=502)


def _delta_text(chunk: dict[str, Any]) -> str:
    choices = chunk.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        return ""
    delta = choices[0].get("delta") or {}
    content = delta.get("content") if isinstance(delta, dict) else None
    return content if isinstance(content, str) else ""
