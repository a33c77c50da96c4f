"""Agent backends: simulated, openai (OpenAI-compatible), opencode (the real CLI).

``make_backend(settings, ...)`` builds the one ``agents.backend`` names;
``model_for(settings, smartness, explicit)`` picks the model for a task.
"""

from __future__ import annotations

from pathlib import Path

from ..config import AgentSettings
from ..errors import AgentUnavailableError
from .base import Acquire, AgentBackend, AgentEvent, AgentRequest, AgentResult, Emit
from .http import HttpClientPool
from .openai_backend import OpenAIBackend
from .opencode import OpencodeBackend, find_opencode
from .simulated import SimulatedBackend

__all__ = [
    "Acquire",
    "AgentBackend",
    "AgentEvent",
    "AgentRequest",
    "AgentResult",
    "Emit",
    "HttpClientPool",
    "OpenAIBackend",
    "OpencodeBackend",
    "SimulatedBackend",
    "find_opencode",
    "make_backend",
    "model_for",
]


def make_backend(settings: AgentSettings, *, pool: HttpClientPool | None,
                 acquire: Acquire | None, state_dir: Path) -> AgentBackend:
    """The backend ``settings.backend`` names; AgentUnavailableError when it cannot run."""
    if settings.backend == "simulated":
        return SimulatedBackend(settings, acquire=acquire)
    if settings.backend == "openai":
        if pool is None:
            raise AgentUnavailableError("The openai backend needs an HttpClientPool (pool=None)")
        return OpenAIBackend(settings, pool, acquire=acquire)
    if settings.backend == "opencode":
        return OpencodeBackend(settings, acquire=acquire, state_dir=state_dir)
    raise AgentUnavailableError(f"Unknown agents.backend={settings.backend!r}: "
                                "must be simulated, openai or opencode")


def model_for(settings: AgentSettings, smartness: str, explicit_model: str | None) -> str:
    """The explicit model if given, else ``model_smart`` for smart employees, else normal."""
    if explicit_model:
        return explicit_model
    return settings.model_smart if smartness == "smart" else settings.model_normal
