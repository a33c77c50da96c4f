"""Generator workers on dask.distributed: the same slices, the same merge, other machines.

``[generator] engine = "dask"`` runs :func:`~orchestra_kit.lab.workers.run_worker_slice`
on dask workers instead of local ``spawn`` processes: one slice per worker (each
pinned to its own worker, so they run at once), every slice counting from one shared
start time set far enough ahead for dask's dispatch, the results merged losslessly by
:func:`~orchestra_kit.lab.workers.merge`. With ``scheduler_address`` the slices go to
an existing cluster (``dask scheduler`` on one machine, ``dask worker ADDRESS`` on
others); without it a ``LocalCluster`` of N single-threaded worker processes on
127.0.0.1 is started and stopped with the engine.

A generator slice must not run twice (that would double the load), so a dead worker
is a failure, never a retry: the local cluster allows no retries, and a slice that
starts later than its shared start allows (e.g. re-run by a remote scheduler after
its worker died) refuses to run. Every failure becomes
:class:`~orchestra_kit.lab.workers.WorkerFailed`.

Progress: each slice's count of finished requests is pushed to the dask scheduler's
metadata every :data:`PROGRESS_PUSH_S` from a thread of the slice's own (never from the
generator's event loop), and :meth:`DaskEngine.run` polls the sum for the bar.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Self
from urllib.parse import urlsplit

from .loadgen import LoadModel, LoadRun
from .workers import WorkerFailed, WorkerResult, WorkerSlice, merge, run_worker_slice

__all__ = ["DaskEngine", "open_dask_engine", "run_dask_slice"]

DISPATCH_MARGIN_S = 2.0  # the shared start is this far after submitting (dask dispatch)
LATE_START_S = 1.5  # a slice starting later than this after the shared start refuses
CONNECT_TIMEOUT_S = 30.0
PROGRESS_PUSH_S = 0.25  # how often a slice publishes its count of finished requests
PROGRESS_KEY = "orchestra-progress"


class _ProgressPusher:
    """The ``progress`` of :func:`run_worker_slice` on a dask worker: the slice's loop
    only stores its count (``progress[worker] = done``); a thread publishes it to the
    scheduler's metadata under ``key`` every :data:`PROGRESS_PUSH_S`, and once at the end."""

    def __init__(self, key: list[str]) -> None:
        self.key = key
        self.done = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="orchestra-progress", daemon=True)

    def __setitem__(self, _worker: int, done: int) -> None:
        self.done = done

    def __enter__(self) -> Self:
        from distributed import get_client

        try:  # here, in the task's thread: the worker context is thread-local
            self._client: Any = get_client()
        except (ValueError, RuntimeError):
            return self  # not on a dask worker: no progress, the slice still runs
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        client = self._client
        try:
            pushed = -1
            while True:
                stopping = self._stop.wait(PROGRESS_PUSH_S)
                if self.done != pushed:
                    pushed = self.done
                    client.set_metadata(self.key, pushed)
                if stopping:
                    return
        except Exception:  # noqa: BLE001 - progress is cosmetic; the slice's result is not
            return


def run_dask_slice(ws: WorkerSlice) -> WorkerResult:
    """The dask task: refuse to start late (a retry after a dead worker, a slow
    dispatch), else :func:`run_worker_slice`."""
    late_s = time.time() - ws.start_at_wall
    if ws.start_at_wall and late_s > LATE_START_S:
        raise WorkerFailed(f"generator worker {ws.part.worker} started {late_s:.1f} s after the "
                           "shared start (re-run after a dead worker, or dispatch too slow); "
                           "refusing to send a late or duplicate share of the load")
    if not ws.progress_key:
        return run_worker_slice(ws)
    with _ProgressPusher([PROGRESS_KEY, ws.progress_key, str(ws.part.worker)]) as pusher:
        return run_worker_slice(ws, pusher)


def _warm() -> str:
    """Run once on every worker before the first slice: the imports happen now, not
    inside a point's dispatch margin."""
    return run_worker_slice.__module__


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclasses.dataclass
class DaskEngine:
    """A connected dask client; :meth:`run` drives one point's slices."""

    client: Any
    local: bool

    async def workers(self) -> list[tuple[str, str]]:
        """``(address, host)`` of every worker, in a stable order."""
        nthreads: dict[str, int] = await self.client.nthreads()
        return sorted((addr, urlsplit(addr).hostname or "") for addr in nthreads)

    async def count(self) -> int:
        """How many workers the cluster has now."""
        return len(await self.workers())

    async def _placement(self, url: str, n: int) -> list[str]:
        workers = await self.workers()
        if len(workers) < n:
            raise WorkerFailed(f"dask cluster has {len(workers)} worker(s), the run needs {n} "
                               "(one per slice; set generator.processes or add workers)")
        host = urlsplit(url).hostname or ""
        remote = [addr for addr, h in workers[:n] if not _is_loopback(h)]
        if _is_loopback(host) and remote:
            raise WorkerFailed(f"target URL {url} is on loopback, unreachable from dask worker "
                               f"{remote[0]}; use target.kind = 'url' with an address the "
                               "workers can reach")
        return [addr for addr, _ in workers[:n]]

    async def run(self, slices: Sequence[WorkerSlice], *, model: LoadModel, duration_s: float,
                  on_progress: Callable[[int], None] | None = None) -> LoadRun:
        """Run ``slices`` one per dask worker from one shared start; the merged run."""
        placement = await self._placement(slices[0].url, len(slices))
        start_at = time.time() + DISPATCH_MARGIN_S
        tag = f"{start_at:.6f}" if on_progress is not None else ""
        futures = [self.client.submit(run_dask_slice,
                                      dataclasses.replace(ws, start_at_wall=start_at, progress_key=tag),
                                      workers=[addr], allow_other_workers=False, pure=False,
                                      retries=0, key=f"orchestra-slice-{ws.part.worker}-{start_at}")
                   for ws, addr in zip(slices, placement, strict=True)]
        wait_s = DISPATCH_MARGIN_S + duration_s + max(ws.grace_s for ws in slices) + 60.0
        try:
            results = await self._gather(futures, wait_s, tag, on_progress)
        finally:
            await self.client.cancel(futures)
            if tag:
                await self.client.set_metadata([PROGRESS_KEY, tag], {})
        run = merge(results, model, duration_s)
        run.generator["engine"] = "dask"
        if on_progress is not None:
            on_progress(len(run.records))
        return run

    async def _progress(self, tag: str, on_progress: Callable[[int], None] | None) -> None:
        if not tag or on_progress is None:
            return
        counts = await self.client.get_metadata([PROGRESS_KEY, tag], default={})
        if counts:
            on_progress(int(sum(counts.values())))

    async def _gather(self, futures: list[Any], wait_s: float, tag: str = "",
                      on_progress: Callable[[int], None] | None = None) -> list[WorkerResult]:
        deadline = time.monotonic() + wait_s
        polls = 0
        while True:
            if time.monotonic() > deadline:
                raise WorkerFailed(f"dask generator workers did not answer within {wait_s:g} s")
            await asyncio.sleep(0.1)
            polls += 1
            if polls % 3 == 0:
                await self._progress(tag, on_progress)
            for k, fut in enumerate(futures):
                if fut.status in ("error", "cancelled", "lost"):
                    raise WorkerFailed(f"generator worker {k} failed on dask: "
                                       f"{await _describe(fut)}")
            if all(f.status == "finished" for f in futures):
                return [await f for f in futures]


async def _describe(fut: Any) -> str:
    try:
        exc = await fut.exception()
    except Exception as err:  # noqa: BLE001 - the description of a failure
        exc = err
    text = f"{type(exc).__name__}: {exc}"
    if type(exc).__name__ == "KilledWorker":
        text = f"worker process died ({text})"
    return text


@asynccontextmanager
async def open_dask_engine(scheduler_address: str = "", n_workers: int = 1, *,
                      connect_timeout_s: float = CONNECT_TIMEOUT_S) -> AsyncIterator[DaskEngine]:
    """A :class:`DaskEngine` on ``scheduler_address`` (a :class:`WorkerFailed` when it
    cannot be reached within ``connect_timeout_s``), or on a ``LocalCluster`` of
    ``n_workers`` single-threaded processes on 127.0.0.1 (closed on exit)."""
    import dask
    from distributed import Client, LocalCluster

    if scheduler_address:
        try:
            client = await asyncio.wait_for(
                Client(scheduler_address, asynchronous=True,  # type: ignore[no-untyped-call]
                       timeout=connect_timeout_s),
                connect_timeout_s + 5)
        except (OSError, TimeoutError) as exc:
            raise WorkerFailed(f"cannot reach dask scheduler {scheduler_address}: {exc}") from exc
        try:
            await client.run(_warm)
            yield DaskEngine(client=client, local=False)
        finally:
            await client.close()
        return
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster_cm = LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
            # Its HTTP server (/metrics; the dashboard needs bokeh) on a free loopback
            # port: None would mean dask's fixed 8787, taken when two clusters run at once.
            dashboard_address="127.0.0.1:0", memory_limit=0, asynchronous=True)
        async with cluster_cm as cluster, \
                Client(cluster, asynchronous=True) as client:  # type: ignore[no-untyped-call]
            await client.wait_for_workers(n_workers, timeout=connect_timeout_s * 2)
            await client.run(_warm)
            yield DaskEngine(client=client, local=True)
