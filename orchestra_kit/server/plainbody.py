"""The fast path of ``POST /employees``: a plainly valid body skips pydantic.

The strict model (:class:`~.schemas.HireBody`) stays the definition of what the API
accepts and how each error is worded. But a hire's body would then be validated twice
(by the model here, then by the store), and the model's share was ~6 % of a hire's
samples (docs/benchmarks.md). :func:`plain_hire` takes a body on the fast path only when
checks that imply the model's acceptance all pass — a JSON object with only the known
keys, strings that match the model's own rules, no escaped surrogate — and gives the
values the model would give; anything else, every error included, goes through the
model, so answers and error messages are unchanged. The store still validates what it
is handed (its rules are the same ones), which is the one validation a hire keeps.
"""

from __future__ import annotations

import re

import orjson

from ..models import MAX_ROLE_CHARS, NAME_PATTERN, Smartness

__all__ = ["plain_hire"]

_HIRE_KEYS = frozenset({"name", "role", "smartness"})
_SMARTNESS = frozenset(s.value for s in Smartness)
_NAME = re.compile(NAME_PATTERN).fullmatch
_CONTROL = re.compile(r"[\x00-\x1f]").search
#: A JSON escape of a UTF-16 surrogate: such bodies take the model's path (it words
#: the lone-surrogate error; a pair is rare enough not to matter).
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]").search


def plain_hire(raw: bytes) -> tuple[str, str, str] | None:
    """``(name, role, smartness)`` as :class:`~.schemas.HireBody` would give them, when
    ``raw`` is plainly valid; None when the model must decide (it may refuse)."""
    if _SURROGATE(raw):
        return None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(data) is not dict or not data.keys() <= _HIRE_KEYS:
        return None
    name = data.get("name")
    role = data.get("role")
    smartness = data.get("smartness", "normal")
    if type(name) is not str or type(role) is not str or type(smartness) is not str:
        return None
    if smartness not in _SMARTNESS or not _NAME(name):
        return None
    # The model's role rules: the raw text at most MAX_ROLE_CHARS, no control
    # characters anywhere, something left once stripped (which is the value kept).
    if len(role) > MAX_ROLE_CHARS or _CONTROL(role):
        return None
    role = role.strip()
    return (name, role, smartness) if role else None
