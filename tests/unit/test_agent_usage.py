"""Agent accounting: AgentUsage, UsageAggregate and the psutil process-tree tracker."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap

import pytest

from orchestra_kit.agents.proctrack import ProcessTracker, TreeSampler, proc_table, sample_tree
from orchestra_kit.agents.usage import AgentUsage, UsageAggregate

# A parent that holds ~60 MB and burns ~0.4 s of CPU, with a sleeping child of its own.
_HOG = textwrap.dedent("""
    import subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"])
    block = bytearray(60 * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    print("ready", flush=True)
    end = time.process_time() + 0.4
    while time.process_time() < end:
        pass
    child.wait()
""")


def test_usage_round_trips_and_leaves_out_what_was_not_measured() -> None:
    usage = AgentUsage(backend="openai", ttft_ms=12.5, tokens_out=40, retries=1)
    data = usage.to_dict()
    assert data == {"backend": "openai", "ttft_ms": 12.5, "tokens_out": 40, "retries": 1}
    assert AgentUsage.from_dict({**data, "unknown": 1}) == usage


def test_aggregate_summarises_each_field() -> None:
    agg = UsageAggregate(keep=100)
    for i in range(1, 101):
        agg.add(AgentUsage(backend="opencode", peak_rss_mb=float(i), exit_code=0 if i < 100 else 1))
    summary = agg.summary()
    assert summary["runs"] == 100 and summary["failed_exits"] == 1
    assert summary["peak_rss_mb"]["p50"] == 50.0
    assert summary["peak_rss_mb"]["p99"] == 99.0 and summary["peak_rss_mb"]["max"] == 100.0
    assert "cpu_s" not in summary  # never measured: not reported as zero


async def test_tracker_measures_memory_cpu_children_and_startup() -> None:
    sampler = TreeSampler(interval_s=0.05)
    trackers = [ProcessTracker(), ProcessTracker()]
    procs = [await asyncio.create_subprocess_exec(sys.executable, "-c", _HOG,
                                                  stdout=asyncio.subprocess.PIPE)
             for _ in trackers]

    async def one(proc: asyncio.subprocess.Process, tracker: ProcessTracker) -> None:
        assert proc.stdout is not None
        async with sampler.track(proc.pid, tracker):
            assert (await proc.stdout.readline()).strip() == b"ready"
            tracker.mark_output()
            tracker.exit_code = await proc.wait()

    await asyncio.gather(*(one(p, t) for p, t in zip(procs, trackers, strict=True)))
    assert sampler._task is None  # the last tree out stopped the sampling task
    for usage in (t.usage() for t in trackers):  # two trees sampled by one walk per tick
        assert usage.exit_code == 0 and usage.samples is not None and usage.samples >= 5
        assert usage.peak_rss_mb is not None and usage.peak_rss_mb >= 60
        assert usage.cpu_s is not None and usage.cpu_s >= 0.3
        assert usage.processes == 2  # the parent and its child, found through the parent links
        assert usage.startup_s is not None and usage.wall_s is not None
        assert 0 < usage.startup_s < usage.wall_s


def test_proc_table_agrees_with_psutil_on_our_own_process() -> None:
    table = proc_table()
    assert table is not None
    ppid, cpu = table[os.getpid()]
    rss, by_pid = sample_tree(os.getpid())
    assert ppid == os.getppid() and rss > 0
    assert abs(cpu - by_pid[os.getpid()]) < 0.5  # clock ticks vs psutil's reading


def test_sample_tree_of_a_missing_process_is_empty() -> None:
    assert sample_tree(2**22 + 12345) == (0, {})


def test_sampler_rejects_a_bad_interval() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        TreeSampler(interval_s=0)
