"""Where a lab point sends its load: ``orchestra serve`` in its own process (the default),
the service inside the generator's own process (``inprocess``, for debugging), or a URL.

:class:`ServiceProcess` starts ``python -m orchestra_kit.cli serve`` on 127.0.0.1 with
port 0 (the server picks a free one and prints its URL), a fresh database and the
point's settings (written as a JSON config file), stdout and stderr going to a log
file in the run directory. It waits until ``GET /health`` answers 200, measures the
child's CPU seconds and peak RSS, and stops it with SIGTERM (SIGKILL after a grace),
recording the exit status. A service that exits or stays silent while starting
raises :class:`ServiceStartError` carrying the log's last lines: never a hang.

With ``instances = N > 1`` (PostgreSQL only) the child is ``orchestra serve --workers N``:
a supervisor and N service processes on one port. The target is ready once N distinct
instances have answered, and the CPU and peak-RSS figures are the workers' sums.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Self

import aiohttp

from ..childproc import terminate
from ..config import Settings
from ..errors import OrchestraError

__all__ = ["ServiceProcess", "ServiceStartError", "Target", "log_tail", "open_target", "serve_command",
           "service_settings"]

_URL_RE = re.compile(r"serving on (http://[0-9.]+:\d+)")
_INSTANCE_RE = re.compile(r'"instance_id": ?"(\w+)"')
LOG_TAIL_LINES = 20


class ServiceStartError(OrchestraError, RuntimeError):
    """The service under test could not be started (the message carries its log's tail)."""


def service_settings(overrides: dict[str, Any], workdir: Path) -> Settings:
    """Settings of a lab target: loopback, ephemeral port, fresh files under ``workdir``."""
    base = Settings().with_overrides({
        "server.host": "127.0.0.1", "server.port": 0,
        "database.path": str(workdir / "orchestra.db"),
        "project_root": str(workdir / "project"),
        "workspace_dir": str(workdir / "sessions"),
        "server.requests_per_minute": 0,
    })  # fmt: skip
    pinned = {"server.host": "127.0.0.1", "server.port": 0}  # never listen beyond loopback
    return base.with_overrides(overrides).with_overrides(pinned)


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file ("" when it does not exist)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident set) of a live process in MiB; NaN when unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return float(psutil.Process(pid).memory_info().rss) / 2**20
    except Exception:  # noqa: BLE001 - a missing figure is NaN, never a failed point
        return float("nan")


def _cpu_s(pid: int) -> float:
    try:
        import psutil

        times = psutil.Process(pid).cpu_times()
        return float(times.user + times.system)
    except Exception:  # noqa: BLE001 - a missing figure is NaN, never a failed point
        return float("nan")


def _worker_pids(pid: int) -> list[int]:
    """The direct children of ``serve --workers N`` (its service processes)."""
    try:
        import psutil

        return [c.pid for c in psutil.Process(pid).children()]
    except Exception:  # noqa: BLE001 - no workers known: the figures say NaN
        return []


def _tree_figures(pid: int, instances: int) -> tuple[float, float]:
    """(CPU seconds, peak RSS MiB) of the service: the process itself, or the sum over
    the workers of ``serve --workers N``."""
    pids = [pid] if instances <= 1 else _worker_pids(pid)
    if not pids:
        return float("nan"), float("nan")
    return sum(_cpu_s(p) for p in pids), sum(_peak_rss_mb(p) for p in pids)


def serve_command(config: Path) -> list[str]:
    """The child's command line: ``orchestra serve --config CONFIG`` in this interpreter."""
    return [sys.executable, "-m", "orchestra_kit.cli", "serve", "--config", str(config)]


def _clean_env() -> dict[str, str]:
    """The parent's environment without ORCHESTRA_* (the config file says everything)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRA_")}


class ServiceProcess:
    """``orchestra serve`` as a child process, owned by an ``async with`` block."""

    def __init__(self, settings: Settings, *, log_path: Path, config_path: Path | None = None,
                 start_timeout_s: float = 30.0, stop_timeout_s: float = 30.0,
                 instances: int = 1) -> None:
        self.settings = settings
        self.instances = instances
        self.log_path = log_path
        self.config_path = config_path or log_path.with_suffix(".config.json")
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.url = ""
        self.exit_code: int | None = None
        self.stats: dict[str, Any] = {}
        self._proc: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None
        self._cpu0 = 0.0

    async def __aenter__(self) -> Self:
        try:
            await self._start()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _start(self) -> None:
        config = self.config_path
        doc = dataclasses.asdict(self.settings)
        await asyncio.to_thread(config.write_text, json.dumps(doc, default=list))
        self._log = await asyncio.to_thread(self.log_path.open, "wb")
        workers = ["--workers", str(self.instances)] if self.instances > 1 else []
        self._proc = await asyncio.create_subprocess_exec(
            *serve_command(config), *workers, stdout=self._log, stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL, env=_clean_env())
        try:
            async with asyncio.timeout(self.start_timeout_s):
                self.url = await self._wait_for_url()
                await self._wait_healthy()
                if self.instances > 1:
                    await self._wait_instances()
        except TimeoutError:
            why = (f"did not answer /health within {self.start_timeout_s:g} s" if not self.url
                   else f"did not have {self.instances} instances answering within"
                   f" {self.start_timeout_s:g} s")
            raise self._failure(why) from None
        self._cpu0 = _tree_figures(self._proc.pid, self.instances)[0]

    def _failure(self, why: str) -> ServiceStartError:
        tail = log_tail(self.log_path)
        return ServiceStartError(f"orchestra serve {why}; log {self.log_path}:\n{tail}",
                                 details={"log": str(self.log_path), "tail": tail})

    async def _wait_for_url(self) -> str:
        assert self._proc is not None
        while True:
            if self._proc.returncode is not None:
                raise self._failure(f"exited with status {self._proc.returncode} while starting")
            match = _URL_RE.search(await asyncio.to_thread(log_tail, self.log_path, 50))
            if match:
                return match.group(1)
            await asyncio.sleep(0.05)

    async def _wait_healthy(self) -> None:
        timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                    async with session.get(self.url + "/health") as resp:
                        if resp.status == 200:
                            return
                if self._proc is not None and self._proc.returncode is not None:
                    raise self._failure(f"exited with status {self._proc.returncode}")
                await asyncio.sleep(0.05)

    async def _wait_instances(self) -> None:
        """Until ``instances`` distinct instance ids answered /performance (fresh
        connections: the kernel spreads them over the workers)."""
        seen: set[str] = set()
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector,
                                         timeout=aiohttp.ClientTimeout(total=5)) as session:
            while len(seen) < self.instances:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                    async with session.get(self.url + "/performance") as resp:
                        if resp.status == 200:
                            seen.update(_INSTANCE_RE.findall(await resp.text()))
                if self._proc is not None and self._proc.returncode is not None:
                    raise self._failure(f"exited with status {self._proc.returncode}")
                await asyncio.sleep(0.02)

    def sample(self) -> None:
        """Take the CPU and peak-RSS readings now (call before stopping, after the load)."""
        if self._proc is None or self._proc.returncode is not None:
            return
        cpu_s, rss_mb = _tree_figures(self._proc.pid, self.instances)
        self.stats = {"cpu_s": cpu_s - self._cpu0, "peak_rss_mb": rss_mb}

    async def aclose(self) -> None:
        """SIGTERM, wait (SIGKILL after ``stop_timeout_s``), record the exit status (idempotent)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if not self.stats:
                self.sample()
            await terminate(proc, timeout_s=self.stop_timeout_s)
            self.exit_code = proc.returncode
        log, self._log = self._log, None
        if log is not None:
            log.close()


@dataclass
class Target:
    """An open target: its URL, the service's settings (None for a URL) and its facts."""

    kind: str
    url: str
    settings: Settings | None = None
    facts: dict[str, Any] = field(default_factory=dict)


@contextlib.asynccontextmanager
async def open_target(kind: str, *, url: str = "", overrides: dict[str, Any] | None = None,
                      log_path: Path | None = None, start_timeout_s: float = 30.0,
                      database_url: str = "", instances: int = 1) -> AsyncIterator[Target]:
    """A fresh target for one (point, repeat); ``facts`` are filled in when it closes
    (``kind``, ``database``, ``instances``, and for ``process``: ``cpu_s``,
    ``peak_rss_mb``, ``exit_code``, ``log``).

    ``database_url``: run on that PostgreSQL database (a process target; see
    :mod:`.pgpoint`) with ``instances`` service processes; else on a fresh SQLite file."""
    if kind == "url":
        yield Target(kind, url, None, {"kind": "url"})
        return
    if (database_url or instances > 1) and kind != "process":
        raise ServiceStartError(f"A {kind!r} target runs one instance on SQLite; PostgreSQL"
                                " and several instances need kind 'process'")
    if instances > 1 and not database_url:
        raise ServiceStartError(f"{instances} instances need a PostgreSQL database_url")
    with tempfile.TemporaryDirectory(prefix="orchestra-lab-") as tmp:
        pg = {"database.url": database_url} if database_url else {}
        settings = service_settings({**(overrides or {}), **pg}, Path(tmp))
        await asyncio.to_thread(Path(settings.project_root).mkdir, parents=True, exist_ok=True)
        if kind == "inprocess":
            from ..server.app import Service  # the lab drives the public service

            async with Service(settings) as service:
                yield Target(kind, service.url, settings, {"kind": "inprocess"})
            return
        log = log_path or Path(tmp) / "service.log"
        target = Target(kind, "", settings, {
            "kind": "process", "log": str(log), "instances": instances,
            "database": "postgresql" if database_url else "sqlite"})
        started = time.perf_counter()
        proc = ServiceProcess(settings, log_path=log, config_path=Path(tmp) / "config.json",
                              start_timeout_s=start_timeout_s, instances=instances)
        try:
            async with proc:
                target.url = proc.url
                target.facts["start_s"] = time.perf_counter() - started
                yield target
                proc.sample()
        finally:
            target.facts |= {**proc.stats, "exit_code": proc.exit_code}
