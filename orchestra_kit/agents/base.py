"""The one interface every agent backend implements.

A backend runs one task in an employee's workspace, reports what happens through an
``emit`` callback (started, progress, file touched, tokens, text, finished) and returns
an :class:`AgentResult`, or raises an :class:`~orchestra_kit.errors.AgentError`.
Cancellation is asyncio cancellation: when the scheduler cancels the coroutine, the
backend stops its work (kills its process group, closes its streams) and re-raises.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from .usage import AgentUsage

__all__ = ["Acquire", "AgentBackend", "AgentEvent", "AgentRequest", "AgentResult", "Emit"]

EventKind = Literal["started", "progress", "file", "tokens", "text", "finished"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentEvent:
    """Something that happened during a run."""

    kind: EventKind
    progress: int | None = None  # 0-100, for kind == "progress"
    path: str | None = None  # relative to the project root, for kind == "file"
    tokens: int | None = None  # output tokens so far, for kind == "tokens"
    text: str | None = None
    t: float = field(default_factory=time.time)


Emit = Callable[[AgentEvent], None]
#: Waits for permission to make one LLM call (the shared token bucket).
Acquire = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentRequest:
    """What a backend needs to run one task."""

    task_id: int
    employee: str
    description: str
    model: str
    mode: str = "build"
    files: tuple[str, ...] = ()
    workspace: Path = Path(".")  # the employee's own folder; the agent's cwd
    project_root: Path = Path(".")
    timeout_s: float = 1800.0


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentResult:
    """What a successful run produced."""

    summary: str = ""
    files_touched: tuple[str, ...] = ()
    llm_calls: int = 0
    tokens_out: int = 0
    ttft_ms: float | None = None
    usage: AgentUsage | None = None  # what the run cost (see agents/usage.py)


@runtime_checkable
class AgentBackend(Protocol):
    """A pluggable way of running a task."""

    name: str

    async def run(self, request: AgentRequest, emit: Emit) -> AgentResult:
        """Run the task; raise AgentError on failure; re-raise CancelledError."""
        ...

    async def aclose(self) -> None:
        """Release what the backend holds (idempotent)."""
        ...
