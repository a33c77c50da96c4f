"""The generator's calibrated capacity, measured once per machine and cached.

``orchestra bench generator`` (:mod:`orchestra_kit.lab.genbench`) measures how fast the
lab's own generator can send against a null server in its own process. Every run's
manifest records that figure (``generator.calibration``) and the self-audit warns
when an open-loop point asks for more than 70 % of it: above that, latencies start to
describe the generator rather than the service.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

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

    path = Path(results_root) / CACHE_NAME
    key = await asyncio.to_thread(_cache_key)
    cached = None if refresh else await asyncio.to_thread(_read_cached, path, key)
    if cached is not None or not measure:
        return cached
    from orchestra_kit.lab.genbench import measure_generator

    # Several processes may start at once on one results root (parallel test workers,
    # notebooks): one measures, the others wait for it and read what it cached.
    lock = await asyncio.to_thread(_lock, path)
    try:
        cached = None if refresh else await asyncio.to_thread(_read_cached, path, key)
        if cached is not None:
            return cached
        result = await measure_generator(quick=True)
        await asyncio.to_thread(store_capacity, path, {**result, "key": key})
    finally:
        lock.close()  # closing the file releases the lock
    return {**result, "key": key}


def _read_cached(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The cached calibration when it was measured on this machine, else None."""
    import json

    if not path.is_file():
        return None
    cached = json.loads(path.read_text())
    return dict(cached) if cached.get("key") == key else None


def _lock(path: Path) -> IO[str]:
    """An exclusive lock next to the cache file (held until the returned file closes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path.with_name(f"{path.name}.lock"), "w")  # noqa: SIM115 - closed by caller
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock, at worst measured twice
        return handle
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


def store_capacity(path: Path, result: dict[str, Any]) -> None:
    """Write a calibration result where :func:`cached_capacity` finds it."""
    import json
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    # Written whole, then renamed: a reader in another process (a parallel test worker,
    # a notebook's kernel) sees the old file or the new one, never half of one.
    part = path.with_name(f"{path.name}.{os.getpid()}.part")
    part.write_text(json.dumps(result, indent=2, default=str) + "\n")
    os.replace(part, path)
