"""Heap snapshots on SIGUSR2 (orchestra_kit.server.memtrace): the first signal starts
tracemalloc, the next writes a snapshot, and compare() names what grew."""

from __future__ import annotations

import asyncio
import os
import signal
import tracemalloc
from pathlib import Path

import pytest

from orchestra_kit.server import memtrace


async def test_signal_starts_tracing_then_snapshots(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if tracemalloc.is_tracing():
        pytest.skip("tracemalloc already on (PYTHONTRACEMALLOC)")
    monkeypatch.setattr(memtrace.tempfile, "gettempdir", lambda: str(tmp_path))
    remove = memtrace.install(asyncio.get_running_loop())
    try:
        os.kill(os.getpid(), signal.SIGUSR2)
        for _ in range(100):
            await asyncio.sleep(0.01)
            if tracemalloc.is_tracing():
                break
        assert tracemalloc.is_tracing()
        kept = [bytearray(1000) for _ in range(200)]  # noqa: F841 - what must show as growth
        os.kill(os.getpid(), signal.SIGUSR2)
        for _ in range(500):
            await asyncio.sleep(0.01)
            snaps = sorted(tmp_path.glob("orchestra-heap-*.tracemalloc"))
            if snaps:
                break
        assert len(snaps) == 1
        first = tmp_path / "empty.tracemalloc"
        tracemalloc.stop()
        tracemalloc.start()
        tracemalloc.take_snapshot().dump(str(first))
        report = memtrace.compare(first, snaps[0], top=5)
        assert "test_memtrace.py" in report and report.startswith("traced:")
    finally:
        remove()
        tracemalloc.stop()
