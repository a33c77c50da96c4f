"""The Slack routes under abuse: a per-team budget, bad signatures refused before any
work, and slash commands that act as the team lead only for the configured leads."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from chat_fixtures import APP_TOKEN, SECRET, chat_service, slash

import orchestra_kit.chat.slack as slack_adapter
from orchestra_kit.fakeslack import app_mention

# A budget of 5 that refills at 1 a minute: nothing refills while a test runs.
TIGHT = {"chat.team_requests_per_minute": 1, "chat.team_burst": 5}


async def test_a_flood_of_signed_mentions_is_held_to_the_team_budget(tmp_path: Path) -> None:
    async with chat_service(tmp_path, **TIGHT) as (svc, slack):
        await svc.state.store.hire("alice", "developer")
        url = f"{svc.url}/slack/events"
        envs = [app_mention(user=f"U{i:03d}", text=f"@alice job {i}",
                            bot_user_id=slack.bot_user_id) for i in range(12)]
        sent = [await slack.send_event(url, SECRET, e) for e in envs]
        assert [s.status for s in sent] == [200] * 5 + [429] * 7
        for refused in sent[5:]:  # Slack redelivers it later: no X-Slack-No-Retry
            assert int(refused.headers["Retry-After"]) >= 1
            assert "X-Slack-No-Retry" not in refused.headers
        assert len(await svc.state.store.list_tasks()) == 5
        assert sum((await svc.state.store.chat_event_counts()).values()) == 5  # none recorded
        status, body = await slash(svc, slack, "/status", "")
        assert status == 200 and body["response_type"] == "ephemeral"  # Slack's quick answer
        assert "try again in" in body["text"]
        other_team = app_mention(user="U999", text="@alice elsewhere", team="TOTHER",
                                 bot_user_id=slack.bot_user_id)
        assert (await slack.send_event(url, SECRET, other_team)).status == 200
        assert svc.state.chat.stats()["team_limited"] == 8


async def test_bad_signatures_are_refused_before_bolt_parses_anything(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[int] = []
    real = slack_adapter.AsyncBoltRequest

    def counting(**kw: Any) -> Any:
        parsed.append(1)
        return real(**kw)

    monkeypatch.setattr(slack_adapter, "AsyncBoltRequest", counting)
    async with chat_service(tmp_path, **TIGHT) as (svc, slack):
        await svc.state.store.hire("alice", "developer")
        url = f"{svc.url}/slack/events"
        big = app_mention(user="U1", text="@alice " + "x" * 100_000,
                          bot_user_id=slack.bot_user_id)
        sent = await asyncio.gather(*(slack.send_event(url, "not-the-secret", big)
                                      for _ in range(30)))
        assert {s.status for s in sent} == {401}
        assert parsed == [] and svc.state.chat.stats()["bad_signatures"] == 30
        assert svc.state.chat.stats()["received"] == 0
        assert await svc.state.store.chat_event_counts() == {}
        good = app_mention(user="U1", text="@alice fix it", bot_user_id=slack.bot_user_id)
        assert (await slack.send_event(url, SECRET, good)).status == 200  # budget untouched
        assert parsed == [1] and len(await svc.state.store.list_tasks()) == 1


async def test_socket_mode_events_are_held_to_the_team_budget(tmp_path: Path) -> None:
    settings = {"chat.slack_app_token": APP_TOKEN, "chat.team_requests_per_minute": 1,
                "chat.team_burst": 2}
    async with chat_service(tmp_path, **settings) as (svc, slack):
        await slack.wait_for(lambda cs: any(c.method == "socket.connected" for c in cs))
        await svc.state.store.hire("alice", "developer")
        envs = [app_mention(user=f"U{i}", text=f"@alice job {i}", bot_user_id=slack.bot_user_id)
                for i in range(3)]
        for env in envs[:2]:
            assert (await slack.send_socket(env))["envelope_id"]
        with pytest.raises(TimeoutError):  # not acknowledged: Slack redelivers it later
            await slack.send_socket(envs[2], timeout_s=0.5)
        assert len(await svc.state.store.list_tasks()) == 2


async def test_only_the_configured_leads_approve_deny_and_manage_the_team(
        tmp_path: Path) -> None:
    async with chat_service(tmp_path, **{"chat.slack_lead_user_ids": "ULEAD1,WLEAD2"}) as (
            svc, slack):
        store = svc.state.store
        for name in ("alice", "bob"):
            await store.hire(name, "developer")
        await store.lock_files("alice", ["src/a.py"])
        _, req = await store.request_file("bob", "src/a.py", "need it")
        for command, text in (("/approve", str(req.id)), ("/deny", str(req.id)),
                              ("/fire", "alice"), ("/hire", "eve developer"),
                              ("/release", "alice"), ("/lock", "bob src/b.py")):
            status, body = await slash(svc, slack, command, text, user="UINTRUDER")
            assert status == 200 and body["response_type"] == "ephemeral", command
            assert body["text"].startswith(f"Only the team lead may use {command}")
            assert "UINTRUDER" in body["text"] and "chat.slack_lead_user_ids" in body["text"]
        assert [r.status for r in await store.list_requests()] == ["pending"]
        assert sorted(e.name for e in await store.list_employees()) == ["alice", "bob"]
        assert [(x.path, x.employee) for x in await store.list_leases()] == [("src/a.py",
                                                                              "alice")]
        status, body = await slash(svc, slack, "/employees", "", user="UINTRUDER")
        assert body["response_type"] == "in_channel"  # the open commands stay open
        status, body = await slash(svc, slack, "/approve", str(req.id), user="WLEAD2")
        assert status == 200 and "now belongs to bob" in body["text"]


async def test_with_no_lead_configured_nobody_approves_from_slack(tmp_path: Path) -> None:
    async with chat_service(tmp_path) as (svc, slack):
        status, body = await slash(svc, slack, "/approve", "1")
        assert status == 200 and body["response_type"] == "ephemeral"
        assert "no Slack user is the team lead yet" in body["text"]
