"""The ``orchestra`` command: one entry point, each sub-command owned by its module."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

__all__ = ["main"]

# sub-command -> (module, function, one-line help); modules are imported lazily so
# `orchestra serve` does not pay for pandas and matplotlib.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "serve": ("orchestra_kit.server.cli", "serve_main", "run the HTTP API"),
    "fake-llm": ("orchestra_kit.fakellm.cli", "cli_main", "run the OpenAI-compatible fake provider"),
    "fake-slack": ("orchestra_kit.fakeslack.cli", "cli_main",
                   "run the fake Slack (Web API, Socket Mode); `send` a signed mention"),
    "run": ("orchestra_kit.lab.cli", "run_main", "run an experiment spec (TOML)"),
    "chat-lab": ("orchestra_kit.lab.chat_lab", "cli_main",
                 "Slack mentions vs users: ack, first reply, completion percentiles"),
    "report": ("orchestra_kit.lab.cli", "report_main", "summary table + charts of a run"),
    "compare": ("orchestra_kit.lab.cli", "compare_main", "compare two runs; exit 1 on regression"),
    "pg": ("orchestra_kit.store.pg_cli", "pg_main",
           "a local PostgreSQL: run (throwaway) | start/stop --dir DIR"),
}
BENCHES: dict[str, tuple[str, str]] = {
    "store": ("orchestra_kit.store.bench", "cli_main"),
    "scheduler": ("orchestra_kit.scheduler.bench", "cli_main"),
    "http": ("orchestra_kit.server.bench", "cli_main"),
    "generator": ("orchestra_kit.lab.genbench", "cli_main"),
    "scaleout": ("orchestra_kit.lab.scaleout", "cli_main"),
    "batch": ("orchestra_kit.server.benchbatch", "cli_main"),
}
VERBS = ("hire", "fire", "employees", "assign", "task", "tasks", "stop", "cancel", "status",
         "lock", "release", "leases", "request", "requests", "approve", "deny", "health")

USAGE = """usage: orchestra COMMAND [ARGS...]

commands:
{commands}
  bench store|scheduler|http|generator|scaleout|batch [--json] [--quick]
                                  measure the store / scheduler / HTTP API / the lab's load
                                  generator / instances on one PostgreSQL / the loop stall
                                  of one maximal POST /tasks/batch
  {verbs}
                                  talk to a running server (--url, ORCHESTRA_URL)

`orchestra COMMAND --help` shows each command's options.
"""


def _usage() -> str:
    commands = "\n".join(f"  {name:<10} {help_}" for name, (_, _, help_) in COMMANDS.items())
    return USAGE.format(commands=commands, verbs=" | ".join(VERBS))


def _load(module: str, func: str) -> Callable[[list[str]], int]:
    fn: Callable[[list[str]], int] = getattr(importlib.import_module(module), func)
    return fn


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``orchestra COMMAND ...``; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if args else 2
    cmd, rest = args[0], args[1:]
    if cmd in COMMANDS:
        module, func, _ = COMMANDS[cmd]
        return _load(module, func)(rest)
    if cmd == "bench":
        if not rest or rest[0] not in BENCHES:
            print(f"orchestra bench: choose one of {', '.join(BENCHES)}", file=sys.stderr)
            return 2
        module, func = BENCHES[rest[0]]
        return _load(module, func)(rest[1:])
    if cmd in VERBS:
        verbs_main = _load("orchestra_kit.server.cli_verbs", "verbs_main")
        return int(verbs_main(cmd, rest))  # type: ignore[call-arg,arg-type]
    print(f"orchestra: unknown command {cmd!r}\n\n{_usage()}", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
