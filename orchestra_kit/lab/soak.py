"""A soak with faults: the service in its own process, killed and restarted on a period.

:func:`run_soak` starts the fake provider (``orchestra fake-llm`` with the spec's fault
rates) and the service (``orchestra serve``, the openai backend pointed at that
provider) as child processes, drives a seeded mixed workload of closed-loop users
(hire, assign, read, lease+release), SIGKILLs the service every ``restart_every_s`` and
starts it again on the same port and database, probes ``/health`` to time each
recovery, and samples the service's RSS. After the run it checks, with the service up,
that every acknowledged (2xx) hire and task exists, and waits ``settle_s`` for tasks to
end: what is still queued or running then is *stuck*. Figures and files:
:mod:`orchestra_kit.lab.soak_report`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp

from ..childproc import terminate
from ..client import OrchestraClient
from .soak_spec import SoakSpec

__all__ = ["SoakRecorder", "run_soak"]

TERMINAL = frozenset({"completed", "failed", "cancelled", "timed_out"})


@dataclass
class SoakRecorder:
    """Everything a soak observed (times are seconds since the run started)."""

    t0: float = field(default_factory=time.perf_counter)
    requests: list[tuple[float, str, int, str, float]] = field(default_factory=list)
    restarts: list[dict[str, float]] = field(default_factory=list)
    rss: list[tuple[float, int, float]] = field(default_factory=list)
    acked_hires: set[str] = field(default_factory=set)
    acked_tasks: set[int] = field(default_factory=set)

    def now(self) -> float:
        """Seconds since the run started."""
        return time.perf_counter() - self.t0

    def record(self, op: str, status: int, error: str, started: float) -> None:
        """One request: op, HTTP status (0 when none), error type, latency."""
        self.requests.append((started, op, status, error, self.now() - started))


def free_port() -> int:
    """A free loopback port (the service keeps it across restarts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def _child(args: list[str], log: IO[bytes]) -> AsyncIterator[asyncio.subprocess.Process]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRA_")}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "orchestra_kit", *args,
                                                stdout=log, stderr=log, env=env)
    try:
        yield proc
    finally:
        await terminate(proc, timeout_s=20)


async def _wait_healthy(url: str, timeout_s: float, *, interval_s: float = 0.05) -> bool:
    """Poll ``/health`` until it answers 200 (True) or ``timeout_s`` passes (False)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as s:
        while loop.time() < deadline:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                async with s.get(url + "/health") as r:
                    if r.status == 200:
                        return True
            await asyncio.sleep(interval_s)
    return False


class _Service:
    """``orchestra serve`` as a child process that can be killed and started again."""

    def __init__(self, spec: SoakSpec, run_dir: Path, provider_url: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: asyncio.subprocess.Process | None = None
        root = run_dir / "project"
        root.mkdir(parents=True, exist_ok=True)
        settings = {"agents.backend": "openai", "agents.base_url": provider_url + "/v1",
                    "server.requests_per_minute": 0, "log_level": "WARNING", **spec.settings}
        self.args = ["serve", "--port", str(self.port), "--db", str(run_dir / "soak.db"),
                     "--project-root", str(root)]
        for key, value in settings.items():
            self.args += ["--set", f"{key}={value}"]
        self.log = (run_dir / "service.log").open("ab")

    async def start(self, timeout_s: float = 60.0) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRA_")}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "orchestra_kit", *self.args, stdout=self.log,
            stderr=self.log, env=env)
        if not await _wait_healthy(self.url, timeout_s):
            raise RuntimeError(f"the service did not become healthy within {timeout_s} s")

    async def kill(self) -> None:
        """SIGKILL: no drain, no cleanup (a crash)."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()

    async def aclose(self) -> None:
        if self.proc is not None:
            await terminate(self.proc, timeout_s=30)
        self.log.close()


def _rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class _Workload:
    """Closed-loop users running the spec's mix against the service's URL."""

    def __init__(self, spec: SoakSpec, url: str, rec: SoakRecorder) -> None:
        self.spec, self.url, self.rec = spec, url, rec
        self.ops = [op for op, w in spec.mix.items() if w > 0]
        self.weights = [spec.mix[op] for op in self.ops]

    async def user(self, uid: int, stop_at: float) -> None:
        rng = random.Random(self.spec.seed * 1000 + uid)
        mine: list[str] = []
        n = 0
        async with OrchestraClient(self.url, timeout_s=self.spec.request_timeout_s) as c:
            while self.rec.now() < stop_at and len(self.rec.requests) < self.spec.max_requests:
                op = rng.choices(self.ops, self.weights)[0] if mine else "hire"
                n += 1
                await self._one(c, op, uid, n, rng, mine)
                await asyncio.sleep(self.spec.think_ms / 1000 * rng.uniform(0.5, 1.5))

    async def _one(self, c: OrchestraClient, op: str, uid: int, n: int, rng: random.Random,
                   mine: list[str]) -> None:
        started = self.rec.now()
        status, error = 0, ""
        try:
            status = await self._call(c, op, uid, n, rng, mine)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = type(exc).__name__
        self.rec.record(op, status, error, started)

    async def _call(self, c: OrchestraClient, op: str, uid: int, n: int, rng: random.Random,
                    mine: list[str]) -> int:
        if op == "hire":
            name = f"s{uid}-{n}"
            status, _ = await c.request("POST", "/employees", {"name": name, "role": "dev"})
            if status == 201:
                mine.append(name)
                self.rec.acked_hires.add(name)
            return status
        if op == "assign":
            status, body = await c.request("POST", "/tasks", {
                "name": rng.choice(mine), "task": f"soak task {uid}-{n}"})
            if status == 202 and isinstance(body, dict):
                self.rec.acked_tasks.add(int(body["task_id"]))
            return status
        if op == "lease":
            name, path = rng.choice(mine), f"u{uid}/f{rng.randrange(20)}.py"
            status, _ = await c.request("POST", "/files/lock", {"name": name, "files": [path]})
            if status == 200:
                status, _ = await c.request("POST", "/files/release",
                                            {"name": name, "files": [path]})
            return status
        known = sorted(self.rec.acked_tasks)
        if known and rng.random() < 0.6:
            status, _ = await c.request("GET", f"/tasks/{rng.choice(known[-200:])}")
        else:
            status, _ = await c.request("GET", rng.choice(("/health", "/employees?limit=20")))
        return status


async def _chaos(spec: SoakSpec, svc: _Service, rec: SoakRecorder, stop_at: float) -> None:
    """Every ``restart_every_s``: SIGKILL the service, start it again, time the recovery."""
    if spec.restart_every_s <= 0:
        return
    k = 1
    while k * spec.restart_every_s < stop_at - 1e-9:  # kills on a fixed grid, no drift
        await asyncio.sleep(max(0.0, k * spec.restart_every_s - rec.now()))
        k += 1
        killed = rec.now()
        await svc.kill()
        await svc.start()
        rec.restarts.append({"killed_s": killed, "recovered_s": rec.now(),
                             "recovery_s": rec.now() - killed})


async def _sample_rss(spec: SoakSpec, svc: _Service, rec: SoakRecorder, stop_at: float) -> None:
    while rec.now() < stop_at:
        _sample_rss_once(svc, rec)
        await asyncio.sleep(spec.rss_every_s)


def _sample_rss_once(svc: _Service, rec: SoakRecorder) -> None:
    proc = svc.proc
    if proc is not None and proc.returncode is None:
        mb = _rss_mb(proc.pid)
        if mb is not None:
            rec.rss.append((rec.now(), len(rec.restarts), mb))


async def _verify(spec: SoakSpec, url: str, rec: SoakRecorder) -> dict[str, Any]:
    """Acknowledged writes present? Tasks all terminal within ``settle_s``?"""
    async with OrchestraClient(url, timeout_s=30) as c:
        names = {e.name for e in await c.list_employees(limit=10_000)}
        lost_hires = sorted(rec.acked_hires - names)
        deadline = rec.now() + spec.settle_s
        while True:
            tasks = {t.id: str(t.status) for t in await _all_tasks(c)}
            open_ = [i for i, s in tasks.items() if s not in TERMINAL]
            if not open_ or rec.now() >= deadline:
                break
            await asyncio.sleep(0.5)
    lost_tasks = sorted(rec.acked_tasks - set(tasks))
    statuses: dict[str, int] = {}
    for s in tasks.values():
        statuses[s] = statuses.get(s, 0) + 1
    return {"acked_hires": len(rec.acked_hires), "lost_hires": lost_hires[:50],
            "lost_hires_count": len(lost_hires), "acked_tasks": len(rec.acked_tasks),
            "lost_tasks": lost_tasks[:50], "lost_tasks_count": len(lost_tasks),
            "stuck_tasks": len(open_), "task_statuses": statuses,
            "settle_s": round(rec.now() - (deadline - spec.settle_s), 3)}


async def _all_tasks(c: OrchestraClient) -> list[Any]:
    out: list[Any] = []
    while True:
        page = await c.list_tasks(limit=10_000, offset=len(out))
        out += page
        if len(page) < 10_000:
            return out


def _provider_args(spec: SoakSpec, port: int) -> list[str]:
    args = ["fake-llm", "--port", str(port), "--seed", str(spec.seed)]
    for key, value in spec.provider.items():
        args += ["--" + key.replace("_", "-"), str(value)]
    return args


async def run_soak(spec: SoakSpec, *, results_root: str | Path = "results",
                   echo: Any = print) -> Path:
    """Run the soak; its files go to ``results/NAME/RUN_ID/``; returns that folder."""
    from .soak_report import new_run_dir, write_results

    run_dir = new_run_dir(Path(results_root), spec.name)
    rec = SoakRecorder()
    port = free_port()
    with (run_dir / "provider.log").open("ab") as plog:
        async with _child(_provider_args(spec, port), plog):
            provider = f"http://127.0.0.1:{port}"
            if not await _wait_for_port(port, 30):
                raise RuntimeError("the fake provider did not start")
            svc = _Service(spec, run_dir, provider)
            try:
                await svc.start()
                rec.t0 = time.perf_counter()
                echo(f"soak: {spec.duration_s:g} s, SIGKILL every {spec.restart_every_s:g} s,"
                     f" {spec.users} users; service {svc.url}")
                work = _Workload(spec, svc.url, rec)
                async with asyncio.TaskGroup() as tg:
                    for uid in range(spec.users):
                        tg.create_task(work.user(uid, spec.duration_s))
                    tg.create_task(_chaos(spec, svc, rec, spec.duration_s))
                    tg.create_task(_sample_rss(spec, svc, rec, spec.duration_s))
                # Once more at the end: the last life has a sample even when its restart
                # ended after the sampler's last tick (a slow start on a busy machine).
                _sample_rss_once(svc, rec)
                verify = await _verify(spec, svc.url, rec)
            finally:
                await svc.aclose()
    write_results(run_dir, spec, rec, verify)
    return run_dir


async def _wait_for_port(port: int, timeout_s: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        w.close()
        return True
    return False
