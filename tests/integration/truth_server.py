"""Child process for the lab's truth tests: a server whose behaviour is known exactly.

Usage: ``python truth_server.py``; prints its port, serves on 127.0.0.1 until SIGTERM.

- ``GET /known``: sleeps 50 ms ± 2.5 ms (uniform, seeded) and records the sleep it took;
- ``GET /stall``: closed from 1.0 s to 2.0 s after the last ``POST /reset`` (every 4 s):
  a request arriving then waits until 2.0 s;
- ``GET /hold``: holds every request 1.5 s;
- ``POST /employees``: answers 200 (as the original OpenCode-Slack server does), or 400
  "already exists" for a name seen before; ``GET /health``: 200;
- ``GET /fail``: 500;
- ``GET /stats``: what the server saw: arrival times (s since reset), the most requests in
  progress at once, the sleeps of /known; ``POST /reset`` clears them.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from typing import Any

from aiohttp import web


class Truth:
    """The server's own record of what it received."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.arrivals: list[float] = []
        self.inflight = 0
        self.max_inflight = 0
        self.slept_ms: list[float] = []
        self.names: set[str] = set()
        self.rng = random.Random(11)

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]


@web.middleware
async def count(request: web.Request, handler: Any) -> web.StreamResponse:
    truth: Truth = request.app["truth"]
    if request.path in ("/stats", "/reset"):
        return await handler(request)
    truth.arrivals.append(time.perf_counter() - truth.t0)
    truth.inflight += 1
    truth.max_inflight = max(truth.max_inflight, truth.inflight)
    try:
        return await handler(request)
    finally:
        truth.inflight -= 1


async def known(request: web.Request) -> web.Response:
    truth: Truth = request.app["truth"]
    start = time.perf_counter()
    await asyncio.sleep(0.05 + truth.rng.uniform(-0.0025, 0.0025))
    truth.slept_ms.append((time.perf_counter() - start) * 1000)
    return web.json_response({})


async def stall(request: web.Request) -> web.Response:
    phase = (time.perf_counter() - request.app["truth"].t0) % 4.0
    if 1.0 <= phase < 2.0:
        await asyncio.sleep(2.0 - phase)
    return web.json_response({})


async def hold(request: web.Request) -> web.Response:
    await asyncio.sleep(1.5)
    return web.json_response({})


async def hire(request: web.Request) -> web.Response:
    truth: Truth = request.app["truth"]
    name = (await request.json())["name"]
    if name in truth.names:
        return web.json_response({"error": f"Employee {name} already exists"}, status=400)
    truth.names.add(name)
    return web.json_response({"message": f"Hired {name}"}, status=200)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def fail(request: web.Request) -> web.Response:
    return web.json_response({}, status=500)


async def stats(request: web.Request) -> web.Response:
    t: Truth = request.app["truth"]
    return web.json_response({"arrivals": t.arrivals, "max_inflight": t.max_inflight,
                              "slept_ms": t.slept_ms})


async def reset(request: web.Request) -> web.Response:
    request.app["truth"].reset()
    return web.json_response({})


async def main() -> None:
    app = web.Application(middlewares=[count])
    app["truth"] = Truth()
    app.router.add_get("/known", known)
    app.router.add_get("/stall", stall)
    app.router.add_get("/hold", hold)
    app.router.add_post("/employees", hire)
    app.router.add_get("/health", health)
    app.router.add_get("/fail", fail)
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
