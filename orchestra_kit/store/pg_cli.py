"""``orchestra pg start|stop|run``: a local PostgreSQL cluster for trying scale-out.

- ``orchestra pg run``: start a throwaway cluster, print its URL, remove it on Ctrl-C
  or SIGTERM (the simplest way).
- ``orchestra pg start --dir DIR``: a cluster kept in DIR (created once), left running;
  prints the URL. ``orchestra pg stop --dir DIR`` stops it (the folder stays; delete it
  to throw the data away).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from ..errors import OrchestraError
from .pgserver import PgServer

__all__ = ["pg_main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="orchestra pg", description=__doc__.splitlines()[0])
    p.add_argument("action", choices=("run", "start", "stop"))
    p.add_argument("--dir", help="cluster folder (start/stop; run uses a temporary one)")
    p.add_argument("--fsync", action="store_true", help="fsync commits (default off)")
    return p


def _run(fsync: bool) -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with PgServer(fsync=fsync) as pg:
        print(pg.url, flush=True)
        stop.wait()
    return 0


def pg_main(argv: list[str]) -> int:
    """Entry point of ``orchestra pg``; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.action == "run":
            return _run(args.fsync)
        if not args.dir:
            print(f"orchestra pg {args.action}: --dir is required", file=sys.stderr)
            return 2
        pg = PgServer(base_dir=args.dir, fsync=args.fsync, keep=True)
        if args.action == "start":
            pg.start()
            (pg.data_dir.parent / "url").write_text(pg.url + "\n")
            print(pg.url, flush=True)
        else:
            pg.stop_dir()
    except OrchestraError as e:
        print(f"orchestra pg {args.action}: {e}", file=sys.stderr)
        return 1
    return 0
