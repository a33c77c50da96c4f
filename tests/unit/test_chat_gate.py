"""SlackGate: signatures checked before parsing; per-team budgets refill; Slack's answers."""

from __future__ import annotations

import json

import pytest

from orchestra_kit.chat.gate import SlackGate
from orchestra_kit.fakeslack import sign

SECRET = "gate-secret-0123"
NOW = 1_700_000_000


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _gate(clock: Clock, rate: float = 60.0, burst: int = 3) -> SlackGate:
    return SlackGate(SECRET, team_requests_per_minute=rate, team_burst=burst, clock=clock,
                     wall_clock=lambda: NOW)


@pytest.mark.parametrize(("headers", "ok"), [
    ({"X-Slack-Request-Timestamp": str(NOW), "X-Slack-Signature": sign(SECRET, "b", NOW)}, True),
    ({"x-slack-request-timestamp": str(NOW), "x-slack-signature": sign(SECRET, "b", NOW)}, True),
    ({"X-Slack-Request-Timestamp": str(NOW), "X-Slack-Signature": sign("other", "b", NOW)}, False),
    ({"X-Slack-Request-Timestamp": str(NOW - 301),
      "X-Slack-Signature": sign(SECRET, "b", NOW - 301)}, False),
    ({"X-Slack-Request-Timestamp": "soon", "X-Slack-Signature": "v0=00"}, False),
    ({"X-Slack-Signature": sign(SECRET, "b", NOW)}, False),
    ({}, False),
])
def test_signatures(headers: dict[str, str], ok: bool) -> None:
    gate = _gate(Clock())
    refused = gate.verify("b", headers)
    assert (refused is None) is ok
    if refused is not None:
        assert refused.status == 401 and gate.stats()["bad_signatures"] == 1


def test_team_budget_refills_and_answers_each_kind_as_slack_expects() -> None:
    clock = Clock()
    gate = _gate(clock)  # 3 at once, 1 a second
    event = {"type": "event_callback", "team_id": "T1"}
    assert [gate.admit(event, "T1") for _ in range(3)] == [None] * 3
    refused = gate.admit(event, "T1")
    assert refused is not None and refused.status == 429
    assert refused.headers["Retry-After"] == "1"
    command = gate.admit({"command": "/status"}, "T1")
    assert command is not None and command.status == 200
    answer = json.loads(command.body)
    assert answer["response_type"] == "ephemeral" and "try again in 1 s" in answer["text"]
    assert gate.admit(event, "T2") is None  # another team has its own budget
    clock.t += 1.0
    assert gate.admit(event, "T1") is None and gate.admit(event, "T1") is not None
    assert gate.stats()["team_limited"] == 3


def test_a_rate_of_zero_turns_the_budget_off() -> None:
    gate = _gate(Clock(), rate=0)
    assert all(gate.admit({}, "T1") is None for _ in range(1000))
