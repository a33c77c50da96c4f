"""The generator's calibration cache: measured once, even by callers starting at once."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from orchestra_kit.lab import genbench
from orchestra_kit.lab.calibrate import CACHE_NAME, cached_capacity


async def test_callers_starting_at_once_measure_once(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0

    async def measure(*, quick: bool = False) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.2)  # the others arrive while this one measures
        return {"open_loop_capacity_rps": 1000.0 * calls, "quick": quick}

    monkeypatch.setattr(genbench, "measure_generator", measure)
    results = await asyncio.gather(*(cached_capacity(tmp_path) for _ in range(3)))
    assert calls == 1
    assert [r["open_loop_capacity_rps"] for r in results] == [1000.0] * 3
    cached = json.loads((tmp_path / CACHE_NAME).read_text())
    assert cached["open_loop_capacity_rps"] == 1000.0 and cached["key"] == results[0]["key"]
    assert list((tmp_path / CACHE_NAME).parent.glob("*.part")) == []  # renamed into place
    again = await cached_capacity(tmp_path, refresh=True)
    assert calls == 2 and again["open_loop_capacity_rps"] == 2000.0


async def test_no_measure_reads_only(tmp_path: Path) -> None:
    assert await cached_capacity(tmp_path, measure=False) is None
