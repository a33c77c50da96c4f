"""The Slack adapter: slack_bolt's AsyncApp over the transport-independent chat layer.

:class:`SlackAdapter` owns, in order, an aiohttp session for the Web API
(``AsyncWebClient`` with ``base_url = chat.slack_api_url``), the Bolt app, the
:class:`~orchestra_kit.chat.service.ChatService` and, with ``chat.slack_app_token``, a
Socket Mode connection. HTTP requests (Events API, slash commands) are handed to
:meth:`SlackAdapter.dispatch`; the :class:`~orchestra_kit.chat.gate.SlackGate` checks
every request's signature (``X-Slack-Signature`` over ``v0:timestamp:body``, 5-minute
window) before anything parses it and answers 401 when it is missing, wrong or stale
(Bolt checks again); a global Bolt middleware holds each team to its request budget,
over HTTP and Socket Mode. The app runs with ``process_before_response``:
the listener records the event and queues its tasks (milliseconds), then the answer
goes out, so an acknowledged event is committed; replies follow in the background.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import aiohttp
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.web.async_client import AsyncWebClient

from ..config import ChatSettings
from .commands import COMMANDS, CommandContext, run_command
from .gate import SlackGate, SlackReply
from .message import IncomingMessage
from .service import ChatService

__all__ = ["SlackAdapter", "SlackReply", "SlackTransport", "message_from_event"]

log = logging.getLogger(__name__)

# Message subtypes that are a person writing; edits, deletions, joins ... are not.
_HUMAN_SUBTYPES = frozenset({"", "thread_broadcast", "file_share", "me_message"})


class SlackTransport:
    """Chat replies through Slack's Web API (``chat.postMessage``, ``chat.update``)."""

    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client

    async def post(self, channel: str, text: str, *, thread_ts: str | None = None) -> str:
        """``chat.postMessage``; returns the new message's ts."""
        resp = await self.client.chat_postMessage(channel=channel, text=text, thread_ts=thread_ts)
        return str(resp.get("ts", ""))

    async def update(self, channel: str, ts: str, text: str) -> None:
        """``chat.update``."""
        await self.client.chat_update(channel=channel, ts=ts, text=text)


def retry_num(request: AsyncBoltRequest | None) -> int:
    """Slack's redelivery count (``X-Slack-Retry-Num``; Bolt mirrors Socket Mode's)."""
    values = request.headers.get("x-slack-retry-num") if request is not None else None
    value = values[0] if values else "0"
    return int(value) if value.isdigit() else 0


def message_from_event(body: Mapping[str, Any], event: Mapping[str, Any], *,
                       bot_user_id: str | None, addressed: bool,
                       retry: int = 0) -> IncomingMessage:
    """An IncomingMessage from an Events API envelope and its event."""
    text = str(event.get("text") or "")
    subtype = str(event.get("subtype") or "")
    from_bot = bool(event.get("bot_id")) or subtype == "bot_message" or (
        bot_user_id is not None and event.get("user") == bot_user_id)
    mentioned = bot_user_id is not None and f"<@{bot_user_id}>" in text
    return IncomingMessage(
        channel=str(event.get("channel") or ""), user=str(event.get("user") or ""),
        text=text, ts=str(event.get("ts") or ""),
        thread_ts=str(event["thread_ts"]) if event.get("thread_ts") else None,
        event_id=str(body.get("event_id") or ""), from_bot=from_bot,
        addressed=addressed or mentioned, retry=retry)


class SlackAdapter:
    """Bolt app + Web API client + chat service (+ Socket Mode); an async context manager."""

    def __init__(self, settings: ChatSettings, *, store: Any, scheduler: Any,
                 project_root: Path, auto_hire: bool = False, pool_size: int = 32) -> None:
        self.settings = settings
        self._store = store
        self._scheduler = scheduler
        self._project_root = project_root
        self._auto_hire = auto_hire
        self._pool_size = pool_size
        self._session: aiohttp.ClientSession | None = None
        self._socket: Any = None
        self.client: AsyncWebClient | None = None
        self.app: AsyncApp | None = None
        self.chat: ChatService | None = None
        self.gate: SlackGate | None = None
        self._auth: AuthorizeResult | None = None
        self._auth_lock = asyncio.Lock()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def socket_mode(self) -> bool:
        """Whether a Socket Mode connection is (to be) kept."""
        return bool(self.settings.slack_app_token)

    async def start(self) -> None:
        """Build the Web API client, the chat service and the Bolt app; connect Socket Mode."""
        s = self.settings
        s.check_startable()
        connector = aiohttp.TCPConnector(limit=self._pool_size)
        self._session = aiohttp.ClientSession(connector=connector)
        self.client = AsyncWebClient(token=s.slack_bot_token, base_url=s.slack_api_url,
                                     session=self._session, timeout=10)
        self.chat = ChatService(self._store, self._scheduler, s,
                                project_root=self._project_root,
                                transport=SlackTransport(self.client), auto_hire=self._auto_hire)
        self.gate = SlackGate(s.slack_signing_secret,
                              team_requests_per_minute=s.team_requests_per_minute,
                              team_burst=s.team_burst)
        self.app = self._build_app()
        if self.socket_mode:
            from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

            self._socket = AsyncSocketModeHandler(self.app, s.slack_app_token,
                                                  web_client=self.client)
            await self._socket.connect_async()

    async def aclose(self) -> None:
        """Disconnect Socket Mode, finish replies in flight, close the HTTP session."""
        socket, self._socket = self._socket, None
        if socket is not None:
            await socket.close_async()
        if self.chat is not None:
            await self.chat.aclose()
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _who_am_i(self) -> AuthorizeResult:
        """Who the app is (``auth.test``), asked once: Bolt's own single-team check would
        call it from every request that arrives before the first answer."""
        async with self._auth_lock:
            if self._auth is None:
                assert self.client is not None
                resp = await self.client.auth_test()
                self._auth = AuthorizeResult.from_auth_test_response(
                    bot_token=self.settings.slack_bot_token, auth_test_response=resp)
            return self._auth

    def _build_app(self) -> AsyncApp:
        s = self.settings

        async def authorize() -> AuthorizeResult:  # Bolt passes only the arguments named
            return await self._who_am_i()

        app = AsyncApp(signing_secret=s.slack_signing_secret, client=self.client,
                       authorize=authorize, process_before_response=True,
                       logger=logging.getLogger("orchestra_kit.chat.bolt"))
        chat = self.chat
        assert chat is not None
        ctx = CommandContext(self._store, self._scheduler, self._project_root,
                             leads=frozenset(s.slack_lead_user_ids))
        gate = self.gate
        assert gate is not None

        async def budget(body: dict[str, Any], context: Any,
                         next_: Callable[[], Awaitable[BoltResponse]]) -> BoltResponse:
            """The team's request budget (HTTP and Socket Mode), after the signature."""
            refused = gate.admit(body, context.team_id or context.enterprise_id)
            if refused is None:
                return await next_()
            headers: dict[str, str | Sequence[str]] = dict(refused.headers)
            return BoltResponse(status=refused.status, body=refused.body, headers=headers)

        async def on_mention(body: dict[str, Any], event: dict[str, Any], context: Any,
                             request: AsyncBoltRequest) -> None:
            await chat.handle(message_from_event(body, event, addressed=True,
                                                 bot_user_id=context.bot_user_id,
                                                 retry=retry_num(request)))

        async def on_message(body: dict[str, Any], event: dict[str, Any], context: Any,
                             request: AsyncBoltRequest) -> None:
            if str(event.get("subtype") or "") in _HUMAN_SUBTYPES or event.get("bot_id"):
                await chat.handle(message_from_event(body, event, addressed=False,
                                                     bot_user_id=context.bot_user_id,
                                                     retry=retry_num(request)))

        async def on_command(ack: Any, command: dict[str, Any]) -> None:
            reply = await run_command(ctx, str(command.get("command", "")),
                                      str(command.get("text", "")),
                                      user=str(command.get("user_id") or ""))
            await ack(reply.to_slack())

        async def on_other(body: dict[str, Any]) -> None:
            """Other subscribed events are acknowledged (a 404 would make Slack retry)."""

        app.middleware(budget)
        app.event("app_mention")(on_mention)
        app.event("message")(on_message)
        app.event(re.compile(r".*"))(on_other)
        names = "|".join(re.escape(c[1:]) for c in COMMANDS)
        app.command(re.compile(rf"^/({names})$"))(on_command)
        return app

    async def dispatch(self, body: str, query: str, headers: Mapping[str, str]) -> SlackReply:
        """Run one HTTP request (Events API or slash command) through the Bolt app; a bad
        signature is answered 401 first, before the body is parsed."""
        if self.app is None or self.gate is None:
            raise RuntimeError("SlackAdapter.dispatch() before start()")
        refused = self.gate.verify(body, headers)
        if refused is not None:
            return refused
        req = AsyncBoltRequest(body=body, query=query, headers=dict(headers))
        resp = await self.app.async_dispatch(req)
        return SlackReply(resp.status, resp.body, resp.first_headers_without_set_cookie())

    def stats(self) -> dict[str, Any]:
        """Counters for /performance (never a token or the signing secret)."""
        out = dict(self.chat.stats()) if self.chat is not None else {}
        out["socket_mode"] = self.socket_mode
        if self.gate is not None:
            out.update(self.gate.stats())
        return out
