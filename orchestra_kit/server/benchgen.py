"""The pieces of ``orchestra bench http``: a server in a child process, the lightest
closed-loop generator Python allows, and an optional py-spy profile of the server.

The child is ``python -m orchestra_kit.server.bench --child KIND DB_DIR [KEY=VALUE ...]``
(KIND ``hello`` or ``api``; the pairs are settings overrides, e.g. ``server.event_loop=uvloop``);
it prints its port and serves until SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import shutil
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any, Self

import aiohttp

from ..childproc import terminate

__all__ = ["ChildServer", "RawConnection", "closed_loop", "hold_connections", "host_port",
           "profiled", "raise_fd_limit", "top_frames"]

Request = tuple[str, str, bytes | None]


def raise_fd_limit(wanted: int = 8192) -> int:
    """Raise the soft open-files limit towards ``wanted`` (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def host_port(url: str) -> tuple[str, int]:
    """``("127.0.0.1", 8080)`` for ``http://127.0.0.1:8080``."""
    host, _, port = url.removeprefix("http://").partition(":")
    return host, int(port)


class ChildServer:
    """A server in a child process; ``url`` and ``pid`` once entered."""

    def __init__(self, kind: str, db_dir: str, overrides: Mapping[str, Any] | None = None) -> None:
        pairs = [f"{k}={v}" for k, v in (overrides or {}).items()]
        self._args = [sys.executable, "-m", "orchestra_kit.server.bench", "--child", kind,
                      db_dir, *pairs]
        self._proc: asyncio.subprocess.Process | None = None
        self.url = ""
        self.pid = 0

    async def __aenter__(self) -> Self:
        self._proc = await asyncio.create_subprocess_exec(*self._args,
                                                          stdout=asyncio.subprocess.PIPE)
        self.pid = self._proc.pid
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


@contextlib.asynccontextmanager
async def profiled(pid: int, out: Path | None, name: str, duration_s: float
                   ) -> AsyncIterator[None]:
    """Sample ``pid`` with py-spy while the block runs (nothing when ``out`` is None):
    ``out/NAME.txt``, collapsed stacks (what flame-graph tools read), and
    ``out/NAME.top.txt``, the frames with the most samples (self and inclusive)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if out is None or not Path(spy).exists():
        if out is not None:
            print("bench http: py-spy not found (pip install py-spy); no profile",
                  file=sys.stderr)
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    raw = out / f"{name}.txt"
    proc = await asyncio.create_subprocess_exec(
        spy, "record", "-p", str(pid), "-d", str(max(1, int(duration_s) - 1)), "-r", "250",
        "--nonblocking", "-f", "raw", "-o", str(raw),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        yield
    finally:
        try:
            async with asyncio.timeout(30):
                await proc.wait()
        except TimeoutError:
            await terminate(proc)
    if raw.exists():
        (out / f"{name}.top.txt").write_text(top_frames(raw.read_text()))


def top_frames(collapsed: str, n: int = 30) -> str:
    """The ``n`` frames with the most samples, by self and by inclusive time."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        total += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            incl[frame] += int(count)
    lines = [f"{total} samples"]
    for title, counter in (("self", own), ("inclusive", incl)):
        lines.append(f"--- {title}")
        lines += [f"{100 * c / max(total, 1):5.1f}%  {f}" for f, c in counter.most_common(n)]
    return "\n".join(lines) + "\n"


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
    host, port = host_port(url)
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


async def hold_connections(url: str, n: int) -> float:
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
