"""``orchestra fake-slack``: run the fake Slack, or sign and send one mention to a target.

    orchestra fake-slack --port 8790                 # serve: Web API at /api/, Socket Mode
    orchestra fake-slack send --target http://127.0.0.1:8080/slack/events \\
        --user U1 "@alice please add a health check"  # secret: $ORCHESTRA_CHAT__SLACK_SIGNING_SECRET

Loopback only. The secret is read from ``--secret`` or the environment and never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import signal
import sys

from .proto import app_mention
from .server import FakeSlack

__all__ = ["cli_main"]

_PROG = "orchestra fake-slack"
_SECRET_ENV = "ORCHESTRA_CHAT__SLACK_SIGNING_SECRET"


def _serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=_PROG, description="Run the fake Slack Web API and "
                                "Socket Mode server (loopback only).")
    p.add_argument("--host", default="127.0.0.1", help="loopback address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port; 0 picks a free one")
    return p


def _send_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"{_PROG} send",
                                description="Sign and send one app_mention to a target.")
    p.add_argument("--target", required=True, help="the service's /slack/events URL")
    p.add_argument("--secret", default=None, help=f"signing secret (default ${_SECRET_ENV})")
    p.add_argument("--user", default="UFAKEUSER")
    p.add_argument("--channel", default="C0FAKE")
    p.add_argument("text", help="the message, e.g. '@alice fix src/app.py'")
    return p


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


async def _serve(host: str, port: int) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with FakeSlack(host=host, port=port) as fake:
            print(f"fake-slack listening on {fake.url} (Web API {fake.api_url})", flush=True)
            await stop.wait()
            print(f"fake-slack: {len(fake.calls)} calls recorded", flush=True)
    except OSError as exc:
        print(f"{_PROG}: error: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return 0


async def _send(args: argparse.Namespace, secret: str) -> int:
    async with FakeSlack() as fake:
        env = app_mention(user=args.user, channel=args.channel, text=args.text,
                          bot_user_id=fake.bot_user_id)
        sent = await fake.send_event(args.target, secret, env)
    print(f"HTTP {sent.status} in {sent.latency_s * 1000:.1f} ms "
          f"(event {env['event_id']}, ts {env['event']['ts']})")
    return 0 if sent.status == 200 else 1


def cli_main(argv: list[str]) -> int:
    """Entry point of ``orchestra fake-slack``; returns the exit code."""
    if argv[:1] == ["send"]:
        args = _send_parser().parse_args(argv[1:])
        secret = args.secret or os.environ.get(_SECRET_ENV, "")
        if not secret:
            print(f"{_PROG} send: error: --secret (or ${_SECRET_ENV}) is required",
                  file=sys.stderr)
            return 2
        return asyncio.run(_send(args, secret))
    args = _serve_parser().parse_args(argv)
    if not _loopback(args.host):
        print(f"{_PROG}: error: --host {args.host!r} is not a loopback address", file=sys.stderr)
        return 2
    if not 0 <= args.port <= 65535:
        print(f"{_PROG}: error: --port {args.port} is not a port number", file=sys.stderr)
        return 2
    return asyncio.run(_serve(args.host, args.port))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(cli_main(sys.argv[1:]))
