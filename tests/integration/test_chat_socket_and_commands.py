"""Socket Mode against the fake Slack, slash commands, and what chat keeps secret."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import aiohttp
import pytest
from chat_fixtures import APP_TOKEN, BOT_TOKEN, SECRET, chat_service
from server_fixtures import API_KEY, make_settings

from orchestra_kit.errors import ConfigError
from orchestra_kit.fakeslack import app_mention, slash_command_body
from orchestra_kit.server.app import Service

FORM = "application/x-www-form-urlencoded"


async def test_socket_mode_end_to_end(tmp_path: Path) -> None:
    async with chat_service(tmp_path, **{"chat.slack_app_token": APP_TOKEN}) as (svc, slack):
        opened = [c for c in slack.calls if c.method == "apps.connections.open"]
        assert len(opened) == 1 and opened[0].authed
        await slack.wait_for(lambda cs: any(c.method == "socket.connected" for c in cs))
        await svc.state.store.hire("alice", "developer")
        env = app_mention(user="U1", text="@alice tidy docs/index.md",
                          bot_user_id=slack.bot_user_id)
        ack = await slack.send_socket(env)
        assert ack["envelope_id"]
        ts = env["event"]["ts"]
        await slack.wait_for(lambda _: len(slack.posts(thread_ts=ts)) >= 2)
        (task,) = await svc.state.store.list_tasks()
        assert (task.employee, task.files) == ("alice", ("docs/index.md",))
        assert "completed" in str(slack.posts(thread_ts=ts)[-1].args["text"])
    assert slack.socket_connections == 0  # the service disconnected when it stopped


async def _command(svc: Service, slack: object, command: str, text: str,
                   secret: str = SECRET) -> tuple[int, dict[str, str]]:
    sent = await slack.send_event(  # type: ignore[attr-defined]
        f"{svc.url}/slack/commands", secret, slash_command_body(command, text),
        content_type=FORM)
    return sent.status, (json.loads(sent.body) if sent.status == 200 else {})


async def test_slash_commands_answer_in_slacks_format(tmp_path: Path) -> None:
    async with chat_service(tmp_path, **{"chat.slack_lead_user_ids": "UFAKEUSER"}) as (svc, slack):
        status, body = await _command(svc, slack, "/hire", "alice developer smart")
        assert status == 200 and body["response_type"] == "in_channel"
        assert (await svc.state.store.get_employee("alice")).smartness == "smart"
        _, body = await _command(svc, slack, "/employees", "")
        assert "alice (developer)" in body["text"]
        _, body = await _command(svc, slack, "/lock", "alice src/a.py")
        assert body["text"] == "src/a.py: locked"
        await svc.state.store.hire("bob", "developer")
        _, body = await _command(svc, slack, "/request", "bob src/a.py need it")
        request_id = (await svc.state.store.list_requests())[0].id
        _, body = await _command(svc, slack, "/approve", str(request_id))
        assert "now belongs to bob" in body["text"]
        _, body = await _command(svc, slack, "/assign", "alice write the docs")
        assert "Task 1 for alice" in body["text"]
        _, body = await _command(svc, slack, "/lock", "alice /etc/passwd")
        assert body["response_type"] == "ephemeral" and "outside the project root" in body["text"]
        assert str(tmp_path) not in body["text"]
        status, _ = await _command(svc, slack, "/fire", "alice", secret="wrong-secret")
        assert status == 401
        assert await svc.state.store.get_employee("alice")


async def test_slack_routes_need_a_signature_not_a_bearer_key(tmp_path: Path) -> None:
    async with chat_service(tmp_path, **{"server.api_keys": API_KEY,
                                         "chat.slack_lead_user_ids": "UFAKEUSER"}) as (svc, slack):
        status, body = await _command(svc, slack, "/hire", "carol developer")
        assert status == 200 and "Hired carol" in body["text"]
        async with (aiohttp.ClientSession() as http,
                    http.post(f"{svc.url}/employees", json={"name": "x", "role": "r"}) as r):
            assert r.status == 401  # the rest of the API still wants its key


async def test_health_reports_chat_and_no_secret_leaks(tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with chat_service(tmp_path) as (svc, slack), aiohttp.ClientSession() as http:
        await slack.send_event(f"{svc.url}/slack/events", "wrong", app_mention(
            user="U1", text="@alice hi", bot_user_id=slack.bot_user_id))
        texts = []
        for path in ("/health", "/performance", "/status", "/metrics"):
            async with http.get(f"{svc.url}{path}") as resp:
                texts.append(await resp.text())
        assert json.loads(texts[0])["chat_enabled"] is True
        assert json.loads(texts[1])["chat"]["received"] == 0
        settings = svc.settings
    for secret in (SECRET, BOT_TOKEN):
        for text in [*texts, repr(settings), json.dumps(settings.to_dict()), caplog.text]:
            assert secret not in text


async def test_health_says_chat_is_off_by_default(tmp_path: Path) -> None:
    async with Service(make_settings(tmp_path)) as svc, aiohttp.ClientSession() as http:
        async with http.get(f"{svc.url}/health") as resp:
            assert (await resp.json())["chat_enabled"] is False
        async with http.post(f"{svc.url}/slack/events", data=b"{}") as resp:
            assert resp.status == 404


def test_chat_without_a_signing_secret_does_not_start(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, **{"chat.enabled": True, "chat.slack_bot_token": "xoxb-1"})
    with pytest.raises(ConfigError, match="chat.slack_signing_secret"):
        Service(settings)
