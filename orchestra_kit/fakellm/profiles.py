"""Named latency profiles of the fake provider (``orchestra fake-llm --profile NAME``).

A profile is a set of :class:`~orchestra_kit.fakellm.FakeLLMConfig` values — time to
first token (median and spread), decode speed, output length, capacity and queue,
fault rates — plus where each number comes from. Explicit flags (or ``config``
keys in a spec's ``[provider]`` table) override the profile's values.

Where the numbers come from (``/work/shared/reference`` names the project's reference
notes; nothing here is a measurement of a real provider unless it says so):

- ``default``: the fake's own defaults (50 ms TTFT, 200 tok/s, capacity 64): chosen to
  be fast and unqueued, for plumbing tests.
- ``seed-2.1s``: the seed's headline "LLM API calls: 2.1 s latency" row
  (seed-performance-optimizations.md, table line 11). The original system's notes say
  the 2.1 s was "Average 2.1s for 5 task assignments" (a ReAct/LLM turn), not an API
  latency (original-system.md, "2.1 s" note). We make the *mean call* 2.1 s: median
  TTFT 600 ms + 75 output tokens at 50 tok/s = 0.6 + 1.5 s. The split between TTFT
  and decode is our choice; only the total comes from the seed.
- ``seedtable``: the LLM row of ``measure_seed_table`` (300 ms ± 30 ms TTFT, 60
  tokens at 200 tok/s): a 0.6 s call, used since the seed table was first measured.
- ``mlperf-interactive``: a provider that just meets MLPerf's *interactive* LLM
  bounds, TTFT 450 ms and TPOT 40 ms (= 25 tok/s) (load-testing-anchors.md, MLPerf
  Server scenario); the lognormal spread (σ = 0.35) is our assumption, giving a p99
  TTFT about 2.3× the median, the shape hosted APIs show.
- ``mlperf-server``: the same for the llama2-70b *server* bounds, TTFT 2000 ms and
  TPOT 200 ms (= 5 tok/s): a slow, heavily shared deployment.
- ``limited``: a small, shared deployment for the LLM sweep: ``seedtable``'s speed,
  8 generation slots, a queue of 16 beyond which the provider answers 429 with
  ``Retry-After: 1`` (how hosted APIs shed concurrency), and 2 % spontaneous 429s.
  Capacity, queue and fault rate are chosen so that a 2-core machine can push the
  provider past them; they are knobs, not facts about any provider.
- ``opencode``: fast answers for driving the real opencode CLI (each run makes two
  or three calls): 50 ms TTFT, 400 tok/s, capacity 64, so the CLI itself is measured.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchestra_kit.errors import ConfigError

__all__ = ["PROFILES", "Profile", "profile_values"]


@dataclass(frozen=True, kw_only=True)
class Profile:
    """A named set of fake-provider settings and the source of its numbers."""

    name: str
    values: Mapping[str, Any]
    source: str


PROFILES: dict[str, Profile] = {p.name: p for p in (
    Profile(name="default", values={},
            source="the fake's own defaults, for plumbing tests"),
    Profile(name="seed-2.1s",
            values={"ttft_ms": 600.0, "ttft_sigma": 0.3, "ttft_jitter_ms": 0.0,
                    "tokens_per_s": 50.0, "output_tokens": 75, "output_tokens_jitter": 25},
            source="mean call 2.1 s = the seed's 'LLM API calls: 2.1s' row "
                   "(seed-performance-optimizations.md); split TTFT/decode is ours"),
    Profile(name="seedtable",
            values={"ttft_ms": 300.0, "ttft_jitter_ms": 30.0, "tokens_per_s": 200.0,
                    "output_tokens": 60, "output_tokens_jitter": 0},
            source="the seed table's LLM row (orchestra_kit/lab/seedtable.py)"),
    Profile(name="mlperf-interactive",
            values={"ttft_ms": 450.0, "ttft_sigma": 0.35, "ttft_jitter_ms": 0.0,
                    "tokens_per_s": 25.0, "output_tokens": 60, "output_tokens_jitter": 20},
            source="MLPerf interactive LLM bounds TTFT 450 ms / TPOT 40 ms "
                   "(load-testing-anchors.md); sigma assumed"),
    Profile(name="mlperf-server",
            values={"ttft_ms": 2000.0, "ttft_sigma": 0.35, "ttft_jitter_ms": 0.0,
                    "tokens_per_s": 5.0, "output_tokens": 40, "output_tokens_jitter": 10},
            source="MLPerf llama2-70b server bounds TTFT 2000 ms / TPOT 200 ms "
                   "(load-testing-anchors.md); sigma assumed"),
    Profile(name="limited",
            values={"ttft_ms": 300.0, "ttft_jitter_ms": 30.0, "tokens_per_s": 200.0,
                    "output_tokens": 60, "output_tokens_jitter": 0, "capacity": 8,
                    "max_queue": 16, "rate_429": 0.02, "retry_after_s": 1.0},
            source="seedtable speed; capacity 8, queue 16, 2 % 429s chosen as knobs"),
    Profile(name="opencode",
            values={"ttft_ms": 50.0, "ttft_jitter_ms": 10.0, "tokens_per_s": 400.0,
                    "capacity": 64},
            source="fast answers so the opencode CLI itself is what is measured"),
)}


def profile_values(name: str) -> dict[str, Any]:
    """The config values of profile ``name``; ConfigError naming the known ones."""
    try:
        return dict(PROFILES[name].values)
    except KeyError:
        raise ConfigError("profile", name, f"one of {', '.join(PROFILES)}") from None
