"""OpenAI wire format for the fake LLM provider: request checks, replies, stream chunks.

Pure functions only (no I/O, no clock), so the shapes are easy to test on their own.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .config import ScriptedReply

__all__ = [
    "BadRequest",
    "ChatRequest",
    "ReplyContent",
    "completion_object",
    "error_body",
    "file_marker",
    "fill_file",
    "filler_words",
    "parse_chat_request",
    "script_marker",
    "stream_chunks",
]

FILLER_VOCABULARY = (
    "the", "agent", "reads", "file", "and", "plans", "a", "small", "change", "then",
    "writes", "tests", "runs", "them", "checks", "output", "updates", "notes", "refactors",
    "code", "reviews", "diff", "commits", "work", "asks", "lead", "for", "lease", "waits",
    "merges", "branch", "fixes", "bug", "adds", "docs", "measures", "latency", "reports",
    "result", "keeps", "queue", "short", "retries", "later", "closes", "task",
)

_MARKER = re.compile(r"\[\[script:([^\]]+)\]\]")
_FILE_MARKER = re.compile(r"\[\[file:([^\]]+)\]\]")
# Tool-call arguments are streamed in pieces of this many characters (one "token" each).
ARGUMENT_PIECE_CHARS = 24


class BadRequest(Exception):
    """The request body breaks the OpenAI schema; ``param`` names the field."""

    def __init__(self, param: str | None, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.message = message


@dataclass(frozen=True, kw_only=True)
class ChatRequest:
    """The parts of a chat completion request the fake looks at."""

    model: str
    messages: list[dict[str, Any]]
    stream: bool
    include_usage: bool
    has_tools: bool


@dataclass(frozen=True, kw_only=True)
class ReplyContent:
    """What one answer says: text tokens (words) and/or tool calls."""

    kind: str  # "filler" | "script" | "title" | "done"
    words: tuple[str, ...] = ()
    tool_calls: tuple[tuple[str, dict[str, Any]], ...] = ()

    @property
    def text(self) -> str:
        """The whole text of the reply."""
        return " ".join(self.words)

    @classmethod
    def from_text(cls, kind: str, text: str) -> ReplyContent:
        """A text reply, tokenised as words."""
        return cls(kind=kind, words=tuple(text.split()))

    @classmethod
    def from_script(cls, reply: ScriptedReply) -> ReplyContent:
        """The content of one scripted reply."""
        words = tuple(reply.text.split()) if reply.text else ()
        calls = tuple((name, dict(args)) for name, args in reply.tool_calls)
        return cls(kind="script", words=words, tool_calls=calls)

    def token_count(self) -> int:
        """Completion tokens: words plus streamed argument pieces."""
        return len(self.words) + sum(len(_argument_pieces(a)) for _n, a in self.tool_calls)


def error_body(message: str, err_type: str, param: str | None, code: str | None) -> dict[str, Any]:
    """An OpenAI-style error document."""
    return {"error": {"message": message, "type": err_type, "param": param, "code": code}}


def parse_chat_request(body: object) -> ChatRequest:
    """Check a decoded body; raise :class:`BadRequest` naming the offending field."""
    if not isinstance(body, dict):
        raise BadRequest(None, "The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise BadRequest("model", f"'model' must be a non-empty string, got {model!r}.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages", "'messages' must be a non-empty array.")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequest(f"messages[{i}]", f"messages[{i}] must be an object with a 'role'.")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("stream", f"'stream' must be a boolean, got {stream!r}.")
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise BadRequest("tools", "'tools' must be an array.")
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    return ChatRequest(
        model=model,
        messages=messages,
        stream=stream,
        include_usage=include_usage,
        has_tools=bool(tools),
    )


def _message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", "")) for part in content if isinstance(part, dict)
        )
    return ""


def script_marker(messages: list[dict[str, Any]], pattern: re.Pattern[str] = _MARKER) -> str | None:
    """The NAME of a ``[[script:NAME]]`` marker in the last user message, if any."""
    for message in reversed(messages):
        if message.get("role") == "user":
            found = pattern.search(_message_text(message))
            return found.group(1) if found else None
    return None


def file_marker(messages: list[dict[str, Any]]) -> str | None:
    """The PATH of a ``[[file:PATH]]`` marker in the last user message, if any."""
    return script_marker(messages, _FILE_MARKER)


def fill_file(calls: tuple[tuple[str, dict[str, Any]], ...],
              path: str) -> tuple[tuple[str, dict[str, Any]], ...]:
    """Tool calls with ``{file}`` in their string arguments replaced by ``path``."""
    return tuple((name, {k: v.replace("{file}", path) if isinstance(v, str) else v
                         for k, v in args.items()}) for name, args in calls)


def assistant_turns(messages: list[dict[str, Any]]) -> int:
    """How many assistant messages the conversation already holds."""
    return sum(1 for m in messages if m.get("role") == "assistant")


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """Prompt size in words (the fake's token unit)."""
    return sum(len(_message_text(m).split()) for m in messages)


def filler_words(rng: random.Random, count: int) -> tuple[str, ...]:
    """``count`` deterministic filler words drawn from ``rng``."""
    return tuple(rng.choice(FILLER_VOCABULARY) for _ in range(count))


def _argument_pieces(arguments: dict[str, Any]) -> list[str]:
    text = json.dumps(arguments)
    return [text[i : i + ARGUMENT_PIECE_CHARS] for i in range(0, len(text), ARGUMENT_PIECE_CHARS)]


def _tool_call_id(completion_id: str, index: int) -> str:
    return f"call_{completion_id.removeprefix('chatcmpl-')}_{index}"


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def completion_object(
    *, completion_id: str, created: int, model: str, reply: ReplyContent, prompt: int
) -> dict[str, Any]:
    """A whole non-streaming ``chat.completion`` object."""
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
    finish = "stop"
    if reply.tool_calls:
        finish = "tool_calls"
        message["tool_calls"] = [
            {"id": _tool_call_id(completion_id, i), "type": "function",
             "function": {"name": name, "arguments": json.dumps(args)}}
            for i, (name, args) in enumerate(reply.tool_calls)
        ]
    return {
        "id": completion_id, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": _usage(prompt, reply.token_count()),
    }


def stream_chunks(
    *, completion_id: str, created: int, model: str, reply: ReplyContent,
    prompt: int, include_usage: bool,
) -> Iterator[tuple[bool, dict[str, Any]]]:
    """``chat.completion.chunk`` objects in order; the flag says "this chunk is one token"."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": completion_id, "object": "chat.completion.chunk", "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }

    yield False, chunk({"role": "assistant", "content": ""})
    for i, word in enumerate(reply.words):
        yield True, chunk({"content": word if i == 0 else " " + word})
    for index, (name, args) in enumerate(reply.tool_calls):
        yield False, chunk({"tool_calls": [{
            "index": index, "id": _tool_call_id(completion_id, index), "type": "function",
            "function": {"name": name, "arguments": ""}}]})
        for piece in _argument_pieces(args):
            yield True, chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    yield False, chunk({}, "tool_calls" if reply.tool_calls else "stop")
    if include_usage:
        usage_chunk = chunk({})
        usage_chunk["choices"] = []
        usage_chunk["usage"] = _usage(prompt, reply.token_count())
        yield False, usage_chunk
