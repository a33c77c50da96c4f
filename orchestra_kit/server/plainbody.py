"""The fast paths of ``POST /employees`` and ``POST /tasks``: a plainly valid body
skips pydantic.

The strict model (:class:`~.schemas.HireBody`) stays the definition of what the API
accepts and how each error is worded. But a hire's body would then be validated twice
(by the model here, then by the store), and the model's share was ~6 % of a hire's
samples (docs/benchmarks.md). :func:`plain_hire` takes a body on the fast path only when
checks that imply the model's acceptance all pass — a JSON object with only the known
keys, strings that match the model's own rules, no escaped surrogate — and gives the
values the model would give; anything else, every error included, goes through the
model, so answers and error messages are unchanged. The store still validates what it
is handed (its rules are the same ones), which is the one validation a hire keeps.

:func:`plain_assign` does the same for ``POST /tasks`` (:class:`~.schemas.AssignBody`):
only the canonical keys (``name``, ``task``, ``model``, ``mode``, ``priority``, an
empty ``files``); the aliases (``employee``, ``description``), paths to check and
anything unusual go through the model.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import orjson

from ..models import (
    MAX_DESCRIPTION_CHARS,
    MAX_MODEL_CHARS,
    MAX_ROLE_CHARS,
    NAME_PATTERN,
    Smartness,
    TaskMode,
)

__all__ = ["PlainAssign", "plain_assign", "plain_hire"]

_HIRE_KEYS = frozenset({"name", "role", "smartness"})
_SMARTNESS = frozenset(s.value for s in Smartness)
_ASSIGN_KEYS = frozenset({"name", "task", "model", "mode", "priority", "files"})
_MODES = {m.value: m for m in TaskMode}
_MODEL_CONTROL = re.compile(r"[\x00-\x1f\x7f]").search
_NAME = re.compile(NAME_PATTERN).fullmatch
_CONTROL = re.compile(r"[\x00-\x1f]").search
#: A JSON escape of a UTF-16 surrogate: such bodies take the model's path (it words
#: the lone-surrogate error; a pair is rare enough not to matter).
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]").search


def _object_of(raw: bytes, keys: frozenset[str]) -> dict[str, Any] | None:
    """The JSON object in ``raw`` when it has only ``keys`` and no escaped surrogate."""
    if _SURROGATE(raw):
        return None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return data if type(data) is dict and data.keys() <= keys else None


def plain_hire(raw: bytes) -> tuple[str, str, str] | None:
    """``(name, role, smartness)`` as :class:`~.schemas.HireBody` would give them, when
    ``raw`` is plainly valid; None when the model must decide (it may refuse)."""
    data = _object_of(raw, _HIRE_KEYS)
    if data is None:
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


class PlainAssign(NamedTuple):
    """The fields of a plainly valid ``POST /tasks`` body, as the model gives them."""

    name: str
    task: str
    model: str | None
    mode: TaskMode
    priority: int
    files: list[str]


def plain_assign(raw: bytes) -> PlainAssign | None:
    """The values :class:`~.schemas.AssignBody` would give, when ``raw`` is plainly
    valid; None when the model must decide (it may refuse)."""
    data = _object_of(raw, _ASSIGN_KEYS)
    if data is None:
        return None
    name = data.get("name")
    task = data.get("task")
    if type(name) is not str or type(task) is not str or not _NAME(name):
        return None
    # validate_description's rules: not blank, at most the limit, no NUL.
    if len(task) > MAX_DESCRIPTION_CHARS or "\x00" in task or not task.strip():
        return None
    mode: Any = data.get("mode", "build")
    priority: Any = data.get("priority", 5)
    if type(mode) is not str or type(priority) is not int or not 0 <= priority <= 10:
        return None
    mode = _MODES.get(mode)
    if mode is None:
        return None
    model: Any = data.get("model")
    if model is not None and (type(model) is not str or len(model) > MAX_MODEL_CHARS
                              or not model.strip() or _MODEL_CONTROL(model)):
        return None
    files = data.get("files", [])
    if type(files) is not list or files:  # paths are checked on the model's path
        return None
    return PlainAssign(name, task, model, mode, priority, [])
