"""A fake Slack (Web API, Socket Mode, signed events) for tests and the lab.

Like the fake LLM provider it stands alone: it imports nothing from the core, and the
core never imports it. ``orchestra fake-slack --port P`` runs it as a server.
"""

from __future__ import annotations

from .proto import (
    app_mention,
    channel_message,
    dumps,
    sign,
    signed_headers,
    slash_command_body,
    url_verification,
)
from .server import FakeSlack, SentEvent, SlackCall

__all__ = [
    "FakeSlack",
    "SentEvent",
    "SlackCall",
    "app_mention",
    "channel_message",
    "dumps",
    "sign",
    "signed_headers",
    "slash_command_body",
    "url_verification",
]
