"""Generator workers: one run's load sent from N processes, merged losslessly.

The unit of work is a plain, picklable function:

    run_worker_slice(WorkerSlice) -> WorkerResult

A :class:`WorkerSlice` holds everything a worker needs (target URL, the workload
object *after* its setup, the load model, its share of the run, the shared start
time as wall-clock seconds); a :class:`WorkerResult` holds its request records, its
HdrHistogram blobs and its generator health (loop lag, CPU). Nothing refers to the
parent, so the same function can run on another executor
(:mod:`orchestra_kit.lab.dask_engine` runs it on ``dask.distributed``). :func:`split` cuts a run into slices: an open-loop schedule
by arrival index (worker *k* sends arrivals k, k+N, k+2N, … of the one seeded
schedule, all from one shared start time, as GuideLLM does), a closed loop by users
(user *u* goes to worker u mod N; request indexes are strided so they stay unique).

:func:`run_workers` runs the slices in ``spawn`` processes (so it works from a
Jupyter kernel and from the CLI alike), starts them together once all are ready,
sums their progress for the bar and merges the results with :func:`merge`. A worker
that dies or never answers becomes :class:`WorkerFailed`, never a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import multiprocessing as mp
import os
import time
import traceback
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..errors import OrchestraError
from .histogram import LatencyHistogram
from .loadgen import LoadModel, LoadRun, OpenLoop, Slice, full_slice, run_slice

__all__ = ["WorkerFailed", "WorkerResult", "WorkerSlice", "auto_processes", "lab_client", "merge",
           "merged_histograms", "run_worker_slice", "run_workers", "split"]

READY_TIMEOUT_S = 60.0  # a spawned worker imports the package: seconds on a busy machine
START_MARGIN_S = 0.3  # the shared start is this far after every worker said "ready"


class WorkerFailed(OrchestraError, RuntimeError):
    """A generator worker died, raised or did not answer in time."""


@dataclass(frozen=True, kw_only=True)
class WorkerSlice:
    """Everything one worker needs; picklable (no sockets, loops or callables)."""

    url: str
    workload: Any  # a lab Workload after setup (picklable: spec, seed, team names)
    model: LoadModel
    part: Slice
    duration_s: float
    start_at_wall: float = 0.0  # time.time() of the run's time 0 (0: start at once)
    api_key: str = ""
    connections: int = 100
    client: str = "aiohttp"  # or "raw" (orchestra_kit.lab.rawhttp: no SSE, far less CPU)
    grace_s: float = 10.0
    max_lag_s: float = 10.0
    label: str = ""
    progress_key: str = ""  # dask engine: where this slice publishes its progress ("": not)


@dataclass
class WorkerResult:
    """What one worker sends back: its records, HDR blobs of its ok requests, health."""

    worker: int
    run: LoadRun
    hdr_latency: str = ""
    hdr_service: str = ""


def auto_processes(cpu_count: int | None = None) -> int:
    """What ``processes = "auto"`` means: the cores this process may use, minus one for
    the service (at least 1)."""
    if cpu_count is None:
        try:
            cpu_count = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            cpu_count = os.cpu_count() or 1
    return max(1, cpu_count - 1)


def split(model: LoadModel, duration_s: float, max_requests: int | None, seed: int,
          processes: int) -> list[Slice]:
    """The run as ``processes`` slices (fewer when there are fewer users than workers)."""
    whole = full_slice(model, duration_s, max_requests, seed)
    if isinstance(model, OpenLoop):
        n = max(1, processes)
        return [Slice(arrivals=whole.arrivals[k::n], worker=k) for k in range(n)]
    n = max(1, min(processes, len(whole.users)))
    parts = []
    for k in range(n):
        cap = None if max_requests is None else -(-max_requests // n)
        parts.append(Slice(users=whole.users[k::n], index_start=k, index_stride=n,
                           max_requests=cap, worker=k))
    return parts


@contextlib.asynccontextmanager
async def lab_client(url: str, *, api_key: str = "", connections: int = 100,
                     kind: str = "aiohttp") -> AsyncIterator[Any]:
    """The HTTP client a generator process uses: ``aiohttp`` (with send/queue tracing)
    or ``raw`` (:class:`~orchestra_kit.lab.rawhttp.RawHttpClient`); the connection limit
    is never below what the load may keep in flight."""
    if kind == "raw":
        from .rawhttp import RawHttpClient

        async with RawHttpClient(url, api_key=api_key or None, limit=connections) as raw:
            yield raw
        return
    import aiohttp

    from ..client import OrchestraClient
    from .probe import trace_config

    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    async with (aiohttp.ClientSession(connector=connector, timeout=timeout,
                                      trace_configs=[trace_config()]) as session,
                OrchestraClient(url, api_key=api_key or None, session=session) as client):
        yield client


async def _run_async(ws: WorkerSlice, on_tick: Callable[[int, float], None] | None) -> LoadRun:
    t0 = time.perf_counter() + (ws.start_at_wall - time.time()) if ws.start_at_wall else None
    async with lab_client(ws.url, api_key=ws.api_key, connections=ws.connections,
                          kind=ws.client) as client:
        return await run_slice(ws.workload.operation(client), ws.model, ws.part,
                               duration_s=ws.duration_s, t0=t0, label=ws.label,
                               grace_s=ws.grace_s, max_lag_s=ws.max_lag_s, on_tick=on_tick)


def _loop_factory() -> tuple[Callable[[], asyncio.AbstractEventLoop] | None, str]:
    """uvloop when installed (about a fifth less CPU per request; a worker process is not
    a Jupyter kernel, so it may use it) unless ``ORCHESTRA_LAB_UVLOOP=0``."""
    if os.environ.get("ORCHESTRA_LAB_UVLOOP", "1") == "0":
        return None, "asyncio"
    try:
        import uvloop
    except ImportError:
        return None, "asyncio"
    return uvloop.new_event_loop, "uvloop"


def run_worker_slice(ws: WorkerSlice, progress: Any = None) -> WorkerResult:
    """Run one slice in this process (its own event loop) and return its result.

    A process entry point: it runs its own event loop (uvloop when installed), so call
    it in a worker process (or an executor thread), never from a running loop.
    ``progress``: an optional shared array; slot ``ws.part.worker`` gets the count of
    finished requests.
    """
    def tick(done: int, _elapsed: float) -> None:
        if progress is not None:
            progress[ws.part.worker] = done

    factory, loop_kind = _loop_factory()
    with asyncio.Runner(loop_factory=factory) as runner:
        run = runner.run(_run_async(ws, tick if progress is not None else None))
    run.generator["loop"] = loop_kind
    ok = [r for r in run.records if r.ok]
    latency = LatencyHistogram.from_values_ms(r.latency_ms for r in ok)
    service = LatencyHistogram.from_values_ms(r.service_ms for r in ok)
    return WorkerResult(worker=ws.part.worker, run=run, hdr_latency=latency.encode(),
                        hdr_service=service.encode())


def merge(results: Sequence[WorkerResult], model: LoadModel, duration_s: float) -> LoadRun:
    """One run from the workers' results: every record, summed counts, worst health."""
    records = sorted((r for res in results for r in res.run.records), key=lambda r: r.index)
    runs = [res.run for res in results]
    gens = [run.generator for run in runs]
    generator = {
        "processes": len(results),
        "loop_lag_p99_ms": max((g.get("loop_lag_p99_ms", 0.0) for g in gens), default=0.0),
        "cpu_pct": max((g.get("cpu_pct", 0.0) for g in gens), default=0.0),
        "loop": gens[0].get("loop", "asyncio") if gens else "asyncio",
        "workers": gens,
    }
    return LoadRun(records=records, started_wall=min(r.started_wall for r in runs),
                   duration_s=max(max((r.end_s for r in records), default=0.0), 1e-9),
                   dropped=sum(r.dropped for r in runs), model=model,
                   label=runs[0].label if runs else "", cancelled=sum(r.cancelled for r in runs),
                   planned=sum(r.planned for r in runs), send_window_s=duration_s,
                   generator=generator)


def merged_histograms(results: Sequence[WorkerResult]) -> tuple[LatencyHistogram, ...]:
    """The workers' latency and service histograms, each merged into one."""
    latency, service = LatencyHistogram(), LatencyHistogram()
    for res in results:
        latency.merge(LatencyHistogram.decode(res.hdr_latency))
        service.merge(LatencyHistogram.decode(res.hdr_service))
    return latency, service


def _worker_main(conn: Any, ws: WorkerSlice, progress: Any) -> None:
    """The spawned process: say ready, wait for the shared start, run, send the result."""
    try:
        conn.send(("ready", os.getpid()))
        start_at = conn.recv()
        result = run_worker_slice(dataclasses.replace(ws, start_at_wall=start_at), progress)
        conn.send(("result", result))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, then exit
        conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
    finally:
        conn.close()


def _recv(conn: Any, timeout_s: float, worker: int, proc: Any) -> Any:
    """The next message from a worker, or WorkerFailed (died, raised, silent)."""
    deadline = time.monotonic() + timeout_s
    while not conn.poll(0.1):
        if not proc.is_alive() and not conn.poll(0):
            raise WorkerFailed(f"generator worker {worker} died (exit code {proc.exitcode})")
        if time.monotonic() > deadline:
            raise WorkerFailed(f"generator worker {worker} did not answer within {timeout_s:g} s")
    try:
        kind, payload = conn.recv()
    except EOFError:
        raise WorkerFailed(f"generator worker {worker} died (exit code {proc.exitcode})") from None
    if kind == "error":
        raise WorkerFailed(f"generator worker {worker} failed: {payload}")
    return payload


@dataclass
class _Pool:
    procs: list[Any] = field(default_factory=list)
    conns: list[Any] = field(default_factory=list)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():  # pragma: no cover - ignored SIGTERM
                proc.kill()
                proc.join()
        for conn in self.conns:
            conn.close()


async def run_workers(slices: Sequence[WorkerSlice], *, model: LoadModel, duration_s: float,
                      on_progress: Callable[[int], None] | None = None) -> LoadRun:
    """Run ``slices`` in spawned processes from one shared start; the merged run."""
    ctx = mp.get_context("spawn")
    progress = ctx.Array("q", len(slices), lock=False)
    pool = _Pool()
    loop = asyncio.get_running_loop()
    wait_s = duration_s + max(ws.grace_s for ws in slices) + READY_TIMEOUT_S
    with ThreadPoolExecutor(max_workers=len(slices), thread_name_prefix="lab-worker") as pool_x:
        async def recv(k: int, timeout_s: float) -> Any:
            return await loop.run_in_executor(pool_x, _recv, pool.conns[k], timeout_s, k,
                                               pool.procs[k])
        try:
            for k, ws in enumerate(slices):
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_worker_main, args=(child, ws, progress), daemon=True,
                                   name=f"orchestra-lab-worker-{k}")
                proc.start()
                child.close()
                pool.procs.append(proc)
                pool.conns.append(parent)
            await asyncio.gather(*(recv(k, READY_TIMEOUT_S) for k in range(len(slices))))
            start_at = time.time() + START_MARGIN_S
            for conn in pool.conns:
                conn.send(start_at)
            results = await _collect(recv, len(slices), wait_s, progress, on_progress)
        finally:
            await asyncio.to_thread(pool.stop)
    run = merge(results, model, duration_s)
    if on_progress is not None:
        on_progress(len(run.records))
    return run


async def _collect(recv: Callable[[int, float], Any], n: int, wait_s: float, progress: Any,
                   on_progress: Callable[[int], None] | None) -> list[WorkerResult]:
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(recv(k, wait_s)) for k in range(n)]
            while on_progress is not None and not all(t.done() for t in tasks):
                on_progress(int(sum(progress)))
                await asyncio.wait(tasks, timeout=0.2, return_when=asyncio.ALL_COMPLETED)
    except ExceptionGroup as group:  # report the first worker's failure, plainly
        first = group.exceptions[0]
        raise first if isinstance(first, Exception) else group from None
    return [t.result() for t in tasks]
