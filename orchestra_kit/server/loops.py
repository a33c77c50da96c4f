"""Running a CLI entry point's coroutine on the configured event loop.

``server.event_loop = "uvloop"`` swaps asyncio's selector loop for libuv's; it only
applies where this process owns the loop (``orchestra serve``, the bench's server
child), never to an in-process :class:`~orchestra_kit.server.app.Service`, which runs on
its caller's loop (a notebook's kernel cannot switch).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ..errors import ConfigError

__all__ = ["loop_factory", "run"]

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
