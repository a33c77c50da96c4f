"""``orchestra serve --workers N``: N service processes on one port (``SO_REUSEPORT``).

Each worker is a whole instance (HTTP API + scheduler) of the same shared PostgreSQL
database; the kernel spreads new connections over the workers' listening sockets. The
parent only supervises: it starts the workers, forwards SIGTERM/SIGINT to them (each
drains as a single ``orchestra serve`` does) and exits with the worst exit code. On
SQLite (one process's database) N > 1 is refused.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time

from ..config import Settings
from ..errors import ConfigError

__all__ = ["check_workers", "die_with_supervisor", "run_workers", "shared_port"]


def check_workers(workers: int, settings: Settings) -> None:
    """ConfigError unless ``workers`` processes can share ``settings``' database."""
    if workers < 1:
        raise ConfigError("--workers", workers, "must be >= 1")
    if workers > 1 and not settings.database.url:
        raise ConfigError("--workers", workers,
                          "more than 1 needs a shared database: SQLite belongs to one process;"
                          " use --db postgresql://... (see docs/scale-out.md)")


def shared_port(host: str, port: int) -> int:
    """``port``, or (for 0) a free port the workers can all bind with SO_REUSEPORT."""
    if port:
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


SUPERVISOR_ENV = "_ORCHESTRA_SUPERVISOR_PID"  # not ORCHESTRA_*: those are settings


def die_with_supervisor() -> bool:
    """In a worker: SIGTERM (a drain) when the supervisor dies, even by SIGKILL (Linux
    ``PR_SET_PDEATHSIG``). False when the supervisor is already gone: exit at once."""
    supervisor = os.environ.get(SUPERVISOR_ENV)
    if not supervisor:
        return True
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    return os.getppid() == int(supervisor)  # checked after arming: no gap


def run_workers(argv: list[str], workers: int, host: str, port: int) -> int:
    """Start ``workers`` copies of ``orchestra serve ARGV --port PORT --reuse-port``;
    0 when every worker exited cleanly, else 1."""
    cmd = [sys.executable, "-m", "orchestra_kit", "serve", *argv, "--port", str(port),
           "--reuse-port"]
    env = {**os.environ, SUPERVISOR_ENV: str(os.getpid())}
    procs = [subprocess.Popen(cmd, env=env) for _ in range(workers)]
    # The same first words as a single `orchestra serve`, so tools that wait for the URL
    # (the lab's process target) work with workers too.
    print(f"orchestra serving on http://{host}:{port} ({workers} workers,"
          f" pids {' '.join(str(p.pid) for p in procs)})", flush=True)

    def forward(signum: int, _frame: object) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    codes: list[int] = []
    while procs:
        for p in list(procs):
            rc = p.poll()
            if rc is not None:
                procs.remove(p)
                codes.append(rc)
                if rc != 0:  # one died badly: stop the others (their tasks are requeued)
                    forward(signal.SIGTERM, None)
        time.sleep(0.1)
    return 0 if all(rc == 0 for rc in codes) else 1
