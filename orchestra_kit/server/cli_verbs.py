"""The original CLI's verbs (hire, assign, lock ...) against a running server; JSON out.

``orchestra VERB [args] [--url URL] [--api-key KEY]``; the URL defaults to
``$ORCHESTRA_URL`` or http://127.0.0.1:8080, the key to ``$ORCHESTRA_API_KEY``.
Exit codes: 0 success, 1 an error answer (printed as JSON on stderr), 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from ..client import OrchestraClient
from ..errors import ApiError

__all__ = ["VERBS", "verbs_main"]

DEFAULT_URL = "http://127.0.0.1:8080"

Runner = Callable[[OrchestraClient, argparse.Namespace], Awaitable[Any]]


def _files(raw: list[str]) -> list[str]:
    """The original took ``f1,f2``; accept commas and/or separate arguments."""
    return [f for item in raw for f in item.split(",") if f]


# verb -> (positional args as (name, nargs), runner)
VERBS: dict[str, tuple[list[tuple[str, Any]], Runner]] = {
    "hire": ([("name", None), ("role", None), ("smartness", "?")],
             lambda c, a: c.hire(a.name, a.role, a.smartness or "normal")),
    "fire": ([("name", None)], lambda c, a: c.fire(a.name)),
    "employees": ([], lambda c, a: c.list_employees()),
    "assign": ([("name", None), ("task", None), ("model", "?"), ("mode", "?")],
               lambda c, a: c.assign(a.name, a.task, model=a.model, mode=a.mode or "build",
                                     priority=a.priority, files=_files(a.files))),
    "task": ([("id", None)], lambda c, a: c.get_task(int(a.id))),
    "tasks": ([("employee", "?")], lambda c, a: c.list_tasks(employee=a.employee)),
    "stop": ([("name", None)], lambda c, a: c.stop_employee(a.name)),
    "cancel": ([("id", None)], lambda c, a: c.cancel_task(int(a.id))),
    "status": ([], lambda c, a: c.status()),
    "lock": ([("name", None), ("files", None), ("description", "*")],
             lambda c, a: c.lock_files(a.name, _files([a.files]), " ".join(a.description))),
    "release": ([("name", None), ("files", "*")],
                lambda c, a: c.release_files(a.name, _files(a.files) or None)),
    "leases": ([("employee", "?")], lambda c, a: c.list_leases(a.employee)),
    "request": ([("name", None), ("file", None), ("reason", "*")],
                lambda c, a: c.request_file(a.name, a.file, " ".join(a.reason))),
    "requests": ([("status", "?")], lambda c, a: c.list_requests(status=a.status)),
    "approve": ([("id", None), ("actor", "?")], lambda c, a: c.approve(int(a.id), a.actor)),
    "deny": ([("id", None), ("actor", "?")], lambda c, a: c.deny(int(a.id), a.actor)),
    "health": ([], lambda c, a: c.health()),
}


def _parser(verb: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"orchestra {verb}")
    for name, nargs in VERBS[verb][0]:
        p.add_argument(name, nargs=nargs)
    if verb == "assign":  # options the original's positional form had no room for
        p.add_argument("--files", action="append", default=[],
                       help="files the task needs (leased while it runs); f1,f2 or repeated")
        p.add_argument("--priority", type=int, default=5, help="0-10, higher runs first")
    p.add_argument("--url", default=os.environ.get("ORCHESTRA_URL", DEFAULT_URL))
    p.add_argument("--api-key", default=os.environ.get("ORCHESTRA_API_KEY"))
    return p


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        to_dict = getattr(value, "to_dict", None)
        return to_dict() if to_dict else dataclasses.asdict(value)
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


async def _run(verb: str, args: argparse.Namespace) -> Any:
    async with OrchestraClient(args.url, api_key=args.api_key) as client:
        return await VERBS[verb][1](client, args)


def verbs_main(verb: str, argv: list[str]) -> int:
    """Run one verb against the server and print its JSON answer."""
    if verb not in VERBS:
        print(f"orchestra: unknown verb {verb!r}; one of {', '.join(VERBS)}", file=sys.stderr)
        return 2
    args = _parser(verb).parse_args(argv)
    try:
        result = asyncio.run(_run(verb, args))
    except ApiError as exc:
        print(json.dumps({"error": {"status": exc.http_status, "code": exc.code,
                                    "message": exc.message, "details": exc.details}}),
              file=sys.stderr)
        return 1
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        print(json.dumps({"error": {"code": "connection_failed",
                                    "message": f"cannot reach {args.url}: {exc}"}}),
              file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"orchestra {verb}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(_jsonable(result), indent=2, default=str))
    return 0
