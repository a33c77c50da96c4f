"""The chat layer: talk to the team from Slack (see docs/chat.md).

Transport-independent core (:mod:`.message`, :mod:`.limits`, :mod:`.service`,
:mod:`.commands`) and the Slack adapter on slack_bolt (:mod:`.slack`). The fake Slack
for tests and the lab is :mod:`orchestra_kit.fakeslack`.
"""

from __future__ import annotations

from .commands import CommandContext, CommandReply, run_command
from .limits import LimitDecision, SenderLimits
from .message import IncomingMessage, Intent, classify, find_paths, parse_mentions, strip_mentions
from .service import ChatService, ChatTransport, Outcome

__all__ = [
    "ChatService",
    "ChatTransport",
    "CommandContext",
    "CommandReply",
    "IncomingMessage",
    "Intent",
    "LimitDecision",
    "Outcome",
    "SenderLimits",
    "classify",
    "find_paths",
    "parse_mentions",
    "run_command",
    "strip_mentions",
]
