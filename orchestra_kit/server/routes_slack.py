"""Slack endpoints: ``POST /slack/events`` (Events API) and ``POST /slack/commands``.

They authenticate by Slack's request signature (checked by the Bolt app), not by the
API's bearer keys, and are not counted against the per-client rate limit (Slack
calls from a few addresses; the chat layer limits each sender instead). When chat is
disabled they answer 404, as if they did not exist.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from ..errors import NotFoundError
from .state import STATE, AppState

__all__ = ["SLACK_PREFIX", "chat_context", "routes"]

routes = web.RouteTableDef()
SLACK_PREFIX = "/slack/"


async def _dispatch(request: web.Request) -> web.Response:
    adapter = request.app[STATE].chat
    if adapter is None:
        raise NotFoundError("Chat is not enabled on this server (chat.enabled)")
    body = await request.text()
    reply = await adapter.dispatch(body, request.query_string, request.headers)
    content_type = reply.headers.pop("content-type", None) or (
        "application/json" if reply.body.startswith("{") else "text/plain")
    reply.headers.pop("content-length", None)
    return web.Response(status=reply.status, body=reply.body.encode(), headers=reply.headers,
                        content_type=content_type.split(";")[0])


@routes.post("/slack/events")
async def slack_events(request: web.Request) -> web.Response:
    """Events API: url_verification, app_mention and channel messages (signed)."""
    return await _dispatch(request)


@routes.post("/slack/commands")
async def slack_commands(request: web.Request) -> web.Response:
    """Slash commands (signed), answered in Slack's response format."""
    return await _dispatch(request)


def chat_context(state: AppState) -> object:
    """The cleanup context owning the Slack adapter (after the scheduler, closed before it)."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = state.settings
        if not settings.chat.enabled:
            yield
            return
        from ..chat.slack import SlackAdapter

        adapter = SlackAdapter(settings.chat, store=state.store, scheduler=state.scheduler,
                               project_root=state.project_root,
                               auto_hire=settings.scheduler.auto_hire)
        await adapter.start()
        state.chat = adapter
        try:
            yield
        finally:
            state.chat = None
            await adapter.aclose()

    return ctx
