"""The Slack chat layer end to end: real sockets, the fake Slack, a chat-enabled service."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from chat_fixtures import SECRET, chat_service

from orchestra_kit.fakeslack import FakeSlack, app_mention, channel_message, url_verification


def _in_thread(slack: FakeSlack, ts: str) -> list[str]:
    return [str(c.args.get("text", "")) for c in slack.posts(thread_ts=ts)]


async def _tasks(svc: object) -> list[object]:
    return await svc.state.store.list_tasks(limit=10_000)  # type: ignore[attr-defined]


async def test_mention_becomes_a_task_with_a_reply_and_a_completion(tmp_path: Path) -> None:
    async with chat_service(tmp_path) as (svc, slack):
        await svc.state.store.hire("alice", "developer")
        env = app_mention(user="U1", text="@alice please add a health check in src/health.py",
                          bot_user_id=slack.bot_user_id)
        sent = await slack.send_event(f"{svc.url}/slack/events", SECRET, env)
        assert sent.status == 200
        (task,) = await _tasks(svc)
        assert (task.employee, task.files) == ("alice", ("src/health.py",))
        assert task.description == "please add a health check in src/health.py"
        ts = env["event"]["ts"]
        await slack.wait_for(lambda _: len(slack.posts(thread_ts=ts)) >= 2)
        first, done = _in_thread(slack, ts)[:2]
        assert f"task {task.id}" in first and "alice" in first
        assert f"Task {task.id} for alice completed" in done
        assert "Files touched: src/health.py" in done


@pytest.mark.parametrize("how", ["wrong", "missing", "stale"])
async def test_bad_missing_and_stale_signatures_are_refused(tmp_path: Path, how: str) -> None:
    async with chat_service(tmp_path) as (svc, slack):
        await svc.state.store.hire("alice", "developer")
        env = app_mention(user="U1", text="@alice fix it", bot_user_id=slack.bot_user_id)
        sent = await slack.send_event(
            f"{svc.url}/slack/events", "not-the-secret" if how == "wrong" else SECRET, env,
            signed=how != "missing",
            timestamp=int(time.time()) - 360 if how == "stale" else None)
        assert sent.status == 401
        assert await _tasks(svc) == []
        assert await svc.state.store.chat_event_counts() == {}
        assert slack.posts() == []


async def test_url_verification_answers_the_challenge(tmp_path: Path) -> None:
    async with chat_service(tmp_path) as (svc, slack):
        sent = await slack.send_event(f"{svc.url}/slack/events", SECRET,
                                      url_verification("c-123"))
        assert sent.status == 200 and '"c-123"' in sent.body


async def test_other_events_are_acknowledged(tmp_path: Path) -> None:
    async with chat_service(tmp_path) as (svc, slack):
        env = app_mention(user="U1", text="x", bot_user_id=slack.bot_user_id)
        env["event"] = {"type": "reaction_added", "user": "U1", "reaction": "eyes"}
        assert (await slack.send_event(f"{svc.url}/slack/events", SECRET, env)).status == 200
        assert svc.state.chat.stats()["received"] == 0


async def test_a_repeated_event_makes_one_task(tmp_path: Path) -> None:
    async with chat_service(tmp_path) as (svc, slack):
        await svc.state.store.hire("alice", "developer")
        env = app_mention(user="U1", text="@alice fix the build", bot_user_id=slack.bot_user_id)
        url = f"{svc.url}/slack/events"
        first = await slack.send_event(url, SECRET, env)
        retry = await slack.send_event(url, SECRET, env, extra_headers={
            "X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"})
        # the same message again, as the `message` event Slack also sends (another id)
        same_msg = channel_message(user="U1", text=env["event"]["text"],
                                   ts=env["event"]["ts"])
        again = await slack.send_event(url, SECRET, same_msg)
        assert (first.status, retry.status, again.status) == (200, 200, 200)
        assert len(await _tasks(svc)) == 1
        assert svc.state.chat.stats()["duplicates"] == 2


async def test_slacks_retry_after_a_crash_gets_the_thread_its_reply(tmp_path: Path) -> None:
    async with chat_service(tmp_path) as (svc, slack):
        store = svc.state.store
        await store.hire("alice", "developer")
        env = app_mention(user="U1", text="@alice fix the build", bot_user_id=slack.bot_user_id)
        ts = env["event"]["ts"]
        # what a process that died after committing left: the event handled, its task queued
        assert await store.claim_chat_event(env["event_id"], f"C0FAKE:{ts}", channel="C0FAKE",
                                            user="U1")
        (task,) = await store.create_chat_tasks(env["event_id"], [
            {"employee": "alice", "description": "fix the build"}])
        svc.state.scheduler.adopt([task])  # as the restarted scheduler loads queued tasks
        retry = await slack.send_event(f"{svc.url}/slack/events", SECRET, env, extra_headers={
            "X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_error"})
        assert retry.status == 200 and len(await _tasks(svc)) == 1
        await slack.wait_for(lambda _: len(slack.posts(thread_ts=ts)) >= 1)
        assert f"task {task.id}" in _in_thread(slack, ts)[0]
        await slack.wait_for(lambda _: len(slack.posts(thread_ts=ts)) >= 2)  # and its end
        assert "completed" in _in_thread(slack, ts)[-1]
        assert svc.state.chat.stats()["resumed"] == 1


async def test_100_concurrent_mentions_from_100_users(tmp_path: Path) -> None:
    async with chat_service(tmp_path, **{"chat.min_interval_s": 2,
                                         "chat.max_messages_per_hour": 20}) as (svc, slack):
        team = [f"dev-{k}" for k in range(10)]
        for name in team:
            await svc.state.store.hire(name, "developer")
        envs = [app_mention(user=f"U{i:03d}", text=f"@{team[i % 10]} task number {i}",
                            bot_user_id=slack.bot_user_id) for i in range(100)]
        sent = await asyncio.gather(*(slack.send_event(f"{svc.url}/slack/events", SECRET, e)
                                      for e in envs))
        assert [s.status for s in sent] == [200] * 100
        slowest = max(s.latency_s for s in sent)
        assert slowest < 3.0, f"an ack took {slowest:.2f} s (Slack allows 3 s)"
        assert [c.method for c in slack.calls].count("auth.test") == 1  # asked once, shared
        tasks = await _tasks(svc)
        assert len(tasks) == 100
        assert sorted(t.description for t in tasks) == sorted(f"task number {i}"
                                                              for i in range(100))
        threads = {e["event"]["ts"] for e in envs}
        await slack.wait_for(lambda _: sum(1 for c in slack.posts()
                                           if "completed" in str(c.args.get("text"))) >= 100,
                             timeout_s=30)
        assert {c.args["thread_ts"] for c in slack.posts()} == threads


async def test_messages_from_bots_and_from_ourselves_do_nothing(tmp_path: Path) -> None:
    async with chat_service(tmp_path) as (svc, slack):
        await svc.state.store.hire("alice", "developer")
        url = f"{svc.url}/slack/events"
        other_bot = channel_message(user=None, text="@alice deploy", bot_id="BOTHER")
        ourselves = channel_message(user=slack.bot_user_id, text="@alice task 1 completed")
        for env in (other_bot, ourselves):
            assert (await slack.send_event(url, SECRET, env)).status == 200
        await asyncio.sleep(0.2)  # give a wrong reply time to show up
        assert await _tasks(svc) == []
        assert slack.posts() == []


async def test_a_second_message_within_the_interval_gets_a_polite_no(tmp_path: Path) -> None:
    async with chat_service(tmp_path, **{"chat.min_interval_s": 60}) as (svc, slack):
        await svc.state.store.hire("alice", "developer")
        url = f"{svc.url}/slack/events"
        one = app_mention(user="U1", text="@alice first", bot_user_id=slack.bot_user_id)
        two = app_mention(user="U1", text="@alice second", bot_user_id=slack.bot_user_id)
        for env in (one, two):
            assert (await slack.send_event(url, SECRET, env)).status == 200
        ts = two["event"]["ts"]
        await slack.wait_for(lambda _: len(slack.posts(thread_ts=ts)) >= 1)
        assert "Sorry" in _in_thread(slack, ts)[0] and "60 s" in _in_thread(slack, ts)[0]
        assert [t.description for t in await _tasks(svc)] == ["first"]


async def test_unknown_employee_gets_a_reply_or_is_hired(tmp_path: Path) -> None:
    async with chat_service(tmp_path) as (svc, slack):
        env = app_mention(user="U1", text="@bob fix it", bot_user_id=slack.bot_user_id)
        await slack.send_event(f"{svc.url}/slack/events", SECRET, env)
        await slack.wait_for(lambda _: len(slack.posts()) >= 1)
        assert "I don't know @bob" in _in_thread(slack, env["event"]["ts"])[0]
        assert await _tasks(svc) == []
    (tmp_path / "auto").mkdir()
    async with chat_service(tmp_path / "auto", **{"scheduler.auto_hire": True}) as (svc, slack):
        env = app_mention(user="U1", text="@bob fix it", bot_user_id=slack.bot_user_id)
        await slack.send_event(f"{svc.url}/slack/events", SECRET, env)
        assert [t.employee for t in await _tasks(svc)] == ["bob"]


async def test_paths_outside_the_project_root_are_refused(tmp_path: Path) -> None:
    async with chat_service(tmp_path) as (svc, slack):
        await svc.state.store.hire("alice", "developer")
        env = app_mention(user="U1", text="@alice overwrite ../../etc/passwd please",
                          bot_user_id=slack.bot_user_id)
        await slack.send_event(f"{svc.url}/slack/events", SECRET, env)
        await slack.wait_for(lambda _: len(slack.posts()) >= 1)
        reply = _in_thread(slack, env["event"]["ts"])[0]
        assert "could not take this on" in reply and "outside the project root" in reply
        assert str(tmp_path) not in reply  # the server's paths stay private
        assert await _tasks(svc) == []


async def test_progress_is_edited_in_place_then_completed(tmp_path: Path) -> None:
    async with chat_service(tmp_path, **{"chat.progress_interval_s": 0,
                                         "agents.sim_latency_ms": 200}) as (svc, slack):
        await svc.state.store.hire("alice", "developer")
        env = app_mention(user="U1", text="@alice slow job", bot_user_id=slack.bot_user_id)
        await slack.send_event(f"{svc.url}/slack/events", SECRET, env)
        ts = env["event"]["ts"]
        await slack.wait_for(lambda _: any("completed" in t for t in _in_thread(slack, ts)))
        taken, progress, done = _in_thread(slack, ts)
        assert "took this on" in taken and progress.endswith("% done") and "completed" in done
        edits = [c.args["text"] for c in slack.calls if c.method == "chat.update"]
        assert edits and all(e.endswith("% done") for e in edits)  # one message, edited


async def test_the_ack_never_waits_for_the_agent(tmp_path: Path) -> None:
    async with chat_service(tmp_path, **{"agents.sim_latency_ms": 60_000,
                                         "flags.enable_async_llm_processing": False,
                                         "scheduler.shutdown_grace_s": 0}) as (svc, slack):
        await svc.state.store.hire("alice", "developer")
        env = app_mention(user="U1", text="@alice a very long job", bot_user_id=slack.bot_user_id)
        sent = await slack.send_event(f"{svc.url}/slack/events", SECRET, env)
        assert sent.status == 200 and sent.latency_s < 3.0
        (task,) = await _tasks(svc)
        assert task.status in ("queued", "running")
