"""Child processes the benchmarks start (a server, the fake provider) and stop."""

from __future__ import annotations

import asyncio
import signal

__all__ = ["terminate"]


async def terminate(proc: asyncio.subprocess.Process, *, timeout_s: float = 30.0) -> None:
    """SIGTERM (a graceful drain), then SIGKILL after ``timeout_s``; always reaped."""
    if proc.returncode is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(timeout_s):
            await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()
