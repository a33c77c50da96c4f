"""The chat lab: ack, first-reply and completion latency of Slack mentions vs users.

``await run_chat_sweep(spec)`` runs an experiment whose workload is ``chat`` (see
:mod:`.workload_chat`): for each number of users, a fake Slack, a fresh chat-enabled
service (``orchestra serve`` as a child process unless the spec's target says
``inprocess``), the team hired, then a closed loop of users each posting a signed
mention and waiting for the completion message in its thread. It returns one row per
point (percentiles of the three times, acks over Slack's 3 s, throughput) and saves
``points.csv``, ``messages.csv`` and ``manifest.json`` under
``results/NAME/chat-RUN_ID/``. ``chat_demo`` shows one conversation, post by post.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from ..config import Settings
from .loadgen import ClosedLoop, run_load
from .spec import ExperimentSpec, SweepPoint, WorkloadSpec
from .target import open_target
from .workload_chat import ChatTiming, ChatWorkload

__all__ = ["SLACK_ACK_LIMIT_MS", "chat_demo", "cli_main", "load_chat_run", "run_chat_point",
           "run_chat_sweep", "summarise_timings"]

SLACK_ACK_LIMIT_MS = 3000.0


def _pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of the finite values (nan when there are none)."""
    xs = sorted(v for v in values if math.isfinite(v))
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, max(0, math.ceil(q / 100.0 * len(xs)) - 1))]


def summarise_timings(timings: Sequence[ChatTiming], elapsed_s: float) -> dict[str, Any]:
    """One row: counts, p50/p99/max of each time, acks over 3 s, completions per second."""
    row: dict[str, Any] = {"messages": len(timings),
                           "completed": sum(t.outcome == "completed" for t in timings)}
    for name in ("ack_ms", "first_reply_ms", "completion_ms"):
        values = [getattr(t, name) for t in timings]
        for q in (50, 90, 99):
            row[f"{name[:-3]}_p{q}_ms"] = round(_pct(values, q), 3)
        row[f"{name[:-3]}_max_ms"] = round(_pct(values, 100), 3)
    row["acks_over_3s"] = sum(t.ack_ms > SLACK_ACK_LIMIT_MS for t in timings)
    row["completions_per_s"] = round(row["completed"] / elapsed_s, 3) if elapsed_s > 0 else 0.0
    return row


@contextlib.asynccontextmanager
async def _chat_target(workload: ChatWorkload, overrides: dict[str, Any],
                       kind: str) -> AsyncIterator[Any]:
    """The workload's fake Slack, a fresh chat-enabled target (``process``: ``orchestra
    serve`` as a child; ``inprocess``) and a client; all closed after."""
    from ..client import OrchestraClient

    async with (workload.environment() as chat_settings,
                open_target(kind, overrides={**overrides, **chat_settings}) as target,
                OrchestraClient(target.url) as client):
        yield client


async def run_chat_point(users: int, *, workload: WorkloadSpec | None = None,
                         overrides: dict[str, Any] | None = None, duration_s: float = 2.0,
                         max_requests: int = 10_000, seed: int = 0, progress: bool = False,
                         target: str = "process") -> tuple[dict[str, Any], list[ChatTiming]]:
    """One point: ``users`` closed-loop users for ``duration_s``; its row and timings."""
    spec = workload or WorkloadSpec(kind="chat", team_size=max(1, min(users, 20)))
    chat = ChatWorkload(spec, seed)
    async with _chat_target(chat, dict(overrides or {}), target) as client:
        await chat.setup(client)
        t0 = time.perf_counter()
        await run_load(chat.operation(client), ClosedLoop(users=users), duration_s=duration_s,
                       max_requests=max_requests, seed=seed, progress=progress,
                       label=f"chat, {users} users")
        elapsed = time.perf_counter() - t0
    return {"users": users, **summarise_timings(chat.timings, elapsed)}, chat.timings


def _point_overrides(point: SweepPoint) -> dict[str, Any]:
    return dict(point.settings_overrides)


async def run_chat_sweep(spec: ExperimentSpec, *, results_root: str | Path = "results",
                         progress: bool = False) -> tuple[list[dict[str, Any]], Path]:
    """Every point of a ``chat`` experiment; the rows and the results folder."""
    run_dir = Path(results_root) / spec.name / time.strftime("chat-%Y%m%dT%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=False)
    rows: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    for point in spec.points():
        for repeat in range(spec.repeats):
            seed = spec.seed + 1_000 * point.index + repeat
            row, timings = await run_chat_point(
                point.load.users, workload=point.workload, overrides=_point_overrides(point),
                duration_s=point.load.duration_s, max_requests=point.load.max_requests,
                seed=seed, progress=progress, target=spec.target.kind)
            rows.append({"point": point.index, "repeat": repeat, **row})
            messages += [{"point": point.index, "repeat": repeat, "users": point.load.users,
                          **dataclasses.asdict(t)} for t in timings]
    _write(run_dir, spec, rows, messages)
    return rows, run_dir


def _write(run_dir: Path, spec: ExperimentSpec, rows: list[dict[str, Any]],
           messages: list[dict[str, Any]]) -> None:
    import pandas as pd

    pd.DataFrame(rows).to_csv(run_dir / "points.csv", index=False)
    pd.DataFrame(messages).to_csv(run_dir / "messages.csv", index=False)
    manifest = {"name": spec.name, "source": spec.source, "seed": spec.seed,
                "settings": Settings().with_overrides(spec.target.settings).to_dict(),
                "kind": "chat"}
    (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))


async def chat_demo(messages: Sequence[str], *, team: Sequence[str] = ("alice", "bob"),
                    overrides: dict[str, Any] | None = None, timeout_s: float = 10.0,
                    target: str = "inprocess") -> list[dict[str, Any]]:
    """A team in a channel: post each message (in turn), return every post in its thread."""
    chat = ChatWorkload(WorkloadSpec(kind="chat", team_size=1), 0)
    out: list[dict[str, Any]] = []
    async with _chat_target(chat, dict(overrides or {}), target) as client:
        for name in team:
            await client.request("POST", "/employees", {"name": name, "role": "developer"})
        for k, text in enumerate(messages):
            out += await chat.converse(client, text, user=f"UDEMO{k}", timeout_s=timeout_s)
    return out


_COLUMNS = ("users", "messages", "completed", "ack_p50_ms", "ack_p99_ms", "first_reply_p50_ms",
            "first_reply_p99_ms", "completion_p50_ms", "completion_p99_ms", "acks_over_3s",
            "completions_per_s")


def _table(rows: Sequence[dict[str, Any]]) -> str:
    lines = [" ".join(f"{c:>18}" for c in _COLUMNS)]
    lines += [" ".join(f"{r.get(c, ''):>18}" for c in _COLUMNS) for r in rows]
    return "\n".join(lines)


def cli_main(argv: list[str]) -> int:
    """``orchestra chat-lab SPEC.toml [--set key=value ...] [--results DIR] [--json]``."""
    import argparse
    import asyncio
    import sys

    from ..errors import OrchestraError
    from .cli import parse_set
    from .spec import load_spec

    parser = argparse.ArgumentParser(prog="orchestra chat-lab", description=cli_main.__doc__)
    parser.add_argument("spec", help="a chat experiment (experiments/chat_sweep.toml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--results", default="results", help="results root (default: results/)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    try:
        spec = load_spec(args.spec, parse_set(args.set))
        if spec.workload.kind != "chat":
            raise OrchestraError(f"{args.spec}: workload.kind is {spec.workload.kind!r}, "
                                 "not 'chat'")
        rows, run_dir = asyncio.run(run_chat_sweep(spec, results_root=args.results,
                                                   progress=not args.json))
    except OrchestraError as exc:
        print(f"orchestra chat-lab: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(rows, indent=2) if args.json else f"{_table(rows)}\n\nsaved in {run_dir}")
    return 0


def load_chat_run(run_dir: str | Path) -> tuple[Any, Any]:
    """``(points, messages)`` DataFrames of a saved chat run (re-plot without re-running)."""
    import pandas as pd

    path = Path(run_dir)
    return pd.read_csv(path / "points.csv"), pd.read_csv(path / "messages.csv")
