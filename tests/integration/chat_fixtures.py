"""Shared pieces of the chat tests: a fake Slack and a chat-enabled service on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from server_fixtures import make_settings

from orchestra_kit.fakeslack import FakeSlack, slash_command_body
from orchestra_kit.server.app import Service

SECRET = "test-signing-secret-0123456789"
BOT_TOKEN = "xoxb-test-bot-token"
APP_TOKEN = "xapp-test-app-token"


@contextlib.asynccontextmanager
async def chat_service(tmp_path: Path, **overrides: Any) -> AsyncIterator[tuple[Service, FakeSlack]]:
    """A fake Slack, then a service whose chat layer talks to it; both closed after."""
    async with FakeSlack() as slack:
        settings = make_settings(tmp_path, **{
            "chat.enabled": True, "chat.slack_signing_secret": SECRET,
            "chat.slack_bot_token": BOT_TOKEN, "chat.slack_api_url": slack.api_url,
            "chat.min_interval_s": 0, "chat.max_messages_per_hour": 0, **overrides})
        async with Service(settings) as svc:
            yield svc, slack


async def slash(svc: Service, slack: FakeSlack, command: str, text: str, *,
                user: str = "UFAKEUSER", secret: str = SECRET,
                team: str = "TFAKE") -> tuple[int, dict[str, str]]:
    """Send a signed slash command as ``user``; (HTTP status, Slack's JSON answer or {})."""
    sent = await slack.send_event(f"{svc.url}/slack/commands", secret,
                                  slash_command_body(command, text, user=user, team=team),
                                  content_type="application/x-www-form-urlencoded")
    return sent.status, (json.loads(sent.body) if sent.status == 200 else {})
