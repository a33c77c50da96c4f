"""Incoming chat messages, and what is read from their text: mentions, intent, paths.

Transport-independent: a Slack event, a Socket Mode envelope or a test builds an
:class:`IncomingMessage`; everything here is pure functions over its text.

Mentions: a plain ``@alice`` names an employee (a ``-bot`` suffix is stripped, as the
original did, so ``@alice-bot`` is alice too); unlike the original's ``@(\\w+)``, the
whole employee name is kept, so ``@dev-2`` is ``dev-2`` and not ``dev``. Slack's own
``<@U123>`` (the app itself, or a person) is not an employee and is removed from the
task text.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

__all__ = [
    "IncomingMessage",
    "Intent",
    "classify",
    "find_paths",
    "parse_mentions",
    "strip_mentions",
]

# An employee name (models.NAME_PATTERN) after an "@" that does not follow a word
# character, a dot or "<" (so e-mail addresses and Slack's <@U..> are not mentions).
_MENTION = re.compile(r"(?<![\w.<@])@([A-Za-z0-9][A-Za-z0-9_-]{0,63})")
_SLACK_MENTION = re.compile(r"<@([A-Z0-9]+)(?:\|[^>]*)?>")
_SLACK_LINK = re.compile(r"<[^>\s]*>")
_BOT_SUFFIX = "-bot"
# A path: has a slash (absolute and ../ paths included: they are refused later, not
# missed), or is a file name with a short extension.
_SLASHED = re.compile(r"[\w./~-]*/[\w./~-]*")
_FILENAME = re.compile(r"[\w-]+(?:\.[\w-]+)*\.[A-Za-z][A-Za-z0-9]{0,9}")
_STATUS_STARTS = ("status", "progress", "what are you working on", "how is it going",
                  "how's it going", "are you busy", "what are you doing", "what's the status",
                  "whats the status", "any progress", "how far")
_HELP_WORDS = ("help", "what can you do", "usage", "commands")


@dataclass(frozen=True, slots=True, kw_only=True)
class IncomingMessage:
    """One message from a chat transport."""

    channel: str
    user: str
    text: str
    ts: str
    thread_ts: str | None = None
    event_id: str = ""
    from_bot: bool = False
    addressed: bool = False  # the app itself was mentioned (Slack app_mention)
    retry: int = 0  # the transport's redelivery count (Slack's X-Slack-Retry-Num)

    @property
    def reply_thread(self) -> str:
        """The thread replies go to: the message's thread, or the message itself."""
        return self.thread_ts or self.ts

    @property
    def message_key(self) -> str:
        """The message's identity in its channel (one message may arrive as two events)."""
        return f"{self.channel}:{self.ts}"

    @property
    def dedup_id(self) -> str:
        """The event id, or the message key when the transport gave none."""
        return self.event_id or f"msg:{self.message_key}"


class Intent(enum.StrEnum):
    """What a message asks for."""

    TASK = "task"
    STATUS = "status"
    HELP = "help"


def parse_mentions(text: str) -> list[str]:
    """Employee names mentioned with ``@name`` (``-bot`` stripped), first mention first."""
    out: list[str] = []
    for m in _MENTION.finditer(text):
        name = m.group(1)
        if name.lower().endswith(_BOT_SUFFIX) and len(name) > len(_BOT_SUFFIX):
            name = name[: -len(_BOT_SUFFIX)]
        if name not in out:
            out.append(name)
    return out


def slack_mentions(text: str) -> list[str]:
    """Slack user ids mentioned as ``<@U123>``."""
    return _SLACK_MENTION.findall(text)


def strip_mentions(text: str) -> str:
    """The text without Slack ``<@U..>`` and ``@employee`` mentions, whitespace collapsed."""
    text = _SLACK_MENTION.sub(" ", text)
    text = _MENTION.sub(" ", text)
    return " ".join(text.split()).strip(" ,:;")


def classify(text: str) -> Intent:
    """Help for an empty or help-like message, status for a message opening with a status
    question ("status", "how is it going" ...), else a task."""
    t = " ".join(text.lower().split()).strip(" ?!.")
    if not t or t in _HELP_WORDS:
        return Intent.HELP
    if t.startswith(_STATUS_STARTS):
        return Intent.STATUS
    return Intent.TASK


def _path_candidate(token: str) -> str | None:
    token = token.strip("`'\"()[]{},;!?")
    if not token or "://" in token or token.startswith(("@", "<")):
        return None
    token = token.rstrip(".:") if not token.endswith("/") else token
    if "/" in token:
        return token if _SLASHED.fullmatch(token) and token.strip("/.") else None
    return token if _FILENAME.fullmatch(token) else None


def find_paths(text: str) -> list[str]:
    """Things in the text that look like file paths (``src/app.py``, ``docs/``, ``a.py``).

    Slack links (``<http://...>``) are skipped; the result is only a candidate list:
    the caller confines every path to the project root, exactly as for a lease.
    """
    out: list[str] = []
    for token in _SLACK_LINK.sub(" ", text).split():
        path = _path_candidate(token)
        if path is not None and path not in out:
            out.append(path)
    return out
