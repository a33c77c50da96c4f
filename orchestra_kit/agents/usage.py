"""What one agent run cost: process accounting (opencode) and LLM call accounting (openai).

:class:`AgentUsage` travels with a run's outcome (``AgentResult.usage``, or the ``usage``
attribute of the :class:`~orchestra_kit.errors.AgentError` a failed run raises); the
scheduler stores it on the task (``Task.usage``) and folds it into a
:class:`UsageAggregate`, whose :meth:`~UsageAggregate.summary` is the ``agent_usage``
block of ``/performance``. Fields a backend cannot measure stay ``None`` and are left
out of :meth:`AgentUsage.to_dict`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["USAGE_FIELDS", "AgentUsage", "UsageAggregate"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentUsage:
    """The measured cost of one run (``None`` = not measured by this backend)."""

    backend: str
    wall_s: float | None = None  # the whole run, as the backend saw it
    # opencode: the sampled process tree (the CLI plus the tool commands it starts)
    startup_s: float | None = None  # spawn -> the first line on stdout (first event)
    peak_rss_mb: float | None = None  # highest sum of the tree's resident memory
    cpu_s: float | None = None  # user + system seconds of every process seen
    processes: int | None = None  # most processes alive at once in the tree
    samples: int | None = None  # how many times the tree was sampled
    exit_code: int | None = None  # the CLI's exit status (negative: killed by a signal)
    # openai: the LLM call
    ttft_ms: float | None = None
    tokens_out: int | None = None
    llm_calls: int | None = None  # HTTP attempts made
    retries: int | None = None
    bucket_wait_s: float | None = None  # time spent waiting for the shared LLM token bucket

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, without the fields that were not measured."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AgentUsage:
        """The inverse of :meth:`to_dict` (unknown keys are ignored)."""
        known = {k: v for k, v in data.items() if k in USAGE_FIELDS}
        return cls(**{"backend": str(data.get("backend", "unknown")), **known})


USAGE_FIELDS: tuple[str, ...] = (
    "backend", "wall_s", "startup_s", "peak_rss_mb", "cpu_s", "processes", "samples",
    "exit_code", "ttft_ms", "tokens_out", "llm_calls", "retries", "bucket_wait_s",
)  # fmt: skip
_SUMMARISED = ("wall_s", "startup_s", "peak_rss_mb", "cpu_s", "processes", "ttft_ms",
               "tokens_out", "retries", "bucket_wait_s")


def _rank(sorted_values: list[float], q: float) -> float:
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


class UsageAggregate:
    """The last ``keep`` runs' usage, summarised per field (count, mean, p50, p99, max)."""

    def __init__(self, keep: int = 10_000) -> None:
        self._recent: deque[AgentUsage] = deque(maxlen=keep)
        self.total = 0
        self.failed_exits = 0

    def add(self, usage: AgentUsage) -> None:
        """Record one run."""
        self._recent.append(usage)
        self.total += 1
        if usage.exit_code not in (None, 0):
            self.failed_exits += 1

    def summary(self) -> dict[str, Any]:
        """``{runs, failed_exits, backends, <field>: {n, mean, p50, p99, max}}``."""
        out: dict[str, Any] = {"runs": self.total, "failed_exits": self.failed_exits,
                               "window": len(self._recent),
                               "backends": sorted({u.backend for u in self._recent})}
        for name in _SUMMARISED:
            values = sorted(float(v) for u in self._recent
                            if (v := getattr(u, name)) is not None)
            if values:
                out[name] = {"n": len(values), "mean": round(math.fsum(values) / len(values), 4),
                             "p50": round(_rank(values, 50), 4),
                             "p99": round(_rank(values, 99), 4), "max": round(values[-1], 4)}
        return out
