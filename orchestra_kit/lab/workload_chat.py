"""The ``chat`` workload: virtual users post signed @mentions to ``/slack/events``.

Each request is one conversation: a signed ``app_mention`` naming an employee of the
team is sent to the target, then the workload waits, on the fake Slack it owns, for the
service's reply in the message's thread and for the completion message there. Three
times are kept per message (all from the moment the request was sent, on one clock):

- ``ack_ms``: the HTTP answer to the event (Slack gives up after 3 s);
- ``first_reply_ms``: the first post in the thread (the reply naming the task);
- ``completion_ms``: the completion message (``Task N for NAME completed``).

The request's latency for the load generator is the completion time (a closed-loop
user waits for it before writing again). The target must send its Slack calls to this
workload's fake: :meth:`ChatWorkload.environment` starts the fake and yields the
settings that make an in-process target do so (chat on, the fake's URL, the lab's
signing secret, sender limits off so the load is not refused).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..fakeslack import FakeSlack, SlackCall, app_mention
from .loadgen import OpResult
from .workloads import Client, Workload

__all__ = ["LAB_SIGNING_SECRET", "ChatTiming", "ChatWorkload"]

LAB_SIGNING_SECRET = "orchestra-lab-signing-secret"
LAB_BOT_TOKEN = "xoxb-orchestra-lab"
_DONE = re.compile(r"^Task \d+ for \S+ (completed|failed|cancelled|timed_out)")


@dataclass(frozen=True, slots=True)
class ChatTiming:
    """One message's times (ms from the send); ``nan`` when it never came."""

    index: int
    status: int
    ack_ms: float
    first_reply_ms: float
    completion_ms: float
    outcome: str  # completed | failed | ... | no_reply | timeout | http_<status>


def _completion(posts: list[SlackCall]) -> SlackCall | None:
    return next((p for p in posts if _DONE.match(str(p.args.get("text", "")))), None)


def _answered(posts: list[SlackCall]) -> bool:
    """A task's thread is answered by its completion; anything else by its first reply."""
    if _completion(posts) is not None:
        return True
    return bool(posts) and "took this on" not in str(posts[0].args.get("text", ""))


class ChatWorkload(Workload):
    """Signed mentions to the team through the Events API; see the module doc."""

    name = "chat"

    def __init__(self, spec: Any, seed: int) -> None:
        super().__init__(spec, seed)
        self.fake: FakeSlack | None = None
        self.url = ""
        self.timings: list[ChatTiming] = []

    @contextlib.asynccontextmanager
    async def environment(self) -> AsyncIterator[dict[str, Any]]:
        """Start the fake Slack; yield the target settings that point chat at it."""
        async with FakeSlack() as fake:
            self.fake = fake
            try:
                yield {"chat.enabled": True, "chat.slack_signing_secret": LAB_SIGNING_SECRET,
                       "chat.slack_bot_token": LAB_BOT_TOKEN, "chat.slack_api_url": fake.api_url,
                       "chat.max_messages_per_hour": 0, "chat.min_interval_s": 0,
                       "chat.team_requests_per_minute": 0}  # measure the service, not its guard
            finally:
                self.fake = None

    def __getstate__(self) -> dict[str, Any]:
        raise ConfigError("generator.processes", "> 1", "must be 1 for the chat workload "
                          "(its fake Slack lives in the generator's process)")

    async def setup(self, client: Client) -> None:
        """Check the target has chat on, then hire the team."""
        if self.fake is None:
            raise ConfigError("workload.kind", "chat", "needs its fake Slack: run it inside "
                              "ChatWorkload.environment() (the chat lab and sweeps do)")
        self.url = str(getattr(client, "base_url", "")).rstrip("/")
        status, health = await client.request("GET", "/health")
        if status != 200 or not (isinstance(health, dict) and health.get("chat_enabled")):
            raise ConfigError("target", self.url, "must have chat enabled (chat.enabled) and "
                              "chat.slack_api_url pointing at the workload's fake Slack")
        await self.hire_team(client)

    async def op(self, client: Client, i: int) -> OpResult:
        """One conversation: mention, ack, reply in thread, completion message."""
        fake = self.fake
        assert fake is not None
        env = app_mention(user=f"ULAB{i:07d}", text=f"@{self.team[i % len(self.team)]} "
                          f"load task {i}", bot_user_id=fake.bot_user_id,
                          event_id=f"EvLAB{self.seed}x{i}")
        ts = str(env["event"]["ts"])
        t0 = time.perf_counter()
        sent = await fake.send_event(f"{self.url}/slack/events", LAB_SIGNING_SECRET, env)
        ack_ms = (time.perf_counter() - t0) * 1000.0
        if sent.status != 200:
            return self._keep(i, sent.status, ack_ms, None, None, f"http_{sent.status}")
        try:
            posts = await fake.wait_thread(ts, lambda ps: _completion(ps) is not None,
                                           timeout_s=self.spec.wait_timeout_s)
        except TimeoutError:
            posts = fake.thread(ts)
            return self._keep(i, 200, ack_ms, posts[0].t - t0 if posts else None, None,
                              "timeout" if posts else "no_reply")
        done = _completion(posts)
        assert done is not None
        outcome = _DONE.match(str(done.args["text"])).group(1)  # type: ignore[union-attr]
        return self._keep(i, 200, ack_ms, posts[0].t - t0, done.t - t0, outcome)

    async def converse(self, client: Client, text: str, *, user: str,
                       timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """Post one mention; the thread as rows (who, text, ms from the send)."""
        fake = self.fake
        assert fake is not None, "converse() runs inside environment()"
        env = app_mention(user=user, text=text, bot_user_id=fake.bot_user_id)
        ts = str(env["event"]["ts"])
        url = str(getattr(client, "base_url", "")).rstrip("/")
        t0 = time.perf_counter()
        sent = await fake.send_event(f"{url}/slack/events", LAB_SIGNING_SECRET, env)
        try:
            posts = await fake.wait_thread(ts, _answered, timeout_s=timeout_s)
        except TimeoutError:
            posts = fake.thread(ts)
        return [{"thread": ts, "who": user, "text": text, "ms": 0.0, "http": sent.status},
                *({"thread": ts, "who": "bot", "text": str(p.args.get("text", "")),
                   "ms": round((p.t - t0) * 1000.0, 3), "http": None} for p in posts)]

    def _keep(self, i: int, status: int, ack_ms: float, first_s: float | None,
              done_s: float | None, outcome: str) -> OpResult:
        nan = float("nan")
        self.timings.append(ChatTiming(
            i, status, ack_ms, first_s * 1000.0 if first_s is not None else nan,
            done_s * 1000.0 if done_s is not None else nan, outcome))
        ok = outcome == "completed"
        return OpResult(op="chat", ok=ok, status=status, error_type="" if ok else outcome)
