"""A seeded, in-process agent: latency and failures from a model, no network, no disk.

Each task draws its latency and its fate from ``random.Random(f"{seed}:{task_id}")``, so
a task behaves the same way on every run whatever the order tasks run in. The run is
four steps (progress 25/50/75/100), each one ``asyncio.sleep`` — cheap enough for the
scheduler benchmark to run ten thousand of them.
"""

from __future__ import annotations

import asyncio
import random

from ..config import AgentSettings
from ..errors import AgentError
from .base import Acquire, AgentEvent, AgentRequest, AgentResult, Emit

__all__ = ["SimulatedBackend"]

_STEPS = (25, 50, 75, 100)


class SimulatedBackend:
    """Sleeps a seeded latency, emits progress, fails with ``sim_failure_rate``."""

    name = "simulated"

    def __init__(self, settings: AgentSettings, *, acquire: Acquire | None = None) -> None:
        self.settings = settings
        self._acquire = acquire
        self.runs = 0

    def plan(self, task_id: int) -> tuple[float, bool]:
        """``(latency_s, fails)`` for a task: the same on every call and every run."""
        rng = random.Random(f"{self.settings.seed}:{task_id}")
        s = self.settings
        latency_ms = max(0.0, s.sim_latency_ms + rng.uniform(-s.sim_jitter_ms, s.sim_jitter_ms))
        fails = rng.random() < s.sim_failure_rate
        return latency_ms / 1000.0, fails

    async def run(self, request: AgentRequest, emit: Emit) -> AgentResult:
        """Simulate one task; raise a retryable AgentError when the draw says it fails."""
        self.runs += 1
        latency_s, fails = self.plan(request.task_id)
        if self._acquire is not None:
            await self._acquire()
        emit(AgentEvent(kind="started"))
        step_s = latency_s / len(_STEPS)
        for i, pct in enumerate(_STEPS):
            if step_s > 0:
                await asyncio.sleep(step_s)
            if fails and i == len(_STEPS) // 2:
                err = AgentError(
                    f"Simulated failure of task {request.task_id} for {request.employee!r} "
                    f"(sim_failure_rate={self.settings.sim_failure_rate})"
                )
                err.retryable = True
                raise err
            emit(AgentEvent(kind="progress", progress=pct))
        emit(AgentEvent(kind="finished"))
        return AgentResult(
            summary=f"Simulated: {request.description[:80]}",
            files_touched=request.files,
            llm_calls=1,
            tokens_out=0,
        )

    async def aclose(self) -> None:
        """Nothing to release."""
