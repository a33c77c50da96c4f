"""Configuration and scripted replies of the fake LLM provider (:mod:`orchestra_kit.fakellm`).

A script is a tuple of :class:`ScriptedReply`; JSON script files use the same shape::

    [{"text": "hello"},
     {"tool_calls": [{"name": "write", "arguments": {"filePath": "/tmp/a", "content": "x"}}]}]

or, to also define named scripts (selected by a ``[[script:NAME]]`` marker in the last
user message)::

    {"script": [...], "named_scripts": {"NAME": [...]}}
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from orchestra_kit.errors import ConfigError

__all__ = [
    "FakeLLMConfig",
    "ScriptedReply",
    "scripts_from_json",
    "write_file_script",
]

FAULT_RATE_FIELDS = ("rate_429", "rate_500", "rate_503", "rate_hang", "rate_stream_cut")


@dataclass(frozen=True, kw_only=True)
class ScriptedReply:
    """One scripted assistant turn: a text, tool calls ``(name, arguments)``, or both."""

    text: str | None = None
    tool_calls: tuple[tuple[str, Mapping[str, Any]], ...] = ()

    def __post_init__(self) -> None:
        calls = tuple((name, dict(args)) for name, args in self.tool_calls)
        object.__setattr__(self, "tool_calls", calls)
        if self.text is None and not calls:
            raise ConfigError("ScriptedReply", self, "needs text or at least one tool call")
        if self.text is not None and not isinstance(self.text, str):
            raise ConfigError("ScriptedReply.text", self.text, "must be a string")
        for name, _args in calls:
            if not isinstance(name, str) or not name:
                raise ConfigError("ScriptedReply.tool_calls.name", name, "non-empty string")


def write_file_script(
    path: str, content: str, *, resolve: bool = True
) -> tuple[ScriptedReply, ...]:
    """Script that makes opencode's ``write`` tool create ``path`` with ``content``, then stop.

    opencode's ``write`` takes ``{"filePath", "content"}``. With ``resolve=False`` a relative
    path is sent as it is and opencode resolves it against its own working directory, so one
    (named) script can serve many workspaces.

    With ``resolve=False``, a ``{file}`` in ``path`` or ``content`` is replaced, per
    request, by the PATH of a ``[[file:PATH]]`` marker in the last user message (named
    scripts only), so each task can write its own file.
    """
    file_path = os.path.abspath(path) if resolve else path
    return (
        ScriptedReply(tool_calls=(("write", {"filePath": file_path, "content": content}),)),
        ScriptedReply(text=f"Wrote {file_path}."),
    )


def _check_number(name: str, value: object, *, minimum: float, strict: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok and isinstance(value, float) and math.isnan(value):
        ok = False
    if ok:
        ok = value > minimum if strict else value >= minimum  # type: ignore[operator]
    if not ok:
        relation = ">" if strict else ">="
        raise ConfigError(name, value, f"a number {relation} {minimum}")


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(name, value, f"an integer >= {minimum}")


def _check_script(name: str, script: object) -> None:
    if not isinstance(script, tuple) or not all(isinstance(r, ScriptedReply) for r in script):
        raise ConfigError(name, script, "a tuple of ScriptedReply")


@dataclass(frozen=True, kw_only=True)
class FakeLLMConfig:
    """Latency model, capacity, fault rates and scripts of one fake provider."""

    seed: int = 0
    ttft_ms: float = 50.0  # the median time to first token
    ttft_jitter_ms: float = 10.0  # uniform ± spread (when ttft_sigma == 0)
    ttft_sigma: float = 0.0  # > 0: lognormal TTFT with median ttft_ms and this shape
    tokens_per_s: float = 200.0
    output_tokens: int = 40
    output_tokens_jitter: int = 10
    capacity: int = 64  # requests generating at once; the rest wait in a FIFO queue
    max_queue: int = 0  # > 0: a request finding this many waiting gets a 429 at once
    rate_429: float = 0.0
    retry_after_s: float = 1.0
    rate_500: float = 0.0
    rate_503: float = 0.0
    rate_hang: float = 0.0
    hang_max_s: float = 30.0
    rate_stream_cut: float = 0.0
    script: tuple[ScriptedReply, ...] | None = None
    named_scripts: Mapping[str, tuple[ScriptedReply, ...]] = field(default_factory=dict)
    models: tuple[str, ...] = ("fake-model", "fake-smart")
    title_reply: str = "Fake title"
    done_reply: str = "Done."
    record_bodies: bool = False

    def __post_init__(self) -> None:
        _check_int("seed", self.seed, minimum=-(2**63))
        _check_number("ttft_ms", self.ttft_ms, minimum=0)
        _check_number("ttft_jitter_ms", self.ttft_jitter_ms, minimum=0)
        _check_number("ttft_sigma", self.ttft_sigma, minimum=0)
        _check_int("max_queue", self.max_queue, minimum=0)
        _check_number("tokens_per_s", self.tokens_per_s, minimum=0, strict=True)
        _check_int("output_tokens", self.output_tokens, minimum=1)
        _check_int("output_tokens_jitter", self.output_tokens_jitter, minimum=0)
        _check_int("capacity", self.capacity, minimum=1)
        _check_number("retry_after_s", self.retry_after_s, minimum=0)
        _check_number("hang_max_s", self.hang_max_s, minimum=0, strict=True)
        for name in FAULT_RATE_FIELDS:
            value = getattr(self, name)
            _check_number(name, value, minimum=0)
            if value > 1:
                raise ConfigError(name, value, "a fraction between 0 and 1")
        total = sum(getattr(self, name) for name in FAULT_RATE_FIELDS)
        if total > 1 + 1e-9:
            raise ConfigError("rate_*", total, "the fault rates must sum to at most 1")
        self._validate_scripts_and_names()

    def _validate_scripts_and_names(self) -> None:
        if self.script is not None:
            _check_script("script", self.script)
        if not isinstance(self.named_scripts, Mapping):
            raise ConfigError("named_scripts", self.named_scripts, "a dict name -> script")
        for name, script in self.named_scripts.items():
            if not isinstance(name, str) or not name or "]" in name:
                raise ConfigError("named_scripts", name, "names are non-empty, without ']'")
            _check_script(f"named_scripts[{name!r}]", script)
        if (
            not isinstance(self.models, tuple)
            or not self.models
            or not all(isinstance(m, str) and m for m in self.models)
        ):
            raise ConfigError("models", self.models, "a non-empty tuple of model names")
        for name in ("title_reply", "done_reply"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(name, getattr(self, name), "a string")

    @classmethod
    def from_profile(cls, name: str, **overrides: Any) -> FakeLLMConfig:
        """Profile ``name``'s values (:mod:`.profiles`), then ``overrides``."""
        from .profiles import profile_values

        return cls(**{**profile_values(name), **overrides})

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Names of all configuration fields (the CLI maps them to ``--flags``)."""
        return tuple(f.name for f in fields(cls))


def _reply_from_json(where: str, item: object) -> ScriptedReply:
    if not isinstance(item, dict):
        raise ConfigError(where, item, 'an object with "text" and/or "tool_calls"')
    unknown = set(item) - {"text", "tool_calls"}
    if unknown:
        raise ConfigError(where, sorted(unknown), 'only "text" and "tool_calls" are allowed')
    calls: list[tuple[str, dict[str, Any]]] = []
    for i, call in enumerate(item.get("tool_calls") or []):
        if (
            not isinstance(call, dict)
            or not isinstance(call.get("name"), str)
            or not call["name"]
            or not isinstance(call.get("arguments", {}), dict)
        ):
            raise ConfigError(f"{where}.tool_calls[{i}]", call, '{"name": "...", "arguments": {}}')
        calls.append((call["name"], call.get("arguments", {})))
    return ScriptedReply(text=item.get("text"), tool_calls=tuple(calls))


def _script_from_json(where: str, items: object) -> tuple[ScriptedReply, ...]:
    if not isinstance(items, Sequence) or isinstance(items, str):
        raise ConfigError(where, items, "a list of replies")
    return tuple(_reply_from_json(f"{where}[{i}]", item) for i, item in enumerate(items))


def scripts_from_json(
    data: object,
) -> tuple[tuple[ScriptedReply, ...] | None, dict[str, tuple[ScriptedReply, ...]]]:
    """Parse a decoded script file into ``(script, named_scripts)``."""
    if isinstance(data, list):
        return _script_from_json("script", data), {}
    if not isinstance(data, dict) or set(data) - {"script", "named_scripts"}:
        raise ConfigError("script", data, 'a list of replies or {"script", "named_scripts"}')
    script = data.get("script")
    parsed = None if script is None else _script_from_json("script", script)
    named_raw = data.get("named_scripts") or {}
    if not isinstance(named_raw, dict):
        raise ConfigError("named_scripts", named_raw, "an object name -> list of replies")
    named = {
        str(k): _script_from_json(f"named_scripts[{k!r}]", v) for k, v in named_raw.items()
    }
    return parsed, named
