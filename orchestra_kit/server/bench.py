"""``orchestra bench http``: the HTTP API against a minimal aiohttp app, same generator.

The server under test runs in a child process (so the load generator does not share
its event loop or its core), on loopback, with a fresh database, the simulated
backend, the per-client rate limit off and an LLM bucket too large to matter. One
closed-loop generator (N workers, each on its own keep-alive connection through a
minimal HTTP/1.1 client, bounded by time and count) drives each scenario:

- a minimal aiohttp "hello" app: the physical limit of this machine and generator;
- GET /employees/{name} and GET /health (64 concurrent);
- POST /employees and POST /tasks at 256 concurrent (throughput and p99);
- 2,000 connections opened and held at once, each sending GET /health.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Self

import aiohttp
from aiohttp import web

from ..childproc import terminate

__all__ = ["cli_main", "closed_loop", "run_http_bench"]

Request = tuple[str, str, bytes | None]


def raise_fd_limit(wanted: int = 8192) -> int:
    """Raise the soft open-files limit towards ``wanted`` (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


# ---------------------------------------------------------------------- child process


async def _hello(request: web.Request) -> web.Response:
    return web.Response(text="hello")


async def _serve_child(kind: str, db_dir: str) -> None:
    """Serve until SIGTERM; the port goes to stdout first."""
    raise_fd_limit()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    if kind == "hello":
        app = web.Application()
        app.router.add_get("/", _hello)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0, backlog=4096).start()
        print(runner.addresses[0][1], flush=True)
        await stop.wait()
        await runner.cleanup()
        return
    from ..config import Settings
    from .app import Service

    settings = Settings.load(environ={}, overrides={
        "database.path": f"{db_dir}/bench.db", "project_root": db_dir, "server.port": 0,
        "server.requests_per_minute": 0, "scheduler.max_api_requests_per_minute": 1e9,
        "scheduler.api_burst": 1_000_000, "scheduler.max_concurrent_tasks": 256,
        "agents.sim_latency_ms": 5, "agents.sim_jitter_ms": 1, "log_level": "WARNING"})
    async with Service(settings) as svc:
        print(svc.port, flush=True)
        await stop.wait()


class _Server:
    """A server in a child process (``python -m orchestra_kit.server.bench --child``)."""

    def __init__(self, kind: str, db_dir: str) -> None:
        self._args = [sys.executable, "-m", "orchestra_kit.server.bench", "--child", kind, db_dir]
        self._proc: asyncio.subprocess.Process | None = None
        self.url = ""

    async def __aenter__(self) -> Self:
        self._proc = await asyncio.create_subprocess_exec(*self._args,
                                                          stdout=asyncio.subprocess.PIPE)
        assert self._proc.stdout is not None
        try:
            async with asyncio.timeout(60):
                line = await self._proc.stdout.readline()
            self.url = f"http://127.0.0.1:{int(line)}"
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._proc is not None:
            await terminate(self._proc)


# ---------------------------------------------------------------------- load generator


class RawConnection:
    """A minimal keep-alive HTTP/1.1 client connection: the lightest generator Python
    allows (aiohttp's client costs several times more per request, which would make
    the generator, not the server, the thing measured). Enough HTTP for this bench:
    Content-Length or chunked bodies, reconnect after ``Connection: close``."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes | None = None) -> int:
        """Send one request; the response status (the body is read and dropped)."""
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self._writer.write(head.encode("ascii") + b"\r\n" + (body or b""))
        raw = await self._reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in lines[1:] if line)}
        await self._read_body(headers)
        if headers.get("connection", "").lower() == "close":
            await self.aclose()
        return status

    async def _read_body(self, headers: dict[str, str]) -> None:
        assert self._reader is not None
        if "content-length" in headers:
            await self._reader.readexactly(int(headers["content-length"]))
            return
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await self._reader.readexactly(size + 2)
                if size == 0:
                    return

    async def aclose(self) -> None:
        """Close the socket (idempotent)."""
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await writer.wait_closed()


async def closed_loop(url: str, make: Callable[[int], Request], *, concurrency: int,
                      duration_s: float, max_requests: int) -> dict[str, Any]:
    """N workers, each on its own keep-alive connection, sending the next request when
    the last returned; bounded by time and count. ``make(i)`` gives (method, path, body)."""
    host, port = _host_port(url)
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    issued = 0
    deadline = loop.time() + duration_s

    async def worker() -> None:
        nonlocal issued
        conn = RawConnection(host, port)
        try:
            while issued < max_requests and loop.time() < deadline:
                method, path, body = make(issued)
                issued += 1
                started = time.perf_counter()
                try:
                    status = await conn.request(method, path, body)
                except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                    status = 0
                    await conn.aclose()
                latencies.append(time.perf_counter() - started)
                statuses[status] += 1
        finally:
            await conn.aclose()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    ok = sum(n for s, n in statuses.items() if 200 <= s < 300)
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else 0.0
    return {"requests": len(latencies), "ok": ok, "rps": ok / elapsed if elapsed else 0.0,
            "p50_ms": latencies[len(latencies) // 2] * 1000 if latencies else 0.0,
            "p99_ms": p99 * 1000, "statuses": dict(statuses), "elapsed_s": elapsed}


async def _hold_connections(url: str, n: int) -> float:
    """Open ``n`` connections at once, each sending GET /health; percent answered 200."""
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as s:
        async def one() -> bool:
            try:
                async with s.get(url + "/health") as r:
                    await r.read()
                    return r.status == 200
            except (TimeoutError, aiohttp.ClientError, OSError):
                return False
        results = await asyncio.gather(*(one() for _ in range(n)))
    return 100.0 * sum(results) / n


# ---------------------------------------------------------------------- scenarios


def _body(obj: Any) -> bytes:
    return json.dumps(obj).encode()


async def _api_scenarios(url: str, duration_s: float, say: Callable[[str], None]
                         ) -> dict[str, Any]:
    out: dict[str, Any] = {}
    setup = RawConnection(*_host_port(url))
    employees = [{"name": f"b{i}", "role": "dev"} for i in range(256)]
    status = await setup.request("POST", "/employees/batch", _body({"employees": employees}))
    await setup.aclose()
    if status != 200:
        raise RuntimeError(f"bench setup: POST /employees/batch answered {status}")
    big = 10**9
    say("GET /employees/{name} ...")
    out["get_employee"] = await closed_loop(
        url, lambda i: ("GET", f"/employees/b{i % 256}", None),
        concurrency=64, duration_s=duration_s, max_requests=big)
    say("GET /health ...")
    out["health"] = await closed_loop(url, lambda i: ("GET", "/health", None),
                                      concurrency=64, duration_s=duration_s, max_requests=big)
    say("POST /employees at 256 ...")
    out["hire"] = await closed_loop(
        url, lambda i: ("POST", "/employees", _body({"name": f"h{i}", "role": "dev"})),
        concurrency=256, duration_s=duration_s, max_requests=big)
    say("POST /tasks at 256 ...")
    out["assign"] = await closed_loop(
        url, lambda i: ("POST", "/tasks", _body({"name": f"b{i % 256}", "task": "bench"})),
        concurrency=256, duration_s=duration_s, max_requests=big)
    say("2000 connections ...")
    out["conn2000_ok_pct"] = await _hold_connections(url, 2000)
    return out


def _host_port(url: str) -> tuple[str, int]:
    host, _, port = url.removeprefix("http://").partition(":")
    return host, int(port)


async def run_http_bench(*, quick: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run every scenario once; the figures (see the module docstring)."""
    raise_fd_limit()
    duration_s = 2.0 if quick else 5.0

    def say(msg: str) -> None:
        if progress:
            print(f"bench http: {msg}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="orchestra-bench-") as tmp:
        say("hello baseline ...")
        async with _Server("hello", tmp) as hello:
            base = await closed_loop(hello.url, lambda i: ("GET", "/", None),
                                     concurrency=64, duration_s=duration_s,
                                     max_requests=10**9)
        async with _Server("api", tmp) as api:
            res = await _api_scenarios(api.url, duration_s, say)
    hello_rps = base["rps"]
    read_rps = min(res["get_employee"]["rps"], res["health"]["rps"])
    return {
        "hello_rps": round(hello_rps, 1),
        "get_employee_rps": round(res["get_employee"]["rps"], 1),
        "health_rps": round(res["health"]["rps"], 1),
        "read_vs_hello_ratio": round(read_rps / hello_rps, 3) if hello_rps else 0.0,
        "hire_rps_c256": round(res["hire"]["rps"], 1),
        "hire_p99_ms_c256": round(res["hire"]["p99_ms"], 2),
        "assign_rps_c256": round(res["assign"]["rps"], 1),
        "assign_p99_ms_c256": round(res["assign"]["p99_ms"], 2),
        "conn2000_ok_pct": round(res["conn2000_ok_pct"], 2),
        "details": {"hello": base, **{k: v for k, v in res.items() if isinstance(v, dict)}},
    }


def cli_main(argv: list[str]) -> int:
    """``orchestra bench http [--json] [--quick]``."""
    p = argparse.ArgumentParser(prog="orchestra bench http")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--quick", action="store_true", help="2 s per scenario instead of 5 s")
    args = p.parse_args(argv)
    result = asyncio.run(run_http_bench(quick=args.quick, progress=not args.json))
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "details"}, indent=2))
        return 0
    for key, value in result.items():
        if key != "details":
            print(f"{key:<22} {value}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    if sys.argv[1:2] == ["--child"]:
        asyncio.run(_serve_child(sys.argv[2], sys.argv[3]))
    else:
        sys.exit(cli_main(sys.argv[1:]))
