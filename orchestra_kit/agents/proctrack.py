"""Sampling agents' process trees while they run: memory, CPU, start-up, exit.

The opencode backend owns one :class:`TreeSampler` and wraps each run in a
:class:`ProcessTracker`::

    tracker = ProcessTracker()                        # t0: the spawn
    proc = await asyncio.create_subprocess_exec(...)
    async with sampler.track(proc.pid, tracker):      # sampled with every other run
        ... tracker.mark_output() on the first stdout line ...
    tracker.exit_code = rc
    usage = tracker.usage()

One sampling task per backend (not per run) reads ``/proc/*/stat`` once per tick, in a
worker thread: each process's parent and its user+system CPU time. Every tracked tree
is then found by following the parent links from its leader (which also finds the tool
commands opencode starts in sessions of their own); its members' resident memory comes
from ``/proc/PID/statm``. So the cost is one ``/proc`` walk per tick (~1–12 ms with
~130 processes, depending on load) whatever the number of agents — sampling each tree
with ``psutil`` instead cost that much *per agent* per tick. Without ``/proc`` (not
Linux) the trees are sampled with ``psutil``, one by one.

Per tree: ``peak_rss_mb`` is the highest sum of its members' RSS over the samples; CPU
is each member's latest CPU time, summed. Limits, stated: a process born and gone
between two samples is not seen; CPU a process spends after its last sample is not
counted (``cpu_s`` is a lower bound, short by at most one interval per process); RSS
counts shared pages once per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator

import psutil

from .usage import AgentUsage

__all__ = ["ProcessTracker", "TreeSampler", "proc_table", "sample_tree"]

_MB = 1024 * 1024
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_table() -> dict[int, tuple[int, float]] | None:
    """``{pid: (ppid, cpu_seconds)}`` of every process (Linux /proc); None without /proc."""
    try:
        names = os.listdir("/proc")
    except OSError:
        return None
    table: dict[int, tuple[int, float]] = {}
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            table[int(name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK)
        except (OSError, IndexError, ValueError):
            continue
    return table


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def _tree_from_table(root: int, table: dict[int, tuple[int, float]]) -> dict[int, float]:
    """``{pid: cpu_seconds}`` of ``root`` and its descendants in ``table``."""
    if root not in table:
        return {}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _cpu) in table.items():
        children.setdefault(ppid, []).append(pid)
    found = {root: table[root][1]}
    stack = list(children.get(root, []))
    while stack:
        pid = stack.pop()
        if pid not in found:
            found[pid] = table[pid][1]
            stack.extend(children.get(pid, []))
    return found


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

    def __init__(self, *, backend: str = "opencode") -> None:
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

    def record(self, rss: int, cpu: dict[int, float]) -> None:
        """One sample of the tree: its total RSS and each member's CPU seconds."""
        self.samples += 1
        if not cpu:
            return
        self.peak_rss = max(self.peak_rss, rss)
        self.max_processes = max(self.max_processes, len(cpu))
        for pid, seconds in cpu.items():
            self._cpu[pid] = max(self._cpu.get(pid, 0.0), seconds)

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


class TreeSampler:
    """Samples every tracked process tree with one /proc walk per ``interval_s``."""

    def __init__(self, interval_s: float = 0.5) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s!r}")
        self.interval_s = interval_s
        self._trees: dict[int, ProcessTracker] = {}
        self._task: asyncio.Task[None] | None = None
        self.ticks = 0

    @contextlib.asynccontextmanager
    async def track(self, root: int, tracker: ProcessTracker) -> AsyncIterator[ProcessTracker]:
        """Sample ``root``'s tree into ``tracker`` while the block runs."""
        await asyncio.to_thread(self._sample, {root: tracker})  # at once: short runs count too
        self._trees[root] = tracker
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="proctrack")
        try:
            yield tracker
        finally:
            self._trees.pop(root, None)
            tracker.ended = time.perf_counter()
            if not self._trees:
                await self.aclose()

    async def _loop(self) -> None:
        while self._trees:
            await asyncio.sleep(self.interval_s)
            await asyncio.to_thread(self._sample, dict(self._trees))

    def _sample(self, trees: dict[int, ProcessTracker]) -> None:
        self.ticks += 1
        table = proc_table()
        for root, tracker in trees.items():
            if table is None:
                tracker.record(*sample_tree(root))
                continue
            cpu = _tree_from_table(root, table)
            tracker.record(sum(_rss(pid) for pid in cpu), cpu)

    async def aclose(self) -> None:
        """Stop the sampling task (a later ``track`` starts it again)."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
