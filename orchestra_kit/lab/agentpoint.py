"""The agent side of one sweep point: its provider, its sampling, its columns.

A spec with ``[provider] kind = "fake"`` gets, per (point, repeat)::

    async with agent_point(spec.provider, seed) as agents:      # None without a provider
        overrides = {**point.settings_overrides, **agents.overrides}   # agents.base_url
        async with <the target, with overrides> as target:
            async with agents.sampling():                        # machine + agent processes
                run = await <the load>
            await agents.collect(target_url, api_key, workspace_dir, expect_files)
        agents.after_target(workspace_dir)                       # leftover processes
    summary |= agents.columns;  agents.rows -> agents.csv

so the sweep (whatever its target kind: in-process, a child ``orchestra serve``) needs
only these few calls. See :mod:`.provider` and :mod:`.agentstats` for what is measured.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from .agentstats import (
    MachineSampler,
    agent_point_columns,
    collect_task_rows,
    count_files,
    leftover_processes,
)
from .provider import FakeProviderProcess, ProviderSpec, fake_provider

__all__ = ["AgentPoint", "agent_point"]


class AgentPoint:
    """A running fake provider plus what the point measured about the agents."""

    def __init__(self, provider: FakeProviderProcess) -> None:
        self.provider = provider
        self.machine = MachineSampler()
        self.columns: dict[str, Any] = {}
        self.rows: list[dict[str, Any]] = []

    @property
    def overrides(self) -> Mapping[str, Any]:
        """Settings that point the target's agents at this point's provider."""
        return {"agents.base_url": self.provider.base_url}

    def sampling(self) -> contextlib.AbstractAsyncContextManager[MachineSampler]:
        """Sample the machine and the agent processes while the load runs."""
        return self.machine.sampling()

    async def collect(self, url: str, api_key: str, workspace_dir: str | Path | None,
                      expect_files: str) -> None:
        """Read every task of the target (before it stops), the provider and the machine."""
        from ..client import OrchestraClient

        async with OrchestraClient(url, api_key=api_key or None) as client:
            self.rows = await collect_task_rows(client)
        files = (count_files(workspace_dir, expect_files)
                 if workspace_dir is not None and expect_files else -1)
        self.columns = {**agent_point_columns(self.rows), "files_found": files,
                        "leftover_processes": -1, **self.machine.columns(),
                        **await self.provider.columns()}

    def after_target(self, workspace_dir: str | Path | None) -> None:
        """Count the processes still running in the point's workspace (should be none)."""
        if workspace_dir is not None and self.columns:
            self.columns["leftover_processes"] = len(leftover_processes(workspace_dir))


@contextlib.asynccontextmanager
async def agent_point(spec: ProviderSpec, seed: int) -> AsyncIterator[AgentPoint | None]:
    """An :class:`AgentPoint` with its provider running, or None without ``[provider]``."""
    if spec.kind != "fake":
        yield None
        return
    async with fake_provider(spec, seed) as provider:
        yield AgentPoint(provider)
