"""Slack's wire formats, for the fake and the lab: request signing and event envelopes.

Signing is Slack's v0 scheme: ``X-Slack-Signature = "v0=" + hex(HMAC-SHA256(secret,
"v0:{timestamp}:{body}"))`` with ``X-Slack-Request-Timestamp = timestamp``; a receiver
refuses a timestamp more than 5 minutes from its clock.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from typing import Any
from urllib.parse import urlencode

__all__ = ["app_mention", "channel_message", "dumps", "sign", "signed_headers", "slash_command_body",
           "url_verification"]

_EVENT_IDS = itertools.count(1)


def sign(secret: str, body: str, timestamp: int) -> str:
    """The ``X-Slack-Signature`` value of ``body`` sent at ``timestamp``."""
    base = f"v0:{timestamp}:{body}".encode()
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def signed_headers(secret: str, body: str, *, timestamp: int | None = None,
                   content_type: str = "application/json") -> dict[str, str]:
    """Headers of a signed request (``timestamp`` defaults to now)."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {"X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": sign(secret, body, ts),
            "Content-Type": content_type}


def _envelope(event: dict[str, Any], event_id: str | None, team: str) -> dict[str, Any]:
    return {"token": "unused", "team_id": team, "api_app_id": "AFAKEAPP", "type": "event_callback",
            "event_id": event_id or f"EvFAKE{next(_EVENT_IDS):08d}",
            "event_time": int(time.time()), "event": event}


def app_mention(*, user: str, text: str, channel: str = "C0FAKE", ts: str | None = None,
                bot_user_id: str = "UFAKEBOT", thread_ts: str | None = None,
                event_id: str | None = None, team: str = "TFAKE") -> dict[str, Any]:
    """An ``app_mention`` event envelope (the text starts with the app's ``<@U..>``)."""
    ts = ts or f"{time.time():.6f}"
    event: dict[str, Any] = {"type": "app_mention", "user": user, "channel": channel, "ts": ts,
                             "event_ts": ts, "text": f"<@{bot_user_id}> {text}"}
    if thread_ts:
        event["thread_ts"] = thread_ts
    return _envelope(event, event_id, team)


def channel_message(*, user: str | None, text: str, channel: str = "C0FAKE",
                    ts: str | None = None, bot_id: str | None = None,
                    event_id: str | None = None, team: str = "TFAKE") -> dict[str, Any]:
    """A ``message`` event envelope (``bot_id`` makes it a bot's message)."""
    ts = ts or f"{time.time():.6f}"
    event: dict[str, Any] = {"type": "message", "channel": channel, "ts": ts, "event_ts": ts,
                             "text": text, "channel_type": "channel"}
    if user is not None:
        event["user"] = user
    if bot_id is not None:
        event["bot_id"] = bot_id
        event["subtype"] = "bot_message"
    return _envelope(event, event_id, team)


def url_verification(challenge: str) -> dict[str, Any]:
    """The Events API handshake."""
    return {"token": "unused", "challenge": challenge, "type": "url_verification"}


def slash_command_body(command: str, text: str, *, user: str = "UFAKEUSER",
                       channel: str = "C0FAKE", team: str = "TFAKE") -> str:
    """A slash command's form-encoded body."""
    return urlencode({"token": "unused", "team_id": team, "channel_id": channel,
                      "user_id": user, "user_name": user.lower(), "command": command,
                      "text": text, "response_url": "http://127.0.0.1:9/unused",
                      "trigger_id": "1.2.3", "api_app_id": "AFAKEAPP"})


def dumps(doc: dict[str, Any]) -> str:
    """Compact JSON (the exact bytes that are signed)."""
    return json.dumps(doc, separators=(",", ":"))
