"""Heap snapshots of a running ``orchestra serve``, to tell a leak from warm-up.

``kill -USR2 PID`` on the service starts tracemalloc (10 frames per allocation) the
first time, so the start-up and warm-up run at full speed; each later signal writes a
snapshot to ``$TMPDIR/orchestra-heap-PID-K.tracemalloc`` and logs its path, the memory
Python traces and the process RSS. (Under ``PYTHONTRACEMALLOC=N`` tracing is on from the
start and the first signal already writes a snapshot.)

``python -m orchestra_kit.server.memtrace OLD NEW [--top N]`` prints what grew between
two snapshots: the traced totals, then the top source lines and allocation tracebacks
by growth. What tracemalloc traces is Python's own allocations; SQLite's page cache and
the allocator's free lists are in the RSS only, so RSS growing while the traced memory
stays flat points there, not at a Python structure.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ctypes.util
import itertools
import logging
import os
import resource
import signal
import sys
import tempfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path

__all__ = ["compare", "install", "snapshot_to"]

log = logging.getLogger(__name__)
TRACE_FRAMES = 10
_IGNORED = (tracemalloc.Filter(False, tracemalloc.__file__),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
            tracemalloc.Filter(False, "<unknown>"))


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # not Linux: the peak is what is there
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _native_mb() -> str:
    """SQLite's own memory and glibc malloc's in-use / free-but-held bytes (best effort:
    neither is traced by tracemalloc, both are in the RSS)."""
    parts = []
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("sqlite3") or "libsqlite3.so.0")
        lib.sqlite3_memory_used.restype = ctypes.c_int64
        parts.append(f"SQLite {lib.sqlite3_memory_used() / 2**20:.1f} MB")
    except (OSError, AttributeError):
        pass
    try:
        libc = ctypes.CDLL(None)
        libc.mallinfo2.restype = _MallInfo2
        info = libc.mallinfo2()
        parts.append(f"malloc in use {(info.uordblks + info.hblkhd) / 2**20:.1f} MB,"
                     f" free but held {info.fordblks / 2**20:.1f} MB")
    except (OSError, AttributeError):
        pass
    return ", ".join(parts)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def snapshot_to(path: Path) -> str:
    """Dump a snapshot to ``path``; returns a one-line summary (traced MB, RSS MB, and
    SQLite's and malloc's own figures where they can be read)."""
    snap = tracemalloc.take_snapshot()
    part = path.with_name(path.name + ".part")
    snap.dump(str(part))
    os.replace(part, path)  # whole or absent: a reader polling for it never sees half
    traced, peak = tracemalloc.get_traced_memory()
    return (f"heap snapshot {path}: traced {traced / 2**20:.1f} MB (peak {peak / 2**20:.1f}),"
            f" RSS {_rss_mb():.1f} MB; {_native_mb()}")


def install(loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """SIGUSR2: start tracing (``TRACE_FRAMES`` frames) if not yet, else write a
    snapshot (in a thread); returns the remover."""
    counter = itertools.count(1)
    folder = Path(tempfile.gettempdir())

    def on_signal() -> None:
        if not tracemalloc.is_tracing():
            tracemalloc.start(TRACE_FRAMES)
            log.warning("tracemalloc started (%d frames); kill -USR2 %d again writes a heap"
                        " snapshot", TRACE_FRAMES, os.getpid())
            return
        path = folder / f"orchestra-heap-{os.getpid()}-{next(counter)}.tracemalloc"
        fut = loop.run_in_executor(None, snapshot_to, path)
        fut.add_done_callback(lambda f: log.warning("%s", f.exception() or f.result()))

    def remove() -> None:
        loop.remove_signal_handler(signal.SIGUSR2)

    loop.add_signal_handler(signal.SIGUSR2, on_signal)
    return remove


def compare(old: Path, new: Path, top: int = 15) -> str:
    """What grew from ``old`` to ``new``: totals, top lines, top tracebacks."""
    a = tracemalloc.Snapshot.load(str(old)).filter_traces(_IGNORED)
    b = tracemalloc.Snapshot.load(str(new)).filter_traces(_IGNORED)
    size_a = sum(t.size for t in a.traces)
    size_b = sum(t.size for t in b.traces)
    out = [(f"traced: {size_a / 2**20:.2f} MB -> {size_b / 2**20:.2f} MB "
           f"({(size_b - size_a) / 2**20:+.2f} MB, {len(a.traces)} -> {len(b.traces)} blocks)"),
           "", f"top {top} lines by growth:"]
    for stat in b.compare_to(a, "lineno")[:top]:
        out.append(f"  {stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d} blocks"
                   f"  {stat.traceback[0]}")
    out += ["", f"top {min(top, 5)} tracebacks by growth:"]
    for stat in b.compare_to(a, "traceback")[:min(top, 5)]:
        out.append(f"  {stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d} blocks")
        out += [f"    {line}" for line in stat.traceback.format(limit=8)]
    return "\n".join(out)


def main(argv: list[str]) -> int:
    """``python -m orchestra_kit.server.memtrace OLD NEW [--top N]``."""
    p = argparse.ArgumentParser(prog="python -m orchestra_kit.server.memtrace",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("old", type=Path)
    p.add_argument("new", type=Path)
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args(argv)
    print(compare(args.old, args.new, args.top))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
