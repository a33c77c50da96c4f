"""A fake Slack for tests and the lab: the Web API methods we call, Socket Mode, a signer.

``FakeSlack`` serves ``POST /api/{method}`` for ``auth.test``, ``chat.postMessage``,
``chat.update``, ``reactions.add`` and ``apps.connections.open`` (whose URL is this
server's Socket Mode WebSocket, ``/socket``), records every call with its arrival time
(``time.perf_counter``, so the lab can correlate a post with the mention it answers by
``thread_ts``), and can sign and send Events API requests to a target, or push events
down a connected Socket Mode client. For use from another process: ``GET /_calls`` lists
the calls, ``POST /_send`` signs and sends an event. Loopback only.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

import aiohttp
from aiohttp import web

from .proto import dumps, signed_headers

__all__ = ["FakeSlack", "SentEvent", "SlackCall"]

_TS = itertools.count(1)


@dataclass(frozen=True, slots=True)
class SlackCall:
    """One Web API call the fake received."""

    method: str
    args: dict[str, Any]
    authed: bool
    t: float = field(default_factory=time.perf_counter)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"method": self.method, "args": self.args, "authed": self.authed, "t": self.t}


@dataclass(frozen=True, slots=True)
class SentEvent:
    """What happened when the fake sent a signed event to a target."""

    status: int
    body: str
    latency_s: float
    headers: dict[str, str] = field(default_factory=dict)


class FakeSlack:
    """The fake Slack server; ``async with FakeSlack() as slack: slack.api_url ...``."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0,
                 bot_user_id: str = "UFAKEBOT", bot_id: str = "BFAKEBOT",
                 team_id: str = "TFAKE") -> None:
        self.host = host
        self._port = port
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.team_id = team_id
        self.calls: list[SlackCall] = []
        self.socket_acks: dict[str, dict[str, Any]] = {}
        self._changed: asyncio.Condition | None = None
        self._threads: dict[str, list[SlackCall]] = {}
        self._thread_waiters: dict[str, list[_ThreadWaiter]] = {}
        self._sockets: list[web.WebSocketResponse] = []
        self._acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Listen on ``host:port`` (0: an ephemeral port)."""
        self._changed = asyncio.Condition()
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/socket", self._socket)
        app.router.add_get("/_calls", self._list_calls)
        app.router.add_post("/_send", self._send_from_http)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self._port, backlog=1024).start()
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=30))

    async def aclose(self) -> None:
        """Close sockets, the client session and the server (idempotent)."""
        for ws in list(self._sockets):
            await ws.close()
        for fut in self._acks.values():
            fut.cancel()
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @property
    def port(self) -> int:
        """The bound port."""
        if self._runner is None:
            raise RuntimeError("FakeSlack.port is known only after start()")
        return int(self._runner.addresses[0][1])

    @property
    def url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        """The Web API base URL (``chat.slack_api_url``)."""
        return f"{self.url}/api/"

    # ------------------------------------------------------------------ observing

    def posts(self, *, thread_ts: str | None = None) -> list[SlackCall]:
        """``chat.postMessage`` calls, optionally only those in one thread."""
        return [c for c in self.calls if c.method == "chat.postMessage"
                and (thread_ts is None or c.args.get("thread_ts") == thread_ts)]

    async def wait_for(self, pred: Callable[[list[SlackCall]], bool],
                       timeout_s: float = 10.0) -> list[SlackCall]:
        """Wait until ``pred(calls)`` holds; the calls then. TimeoutError otherwise."""
        assert self._changed is not None
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(lambda: pred(self.calls))
        return list(self.calls)

    def thread(self, thread_ts: str) -> list[SlackCall]:
        """The posts in one thread so far, in arrival order."""
        return list(self._threads.get(thread_ts, ()))

    async def wait_thread(self, thread_ts: str, pred: Callable[[list[SlackCall]], bool],
                          timeout_s: float = 10.0) -> list[SlackCall]:
        """Wait until ``pred(posts in the thread)`` holds (cheap: woken per thread only)."""
        posts = self._threads.setdefault(thread_ts, [])
        if not pred(posts):
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            waiter = (pred, fut)
            self._thread_waiters.setdefault(thread_ts, []).append(waiter)
            try:
                async with asyncio.timeout(timeout_s):
                    await fut
            finally:
                waiters = self._thread_waiters.get(thread_ts, [])
                if waiter in waiters:
                    waiters.remove(waiter)
        return list(posts)

    def _to_thread(self, call: SlackCall) -> None:
        thread_ts = call.args.get("thread_ts")
        if call.method != "chat.postMessage" or not thread_ts:
            return
        posts = self._threads.setdefault(str(thread_ts), [])
        posts.append(call)
        for pred, fut in self._thread_waiters.get(str(thread_ts), []):
            if not fut.done() and pred(posts):
                fut.set_result(None)

    async def _record(self, call: SlackCall) -> None:
        self.calls.append(call)
        self._to_thread(call)
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    # ------------------------------------------------------------------ the Web API

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args = await _args(request)
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        token = token or str(args.pop("token", ""))
        args.pop("token", None)
        await self._record(SlackCall(method, args, bool(token)))
        handler = _METHODS.get(method)
        if handler is None:
            return web.json_response({"ok": False, "error": "unknown_method"})
        if not token:
            return web.json_response({"ok": False, "error": "not_authed"})
        return web.json_response(handler(self, args, token, request))

    def _auth_test(self, args: dict[str, Any], token: str, request: web.Request) -> dict[str, Any]:
        return {"ok": True, "url": "https://fake.slack/", "team": "Fake", "user": "orchestra",
                "team_id": self.team_id, "user_id": self.bot_user_id, "bot_id": self.bot_id}

    def _post(self, args: dict[str, Any], token: str, request: web.Request) -> dict[str, Any]:
        if not args.get("channel"):
            return {"ok": False, "error": "channel_not_found"}
        ts = f"{int(time.time())}.{next(_TS):06d}"
        message = {"type": "message", "text": args.get("text", ""), "user": self.bot_user_id,
                   "bot_id": self.bot_id, "ts": ts}
        if args.get("thread_ts"):
            message["thread_ts"] = args["thread_ts"]
        return {"ok": True, "channel": args["channel"], "ts": ts, "message": message}

    def _update(self, args: dict[str, Any], token: str, request: web.Request) -> dict[str, Any]:
        return {"ok": True, "channel": args.get("channel"), "ts": args.get("ts"),
                "text": args.get("text", "")}

    def _react(self, args: dict[str, Any], token: str, request: web.Request) -> dict[str, Any]:
        return {"ok": True}

    def _open(self, args: dict[str, Any], token: str, request: web.Request) -> dict[str, Any]:
        if not token.startswith("xapp-"):
            return {"ok": False, "error": "invalid_auth"}
        return {"ok": True, "url": f"ws://{self.host}:{self.port}/socket?ticket={uuid.uuid4()}"}

    # ------------------------------------------------------------------ Socket Mode

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_json({"type": "hello", "num_connections": len(self._sockets),
                            "debug_info": {"host": "fake-slack"},
                            "connection_info": {"app_id": "AFAKEAPP"}})
        await self._record(SlackCall("socket.connected", {}, True))
        try:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self._on_ack(msg.json())
        finally:
            self._sockets.remove(ws)
        return ws

    def _on_ack(self, doc: Any) -> None:
        if isinstance(doc, dict) and "envelope_id" in doc:
            env_id = str(doc["envelope_id"])
            self.socket_acks[env_id] = doc
            fut = self._acks.pop(env_id, None)
            if fut is not None and not fut.done():
                fut.set_result(doc)

    @property
    def socket_connections(self) -> int:
        """Socket Mode clients connected now."""
        return len(self._sockets)

    async def send_socket(self, payload: dict[str, Any], *, kind: str = "events_api",
                          timeout_s: float = 10.0) -> dict[str, Any]:
        """Push an envelope to the first connected client; its acknowledgement."""
        if not self._sockets:
            raise RuntimeError("No Socket Mode client is connected to the fake Slack")
        env_id = str(uuid.uuid4())
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._acks[env_id] = fut
        await self._sockets[0].send_json({
            "envelope_id": env_id, "type": kind, "payload": payload,
            "accepts_response_payload": kind != "events_api", "retry_attempt": 0,
            "retry_reason": ""})
        async with asyncio.timeout(timeout_s):
            return await fut

    # ------------------------------------------------------------------ sending events

    async def send_event(self, target: str, secret: str, payload: dict[str, Any] | str, *,
                         timestamp: int | None = None, content_type: str = "application/json",
                         extra_headers: dict[str, str] | None = None,
                         signed: bool = True) -> SentEvent:
        """POST a (signed) Events API or slash-command request to ``target``."""
        assert self._session is not None, "FakeSlack.send_event() before start()"
        body = payload if isinstance(payload, str) else dumps(payload)
        headers = (signed_headers(secret, body, timestamp=timestamp, content_type=content_type)
                   if signed else {"Content-Type": content_type})
        headers.update(extra_headers or {})
        t0 = time.perf_counter()
        async with self._session.post(target, data=body.encode(), headers=headers) as resp:
            text = await resp.text()
            answer_headers = dict(resp.headers)
        return SentEvent(resp.status, text, time.perf_counter() - t0, answer_headers)

    async def _list_calls(self, request: web.Request) -> web.Response:
        return web.json_response({"calls": [c.to_dict() for c in self.calls]})

    async def _send_from_http(self, request: web.Request) -> web.Response:
        doc = await request.json()
        sent = await self.send_event(str(doc["target"]), str(doc["secret"]), doc["event"])
        return web.json_response({"status": sent.status, "body": sent.body,
                                  "latency_s": sent.latency_s})


async def _args(request: web.Request) -> dict[str, Any]:
    if request.content_type == "application/json":
        doc = await request.json() if request.can_read_body else {}
        return dict(doc) if isinstance(doc, dict) else {}
    form = await request.post()
    return {k: str(v) for k, v in form.items()}


_ThreadWaiter = tuple[Callable[[list[SlackCall]], bool], asyncio.Future[None]]
_Handler = Callable[[FakeSlack, dict[str, Any], str, web.Request], dict[str, Any]]
_METHODS: dict[str, _Handler] = {
    "auth.test": FakeSlack._auth_test,
    "chat.postMessage": FakeSlack._post,
    "chat.update": FakeSlack._update,
    "reactions.add": FakeSlack._react,
    "apps.connections.open": FakeSlack._open,
}
