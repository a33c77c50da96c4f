"""What the agents of one sweep point cost: per-task rows, the machine, leftovers.

Three sources, all read by the lab itself (so they work whatever runs the load):

- **The tasks** (``GET /tasks``, after the load ends, before the target stops): each
  task's ``usage`` (peak RSS, CPU seconds, start-up, wall time and exit status of an
  opencode process tree; TTFT, tokens, retries and LLM-bucket wait of an openai call)
  and its times (queued → started → finished). One row per task goes to the run's
  ``agents.csv`` (:data:`AGENT_COLUMNS`); assign-and-wait makes one task per request.
- **The machine** (:class:`MachineSampler`, every 0.5 s while the load runs):
  system-wide CPU busy %, available memory, and the processes below this one that are
  not Python (the agents and the tools they start: the service and the fake provider
  are Python), their count and summed RSS.
- **Leftovers** (:func:`leftover_processes`): processes still running in a point's
  workspace after its target stopped (a correct run leaves none).

:func:`agent_point_columns` folds all of it into ``agent_*``, ``task_*`` and
``machine_*`` columns of the point (:data:`AGENT_POINT_COLUMNS`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import psutil

__all__ = [
    "AGENT_COLUMNS",
    "AGENT_POINT_COLUMNS",
    "MachineSampler",
    "agent_point_columns",
    "append_agent_rows",
    "collect_task_rows",
    "count_files",
    "leftover_processes",
    "load_agents",
]

_USAGE = ("backend", "wall_s", "startup_s", "peak_rss_mb", "cpu_s", "processes", "exit_code",
          "ttft_ms", "tokens_out", "llm_calls", "retries", "bucket_wait_s")
AGENT_COLUMNS: tuple[str, ...] = (
    "run_id", "point", "repeat", "task_id", "employee", "status", "attempts",
    "queue_s", "run_s", "done_s", *_USAGE,
)  # fmt: skip
AGENT_POINT_COLUMNS: tuple[str, ...] = (
    "agent_tasks", "agent_peak_rss_mb_p50", "agent_peak_rss_mb_max", "agent_cpu_s_mean",
    "agent_cpu_per_wall", "agent_startup_s_p50", "agent_startup_s_p99", "agent_wall_s_p50",
    "agent_exit_nonzero", "agent_ttft_ms_p50", "agent_retries", "agent_bucket_wait_s_mean",
    "task_queue_s_p50", "task_done_s_p50", "task_done_s_p99", "files_found", "leftover_processes",
    "machine_cpu_pct_mean", "machine_cpu_pct_max", "machine_mem_available_min_mb",
    "machine_mem_total_mb", "machine_cores", "agents_alive_max", "agents_rss_max_mb",
)  # fmt: skip
_MB = 1024 * 1024
_PAGE = 10_000


class _Client(Protocol):
    async def request(self, method: str, path: str, json: Any = None) -> tuple[int, Any]: ...


def _task_row(task: Mapping[str, Any]) -> dict[str, Any]:
    created, started, finished = (task.get(k) for k in ("created_at", "started_at", "finished_at"))
    usage = task.get("usage") or {}
    row: dict[str, Any] = {
        "task_id": task["id"], "employee": task["employee"], "status": task["status"],
        "attempts": task["attempts"],
        "queue_s": started - created if started and created else math.nan,
        "run_s": finished - started if finished and started else math.nan,
        "done_s": finished - created if finished and created else math.nan,
    }
    row |= {k: usage.get(k, math.nan if k != "backend" else "") for k in _USAGE}
    return row


async def collect_task_rows(client: _Client) -> list[dict[str, Any]]:
    """Every task of the target, as :data:`AGENT_COLUMNS` rows (without the run keys)."""
    rows: list[dict[str, Any]] = []
    while True:
        status, body = await client.request("GET", f"/tasks?limit={_PAGE}&offset={len(rows)}")
        tasks = body.get("tasks", []) if status == 200 and isinstance(body, dict) else []
        rows.extend(_task_row(t) for t in tasks)
        if len(tasks) < _PAGE:
            return rows


def _agent_processes(me: psutil.Process) -> list[psutil.Process]:
    try:
        kids = me.children(recursive=True)
    except psutil.Error:
        return []
    out = []
    for proc in kids:
        with contextlib.suppress(psutil.Error):
            if not proc.name().lower().startswith("python"):
                out.append(proc)
    return out


class MachineSampler:
    """CPU, memory and the agent processes below this one, sampled while a block runs."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self.cpu: list[float] = []
        self.available: list[int] = []
        self.alive_max = 0
        self.rss_max = 0
        self._me = psutil.Process(os.getpid())

    def sample(self) -> None:
        """One sample (blocking: a /proc walk)."""
        self.cpu.append(psutil.cpu_percent(None))
        self.available.append(psutil.virtual_memory().available)
        rss, alive = 0, 0
        for proc in _agent_processes(self._me):
            with contextlib.suppress(psutil.Error):
                rss += proc.memory_info().rss
                alive += 1
        self.alive_max = max(self.alive_max, alive)
        self.rss_max = max(self.rss_max, rss)

    @contextlib.asynccontextmanager
    async def sampling(self) -> AsyncIterator[MachineSampler]:
        """Sample every ``interval_s`` in a thread while the block runs."""
        psutil.cpu_percent(None)  # start the CPU window
        task = asyncio.create_task(self._loop())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await asyncio.to_thread(self.sample)

    def columns(self) -> dict[str, Any]:
        """The ``machine_*`` and ``agents_*`` columns."""
        cpu = self.cpu[1:] or self.cpu  # the first window may include the set-up
        return {
            "machine_cpu_pct_mean": round(sum(cpu) / len(cpu), 1) if cpu else math.nan,
            "machine_cpu_pct_max": max(cpu) if cpu else math.nan,
            "machine_mem_available_min_mb": round(min(self.available) / _MB, 1)
            if self.available else math.nan,
            "machine_mem_total_mb": round(psutil.virtual_memory().total / _MB, 1),
            "machine_cores": psutil.cpu_count() or 1,
            "agents_alive_max": self.alive_max,
            "agents_rss_max_mb": round(self.rss_max / _MB, 1),
        }


def leftover_processes(folder: str | Path) -> list[int]:
    """Pids of processes whose working folder is ``folder`` or below it (should be none)."""
    root = str(Path(folder))
    found = []
    for proc in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error):
            cwd = proc.cwd()
            if cwd == root or cwd.startswith(root + os.sep):
                found.append(proc.pid)
    return found


def count_files(folder: str | Path, pattern: str) -> int:
    """Files matching ``*/pattern`` under ``folder`` (one level: the employees' workspaces)."""
    base = Path(folder)
    return sum(1 for p in base.glob(f"*/{pattern}") if p.is_file()) if base.is_dir() else 0


def _pct(values: Sequence[float], q: float) -> float:
    clean = sorted(v for v in values if isinstance(v, int | float) and not math.isnan(v))
    if not clean:
        return math.nan
    return clean[min(len(clean) - 1, max(0, math.ceil(q / 100 * len(clean)) - 1))]


def _mean(values: Sequence[float]) -> float:
    clean = [v for v in values if isinstance(v, int | float) and not math.isnan(v)]
    return math.fsum(clean) / len(clean) if clean else math.nan


def agent_point_columns(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The ``agent_*`` and ``task_*`` columns of a point from its task rows."""
    col = {k: [r[k] for r in rows] for k in ("peak_rss_mb", "cpu_s", "startup_s", "wall_s",
                                             "ttft_ms", "retries", "bucket_wait_s", "queue_s",
                                             "done_s")}
    cpu, wall = _mean(col["cpu_s"]), _mean(col["wall_s"])
    exits = [r["exit_code"] for r in rows if isinstance(r["exit_code"], int | float)
             and not math.isnan(r["exit_code"])]
    retries = [r for r in col["retries"] if isinstance(r, int | float) and not math.isnan(r)]
    return {
        "agent_tasks": len(rows),
        "agent_peak_rss_mb_p50": _pct(col["peak_rss_mb"], 50),
        "agent_peak_rss_mb_max": _pct(col["peak_rss_mb"], 100),
        "agent_cpu_s_mean": cpu,
        "agent_cpu_per_wall": cpu / wall if wall and not math.isnan(wall) else math.nan,
        "agent_startup_s_p50": _pct(col["startup_s"], 50),
        "agent_startup_s_p99": _pct(col["startup_s"], 99),
        "agent_wall_s_p50": _pct(col["wall_s"], 50),
        "agent_exit_nonzero": sum(1 for e in exits if e != 0),
        "agent_ttft_ms_p50": _pct(col["ttft_ms"], 50),
        "agent_retries": int(sum(retries)),
        "agent_bucket_wait_s_mean": _mean(col["bucket_wait_s"]),
        "task_queue_s_p50": _pct(col["queue_s"], 50),
        "task_done_s_p50": _pct(col["done_s"], 50),
        "task_done_s_p99": _pct(col["done_s"], 99),
    }


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    import csv

    new = not path.exists()
    with path.open("a", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(AGENT_COLUMNS), extrasaction="raise")
        if new:
            writer.writeheader()
        writer.writerows(rows)


async def append_agent_rows(run_dir: Path, run_id: str, point: int, repeat: int,
                            rows: Sequence[Mapping[str, Any]]) -> None:
    """Append a point's task rows to ``run_dir/agents.csv`` (in a thread)."""
    full = [{"run_id": run_id, "point": point, "repeat": repeat, **r} for r in rows]
    await asyncio.to_thread(_write_rows, Path(run_dir) / "agents.csv", full)


def load_agents(run_dir: str | Path) -> Any:
    """``agents.csv`` of a run as a DataFrame (empty with the columns when absent)."""
    import pandas as pd

    path = Path(run_dir) / "agents.csv"
    if not path.exists():
        return pd.DataFrame(columns=list(AGENT_COLUMNS))
    return pd.read_csv(path, dtype={"backend": str, "status": str, "employee": str},
                       keep_default_na=False, na_values={c: [""] for c in AGENT_COLUMNS
                                                         if c not in ("backend", "status",
                                                                      "employee")})
