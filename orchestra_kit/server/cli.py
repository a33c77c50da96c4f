"""``orchestra serve``: run the HTTP API until SIGTERM/SIGINT, then drain and exit 0.

Drain order: stop listening and mark the service draining (health 503, SSE streams
end, new tasks refused), let in-flight requests finish within
``server.shutdown_timeout_s``, then the scheduler requeues what it cannot finish within
its grace, the store closes, and the process exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from typing import Any

from ..config import Settings
from ..errors import ConfigError, OrchestraError
from . import memtrace
from .app import Service
from .loops import freeze_startup_objects, tune_gc
from .loops import run as run_on_loop
from .workers import check_workers, die_with_supervisor, run_workers, shared_port

__all__ = ["build_parser", "serve_main", "settings_from_args"]

log = logging.getLogger("orchestra_kit.server")


def build_parser() -> argparse.ArgumentParser:
    """The ``orchestra serve`` argument parser."""
    p = argparse.ArgumentParser(prog="orchestra serve", description="Run the HTTP API.")
    p.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to bind; 0 picks a free one (default 8080)")
    p.add_argument("--db", help="SQLite database path (default orchestra.db), or a PostgreSQL"
                   " URL postgresql://user@host:port/dbname (several instances may share it)")
    p.add_argument("--project-root", help="directory file paths are confined to")
    p.add_argument("--config", help="JSON config file (the seed's performance config schema)")
    p.add_argument("--workers", type=int, default=1,
                   help="processes serving one port (SO_REUSEPORT); > 1 needs --db postgresql://")
    p.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any setting, e.g. --set scheduler.max_concurrent_tasks=8")
    return p


def settings_from_args(args: argparse.Namespace, environ: dict[str, str]) -> Settings:
    """Defaults < --config < environment < --set < explicit flags."""
    overrides: dict[str, Any] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError("--set", item, "must be KEY=VALUE")
        overrides[key.strip()] = value
    for flag, key in (("host", "server.host"), ("port", "server.port"), ("db", "database.path"),
                      ("project_root", "project_root")):
        value = getattr(args, flag)
        if value is not None:
            if flag == "db" and str(value).startswith(("postgresql://", "postgres://")):
                key = "database.url"
            overrides[key] = str(value)
    return Settings.load(config_file=args.config, environ=environ, overrides=overrides)


async def _serve(settings: Settings, reuse_port: bool = False) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    heap_snapshots = memtrace.install(loop)  # SIGUSR2: tracemalloc on, then snapshots
    try:
        async with Service(settings, reuse_port=reuse_port) as svc:
            db = _redacted(settings.database.url) or settings.database.path
            if settings.server.gc_freeze:
                freeze_startup_objects()
            print(f"orchestra serving on {svc.url} (db={db}, "
                  f"backend={settings.agents.backend})", flush=True)
            await stop.wait()
            log.info("orchestra: draining (signal received)")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        heap_snapshots()
    log.info("orchestra: stopped cleanly")
    return 0


def _raise_fd_limit() -> None:
    """Soft open-file limit up to the hard one: each connection holds a descriptor."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, OSError, ValueError):  # pragma: no cover - not POSIX, or refused
        pass


def _without_workers(argv: list[str]) -> list[str]:
    """``argv`` less ``--workers N`` and ``--port P`` (the supervisor passes its own port)."""
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--workers", "--port"):
            skip = True
            continue
        if a.startswith(("--workers=", "--port=")):
            continue
        out.append(a)
    return out


def _redacted(url: str) -> str:
    """A database URL without its password (for logs)."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in creds:
        return url
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"


def serve_main(argv: list[str]) -> int:
    """Entry point of ``orchestra serve``; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args, dict(os.environ))
    except OrchestraError as exc:
        print(f"orchestra serve: {exc}", file=sys.stderr)
        return 2
    if os.environ.get("ORCHESTRA_API_KEY") and not os.environ.get("ORCHESTRA_LLM_API_KEY"):
        print("orchestra serve: note: ORCHESTRA_API_KEY is the CLI verbs' key for this "
              "server and is not used here; the LLM provider's key is ORCHESTRA_LLM_API_KEY",
              file=sys.stderr)
    _raise_fd_limit()
    try:
        check_workers(args.workers, settings)
    except OrchestraError as exc:
        print(f"orchestra serve: {exc}", file=sys.stderr)
        return 2
    if args.workers > 1:
        port = shared_port(settings.server.host, settings.server.port)
        return run_workers(_without_workers(argv), args.workers, settings.server.host, port)
    if args.reuse_port and not die_with_supervisor():
        return 0  # a worker whose supervisor is already gone
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tune_gc(settings.server.gc_young_threshold)
    try:
        return run_on_loop(_serve(settings, reuse_port=args.reuse_port), settings.server.event_loop)
    except OrchestraError as exc:
        print(f"orchestra serve: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"orchestra serve: cannot listen on {settings.server.host}:"
              f"{settings.server.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(serve_main(sys.argv[1:]))
