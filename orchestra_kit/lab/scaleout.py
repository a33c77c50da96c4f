"""``orchestra bench scaleout``: throughput and latency vs service instances.

One SQLite instance, then 1..N instances (``orchestra serve --workers N``, one port,
``SO_REUSEPORT``) on one throwaway PostgreSQL (:class:`~orchestra_kit.store.pgserver.PgServer`,
a fresh schema per point). Each point runs the same closed-loop scenarios as
``orchestra bench http`` (a minimal keep-alive HTTP/1.1 client, bounded by time and
count) in this process while the service runs in its own processes, then the USL is
fitted over the PostgreSQL points. Everything shares this machine's cores: read the
figures as "what one box does", and compare ratios within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from ..childproc import terminate
from ..server.benchgen import closed_loop, raise_fd_limit
from ..store.pgserver import PgServer, free_port
from .plot_common import new_figure
from .usl import fit_usl

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = ["cli_main", "plot_scaleout", "run_scaleout_bench", "scaleout_frame"]

Say = Callable[[str], None]
_OPS = ("hire", "read", "assign")


def _body(obj: Any) -> bytes:
    return json.dumps(obj).encode()


async def _wait_healthy(url: str, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            try:
                async with s.get(url + "/health") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"the service at {url} did not become healthy in {timeout_s:g} s")


async def _point(db: str, workers: int, root: Path, duration_s: float,
                 concurrency: int) -> dict[str, Any]:
    """Start the service, warm it up, run the scenarios, stop it (SIGTERM drain)."""
    port = free_port()
    argv = [sys.executable, "-m", "orchestra_kit", "serve", "--db", db, "--port", str(port),
            "--project-root", str(root), "--set", "log_level=WARNING",
            "--set", "server.requests_per_minute=0",
            "--set", "scheduler.max_api_requests_per_minute=1000000",
            "--set", "scheduler.api_burst=100000", "--set", "agents.sim_latency_ms=5",
            "--set", "agents.sim_jitter_ms=0", "--set", "scheduler.progress_files=false"]
    if workers > 1:
        argv += ["--workers", str(workers)]
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        await _wait_healthy(url)
        await asyncio.sleep(1.0 if workers > 1 else 0.2)  # the last workers bind too
        big = 10**9
        team = [{"name": f"t{i}", "role": "dev"} for i in range(256)]
        async with aiohttp.ClientSession() as s, s.post(
                url + "/employees/batch", json={"employees": team}) as r:
            if r.status != 200:
                raise RuntimeError(f"setup: POST /employees/batch answered {r.status}")
        out = {
            "hire": await closed_loop(
                url, lambda i: ("POST", "/employees", _body({"name": f"h{i}", "role": "dev"})),
                concurrency=concurrency, duration_s=duration_s, max_requests=big),
            "read": await closed_loop(
                url, lambda i: ("GET", f"/employees/t{i % 256}", None),
                concurrency=concurrency, duration_s=duration_s, max_requests=big),
            "assign": await closed_loop(
                url, lambda i: ("POST", "/tasks", _body({"name": f"t{i % 256}", "task": "b"})),
                concurrency=concurrency, duration_s=duration_s, max_requests=big),
        }
    finally:
        await terminate(proc)
    return out


def _usl(points: list[dict[str, Any]], op: str) -> dict[str, Any]:
    pg = [p for p in points if p["database"] == "postgresql"]
    if len({p["instances"] for p in pg}) < 4:
        return {"fitted": False, "reason": "the USL needs at least 4 instance counts"}
    fit = fit_usl([p["instances"] for p in pg], [p[op]["rps"] for p in pg], bootstrap=200)
    return {"fitted": True, "lambda": fit.lam, "sigma": fit.sigma, "kappa": fit.kappa,
            "summary": fit.summary()}


async def run_scaleout_bench(*, instances: tuple[int, ...] = (1, 2, 3, 4),
                             duration_s: float = 3.0, concurrency: int = 64,
                             pg_url: str | None = None,
                             say: Say = lambda _m: None) -> dict[str, Any]:
    """The figures: one row per (database, instances), and USL fits per operation.

    ``pg_url``: an existing PostgreSQL to use (a fresh schema per point) instead of a
    throwaway cluster."""
    raise_fd_limit()
    points: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="orchestra-scaleout-") as tmp:
        root = Path(tmp)
        say("sqlite x1 ...")
        row = await _point(str(root / "sqlite.db"), 1, root, duration_s, concurrency)
        points.append({"database": "sqlite", "instances": 1, **row})
        async with contextlib.AsyncExitStack() as stack:
            if pg_url is None:
                pg_url = (await stack.enter_async_context(PgServer())).url
            for n in instances:
                say(f"postgresql x{n} ...")
                db = f"{pg_url}?search_path=s_{uuid.uuid4().hex[:8]}"
                row = await _point(db, n, root, duration_s, concurrency)
                points.append({"database": "postgresql", "instances": n, **row})
    return {"points": points, "usl": {op: _usl(points, op) for op in ("hire", "read", "assign")},
            "duration_s": duration_s, "concurrency": concurrency}


def scaleout_frame(result: dict[str, Any]) -> pd.DataFrame:
    """One row per (database, instances, op): rps, p50_ms, p99_ms, ok, requests."""
    import pandas as pd

    rows = [{"database": p["database"], "instances": p["instances"], "op": op,
             **{k: p[op][k] for k in ("rps", "p50_ms", "p99_ms", "ok", "requests")}}
            for p in result["points"] for op in _OPS]
    return pd.DataFrame(rows)


def plot_scaleout(frame: pd.DataFrame) -> Figure:
    """Throughput vs PostgreSQL instances per operation; SQLite's one instance dashed."""
    fig, ax = new_figure()
    for i, op in enumerate(_OPS):
        rows = frame[frame["op"] == op]
        pg = rows[rows["database"] == "postgresql"].sort_values("instances")
        ax.plot(pg["instances"], pg["rps"], marker="o", color=f"C{i}",
                label=f"{op} (PostgreSQL)")
        lite = rows[rows["database"] == "sqlite"]["rps"]
        if len(lite):
            ax.axhline(float(lite.iloc[0]), color=f"C{i}", linestyle="--",
                       label=f"{op} (one SQLite)")
    ax.set_xlabel("service instances")
    ax.set_ylabel("throughput (req/s)")
    ax.set_title("Throughput vs instances")
    ax.legend(fontsize="small")
    return fig


def _table(result: dict[str, Any]) -> str:
    lines = [f"{'database':<11}{'inst':>5}" + "".join(
        f"{op + ' rps':>12}{'p99 ms':>9}" for op in ("hire", "read", "assign"))]
    for p in result["points"]:
        lines.append(f"{p['database']:<11}{p['instances']:>5}" + "".join(
            f"{p[op]['rps']:>12.0f}{p[op]['p99_ms']:>9.1f}" for op in ("hire", "read", "assign")))
    for op, fit in result["usl"].items():
        lines.append(f"USL {op}: {fit.get('summary', fit.get('reason'))}")
    return "\n".join(lines)


def cli_main(argv: list[str]) -> int:
    """Entry point of ``orchestra bench scaleout``."""
    p = argparse.ArgumentParser(prog="orchestra bench scaleout", description=__doc__.split("\n")[0])
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--quick", action="store_true", help="1 s per scenario, 1/2/3/4 instances")
    p.add_argument("--duration", type=float, default=3.0, help="seconds per scenario")
    p.add_argument("--concurrency", type=int, default=64, help="closed-loop workers")
    args = p.parse_args(argv)
    duration = 1.0 if args.quick else args.duration
    result = asyncio.run(run_scaleout_bench(
        duration_s=duration, concurrency=args.concurrency,
        say=(lambda m: print(m, file=sys.stderr, flush=True))))
    print(json.dumps(result, indent=2, default=str) if args.json else _table(result))
    return 0
