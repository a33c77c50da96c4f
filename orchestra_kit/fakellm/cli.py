"""``orchestra fake-llm``: serve the fake LLM provider until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import signal
import sys
from dataclasses import fields
from typing import Any

from orchestra_kit.errors import ConfigError

from .config import FakeLLMConfig, scripts_from_json, write_file_script
from .profiles import PROFILES, profile_values
from .server import FakeLLM

__all__ = ["cli_main"]

_PROG = "orchestra fake-llm"
_FLOAT_FIELDS = (
    "ttft_ms", "ttft_jitter_ms", "ttft_sigma", "tokens_per_s", "retry_after_s", "hang_max_s",
    "rate_429", "rate_500", "rate_503", "rate_hang", "rate_stream_cut",
)
_INT_FIELDS = ("seed", "output_tokens", "output_tokens_jitter", "capacity", "max_queue")


class _UsageError(Exception):
    """A bad command line value; the message names the flag."""


def _flag(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def _parser() -> argparse.ArgumentParser:
    defaults = {f.name: f.default for f in fields(FakeLLMConfig)}
    parser = argparse.ArgumentParser(
        prog=_PROG, description="Serve an OpenAI-compatible fake LLM provider on loopback.",
        epilog="profiles: " + "; ".join(f"{p.name}: {p.source}" for p in PROFILES.values()),
    )
    parser.add_argument("--profile", default="default", choices=sorted(PROFILES),
                        help="named latency profile; the flags below override its values")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    parser.add_argument("--port", type=int, default=8001, help="port (0 = any free port)")
    parser.add_argument("--allow-nonlocal", action="store_true",
                        help="allow a --host that is not a loopback address")
    for name in _INT_FIELDS:
        parser.add_argument(_flag(name), dest=name, type=int, default=argparse.SUPPRESS,
                            help=f"(default: the profile's, else {defaults[name]})")
    for name in _FLOAT_FIELDS:
        parser.add_argument(_flag(name), dest=name, type=float, default=argparse.SUPPRESS,
                            help=f"(default: the profile's, else {defaults[name]})")
    parser.add_argument("--write-file-script", metavar="NAME", default=None,
                        help="add a named script NAME: a [[script:NAME]] request makes the "
                             "agent write the [[file:PATH]] of its prompt, then stop")
    parser.add_argument("--models", default=",".join(FakeLLMConfig().models),
                        help="comma-separated model names for /v1/models")
    parser.add_argument("--script", metavar="FILE.json", default=None,
                        help='replies: [{"text": ...} | {"tool_calls": [...]}] or '
                             '{"script": [...], "named_scripts": {...}}')
    return parser


def _check_host(host: str, allow_nonlocal: bool) -> None:
    if allow_nonlocal or host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise _UsageError(f"--host: {host!r} is not a loopback address (use --allow-nonlocal)")


def _load_script(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        script, named = scripts_from_json(data)
    except (OSError, json.JSONDecodeError) as exc:
        raise _UsageError(f"--script: cannot read {path!r}: {exc}") from exc
    except ConfigError as exc:
        raise _UsageError(f"--script: {path!r}: {exc.message}") from exc
    return {"script": script, "named_scripts": named}


def _config_from_args(args: argparse.Namespace) -> FakeLLMConfig:
    _check_host(args.host, args.allow_nonlocal)
    if not 0 <= args.port <= 65535:
        raise _UsageError(f"--port: {args.port} is not a port number (0..65535)")
    values: dict[str, Any] = profile_values(args.profile)
    values |= {name: getattr(args, name) for name in _INT_FIELDS + _FLOAT_FIELDS
               if hasattr(args, name)}
    values["models"] = tuple(m.strip() for m in args.models.split(",") if m.strip())
    if args.script is not None:
        values.update(_load_script(args.script))
    if args.write_file_script:
        named = dict(values.get("named_scripts") or {})
        named[args.write_file_script] = write_file_script(
            "{file}", "written by the fake provider for {file}\n", resolve=False)
        values["named_scripts"] = named
    try:
        return FakeLLMConfig(**values)
    except ConfigError as exc:
        raise _UsageError(f"{_flag(exc.key)}: {exc.message}") from exc


async def _serve(config: FakeLLMConfig, host: str, port: int) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with FakeLLM(config, host=host, port=port) as fake:
            print(f"fake-llm listening on {fake.url}", flush=True)
            await stop.wait()
    except OSError as exc:
        print(f"{_PROG}: error: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return 0


def cli_main(argv: list[str]) -> int:
    """Run ``orchestra fake-llm`` with ``argv`` (without the program name); return the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed usage and the message
        return exc.code if isinstance(exc.code, int) else 2
    try:
        config = _config_from_args(args)
    except _UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"{_PROG}: error: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_serve(config, args.host, args.port))
