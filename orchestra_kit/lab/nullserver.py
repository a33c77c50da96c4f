"""A null HTTP server for calibrating the generator: every request gets ``200 {}``.

``python -m orchestra_kit.lab.nullserver`` listens on 127.0.0.1 (a free port, printed
on stdout) until SIGTERM. Built on a raw asyncio protocol so it costs as little CPU as
possible: what the calibration measures is the generator, not this server.
"""

from __future__ import annotations

import asyncio
import signal

__all__ = ["NullProtocol", "serve"]

_REPLY = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
          b"Connection: keep-alive\r\n\r\n{}")


class NullProtocol(asyncio.Protocol):
    """Answers each complete request (headers plus Content-Length body) with ``200 {}``."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        replies = 0
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = bytes(self.buf[:end]).lower()
            length = 0
            at = head.find(b"content-length:")
            if at >= 0:
                length = int(head[at + 15:].split(b"\r\n", 1)[0])
            if len(self.buf) < end + 4 + length:
                break
            del self.buf[:end + 4 + length]
            replies += 1
        if replies and self.transport is not None:
            self.transport.write(_REPLY * replies)


async def serve() -> None:
    """Serve until SIGTERM; print the port first."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    server = await loop.create_server(NullProtocol, "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await stop.wait()


if __name__ == "__main__":  # pragma: no cover
    asyncio.run(serve())
