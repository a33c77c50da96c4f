"""Admission for Slack's requests: cheap refusals before Bolt or the store does any work.

Two checks, each answered the way Slack (or an impostor) should be answered:

- **Signature** (:meth:`SlackGate.verify`, HTTP only): ``X-Slack-Signature`` over
  ``v0:timestamp:body`` with the signing secret, timestamp within 5 minutes. A missing,
  wrong or stale signature costs one HMAC and is answered 401: the body is not parsed,
  Bolt does not see it, nothing is logged per request (it is counted). Failures are not
  limited per address: behind a proxy every request has the proxy's address, and an
  impostor's failures would then lock Slack out.
- **Per-team budget** (:meth:`SlackGate.admit`, HTTP and Socket Mode, after the
  signature): a token bucket per Slack team (``chat.team_requests_per_minute``,
  ``chat.team_burst``; rate 0 turns it off). Over it, nothing is recorded and no task is
  made: a slash command gets Slack's quick 200 with an ephemeral "try again in N s" (a
  non-200 shows the user an error), an event gets 429 with ``Retry-After`` and no
  ``X-Slack-No-Retry``, so Slack redelivers it later (about 1 and 5 minutes on) and the
  message is not lost if the flood has passed by then.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from slack_sdk.signature import Clock, SignatureVerifier

from ..ratelimit import KeyedTokenBucket

__all__ = ["SlackGate", "SlackReply"]

_MAX_TEAMS = 1_000
_JSON = {"content-type": "application/json"}


@dataclass(frozen=True, slots=True)
class SlackReply:
    """An HTTP answer to Slack (from the gate or the Bolt app)."""

    status: int
    body: str
    headers: dict[str, str]


class _WallClock(Clock):
    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now

    def now(self) -> float:
        return self._now()


class SlackGate:
    """Signature check and per-team budget (see the module doc); clocks are injectable."""

    def __init__(self, signing_secret: str, *, team_requests_per_minute: float,
                 team_burst: int, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self._verifier = SignatureVerifier(signing_secret, clock=_WallClock(wall_clock))
        self._teams = KeyedTokenBucket(team_requests_per_minute, team_burst,
                                       max_keys=_MAX_TEAMS, clock=clock)
        self.counters = {"bad_signatures": 0, "team_limited": 0}

    def verify(self, body: str, headers: Mapping[str, str]) -> SlackReply | None:
        """``None`` when the request is signed; else the 401 to answer with."""
        lower = {k.lower(): v for k, v in headers.items()}
        try:
            if self._verifier.is_valid(body, lower.get("x-slack-request-timestamp"),
                                       lower.get("x-slack-signature")):
                return None
        except (ValueError, UnicodeError):  # a timestamp that is no number, a bad body
            pass
        self.counters["bad_signatures"] += 1
        return SlackReply(401, '{"error":"invalid request"}', dict(_JSON))

    def admit(self, body: Mapping[str, Any], team: str | None) -> SlackReply | None:
        """``None`` when ``team`` is within its budget; else Slack's answer (module doc)."""
        decision = self._teams.check(team or "?")
        if decision.allowed:
            return None
        self.counters["team_limited"] += 1
        retry = max(1, math.ceil(decision.retry_after_s))
        if "command" in body:
            text = (f"The team is sending more requests than this service takes "
                    f"({self._teams.burst} at once); try again in {retry} s.")
            return SlackReply(200, json.dumps({"response_type": "ephemeral", "text": text}),
                              dict(_JSON))
        return SlackReply(429, '{"error":"rate_limited"}', {**_JSON, "Retry-After": str(retry)})

    def stats(self) -> dict[str, int]:
        """Counters for /performance."""
        return dict(self.counters)

