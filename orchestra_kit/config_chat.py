"""The chat layer's settings (a section of :class:`~orchestra_kit.config.Settings`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import ConfigError

__all__ = ["ChatSettings"]


def _check(cond: bool, key: str, value: object, allowed: str) -> None:
    if not cond:
        raise ConfigError(key, value, allowed)


@dataclass(frozen=True, kw_only=True)
class ChatSettings:
    """The chat layer (Slack): secrets are masked in ``repr``, ``to_dict`` and errors.

    ``max_messages_per_hour`` and ``min_interval_s`` limit each sender (0 turns a limit
    off); whether chat may start without a signing secret is checked by
    :meth:`check_startable` when the service starts, so layered sources can set the
    switch and the secret separately.
    """

    enabled: bool = False
    slack_signing_secret: str = field(default="", repr=False)
    slack_bot_token: str = field(default="", repr=False)
    slack_app_token: str = field(default="", repr=False)
    slack_api_url: str = "https://slack.com/api/"
    max_messages_per_hour: int = 20
    min_interval_s: float = 2.0
    progress_interval_s: float = 5.0

    def __post_init__(self) -> None:
        for name in ("max_messages_per_hour", "min_interval_s", "progress_interval_s"):
            value = getattr(self, name)
            _check(value >= 0, f"chat.{name}", value, "must be >= 0")
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
