"""Running a CLI entry point's coroutine on the configured event loop.

``server.event_loop = "uvloop"`` swaps asyncio's selector loop for libuv's; it only
applies where this process owns the loop (``orchestra serve``, the bench's server
child), never to an in-process :class:`~orchestra_kit.server.app.Service`, which runs on
its caller's loop (a notebook's kernel cannot switch).
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ..errors import ConfigError

__all__ = ["freeze_startup_objects", "loop_factory", "run", "tune_gc"]

T = TypeVar("T")


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop factory for ``name`` (None: asyncio's default)."""
    if name == "asyncio":
        return None
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:
            raise ConfigError("server.event_loop", name,
                              "needs the uvloop package (pip install uvloop)") from None
        return uvloop.new_event_loop
    raise ConfigError("server.event_loop", name, "must be one of asyncio, uvloop")


def run(main: Coroutine[Any, Any, T], event_loop: str) -> T:
    """``asyncio.run(main)`` on the loop ``event_loop`` names."""
    with asyncio.Runner(loop_factory=loop_factory(event_loop)) as runner:
        return runner.run(main)


def tune_gc(young_threshold: int) -> None:
    """The young generation collected every ``young_threshold`` net allocations of
    tracked objects instead of 700 (0: unchanged); the older generations' own
    thresholds stay. Process-wide: only for a process that owns its loop.

    A request in flight holds a dozen coroutines, futures and dicts; with hundreds in
    flight, every young collection (one per ~700 allocations) traversed them all, and
    they survived into the older generations to be traversed again: ~13 % of the
    server's CPU under 256 concurrent hires (docs/benchmarks.md)."""
    if young_threshold:
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(young_threshold, older, oldest)


def freeze_startup_objects() -> None:
    """Move every object alive now (modules, classes, the application: ~60 k objects)
    into the permanent generation, so full collections no longer traverse them: a full
    collection cost a 40-80 ms pause of the loop, the tail of a write under load. Call
    once the service has started; what is frozen is never collected (start-up garbage
    is collected first)."""
    gc.collect()
    gc.freeze()
