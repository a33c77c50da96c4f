"""Run an experiment: every sweep point × repeat against a fresh target, saved as it goes.

``await run_experiment(spec)`` works at the top level of a notebook cell and inside the
CLI's ``asyncio.run``. Each (point, repeat) gets its own target (see
:mod:`orchestra_kit.lab.target`): by default ``orchestra serve`` in a child process on
127.0.0.1 with a fresh database, its log under ``RUN_DIR/service/``; or the service in
this process (``inprocess``); or the spec's URL. The load comes from this process or
from ``[generator] processes`` worker processes (:mod:`orchestra_kit.lab.workers`), or
from dask.distributed workers with ``engine = "dask"`` (:mod:`orchestra_kit.lab.dask_engine`).
Results go to ``results/NAME/RUN_ID/`` (see docs/results-schema.md). A point that
fails (the service does not start, a worker dies, the workload's setup is refused) is
recorded as a row with ``point_error`` and listed in the manifest's ``failed_points``;
the run goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from ..config import Settings
from ..errors import OrchestraError
from .agentpoint import agent_point
from .agentstats import AGENT_POINT_COLUMNS, append_agent_rows
from .calibrate import cached_capacity
from .loadgen import LoadRun, run_load
from .pgpoint import drop_point_schema, point_database_url, redact_url, run_database
from .provider import PROVIDER_COLUMNS
from .results import RunWriter, summarise_point
from .spec import ExperimentSpec, SweepPoint, to_document
from .target import Target, open_target, service_settings
from .workers import WorkerSlice, lab_client, run_workers, split
from .workloads import Workload, make_workload

if TYPE_CHECKING:
    from .dask_engine import DaskEngine

__all__ = ["PointDone", "run_experiment", "service_settings", "settings_ceiling_rps"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PointDone:
    """Passed to ``on_point`` after each (point, repeat)."""

    point: SweepPoint
    repeat: int
    summary: dict[str, Any]
    total: int
    done: int


def settings_ceiling_rps(settings: Settings | None, workload_kind: str) -> float:
    """The throughput the settings allow, when they imply one: assign-and-wait with the
    simulated backend finishes at most ``max_concurrent_tasks`` tasks per agent latency."""
    if settings is None or workload_kind != "assign_wait" or settings.agents.backend != "simulated":
        return math.nan
    latency_s = settings.agents.sim_latency_ms / 1000.0
    return settings.scheduler.max_concurrent_tasks / latency_s if latency_s > 0 else math.nan


@dataclass(frozen=True, kw_only=True)
class _PointJob:
    spec: ExperimentSpec
    point: SweepPoint
    repeat: int
    seed: int
    label: str
    progress: bool
    log_path: Path | None
    engine: DaskEngine | None = None
    database_url: str = ""  # the run's PostgreSQL ("" when no point needs one)


async def _processes(job: _PointJob) -> int:
    """Slices for this point: the spec's count, or every worker of a remote dask cluster
    when ``processes = "auto"``."""
    engine = job.engine
    if engine is not None and not engine.local and job.spec.generator.processes == "auto":
        return max(1, await engine.count())
    return job.spec.generator.count()


@contextlib.asynccontextmanager
async def _engine(spec: ExperimentSpec) -> AsyncIterator[DaskEngine | None]:
    """The run's dask engine (one cluster for every point), or None for local workers."""
    if spec.generator.engine != "dask":
        yield None
        return
    from .dask_engine import open_dask_engine

    async with open_dask_engine(spec.generator.scheduler_address, spec.generator.count()) as engine:
        yield engine


async def _generate(job: _PointJob, url: str, workload: Workload) -> LoadRun:
    """Set the workload up, then drive it from this process, from worker processes or
    from dask workers."""
    load, spec = job.point.load, job.spec
    processes = await _processes(job)
    client_kind = spec.generator.client_for(job.point.workload)
    async with lab_client(url, api_key=spec.target.api_key, connections=load.connections(),
                          kind=client_kind) as client:
        await workload.setup(client)
        if processes == 1 and job.engine is None:
            return await run_load(workload.operation(client), load.to_model(),
                                  duration_s=load.duration_s, max_requests=_cap(job),
                                  seed=job.seed, progress=job.progress, label=job.label,
                                  grace_s=load.grace_s)
    parts = split(load.to_model(), load.duration_s, _cap(job), job.seed, processes)
    slices = [WorkerSlice(url=url, api_key=spec.target.api_key, workload=workload,
                          model=load.to_model(), part=part, duration_s=load.duration_s,
                          connections=load.connections(), client=client_kind,
                          label=job.label)
              for part in parts]
    run_slices = run_workers if job.engine is None else job.engine.run
    with _bar(job, sum(len(p.arrivals) for p in parts)) as on_progress:
        return await run_slices(slices, model=load.to_model(), duration_s=load.duration_s,
                                on_progress=on_progress)


def _cap(job: _PointJob) -> int | None:
    """Open loops are bounded by their schedule (validated against max_requests)."""
    return job.point.load.max_requests if job.point.load.model == "closed" else None


@contextlib.contextmanager
def _bar(job: _PointJob, total: int) -> Any:
    if not job.progress:
        yield None
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total or None, unit="req", desc=job.label or "load", leave=True)

    def update(done: int) -> None:
        bar.n = done
        bar.refresh()

    try:
        yield update
    finally:
        bar.close()


async def _run_point(job: _PointJob) -> tuple[LoadRun, dict[str, Any]]:
    db_url = (point_database_url(job.database_url, job.point.index, job.repeat)
              if job.point.database == "postgresql" else "")
    try:
        return await _run_point_on(job, db_url)
    finally:
        if db_url:
            await drop_point_schema(db_url)


async def _run_point_on(job: _PointJob, db_url: str) -> tuple[LoadRun, dict[str, Any]]:
    opened: list[Target] = []
    agent_columns: dict[str, Any] = {}
    workload = make_workload(job.point.workload, job.seed)
    try:  # the workload's environment (e.g. a fake Slack) and the agents' provider wrap it
        async with (workload.environment() as extra,
                    agent_point(job.spec.provider, job.seed) as agents):
            overrides = {**job.point.settings_overrides, **extra,
                         **(agents.overrides if agents else {})}
            async with open_target(job.spec.target.kind, url=job.spec.target.url,
                                   overrides=overrides, log_path=job.log_path,
                                   start_timeout_s=job.spec.target.start_timeout_s,
                                   database_url=db_url, instances=job.point.instances) as target:
                opened.append(target)
                async with agents.sampling() if agents else contextlib.nullcontext():
                    run = await _generate(job, target.url, workload)
                workspace = target.settings.workspace_dir if target.settings else None
                if agents:
                    await agents.collect(target.url, job.spec.target.api_key, workspace,
                                         job.point.workload.expect_files)
            if agents:
                agents.after_target(workspace)
                run.extra["agent_rows"], agent_columns = agents.rows, agents.columns
    except (OrchestraError, OSError, aiohttp.ClientError, TimeoutError) as exc:
        log.warning("point %s repeat %s failed: %s", job.point.index, job.repeat, exc)
        run = LoadRun(records=[], started_wall=0.0, duration_s=0.0, dropped=0,
                      model=job.point.load.to_model(), label=job.label,
                      extra={"error": f"{type(exc).__name__}: {exc}"})
    if opened:  # facts of the service (exit status, CPU, RSS) even when the load failed
        target = opened[0]
        run.extra["target"] = target.facts
        run.extra["ceiling_rps"] = settings_ceiling_rps(target.settings,
                                                        job.point.workload.kind)
        if target.settings is not None:
            flat = target.settings.flat()
            run.extra["settings"] = {**flat, "database.url": redact_url(flat.get("database.url", ""))}
    else:
        run.extra["target"] = {"kind": job.spec.target.kind}
    summary = summarise_point(run, slo=job.spec.slo, params=_params(job.point, job.spec.scale_out))
    if job.spec.provider.kind == "fake":  # the same columns on every row, failed points too
        summary |= dict.fromkeys((*AGENT_POINT_COLUMNS, *PROVIDER_COLUMNS), math.nan)
        summary |= agent_columns
    return run, summary


def _params(point: SweepPoint, scale_out: bool = False) -> dict[str, Any]:
    """The point's columns: the loop kind and its load, (for a scale-out spec) the
    database and the instance count, then the swept keys."""
    load = point.load
    head: dict[str, Any] = ({"loop": "closed", "concurrency": load.users} if load.model == "closed"
                            else {"loop": "open", "rate_rps": load.rate_rps})
    if scale_out:
        head |= {"database": point.database, "instances": point.instances}
    return {**head, **point.params}


def _label(spec: ExperimentSpec, point: SweepPoint, repeat: int, done: int, total: int) -> str:
    return (f"{spec.name} [{done + 1}/{total}] "
            + ", ".join(f"{k}={v}" for k, v in point.params.items())
            + (f" repeat {repeat + 1}" if spec.repeats > 1 else ""))


async def run_experiment(
    spec: ExperimentSpec,
    *,
    results_root: str | Path = "results",
    progress: bool = True,
    on_point: Callable[[PointDone], None] | None = None,
    calibration: bool = True,
) -> Path:
    """Run every point × repeat of ``spec``; returns the run directory.

    ``calibration``: measure the generator's capacity when no calibration is cached
    under ``results_root`` (once per machine; see
    :func:`orchestra_kit.lab.calibrate.cached_capacity`); a cached one is always
    recorded in the manifest.
    """
    points = spec.points()
    total = len(points) * spec.repeats
    capacity = await cached_capacity(Path(results_root), measure=calibration)
    needs_pg = any(p.database == "postgresql" for p in points)
    manifest = {"spec": _redacted_document(spec), "source": spec.source,
                "settings": Settings().with_overrides(spec.target.settings).to_dict(),
                "seed": spec.seed, "points": total, "target_kind": spec.target.kind,
                "generator": {"processes": spec.generator.count(),
                              "engine": spec.generator.engine,
                              "calibration": capacity},
                "database": sorted({p.database for p in points}),
                "instances": sorted({p.instances for p in points}),
                "failed_points": []}
    writer = await RunWriter.create(Path(results_root), spec.name, manifest)
    done = 0
    async with (writer, _engine(spec) as engine,
                run_database(spec.target.database_url, needed=needs_pg) as database_url):
        for point in points:
            for repeat in range(spec.repeats):
                job = _PointJob(spec=spec, point=point, repeat=repeat,
                                seed=spec.seed + 1_000 * point.index + repeat,
                                label=_label(spec, point, repeat, done, total), progress=progress,
                                log_path=await _log_path(writer.path, spec, point.index,
                                                         repeat), engine=engine,
                                database_url=database_url)
                run, summary = await _run_point(job)
                if summary["point_error"]:
                    writer.manifest["failed_points"].append(
                        {"point": point.index, "repeat": repeat, "params": point.params,
                         "error": summary["point_error"]})
                await writer.add_point(point.index, repeat, point.load_value, run, summary)
                if "agent_rows" in run.extra:
                    await append_agent_rows(writer.path, writer.run_id, point.index, repeat,
                                            run.extra.pop("agent_rows"))
                done += 1
                if on_point is not None:
                    on_point(PointDone(point, repeat, summary, total, done))
    return writer.path


def _redacted_document(spec: ExperimentSpec) -> dict[str, Any]:
    """The spec for the manifest, without a database password."""
    doc = to_document(spec)
    doc["target"]["database_url"] = redact_url(doc["target"].get("database_url", ""))
    return doc


async def _log_path(run_dir: Path, spec: ExperimentSpec, point: int, repeat: int
                    ) -> Path | None:
    if spec.target.kind != "process":
        return None
    folder = run_dir / "service"
    await asyncio.to_thread(folder.mkdir, exist_ok=True)
    return folder / f"point{point:03d}-repeat{repeat}.log"
