"""Run an experiment: every sweep point × repeat against a fresh target, saved as it goes.

``await run_experiment(spec)`` works at the top level of a notebook cell and inside the
CLI's ``asyncio.run``. Each (point, repeat) gets its own in-process service on
127.0.0.1 with a fresh temporary database (so points are independent), or the
external URL of the spec. Results go to ``results/NAME/RUN_ID/`` (see
docs/results-schema.md); a failed point is recorded, not fatal, and the manifest
says how the run ended.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from ..config import Settings
from .agentpoint import agent_point
from .agentstats import append_agent_rows
from .loadgen import LoadRun, run_load
from .results import RunWriter, summarise_point
from .spec import ExperimentSpec, SweepPoint, to_document
from .workloads import make_workload

__all__ = ["PointDone", "run_experiment", "service_settings"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PointDone:
    """Passed to ``on_point`` after each (point, repeat)."""

    point: SweepPoint
    repeat: int
    summary: dict[str, Any]
    total: int
    done: int


def service_settings(overrides: dict[str, Any], workdir: Path) -> Settings:
    """Settings of an in-process lab target: loopback, ephemeral port, fresh files."""
    base = Settings().with_overrides({
        "server.host": "127.0.0.1", "server.port": 0,
        "database.path": str(workdir / "orchestra.db"),
        "project_root": str(workdir / "project"),
        "workspace_dir": str(workdir / "sessions"),
        "server.requests_per_minute": 0,
    })
    return base.with_overrides(overrides)


@contextlib.asynccontextmanager
async def _target(spec: ExperimentSpec, point: SweepPoint, extra: Mapping[str, Any],
                  ) -> AsyncIterator[tuple[str, Settings | None]]:
    if spec.target.kind == "url":
        yield spec.target.url, None
        return
    from ..server.app import Service  # the lab drives the public service

    with tempfile.TemporaryDirectory(prefix="orchestra-lab-") as tmp:
        overrides = {**point.settings_overrides, **extra}
        settings = service_settings(overrides, Path(tmp))
        Path(settings.project_root).mkdir(parents=True, exist_ok=True)
        async with Service(settings) as service:
            yield service.url, settings


@contextlib.asynccontextmanager
async def _client(url: str, api_key: str, connections: int) -> AsyncIterator[Any]:
    from ..client import OrchestraClient

    connector = aiohttp.TCPConnector(limit=max(connections, 100), limit_per_host=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    async with (aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
                OrchestraClient(url, api_key=api_key or None, session=session) as client):
        yield client


async def _run_point(spec: ExperimentSpec, point: SweepPoint, repeat: int, seed: int,
                     progress: bool, label: str) -> tuple[LoadRun, dict[str, Any]]:
    load = point.load
    model = load.to_model()
    connections = load.users if load.model == "closed" else int(load.rate_rps * 2)
    async with agent_point(spec.provider, seed) as agents:
        overrides = agents.overrides if agents else {}
        async with _target(spec, point, overrides) as (url, settings), _client(
                url, spec.target.api_key, connections) as client:
            workload = make_workload(point.workload, seed)
            await workload.setup(client)
            async with agents.sampling() if agents else contextlib.nullcontext():
                run = await run_load(workload.operation(client), model, duration_s=load.duration_s,
                                     max_requests=load.max_requests, seed=seed,
                                     progress=progress, label=label, grace_s=load.grace_s)
            if settings is not None:
                run.extra["settings"] = settings.flat()
            workspace = settings.workspace_dir if settings is not None else None
            if agents:
                await agents.collect(url, spec.target.api_key, workspace,
                                     point.workload.expect_files)
        if agents:
            agents.after_target(workspace)
            run.extra["agent_rows"] = agents.rows
    columns = agents.columns if agents else {}
    return run, summarise_point(run, slo=spec.slo, params=_params(point)) | columns


def _params(point: SweepPoint) -> dict[str, Any]:
    """The point's columns: the loop kind and its load, then the swept keys."""
    load = point.load
    head: dict[str, Any] = ({"loop": "closed", "concurrency": load.users} if load.model == "closed"
                            else {"loop": "open", "rate_rps": load.rate_rps})
    return {**head, **point.params}


async def run_experiment(
    spec: ExperimentSpec,
    *,
    results_root: str | Path = "results",
    progress: bool = True,
    on_point: Callable[[PointDone], None] | None = None,
) -> Path:
    """Run every point × repeat of ``spec``; returns the run directory."""
    points = spec.points()
    total = len(points) * spec.repeats
    manifest = {"spec": to_document(spec), "source": spec.source,
                "settings": Settings().with_overrides(spec.target.settings).to_dict(),
                "seed": spec.seed, "points": total}
    writer = await RunWriter.create(Path(results_root), spec.name, manifest)
    done = 0
    async with writer:
        for point in points:
            for repeat in range(spec.repeats):
                seed = spec.seed + 1_000 * point.index + repeat
                label = (f"{spec.name} [{done + 1}/{total}] "
                         + ", ".join(f"{k}={v}" for k, v in point.params.items())
                         + (f" repeat {repeat + 1}" if spec.repeats > 1 else ""))
                run, summary = await _run_point(spec, point, repeat, seed, progress, label)
                await writer.add_point(point.index, repeat, point.load_value, run, summary)
                if "agent_rows" in run.extra:
                    await append_agent_rows(writer.path, writer.run_id, point.index, repeat,
                                            run.extra.pop("agent_rows"))
                done += 1
                if on_point is not None:
                    on_point(PointDone(point, repeat, summary, total, done))
    return writer.path
