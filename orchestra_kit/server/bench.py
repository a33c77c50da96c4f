"""``orchestra bench http``: the HTTP API against a minimal aiohttp app, same generator.

The server under test runs in a child process (so the load generator does not share
its event loop), on loopback, with a fresh database, the simulated backend, the
per-client rate limit off and an LLM bucket too large to matter. One closed-loop
generator (N workers, each on its own keep-alive connection, bounded by time and
count; :mod:`.benchgen`) drives each scenario:

- a minimal aiohttp "hello" app on the API's default event loop: the physical limit of
  this machine and generator;
- GET /employees/{name}, GET /health and GET /employees?limit=100 (64 concurrent);
- POST /employees and POST /tasks at 256 concurrent (throughput and p99);
- 2,000 connections opened and held at once, each sending GET /health;
- the ablation: GET /employees/{name} (answered from cached bytes) and GET /health
  (encoded on every request) on a fresh server for each of ``server.event_loop`` ×
  ``server.json_encoder``, in this same run.

Every ``*_vs_hello_ratio`` divides by the hello figure of the same run. ``--profile DIR``
samples the server with py-spy during each scenario (collapsed stacks + top frames).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import tempfile
from collections.abc import Callable
from itertools import product
from pathlib import Path
from typing import Any

import psutil
from aiohttp import web

from .benchgen import (
    ChildServer,
    RawConnection,
    Request,
    closed_loop,
    hold_connections,
    host_port,
    profiled,
    raise_fd_limit,
)

__all__ = ["RawConnection", "cli_main", "closed_loop", "run_http_bench"]

TEAM = 256
Spec = tuple[int, Callable[[int], Request]]
Planned = tuple[str, ChildServer, str, Spec]
LOOPS = ("asyncio", "uvloop")
ENCODERS = ("stdlib", "orjson")
# A read served from the encoded-answer cache (the loop's share) and one encoded on every
# request (the encoder's share): the cached 100-row list would not show the encoder.
ABLATION_READS = ("get_employee", "health")

# ---------------------------------------------------------------------- child process


async def _hello(request: web.Request) -> web.Response:
    return web.Response(text="hello")


async def _serve_hello(stop: asyncio.Event, freeze: bool = False) -> None:
    from .loops import freeze_startup_objects

    app = web.Application()
    app.router.add_get("/", _hello)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, backlog=4096).start()
    if freeze:
        freeze_startup_objects()
    print(runner.addresses[0][1], flush=True)
    await stop.wait()
    await runner.cleanup()


def _child_settings(db_dir: str, pairs: list[str]) -> Any:
    from ..config import Settings

    overrides: dict[str, Any] = {
        "database.path": f"{db_dir}/bench.db", "project_root": db_dir, "server.port": 0,
        "server.requests_per_minute": 0, "scheduler.max_api_requests_per_minute": 1e9,
        "scheduler.api_burst": 1_000_000, "scheduler.max_concurrent_tasks": 256,
        "agents.sim_latency_ms": 5, "agents.sim_jitter_ms": 1, "log_level": "WARNING"}
    for pair in pairs:
        key, _, value = pair.partition("=")
        overrides[key] = value
    return Settings.load(environ={}, overrides=overrides)


async def _serve_child(kind: str, settings: Any) -> None:
    """Serve until SIGTERM; the port goes to stdout first. Both servers get the
    process settings ``orchestra serve`` applies (event loop, collector)."""
    from .loops import freeze_startup_objects

    raise_fd_limit()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    freeze = settings.server.gc_freeze
    if kind == "hello":
        await _serve_hello(stop, freeze)
        return
    from .app import Service

    async with Service(settings) as svc:
        if freeze:
            freeze_startup_objects()
        print(svc.port, flush=True)
        await stop.wait()


def _child_main(argv: list[str]) -> None:
    from .loops import run, tune_gc

    kind, db_dir, *pairs = argv
    settings = _child_settings(db_dir, pairs)
    tune_gc(settings.server.gc_young_threshold)
    run(_serve_child(kind, settings), settings.server.event_loop)


# ---------------------------------------------------------------------- scenarios


def _cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def _body(obj: Any) -> bytes:
    return json.dumps(obj).encode()


READS: dict[str, tuple[int, Callable[[int], Request]]] = {
    "get_employee": (64, lambda i: ("GET", f"/employees/b{i % TEAM}", None)),
    "health": (64, lambda i: ("GET", "/health", None)),
    "list100": (64, lambda i: ("GET", "/employees?limit=100", None)),
}
WRITES: dict[str, tuple[int, Callable[[int], Request]]] = {
    "hire": (256, lambda i: ("POST", "/employees", _body({"name": f"h{i}", "role": "dev"}))),
    "assign": (256, lambda i: ("POST", "/tasks", _body({"name": f"b{i % TEAM}",
                                                          "task": "bench"}))),
}


class _Run:
    """One bench run: duration, rounds, progress messages, optional profile folder."""

    def __init__(self, duration_s: float, rounds: int, progress: bool,
                 profile: Path | None) -> None:
        self.duration_s = duration_s
        self.rounds = rounds
        self.progress = progress
        self.profile = profile

    def say(self, msg: str) -> None:
        if self.progress:
            print(f"bench http: {msg}", file=sys.stderr, flush=True)

    async def scenario(self, server: ChildServer, name: str,
                       spec: tuple[int, Callable[[int], Request]], tag: str = "",
                       duration_s: float | None = None, file: str = "") -> dict[str, Any]:
        concurrency, make = spec
        duration_s = duration_s or self.duration_s
        self.say(f"{name}{tag} at {concurrency} ...")
        file = file or name
        proc = psutil.Process(server.pid)
        cpu0 = _cpu_s(proc)
        async with profiled(server.pid, self.profile, file, duration_s):
            res = await closed_loop(server.url, make, concurrency=concurrency,
                                    duration_s=duration_s, max_requests=10**9)
        # The server's own CPU per answer: unlike req/s, hardly moved by other
        # processes on a shared machine.
        res["server_cpu_us_per_req"] = (_cpu_s(proc) - cpu0) * 1e6 / max(res["requests"], 1)
        return res

    async def interleaved(self, plan: list[Planned]) -> dict[str, dict[str, Any]]:
        """Each (key, server, name, spec) once per round, rounds back to back, each a
        share of the duration; per key the round with the median throughput. A shared
        machine drifts: interleaving keeps the ratios of one run comparable."""
        runs: dict[str, list[dict[str, Any]]] = {key: [] for key, *_ in plan}
        share = self.duration_s / self.rounds
        for r in range(self.rounds):
            for key, server, name, spec in plan:
                tag = f" [{key}, round {r + 1}/{self.rounds}]"
                runs[key].append(await self.scenario(server, name, spec, tag, share,
                                                     f"{key}_round{r + 1}"))
        return {key: sorted(rs, key=lambda x: x["rps"])[len(rs) // 2]
                for key, rs in runs.items()}


async def _team(url: str) -> None:
    setup = RawConnection(*host_port(url))
    employees = [{"name": f"b{i}", "role": "dev"} for i in range(TEAM)]
    status = await setup.request("POST", "/employees/batch", _body({"employees": employees}))
    await setup.aclose()
    if status != 200:
        raise RuntimeError(f"bench setup: POST /employees/batch answered {status}")


async def _main_scenarios(run: _Run, tmp: str, default_loop: str) -> dict[str, Any]:
    """Hello and the reads interleaved in rounds; then the writes and 2000 connections."""
    db = Path(tmp) / "api"
    db.mkdir()
    async with (ChildServer("hello", tmp, {"server.event_loop": default_loop}) as hello,
                ChildServer("api", str(db)) as api):
        await _team(api.url)
        hello_spec: tuple[int, Callable[[int], Request]] = (64, lambda i: ("GET", "/", None))
        plan = [("hello", hello, "hello", hello_spec)]
        plan += [(name, api, name, spec) for name, spec in READS.items()]
        out: dict[str, Any] = await run.interleaved(plan)
        for name, spec in WRITES.items():
            out[name] = await run.scenario(api, name, spec)
        run.say("2000 connections ...")
        out["conn2000_ok_pct"] = await hold_connections(api.url, 2000)
    return out


async def _ablation(run: _Run, tmp: str) -> dict[str, dict[str, Any]]:
    """Reads on a server for each event loop × JSON encoder, interleaved in rounds."""
    async with contextlib.AsyncExitStack() as stack:
        plan: list[Planned] = []
        for loop, encoder in product(LOOPS, ENCODERS):
            tag = f"{loop}_{encoder}"
            db = Path(tmp) / tag
            db.mkdir()
            server = await stack.enter_async_context(ChildServer(
                "api", str(db), {"server.event_loop": loop, "server.json_encoder": encoder}))
            await _team(server.url)
            plan += [(f"{tag}_{name}", server, name, READS[name])
                     for name in ABLATION_READS]
        return await run.interleaved(plan)


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else 0.0


def _ablation_keys(abl: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Per configuration: req/s and the server's CPU µs per request; then each knob's
    speed-up, the mean over the other knob's values and both reads, by req/s and by CPU
    (the CPU figure barely moves when other processes load the machine)."""
    out: dict[str, float] = {}
    for k, v in abl.items():
        out[f"ablation_{k}_rps"] = round(v["rps"], 1)
        out[f"ablation_{k}_cpu_us_per_req"] = round(v["server_cpu_us_per_req"], 1)

    def speedup(fast: str, slow: str, others: tuple[str, ...], metric: str) -> float:
        ratios = []
        for other, read in product(others, ABLATION_READS):
            f = abl[_tag(fast, other) + f"_{read}"][metric]
            s = abl[_tag(slow, other) + f"_{read}"][metric]
            if f and s:
                ratios.append(f / s if metric == "rps" else s / f)
        return round(sum(ratios) / len(ratios), 3) if ratios else 0.0

    for fast, slow, others in (("uvloop", "asyncio", ENCODERS), ("orjson", "stdlib", LOOPS)):
        out[f"{fast}_speedup"] = speedup(fast, slow, others, "rps")
        out[f"{fast}_cpu_speedup"] = speedup(fast, slow, others, "server_cpu_us_per_req")
    return out


def _tag(a: str, b: str) -> str:
    """``loop_encoder`` whichever order the two are given in."""
    return f"{a}_{b}" if a in LOOPS else f"{b}_{a}"


def _figures(hello: dict[str, Any], res: dict[str, Any]) -> dict[str, Any]:
    h = hello["rps"]
    read = min(res["get_employee"]["rps"], res["health"]["rps"])
    return {
        "hello_rps": round(h, 1),
        "get_employee_rps": round(res["get_employee"]["rps"], 1),
        "health_rps": round(res["health"]["rps"], 1),
        "read_vs_hello_ratio": _ratio(read, h),
        "list100_rps": round(res["list100"]["rps"], 1),
        "list100_vs_hello_ratio": _ratio(res["list100"]["rps"], h),
        "hire_rps_c256": round(res["hire"]["rps"], 1),
        "hire_p99_ms_c256": round(res["hire"]["p99_ms"], 2),
        "hire_vs_hello_ratio": _ratio(res["hire"]["rps"], h),
        "assign_rps_c256": round(res["assign"]["rps"], 1),
        "assign_p99_ms_c256": round(res["assign"]["p99_ms"], 2),
        "assign_vs_hello_ratio": _ratio(res["assign"]["rps"], h),
        "conn2000_ok_pct": round(res["conn2000_ok_pct"], 2),
        **{f"{k}_cpu_us_per_req": round(v["server_cpu_us_per_req"], 1)
           for k, v in [("hello", hello), *res.items()] if isinstance(v, dict)},
        "read_cpu_vs_hello_ratio": _ratio(hello["server_cpu_us_per_req"], max(
            res["get_employee"]["server_cpu_us_per_req"],
            res["health"]["server_cpu_us_per_req"])),
    }


async def run_http_bench(*, quick: bool = False, progress: bool = True,
                         profile: Path | None = None, ablation: bool = True,
                         duration_s: float | None = None) -> dict[str, Any]:
    """Run every scenario once; the figures (see the module docstring). ``duration_s``
    (seconds per scenario, split among the rounds) replaces the default: 6, quick 2."""
    from ..config import ServerSettings

    raise_fd_limit()
    if duration_s is not None and not duration_s > 0:
        raise ValueError(f"duration_s must be > 0 seconds, got {duration_s}")
    run = _Run(duration_s or (2.0 if quick else 6.0), 1 if quick else 3, progress, profile)
    default_loop = ServerSettings().event_loop
    with tempfile.TemporaryDirectory(prefix="orchestra-bench-") as tmp:
        res = await _main_scenarios(run, tmp, default_loop)
        abl = await _ablation(run, tmp) if ablation else {}
    out = _figures(res["hello"], res)
    out["event_loop"] = default_loop
    out["json_encoder"] = ServerSettings().json_encoder
    out |= _ablation_keys(abl) if abl else {}
    out["details"] = {**{k: v for k, v in res.items() if isinstance(v, dict)},
                      **{f"ablation_{k}": v for k, v in abl.items()}}
    return out


def cli_main(argv: list[str]) -> int:
    """``orchestra bench http [--json] [--quick] [--duration S] [--profile DIR]
    [--no-ablation]``."""
    p = argparse.ArgumentParser(prog="orchestra bench http", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--quick", action="store_true", help="2 s per scenario instead of 5 s")
    p.add_argument("--duration", type=float, metavar="S",
                   help="seconds per scenario (default 6; with --quick 2)")
    p.add_argument("--profile", type=Path, metavar="DIR",
                   help="sample the server with py-spy during each scenario into DIR")
    p.add_argument("--no-ablation", action="store_true",
                   help="skip the event loop × JSON encoder ablation")
    args = p.parse_args(argv)
    if args.duration is not None and not args.duration > 0:
        p.error(f"--duration must be > 0 seconds, got {args.duration}")
    result = asyncio.run(run_http_bench(quick=args.quick, progress=not args.json,
                                        profile=args.profile, ablation=not args.no_ablation,
                                        duration_s=args.duration))
    figures = {k: v for k, v in result.items() if k != "details"}
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    for key, value in figures.items():
        print(f"{key:<40} {value}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    if sys.argv[1:2] == ["--child"]:
        _child_main(sys.argv[2:])
    else:
        sys.exit(cli_main(sys.argv[1:]))
