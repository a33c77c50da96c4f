"""The chat layer's settings (a section of :class:`~orchestra_kit.config.Settings`)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from .errors import ConfigError

__all__ = ["ChatSettings"]

_SLACK_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,31}$")


def _check(cond: bool, key: str, value: object, allowed: str) -> None:
    if not cond:
        raise ConfigError(key, value, allowed)


@dataclass(frozen=True, kw_only=True)
class ChatSettings:
    """The chat layer (Slack): secrets are masked in ``repr``, ``to_dict`` and errors.

    ``max_messages_per_hour`` and ``min_interval_s`` limit each sender (0 turns a limit
    off); ``team_requests_per_minute`` and ``team_burst`` bound what one Slack team may
    send to the Slack routes (0 turns it off); ``slack_lead_user_ids`` are the Slack
    users who act as the team lead in slash commands (``/approve``, ``/deny``, ``/hire``,
    ``/fire``, ``/lock``, ``/release``). Whether chat may start without a signing secret
    is checked by :meth:`check_startable` when the service starts, so layered sources can
    set the switch and the secret separately.
    """

    enabled: bool = False
    slack_signing_secret: str = field(default="", repr=False)
    slack_bot_token: str = field(default="", repr=False)
    slack_app_token: str = field(default="", repr=False)
    slack_api_url: str = "https://slack.com/api/"
    max_messages_per_hour: int = 20
    min_interval_s: float = 2.0
    progress_interval_s: float = 5.0
    # Above Slack's own cap on events (30,000 an hour per workspace = 500 a minute), so
    # Slack's steady delivery never trips it; the burst takes a busy moment.
    team_requests_per_minute: float = 600.0
    team_burst: int = 200
    slack_lead_user_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("max_messages_per_hour", "min_interval_s", "progress_interval_s",
                     "team_requests_per_minute"):
            value = getattr(self, name)
            _check(value >= 0 and not math.isinf(value), f"chat.{name}", value,
                   "must be a finite number >= 0")
        _check(self.team_burst >= 1, "chat.team_burst", self.team_burst, "must be >= 1")
        for i, user in enumerate(self.slack_lead_user_ids):
            _check(bool(_SLACK_USER_ID.match(user)), f"chat.slack_lead_user_ids[{i}]", user,
                   "must be a Slack user id: U or W and capital letters or digits, "
                   "e.g. U0123ABCD (a profile's \"Copy member ID\")")
        _check(self.slack_api_url.startswith(("http://", "https://")), "chat.slack_api_url",
               self.slack_api_url, "must start with http:// or https://")
        if self.slack_app_token:
            _check(self.slack_app_token.startswith("xapp-"), "chat.slack_app_token", "***",
                   "must be a Slack app-level token (xapp-...)")

    def check_startable(self) -> None:
        """ConfigError when chat is enabled without what it needs to run safely."""
        if not self.enabled:
            return
        _check(bool(self.slack_signing_secret), "chat.slack_signing_secret", "",
               "must be set when chat.enabled is true (every Slack request is verified)")
        _check(bool(self.slack_bot_token), "chat.slack_bot_token", "",
               "must be set when chat.enabled is true (replies are posted with it)")
