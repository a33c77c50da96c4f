"""Sampling an agent's process tree while it runs (psutil): memory, CPU, start-up, exit.

The opencode backend wraps each run in a :class:`ProcessTracker`::

    tracker = ProcessTracker(interval_s=0.2)          # before the spawn: t0
    proc = await asyncio.create_subprocess_exec(...)
    async with tracker.sampling(proc.pid):            # a sampling task owned by the block
        ... tracker.mark_output() on the first stdout line ...
    tracker.exit_code = rc
    usage = tracker.usage()

Each sample walks the tree from the leader through the parent links
(``psutil.Process.children(recursive=True)``, which also finds the tool commands
opencode starts in sessions of their own), sums the resident set sizes (the peak of
that sum is ``peak_rss_mb``) and keeps each process's latest user+system CPU time
(their sum is ``cpu_s``). Limits, stated: a process born and gone between two samples
is not seen, and the CPU a process spends after its last sample is not counted (so
``cpu_s`` is a lower bound, short by at most one interval per process); shared pages
count once per process (RSS, not PSS).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import psutil

from .usage import AgentUsage

__all__ = ["ProcessTracker", "sample_tree"]

_MB = 1024 * 1024


def sample_tree(root: int) -> tuple[int, dict[int, float]]:
    """``(rss_bytes_total, {pid: cpu_seconds})`` of ``root`` and its descendants now."""
    try:
        leader = psutil.Process(root)
        procs = [leader, *leader.children(recursive=True)]
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return 0, {}
    rss = 0
    cpu: dict[int, float] = {}
    for proc in procs:
        try:
            with proc.oneshot():
                rss += proc.memory_info().rss
                times = proc.cpu_times()
                cpu[proc.pid] = times.user + times.system
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return rss, cpu


class ProcessTracker:
    """Peak RSS, CPU seconds, process count, start-up and wall time of one process tree."""

    def __init__(self, *, interval_s: float = 0.25, backend: str = "opencode") -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s!r}")
        self.interval_s = interval_s
        self.backend = backend
        self.t0 = time.perf_counter()
        self.first_output: float | None = None
        self.ended: float | None = None
        self.peak_rss = 0
        self.max_processes = 0
        self.samples = 0
        self.exit_code: int | None = None
        self._cpu: dict[int, float] = {}

    def mark_output(self) -> None:
        """The process printed its first line (start-up ends); later calls are ignored."""
        if self.first_output is None:
            self.first_output = time.perf_counter()

    def sample(self, root: int) -> None:
        """Take one sample of ``root``'s tree now."""
        rss, cpu = sample_tree(root)
        self.samples += 1
        if not cpu:
            return
        self.peak_rss = max(self.peak_rss, rss)
        self.max_processes = max(self.max_processes, len(cpu))
        for pid, seconds in cpu.items():
            self._cpu[pid] = max(self._cpu.get(pid, 0.0), seconds)

    @contextlib.asynccontextmanager
    async def sampling(self, root: int) -> AsyncIterator[ProcessTracker]:
        """Sample ``root``'s tree every ``interval_s`` while the block runs."""
        self.sample(root)
        task = asyncio.create_task(self._loop(root), name=f"proctrack-{root}")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.ended = time.perf_counter()

    async def _loop(self, root: int) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            # A thread: walking /proc costs a few ms, which N agents would add to the loop.
            await asyncio.to_thread(self.sample, root)

    def usage(self) -> AgentUsage:
        """What was measured, as an :class:`AgentUsage`."""
        end = self.ended if self.ended is not None else time.perf_counter()
        startup = None if self.first_output is None else self.first_output - self.t0
        return AgentUsage(
            backend=self.backend, wall_s=round(end - self.t0, 4),
            startup_s=None if startup is None else round(startup, 4),
            peak_rss_mb=round(self.peak_rss / _MB, 2) if self.samples else None,
            cpu_s=round(sum(self._cpu.values()), 3) if self.samples else None,
            processes=self.max_processes, samples=self.samples, exit_code=self.exit_code,
        )
