"""Chat settings: environment names, validation, secrets masked everywhere."""

from __future__ import annotations

import pytest

from orchestra_kit.config import ChatSettings, Settings
from orchestra_kit.errors import ConfigError

SECRET = "s3cr3t-signing-value"


def test_environment_names_and_defaults() -> None:
    s = Settings.load(environ={
        "ORCHESTRA_CHAT__ENABLED": "true", "ORCHESTRA_CHAT__SLACK_SIGNING_SECRET": SECRET,
        "ORCHESTRA_CHAT__SLACK_BOT_TOKEN": "xoxb-1", "ORCHESTRA_CHAT__MIN_INTERVAL_S": "0",
        "ORCHESTRA_CHAT__SLACK_API_URL": "http://127.0.0.1:9/api/"})
    assert s.chat.enabled and s.chat.slack_signing_secret == SECRET
    assert s.chat.min_interval_s == 0 and s.chat.max_messages_per_hour == 20
    assert Settings.load(environ={"ORCHESTRA_CHAT_ENABLED": "1"}).chat.enabled
    s.chat.check_startable()


@pytest.mark.parametrize(("overrides", "needle"), [
    ({"chat.max_messages_per_hour": "-1"}, "chat.max_messages_per_hour"),
    ({"chat.min_interval_s": "-0.5"}, "chat.min_interval_s"),
    ({"chat.slack_api_url": "ftp://x"}, "chat.slack_api_url"),
    ({"chat.slack_app_token": "xoxb-not-an-app-token"}, "chat.slack_app_token"),
    ({"chat.team_requests_per_minute": "-1"}, "chat.team_requests_per_minute"),
    ({"chat.team_burst": "0"}, "chat.team_burst"),
    ({"chat.slack_lead_user_ids": "U0123ABCD,alice"}, r"chat.slack_lead_user_ids\[1\]"),
    ({"chat.slack_lead_user_ids": "u0123abcd"}, r"chat.slack_lead_user_ids\[0\]"),
])
def test_bad_values_are_named(overrides: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        Settings().with_overrides(overrides)


def test_enabled_needs_a_signing_secret_and_a_bot_token() -> None:
    with pytest.raises(ConfigError, match="chat.slack_signing_secret"):
        ChatSettings(enabled=True, slack_bot_token="xoxb-1").check_startable()
    with pytest.raises(ConfigError, match="chat.slack_bot_token"):
        ChatSettings(enabled=True, slack_signing_secret=SECRET).check_startable()
    ChatSettings().check_startable()  # disabled: nothing needed


def test_secrets_are_masked() -> None:
    s = Settings().with_overrides({"chat.slack_signing_secret": SECRET,
                                   "chat.slack_bot_token": "xoxb-bot-secret",
                                   "chat.slack_app_token": "xapp-app-secret"})
    for text in (repr(s), repr(s.chat), str(s.to_dict()), str(s.flat())):
        assert SECRET not in text and "xoxb-bot-secret" not in text
        assert "xapp-app-secret" not in text
    assert s.to_dict()["chat"]["slack_signing_secret"] == "***"
    with pytest.raises(ConfigError) as info:
        Settings().with_overrides({"chat.slack_app_token": "bad-" + SECRET})
    assert SECRET not in str(info.value)


def test_lead_user_ids_from_the_environment() -> None:
    s = Settings.load(environ={"ORCHESTRA_CHAT__SLACK_LEAD_USER_IDS": "U0123ABCD, W0456EFGH"})
    assert s.chat.slack_lead_user_ids == ("U0123ABCD", "W0456EFGH")
    assert Settings().chat.slack_lead_user_ids == ()  # nobody is the lead until configured
