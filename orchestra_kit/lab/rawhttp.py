"""A lean keep-alive HTTP/1.1 client on raw asyncio protocols: the generator's fast path.

aiohttp's client costs several times more CPU per request than the server it
measures, which caps one generator process at ~1–2k req/s. :class:`RawHttpClient`
speaks just enough HTTP/1.1 for the lab (Content-Length and chunked bodies,
``Connection: close``, JSON in and out) over a pool of keep-alive connections, with
the same ``request(method, path, json) -> (status, body)`` call the workloads use.
It stamps each request's real send time and any wait for a free connection
(:mod:`orchestra_kit.lab.probe`). It has no Server-Sent Events: workloads that
follow a task to its end (``assign_wait``) use the aiohttp client.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import time
from typing import Any, Self

from ..errors import ValidationError
from .probe import add_queue_time, mark_sent

__all__ = ["RawHttpClient"]

_dumps = jsonlib.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class _Conn(asyncio.Protocol):
    """One keep-alive connection; one request at a time; the reply parsed as it arrives."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes, bytes, bool]] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionResetError("connection closed by the server"))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.waiter is not None and not self.waiter.done():
            try:
                reply = _parse(self.buf)
            except ValueError as exc:
                self.waiter.set_exception(exc)
                return
            if reply is not None:
                self.waiter.set_result(reply)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _header(head: bytes, name: bytes) -> bytes:
    """The value of header ``name`` (lower-case, with the colon) in a lower-cased head."""
    at = head.find(b"\r\n" + name)
    if at < 0:
        return b""
    start = at + 2 + len(name)
    end = head.find(b"\r\n", start)
    return head[start:end if end >= 0 else len(head)].strip()


def _parse(buf: bytearray) -> tuple[int, bytes, bytes, bool] | None:
    """(status, content type, body, close) when a whole reply is buffered (and consumed)."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end]).lower()
    status = int(head[9:12])  # "http/1.1 200 ..."
    start = end + 4
    close = _header(head, b"connection:") == b"close"
    ctype = _header(head, b"content-type:")
    if _header(head, b"transfer-encoding:") == b"chunked":
        return _parse_chunked(buf, start, status, ctype, close)
    length = int(_header(head, b"content-length:") or b"0")
    if len(buf) < start + length:
        return None
    body_bytes = bytes(buf[start:start + length])
    del buf[:start + length]
    return status, ctype, body_bytes, close


def _parse_chunked(buf: bytearray, pos: int, status: int, ctype: bytes, close: bool
                   ) -> tuple[int, bytes, bytes, bool] | None:
    body = bytearray()
    while True:
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            return None
        size = int(bytes(buf[pos:line_end]).split(b";")[0], 16)
        if len(buf) < line_end + 2 + size + 2:
            return None
        body += buf[line_end + 2:line_end + 2 + size]
        pos = line_end + 2 + size + 2
        if size == 0:
            del buf[:pos]
            return status, ctype, bytes(body), close


class RawHttpClient:
    """``request(method, path, json)`` over pooled keep-alive connections to one server."""

    def __init__(self, url: str, *, api_key: str | None = None, limit: int = 10_000) -> None:
        if not url.startswith("http://"):
            raise ValidationError("url", "the raw client speaks plain http:// only", value=url)
        hostport, slash, prefix = url.removeprefix("http://").partition("/")
        host, _, port = hostport.partition(":")
        self.host, self.port = host, int(port or 80)
        self._prefix = (slash + prefix).rstrip("/")
        self.base_url = url.rstrip("/")
        self._head_extra = (f"Host: {hostport}\r\n"
                            + (f"Authorization: Bearer {api_key}\r\n" if api_key else "")).encode()
        self._idle: list[_Conn] = []
        self._all: set[_Conn] = set()
        self._slots = asyncio.Semaphore(limit)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every connection (idempotent)."""
        for conn in list(self._all):
            conn.close()
        self._all.clear()
        self._idle.clear()

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(_Conn, self.host, self.port)
        self._all.add(conn)
        return conn

    async def request(self, method: str, path: str, json: Any = None) -> tuple[int, Any]:
        """One request; ``(status, decoded JSON or text or None)``; raises on I/O errors."""
        if self._slots.locked():
            waited = time.perf_counter()
            async with self._slots:
                add_queue_time(time.perf_counter() - waited)
                return await self._send(method, path, json)
        async with self._slots:
            return await self._send(method, path, json)

    async def _send(self, method: str, path: str, json: Any) -> tuple[int, Any]:
        conn = self._idle.pop() if self._idle else await self._connect()
        body = b"" if json is None else _dumps(json).encode()
        head = f"{method} {self._prefix}{path} HTTP/1.1\r\n".encode() + self._head_extra
        if json is not None:
            head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        conn.waiter = asyncio.get_running_loop().create_future()
        try:
            assert conn.transport is not None
            conn.transport.write(head + b"\r\n" + body)
            mark_sent()
            status, ctype, raw, close = await conn.waiter
        except BaseException:
            conn.close()
            self._all.discard(conn)
            raise
        conn.waiter = None
        if close or conn.closed:
            conn.close()
            self._all.discard(conn)
        else:
            self._idle.append(conn)
        return status, _decode(ctype, raw)

    def events(self, task_id: int) -> Any:
        """Not supported: Server-Sent Events need the aiohttp client."""
        raise ValidationError("generator.client", "the raw client has no Server-Sent Events; "
                              "use client = \"aiohttp\" for assign_wait")


def _decode(ctype: bytes, raw: bytes) -> Any:
    if not raw:
        return None
    if raw == b"{}":
        return {}
    if b"json" in ctype:
        try:
            return jsonlib.loads(raw)
        except ValueError:
            return raw.decode("utf-8", "replace")
    return raw.decode("utf-8", "replace")
