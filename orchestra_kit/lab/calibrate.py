"""The generator's calibrated capacity, measured once per machine and cached.

``orchestra bench generator`` (:mod:`orchestra_kit.lab.genbench`) measures how fast the
lab's own generator can send against a null server in its own process. Every run's
manifest records that figure (``generator.calibration``) and the self-audit warns
when an open-loop point asks for more than 70 % of it: above that, latencies start to
describe the generator rather than the service.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["CACHE_NAME", "cached_capacity", "store_capacity"]

CACHE_NAME = ".calibration/generator.json"


def _cache_key() -> dict[str, Any]:
    import os
    import platform

    from orchestra_kit.lab.results import environment

    env = environment()
    return {"node": platform.node(), "cpu_count": os.cpu_count(), "python": env["python"],
            "orchestra_kit": env["packages"].get("orchestra_kit")}


async def cached_capacity(results_root: Path, *, refresh: bool = False,
                          measure: bool = True) -> dict[str, Any] | None:
    """The generator's calibrated open-loop capacity on this machine, measured once.

    Read from ``results_root/.calibration/generator.json`` when it was measured on this
    machine (same host, cores, Python and package version); otherwise a quick
    calibration (:func:`orchestra_kit.lab.genbench.measure_generator` with
    ``quick=True``, a few seconds) is run and cached. Delete the file (or pass
    ``refresh``) to measure again; ``orchestra bench generator`` refreshes it too.
    With ``measure=False`` only a cached result is returned (None when there is none).
    """
    import asyncio
    import json

    path = Path(results_root) / CACHE_NAME
    key = await asyncio.to_thread(_cache_key)
    if not refresh and path.is_file():
        cached = json.loads(await asyncio.to_thread(path.read_text))
        if cached.get("key") == key:
            return dict(cached)
    if not measure:
        return None
    from orchestra_kit.lab.genbench import measure_generator

    result = await measure_generator(quick=True)
    await asyncio.to_thread(store_capacity, path, {**result, "key": key})
    return {**result, "key": key}


def store_capacity(path: Path, result: dict[str, Any]) -> None:
    """Write a calibration result where :func:`cached_capacity` finds it."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
