"""``orchestra bench batch``: how long one maximal ``POST /tasks/batch`` stalls the loop.

A batch of ``tasks`` x ``paths`` distinct file paths (1,000 x 100 by default, the API's
maximum) goes to a fresh service running in this process, so that a probe task in the
service's own event loop sees every stall: it sleeps 1 ms at a time and records how
late it wakes. The request is sent from a worker thread with its body encoded
beforehand (the client's work shares the GIL, as any thread would, but not the loop).

The paths lie under real directories of the project root, one of them reached through
a link inside the root, so link resolution does real filesystem lookups. Figures per
run: the request's wall time, the longest single stall of the loop (``block_max_ms``:
what every other request waited at worst), the stalls over 5 ms added up
(``blocked_ms``), and whether every task was queued with its paths. A measurement, not
a test: it prints figures (``--json``), it asserts nothing about time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

__all__ = ["cli_main", "run_batch_bench"]

EMPLOYEES = 10
DIRS = 8  # top-level folders; the last one is a link to the first
STALL_MS = 5.0  # stalls above this are added up in blocked_ms
PROBE_S = 0.001


def make_tree(root: Path, tasks: int) -> None:
    """``d0..d6`` holding each task's folder, and ``d7`` -> ``d0`` (a link inside the
    root): every path's folders exist, so its last part is looked up too."""
    for t in range(tasks):
        (root / f"d{t % DIRS % (DIRS - 1)}" / f"t{t}").mkdir(parents=True, exist_ok=True)
    (root / f"d{DIRS - 1}").symlink_to(root / "d0", target_is_directory=True)


def batch_body(tasks: int, paths: int) -> dict[str, Any]:
    """``tasks`` items for ``EMPLOYEES`` employees, ``paths`` distinct paths each (all
    distinct across the batch, also after the link is resolved)."""
    return {"tasks": [
        {"name": f"e{t % EMPLOYEES}", "task": f"bench task {t}",
         "files": [f"d{t % DIRS}/t{t}/f{j}.py" for j in range(paths)]}
        for t in range(tasks)]}


def expected_files(tasks: int, paths: int) -> list[list[str]]:
    """Each task's paths as the service stores them (``d7/...`` is ``d0/...``)."""
    return [[f"d{t % DIRS % (DIRS - 1)}/t{t}/f{j}.py" for j in range(paths)]
            for t in range(tasks)]


class _StallProbe:
    """Sleeps ``PROBE_S`` in a loop; each wake's lateness is a stall of the loop."""

    def __init__(self) -> None:
        self.stalls_ms: list[float] = []

    async def run(self) -> None:
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(PROBE_S)
            self.stalls_ms.append(max(0.0, (time.perf_counter() - t0 - PROBE_S) * 1000.0))


@contextlib.asynccontextmanager
async def _probing() -> AsyncIterator[_StallProbe]:
    probe = _StallProbe()
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(probe.run(), name="stall-probe")
        try:
            yield probe
        finally:
            task.cancel()


def _post(port: int, path: str, body: bytes, timeout_s: float) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


async def _one_run(tmp: Path, tasks: int, paths: int, timeout_s: float) -> dict[str, Any]:
    from ..config import Settings
    from .app import Service

    root = tmp / "project"
    make_tree(root, tasks)
    body = json.dumps(batch_body(tasks, paths)).encode()
    settings = Settings.load(environ={}, overrides={
        "database.path": str(tmp / "bench.db"), "project_root": str(root),
        "server.host": "127.0.0.1", "server.port": 0, "server.requests_per_minute": 0,
        "server.max_body_bytes": len(body) + 65_536, "log_level": "WARNING",
        "agents.sim_latency_ms": 1000.0, "agents.sim_jitter_ms": 0.0})
    async with Service(settings) as svc:
        for e in range(EMPLOYEES):
            hire = json.dumps({"name": f"e{e}", "role": "dev"}).encode()
            await asyncio.to_thread(_post, svc.port, "/employees", hire, timeout_s)
        async with _probing() as probe:
            await asyncio.sleep(0.05)  # the probe's first samples: an idle loop
            t0 = time.perf_counter()
            status, raw = await asyncio.to_thread(_post, svc.port, "/tasks/batch", body,
                                                  timeout_s)
            request_s = time.perf_counter() - t0
        stored = await svc.state.require_store().list_tasks(limit=tasks)
    answer = json.loads(raw) if status == 200 else {}
    correct = [list(t.files) for t in stored] == expected_files(tasks, paths)
    stalls = probe.stalls_ms
    return {"status": status, "queued": sum(1 for i in answer.get("items", []) if i["ok"]),
            "correct": correct, "body_mb": round(len(body) / 2**20, 2),
            "request_s": round(request_s, 3),
            "block_max_ms": round(max(stalls, default=0.0), 1),
            "blocked_ms": round(sum(s for s in stalls if s > STALL_MS), 1),
            "probe_wakes": len(stalls)}


async def run_batch_bench(*, tasks: int = 1000, paths: int = 100, repeats: int = 3,
                          timeout_s: float = 120.0, progress: bool = False) -> dict[str, Any]:
    """Figures of ``repeats`` runs (each on a fresh service and tree) and their medians."""
    runs = []
    for r in range(repeats):
        with tempfile.TemporaryDirectory(prefix="orchestra-benchbatch-") as tmp:
            runs.append(await _one_run(Path(tmp), tasks, paths, timeout_s))
        if progress:
            print(f"run {r + 1}/{repeats}: {runs[-1]}", file=sys.stderr)
    median = {k: statistics.median(run[k] for run in runs)
              for k in ("request_s", "block_max_ms", "blocked_ms")}
    return {"tasks": tasks, "paths_per_task": paths, "distinct_paths": tasks * paths,
            "cpu_count": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
            **{f"median_{k}": v for k, v in median.items()},
            "all_correct": all(r["correct"] and r["status"] == 200 for r in runs),
            "runs": runs}


def cli_main(argv: list[str]) -> int:
    """``orchestra bench batch [--tasks N] [--paths N] [--repeats N] [--json]``."""
    p = argparse.ArgumentParser(prog="orchestra bench batch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, default=1000, help="tasks in the batch (max 1000)")
    p.add_argument("--paths", type=int, default=100, help="paths per task (max 100)")
    p.add_argument("--repeats", type=int, default=3, help="runs, each on a fresh service")
    p.add_argument("--quick", action="store_true", help="one run (--repeats 1)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args(argv)
    result = asyncio.run(run_batch_bench(tasks=args.tasks, paths=args.paths,
                                         repeats=1 if args.quick else args.repeats,
                                         progress=not args.json))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:<22} {value}")
    return 0 if result["all_correct"] else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(cli_main(sys.argv[1:]))
