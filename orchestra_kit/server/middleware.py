"""The request pipeline: request id, timing, body limit, auth, rate limit, errors, gzip.

One function does it all in a fixed order, because each aiohttp middleware layer
costs a coroutine frame per request and the hot path should stay cheap. Under
:class:`~.app.Service` it is not even a middleware: the server calls it around the
application's handler (no middleware chain to build or walk); ``create_app`` alone
installs it as the application's single middleware.

1. request id (a sane ``X-Request-ID`` is kept, else one is generated) and a start time;
2. body size: a ``Content-Length`` over the limit is refused before reading (413);
3. auth: when API keys are configured, POST/PUT/PATCH/DELETE need ``Bearer <key>``,
   compared with ``hmac.compare_digest`` against every key (401);
4. per-client token bucket keyed by the valid API key, else the peer address (429 with
   ``Retry-After``); ``X-RateLimit-*`` headers go on every answer;
5. the handler; any error becomes the JSON error shape, an unexpected one a generic 500
   (traceback logged, never sent);
6. gzip when the answer is large and the client accepts it; latency recorded per route.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import hdrs, web
from aiohttp.web_urldispatcher import AbstractRoute

from ..errors import OrchestraError, RateLimitedError, ValidationError
from ..ratelimit import KeyedTokenBucket
from .http import (
    BodyTooLargeError,
    InternalError,
    MethodNotAllowedError,
    RouteNotFoundError,
    UnauthorizedError,
    error_response,
)
from .state import IDENTITY, REQUEST_ID, AppState

__all__ = ["REQUEST_ID_HEADER", "Pipeline", "build_middleware", "build_pipeline"]

log = logging.getLogger("orchestra_kit.server")

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$").match
_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_READS = frozenset({"GET", "HEAD"})
#: The status recorded for requests whose client disconnected before the answer.
CLIENT_CLOSED = 499
# Slack's routes authenticate by request signature (checked by the chat adapter), not
# by bearer keys, and Slack's few addresses are not rate limited per client.
_SIGNED_PREFIX = "/slack/"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Pipeline = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]


class _Pipeline:
    """Per-application constants computed once, and the per-request steps."""

    def __init__(self, state: AppState) -> None:
        server = state.settings.server
        self.state = state
        self.metrics = state.metrics
        self.max_body = server.max_body_bytes
        self.gzip_min = server.gzip_min_bytes
        self.keys = tuple((f"Bearer {k}".encode(), name) for k, name in server.key_identities())
        self.limiter = (KeyedTokenBucket(server.requests_per_minute, server.rate_limit_burst)
                        if server.requests_per_minute > 0 else None)
        self.limit_header = str(server.rate_limit_burst)
        self.labels: dict[AbstractRoute | None, str] = {}
        self.root = str(state.project_root)
        # Without a rate limit or API keys, a GET/HEAD has nothing to guard: its body is
        # never read, so even the size check is skipped on the hot read paths.
        self.guard_reads = self.limiter is not None or bool(self.keys)

    def scrub(self, exc: OrchestraError) -> OrchestraError:
        """Keep the server's own paths out of answers (the project root is not public)."""
        if self.root in exc.message:
            exc.message = exc.message.replace(self.root, "<project root>")
            if isinstance(exc, ValidationError):
                exc.problem = exc.problem.replace(self.root, "<project root>")
            if isinstance(exc.details, dict) and isinstance(exc.details.get("errors"), list):
                for item in exc.details["errors"]:
                    if isinstance(item, dict) and isinstance(item.get("problem"), str):
                        item["problem"] = item["problem"].replace(self.root, "<project root>")
        return exc

    def label(self, request: web.Request) -> str:
        return route_label(self.labels, request)

    def authenticated(self, request: web.Request) -> bool:
        """Whether the request carries a configured key; a bound key sets IDENTITY."""
        header = request.headers.get(hdrs.AUTHORIZATION)
        if header is None:
            return False
        given = header.encode("utf-8", "surrogateescape")
        ok = False
        identity = None
        for key, name in self.keys:  # no early exit: timing does not tell which key matched
            match = hmac.compare_digest(given, key)
            ok |= match
            if match:
                identity = name
        if identity is not None:
            request[IDENTITY] = identity
        return ok

    def guard(self, request: web.Request, headers: dict[str, str]) -> None:
        """Body size, auth and rate limit; raises the error to answer with."""
        length = request.content_length
        if length is not None and length > self.max_body:
            raise BodyTooLargeError(
                f"The request body has {length} bytes; the limit is {self.max_body}",
                details={"limit_bytes": self.max_body})
        if request.path.startswith(_SIGNED_PREFIX):
            return
        authed = bool(self.keys) and self.authenticated(request)
        if self.limiter is not None:
            key = request.headers.get(hdrs.AUTHORIZATION, "") if authed else (
                request.remote or "?")
            d = self.limiter.check(key)
            headers["X-RateLimit-Limit"] = self.limit_header
            headers["X-RateLimit-Remaining"] = str(d.remaining)
            headers["X-RateLimit-Reset"] = str(math.ceil(d.reset_s))
            if not d.allowed:
                retry = max(1, math.ceil(d.retry_after_s))
                headers["Retry-After"] = str(retry)
                raise RateLimitedError(
                    f"Rate limit of {self.limit_header} requests exceeded for this client;"
                    f" retry after {retry} s", retry_after_s=retry)
        if self.keys and not authed and request.method in _MUTATING:
            headers["WWW-Authenticate"] = "Bearer"
            raise UnauthorizedError(
                "This request needs a valid API key: 'Authorization: Bearer <key>'")

    def compress(self, request: web.Request, resp: web.Response) -> None:
        """gzip for an answer of ``server.gzip_min_bytes`` or more (the caller checked),
        when the client accepts it."""
        if (hdrs.CONTENT_ENCODING not in resp.headers  # already encoded
                and "gzip" in request.headers.get(hdrs.ACCEPT_ENCODING, "")):
            resp.enable_compression(web.ContentCoding.gzip)
            resp.headers[hdrs.VARY] = hdrs.ACCEPT_ENCODING


_HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_label(cache: dict[AbstractRoute | None, str], request: web.Request) -> str:
    """The metrics label of the request's route, cached per registered route.

    aiohttp builds a new system route object for every unmatched request (404/405), so
    those never enter the cache (it would grow by one entry per request): they get a
    label from a fixed set instead.
    """
    try:
        route = request.match_info.route
    except AssertionError:  # the router failed before matching (pipeline in the server)
        route = None
    resource = route.resource if route is not None else None
    if route is None or resource is None:
        method = request.method if request.method in _HTTP_METHODS else "OTHER"
        return f"{method} (unmatched)"
    label = cache.get(route)
    if label is None:
        label = cache[route] = f"{route.method} {resource.canonical}"
    return label


def _from_http_exception(exc: web.HTTPException) -> OrchestraError:
    if isinstance(exc, web.HTTPNotFound):
        return RouteNotFoundError("No such endpoint")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = sorted(exc.allowed_methods)
        return MethodNotAllowedError(f"This endpoint does not accept this method; use one of "
                                     f"{', '.join(allowed)}", details={"allowed": allowed})
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return BodyTooLargeError("The request body is over the size limit")
    err = OrchestraError(exc.reason or "HTTP error")
    err.http_status = exc.status
    err.code = "http_error"
    return err


def build_middleware(state: AppState) -> Any:
    """The single pipeline middleware for an application with ``state``."""
    return web.middleware(build_pipeline(state))


def build_pipeline(state: AppState) -> Pipeline:
    """The request pipeline for an application with ``state``: ``pipeline(request,
    handler)``, an aiohttp middleware once decorated, or called by the server around
    the application's own handler (:class:`~.protocol.GuardedRunner`)."""
    p = _Pipeline(state)
    metrics = p.metrics
    observe = metrics.observe
    perf_counter = time.perf_counter
    labels = p.labels
    new_request_id = state.new_request_id
    guard_reads = p.guard_reads
    gzip_min = p.gzip_min
    response_cls = web.Response

    async def pipeline(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = perf_counter()
        rid = request.headers.get(REQUEST_ID_HEADER)
        if rid is None or not _SANE_ID(rid):
            rid = new_request_id()
        request[REQUEST_ID] = rid
        headers: dict[str, str] = {}
        metrics.in_flight += 1
        try:
            if guard_reads or request.method not in _READS:
                p.guard(request, headers)
            resp = await handler(request)
        except OrchestraError as exc:
            resp = error_response(p.scrub(exc), rid)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            resp = error_response(_from_http_exception(exc), rid)
            if isinstance(exc, web.HTTPMethodNotAllowed):
                headers[hdrs.ALLOW] = ",".join(sorted(exc.allowed_methods))
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise
        except ConnectionError:
            # The client went away (an SSE reader closing its stream, a dropped upload):
            # nothing to answer and not a server error; counted as 499, nginx's
            # "client closed request", and left to aiohttp, which closes quietly.
            observe(p.label(request), CLIENT_CLOSED, perf_counter() - started)
            raise
        except Exception:
            log.exception("Unhandled error in %s %s (request %s)",
                          request.method, request.path, rid)
            resp = error_response(InternalError("Internal server error"), rid)
        finally:
            metrics.in_flight -= 1
        # p.finish, inlined: this runs for every answer.
        if not resp.prepared:
            resp.headers[REQUEST_ID_HEADER] = rid
            if headers:
                resp.headers.update(headers)
            if gzip_min and isinstance(resp, response_cls):
                body = resp.body
                if isinstance(body, bytes) and len(body) >= gzip_min:
                    p.compress(request, resp)
        try:  # the route's label, cached per matched route (route_label otherwise)
            label = labels[request.match_info.route]
        except (KeyError, AssertionError):
            label = p.label(request)
        observe(label, resp.status, perf_counter() - started)
        return resp

    return pipeline
