"""The connection layer: aiohttp's protocol with a connection cap and JSON parser errors.

aiohttp answers requests its HTTP parser rejects (a bad method, an oversize header ...)
from ``RequestHandler.handle_error`` in plain text, and logs each with a traceback;
:class:`GuardedProtocol` answers them in the API's JSON error shape with an
``X-Request-ID`` and logs them at DEBUG (a client's mistake is not a server error).
It also refuses connections beyond ``server.max_connections`` at once (a JSON 503,
then close), so idle sockets cannot exhaust the process's file descriptors.

Idle and slow-header connections are closed by aiohttp's keep-alive timer, which runs
from the moment a connection is accepted until a complete request head arrives (and
again after each answer): :class:`GuardedRunner` sets it to ``server.idle_timeout_s``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from .http import error_body
from .state import AppState

__all__ = ["AcceptErrorFilter", "GuardedRunner", "effective_max_connections"]

log = logging.getLogger("orchestra_kit.server")

#: File descriptors kept free for the database, agents' sockets and logs.
FD_RESERVE = 64


def effective_max_connections(configured: int) -> int:
    """``configured``, lowered to fit the open-file limit less :data:`FD_RESERVE`."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):  # pragma: no cover - not POSIX
        return configured
    if soft == resource.RLIM_INFINITY:
        return configured
    return max(1, min(configured, soft - FD_RESERVE))


def _error_bytes(state: AppState, status: int, reason: str, code: str, message: str,
                 extra: str = "") -> tuple[bytes, str]:
    rid = state.new_request_id()
    body = error_body(code, message, None, rid)
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nX-Request-ID: {rid}\r\n{extra}"
            "Connection: close\r\n\r\n")
    return head.encode() + body, rid


class GuardedProtocol(RequestHandler):
    """One connection: refused beyond the cap; parser errors in the JSON error shape."""

    def __init__(self, manager: GuardedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = manager.guard
        #: Done when the peer disconnects: long answers (SSE) wait on it beside their
        #: events, so a reader that went away frees its slot at once, not at the next write.
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        super().connection_lost(exc)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        guard = self._guard
        if guard.open_connections() >= guard.max_connections:
            guard.refused += 1
            data, _ = _error_bytes(guard.state, 503, "Service Unavailable",
                                   "too_many_connections",
                                   f"The server holds its maximum of {guard.max_connections}"
                                   " connections; retry shortly", "Retry-After: 1\r\n")
            self._manager = None  # never registered: connection_lost has nothing to undo
            tr: Any = transport
            tr.write(data)
            tr.close()
            return
        super().connection_made(transport)

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """The JSON error answer for a request aiohttp could not parse or serve."""
        if isinstance(exc, ConnectionError) or request.writer.output_size > 0:
            # the client is gone, or the answer was under way: aiohttp closes quietly
            raise ConnectionError("The client disconnected or the answer was sent already")
        state = self._guard.state
        rid = state.new_request_id()
        if status >= 500:
            log.error("Error serving a request from %s (request %s)", request.remote, rid,
                      exc_info=exc)
            code, text = "internal_error", "Internal server error"
        else:
            log.debug("Unparsable request from %s: %s", request.remote, exc)
            code = "bad_request"
            text = f"The request is not valid HTTP: {str(message or exc or '')[:200]}"
        resp = web.Response(status=status, body=error_body(code, text, None, rid),
                            content_type="application/json", headers={"X-Request-ID": rid})
        resp.force_close()
        state.metrics.observe("(unparsable)", status, 0.0)
        return resp


class _Guard:
    """The connection cap shared by the server's protocols."""

    def __init__(self, state: AppState, max_connections: int) -> None:
        self.state = state
        self.max_connections = max_connections
        self.refused = 0
        self.server: GuardedServer | None = None

    def open_connections(self) -> int:
        return len(self.server.connections) if self.server is not None else 0


class GuardedServer(web.Server):
    """aiohttp's protocol factory, making :class:`GuardedProtocol` connections."""

    def __init__(self, handler: Any, *, guard: _Guard, loop: asyncio.AbstractEventLoop,
                 request_factory: Any, handler_cancellation: bool,
                 **protocol_kwargs: Any) -> None:
        super().__init__(handler, request_factory=request_factory,
                         handler_cancellation=handler_cancellation, loop=loop,
                         **protocol_kwargs)
        self.guard = guard
        self.loop = loop
        self.protocol_kwargs = protocol_kwargs
        guard.server = self

    def __call__(self) -> RequestHandler:
        return GuardedProtocol(self, loop=self.loop, **self.protocol_kwargs)


class GuardedRunner(web.AppRunner):
    """An AppRunner whose server is a :class:`GuardedServer` (cap, timeouts, JSON errors).

    When the application has no middleware, the runner's server calls the request
    pipeline (``state.pipeline``) around the application's handler itself."""

    def __init__(self, app: web.Application, state: AppState, *,
                 access_log: Any = None, **kwargs: Any) -> None:
        server = state.settings.server
        # What each connection's protocol gets (aiohttp passes the runner's keyword
        # arguments on to it): kept here, to build the guarded server with the same.
        self._protocol_kwargs = {"keepalive_timeout": server.idle_timeout_s,
                                 "access_log": access_log}
        super().__init__(app, **self._protocol_kwargs, **kwargs)
        self.state = state
        self.guard = _Guard(state, effective_max_connections(server.max_connections))
        state.connection_stats = self.stats
        if self.guard.max_connections < server.max_connections:
            # The default is meant to be fitted to the limit; a value someone chose is not.
            chosen = server.max_connections != type(server)().max_connections
            (log.warning if chosen else log.info)("server.max_connections=%d lowered to %d to fit the open-file "
                        "limit", server.max_connections, self.guard.max_connections)

    async def _make_server(self) -> web.Server:
        base = await super()._make_server()  # starts and freezes the application
        # aiohttp has no hook for the protocol class: a server around the same handler
        # and request factory, making GuardedProtocol connections.
        handler = base.request_handler
        if self.state.pipeline is not None and not self.app.middlewares:
            handler = functools.partial(self.state.pipeline, handler=handler)
        return GuardedServer(handler, guard=self.guard, request_factory=base.request_factory,
                             handler_cancellation=base.handler_cancellation,
                             loop=asyncio.get_running_loop(), **self._protocol_kwargs)

    def stats(self) -> dict[str, int]:
        """Open and refused connections, and the cap."""
        return {"connections_open": self.guard.open_connections(),
                "connections_refused": self.guard.refused,
                "connections_max": self.guard.max_connections}


class AcceptErrorFilter:
    """A loop exception handler that rate-limits "socket.accept() out of system resource".

    asyncio logs that once per pending connection on every retry when the process is out
    of file descriptors (millions of lines in a minute); this keeps one line per
    ``interval_s`` with the number suppressed, and passes every other error on.
    """

    MESSAGE = "socket.accept() out of system resource"

    def __init__(self, previous: Any = None, interval_s: float = 10.0,
                 clock: Any = time.monotonic) -> None:
        self.previous = previous
        self.interval_s = interval_s
        self.clock = clock
        self.suppressed = 0
        self._last = -float("inf")

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != self.MESSAGE:
            if self.previous is not None:
                self.previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        now = self.clock()
        if now - self._last < self.interval_s:
            self.suppressed += 1
            return
        log.error("%s: %s (%d more suppressed in the last %.0f s; raise the open-file limit"
                  " or lower server.max_connections)", self.MESSAGE, context.get("exception"),
                  self.suppressed, self.interval_s)
        self.suppressed = 0
        self._last = now
