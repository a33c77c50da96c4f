"""Parse ``opencode run --format json`` output lines into :class:`AgentEvent` values.

opencode 1.18 prints one JSON object per line::

    {"type": "step_start", "part": {...}}
    {"type": "tool_use",   "part": {"tool": "write", "state": {"status": "completed",
                                    "input": {"filePath": "/abs/hello.txt", ...}}}}
    {"type": "text",       "part": {"text": "Wrote hello.txt."}}
    {"type": "step_finish","part": {"reason": "stop", "tokens": {"output": 2, ...}}}
    {"type": "error",      "error": {"name": "APIError",
                                     "data": {"message": "...", "statusCode": 401}}}

Anything else (a non-JSON line, an unknown type) is kept for error messages and ignored.
"""

from __future__ import annotations

import json
import os.path
from collections import deque
from pathlib import Path
from typing import Any

from .base import AgentEvent

__all__ = ["PROVIDER_ERROR_MARKERS", "OpencodeEventParser", "relative_path"]

#: Tools whose completed calls change a file.
FILE_TOOLS = frozenset({"write", "edit", "patch", "multiedit"})
#: Substrings that mean the LLM provider, not the agent, failed (as the original checked).
PROVIDER_ERROR_MARKERS = ("AI_APICallError", "APIError", "Rate limit", "rate_limit",
                          "Invalid API key", "insufficient_quota", "ProviderModelNotFound")
_MAX_STEP_PROGRESS = 90
_KEEP_LINES = 20


def _obj(parent: dict[str, Any], key: str) -> dict[str, Any]:
    """``parent[key]`` when it is a JSON object, else an empty dict."""
    value = parent.get(key)
    return value if isinstance(value, dict) else {}


def relative_path(path: str, *, workspace: Path, project_root: Path) -> str:
    """``path`` (absolute, or relative to the workspace) relative to the project root.

    A path outside the project root is returned absolute.
    """
    p = Path(path)
    if not p.is_absolute():
        p = workspace / p
    p = Path(_normalise(p))
    root = Path(_normalise(project_root))
    try:
        return p.relative_to(root).as_posix()
    except ValueError:
        return p.as_posix()


def _normalise(p: Path) -> str:
    return os.path.normpath(os.path.realpath(p))


class OpencodeEventParser:
    """Turns output lines into events; remembers files, tokens, text and the last error."""

    def __init__(self, *, workspace: Path, project_root: Path) -> None:
        self.workspace = workspace
        self.project_root = project_root
        self.steps = 0
        self.tokens_out = 0
        self.files_touched: list[str] = []
        self.texts: list[str] = []
        self.error: dict[str, Any] | None = None
        self.other_lines: deque[str] = deque(maxlen=_KEEP_LINES)

    def feed(self, line: str) -> list[AgentEvent]:
        """Events for one output line (possibly none)."""
        line = line.strip()
        if not line:
            return []
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            self.other_lines.append(line[:500])
            return []
        kind = event.get("type")
        part = _obj(event, "part")
        handler = {
            "step_start": self._step_start,
            "tool_use": self._tool_use,
            "text": self._text,
            "step_finish": self._step_finish,
        }.get(kind if isinstance(kind, str) else "")
        if kind == "error":
            self.error = _obj(event, "error")
            return []
        if handler is None:
            self.other_lines.append(line[:500])
            return []
        return handler(part)

    def _step_start(self, part: dict[str, Any]) -> list[AgentEvent]:
        self.steps += 1
        progress = min(_MAX_STEP_PROGRESS, 10 * self.steps)
        return [AgentEvent(kind="progress", progress=progress)]

    def _tool_use(self, part: dict[str, Any]) -> list[AgentEvent]:
        state = _obj(part, "state")
        if part.get("tool") not in FILE_TOOLS or state.get("status") != "completed":
            return []
        inputs = _obj(state, "input")
        meta = _obj(state, "metadata")
        raw = inputs.get("filePath") or meta.get("filepath") or inputs.get("path")
        if not isinstance(raw, str) or not raw:
            return []
        rel = relative_path(raw, workspace=self.workspace, project_root=self.project_root)
        if rel not in self.files_touched:
            self.files_touched.append(rel)
        return [AgentEvent(kind="file", path=rel)]

    def _text(self, part: dict[str, Any]) -> list[AgentEvent]:
        text = part.get("text")
        if not isinstance(text, str) or not text:
            return []
        self.texts.append(text)
        return [AgentEvent(kind="text", text=text)]

    def _step_finish(self, part: dict[str, Any]) -> list[AgentEvent]:
        tokens = _obj(part, "tokens")
        out = tokens.get("output")
        if isinstance(out, int) and not isinstance(out, bool) and out >= 0:
            self.tokens_out += out
        return [AgentEvent(kind="tokens", tokens=self.tokens_out)]

    # ------------------------------------------------------------------ errors

    def error_status(self) -> int | None:
        """The HTTP status of the provider error event, if it carried one."""
        status = _obj(self.error or {}, "data").get("statusCode")
        return status if isinstance(status, int) and not isinstance(status, bool) else None

    def error_message(self) -> str:
        """A one-line description of the error event."""
        err = self.error or {}
        data = _obj(err, "data")
        message = data.get("message") or err.get("message") or json.dumps(err)[:300]
        return f"{err.get('name', 'error')}: {message}"
