"""The original's slash commands, transport-independent: text in, a reply out.

``/hire NAME ROLE [smart|normal]``, ``/fire NAME``, ``/employees``, ``/assign NAME TASK``,
``/lock NAME PATH...``, ``/release NAME [PATH...]``, ``/progress [NAME]``, ``/status``,
``/request NAME PATH [REASON]``, ``/approve ID``, ``/deny ID``. Arguments are split on
whitespace (never a shell); every value goes through the same validation as the HTTP
API, and an error is answered with its message (only the sender sees it).

The commands that act as the team lead (:data:`PRIVILEGED`: hiring, firing, locking or
releasing any employee's files, approving or denying any request) run only for the
senders listed in ``chat.slack_lead_user_ids``; anyone else (and everyone, while that
list is empty) gets an ephemeral refusal naming the setting. The rest (``/assign``,
which is what a mention does, ``/request``, which only asks, and the read-only ones)
are open to the channel.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import OrchestraError, ValidationError
from ..models import normalise_path, validate_files
from .replies import escape

__all__ = ["COMMANDS", "PRIVILEGED", "CommandContext", "CommandReply", "run_command"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CommandContext:
    """What a command may use."""

    store: Any
    scheduler: Any
    project_root: Path
    leads: frozenset[str] = frozenset()  # sender ids that act as the team lead


@dataclass(frozen=True, slots=True)
class CommandReply:
    """Slack's response format: ``in_channel`` for everyone, ``ephemeral`` for the sender."""

    text: str
    public: bool = True

    def to_slack(self) -> dict[str, str]:
        """The JSON body Slack expects in answer to a slash command."""
        return {"response_type": "in_channel" if self.public else "ephemeral", "text": self.text}


def _need(args: list[str], n: int, usage: str) -> None:
    if len(args) < n:
        raise ValidationError("text", f"usage: {usage}")


async def _hire(ctx: CommandContext, args: list[str]) -> str:
    _need(args, 2, "/hire NAME ROLE [smart|normal]")
    emp = await ctx.store.hire(args[0], args[1], args[2] if len(args) > 2 else "normal")
    return f"Hired {escape(emp.name)} as {escape(emp.role)} ({emp.smartness})."


async def _fire(ctx: CommandContext, args: list[str]) -> str:
    _need(args, 1, "/fire NAME")
    report = await ctx.store.fire(args[0])
    ctx.scheduler.fired(report)
    return (f"Fired {escape(args[0])}: released {len(report.released_paths)} file(s), "
            f"cancelled {len(report.cancelled_task_ids)} task(s).")


async def _employees(ctx: CommandContext, args: list[str]) -> str:
    emps = await ctx.store.list_employees(limit=200)
    if not emps:
        return "No employees yet: /hire NAME ROLE."
    return "Employees: " + ", ".join(f"{escape(e.name)} ({escape(e.role)})" for e in emps)


async def _assign(ctx: CommandContext, args: list[str]) -> str:
    _need(args, 2, "/assign NAME TASK")
    task = await ctx.scheduler.submit(args[0], " ".join(args[1:]))
    return f"Task {task.id} for {escape(task.employee)} is {task.status}."


async def _lock(ctx: CommandContext, args: list[str]) -> str:
    _need(args, 2, "/lock NAME PATH...")
    files = validate_files(ctx.project_root, args[1:])
    result = await ctx.store.lock_files(args[0], files, description="locked from chat")
    return "; ".join(f"{escape(p)}: {s}" for p, s in result.items())


async def _release(ctx: CommandContext, args: list[str]) -> str:
    _need(args, 1, "/release NAME [PATH...]")
    files = validate_files(ctx.project_root, args[1:]) if len(args) > 1 else None
    released = await ctx.store.release_files(args[0], files)
    return f"Released {len(released)} file(s) of {escape(args[0])}."


async def _progress(ctx: CommandContext, args: list[str]) -> str:
    tasks = await ctx.store.list_tasks(status="running", employee=args[0] if args else None,
                                       limit=50)
    if not tasks:
        return "Nothing running."
    return "\n".join(f"task {t.id} ({escape(t.employee)}): {t.progress}% — "
                     f"{escape(t.description, 80)}" for t in tasks)


async def _status(ctx: CommandContext, args: list[str]) -> str:
    c = await ctx.store.counts()
    return (f"{c.get('employees', 0)} employees, {c.get('tasks_running', 0)} tasks running, "
            f"{c.get('tasks_queued', 0)} queued, {c.get('active_leases', 0)} files locked, "
            f"{c.get('pending_requests', 0)} pending requests.")


async def _request(ctx: CommandContext, args: list[str]) -> str:
    _need(args, 2, "/request NAME PATH [REASON]")
    path = normalise_path(ctx.project_root, args[1], "path")
    status, req = await ctx.store.request_file(args[0], path, " ".join(args[2:]))
    return f"{escape(path)}: {status}" + (f" (request {req.id})" if req else "")


def _request_id(args: list[str], usage: str) -> int:
    _need(args, 1, usage)
    if not args[0].isdigit():
        raise ValidationError("text", f"usage: {usage} (ID is a number)")
    return int(args[0])


async def _approve(ctx: CommandContext, args: list[str]) -> str:
    lease = await ctx.store.approve_request(_request_id(args, "/approve ID"))
    return f"Approved: {escape(lease.path)} now belongs to {escape(lease.employee)}."


async def _deny(ctx: CommandContext, args: list[str]) -> str:
    req = await ctx.store.deny_request(_request_id(args, "/deny ID"))
    return f"Denied request {req.id} for {escape(req.path)}."


Command = Callable[[CommandContext, list[str]], Awaitable[str]]
COMMANDS: dict[str, Command] = {
    "/hire": _hire, "/fire": _fire, "/employees": _employees, "/assign": _assign,
    "/lock": _lock, "/release": _release, "/progress": _progress, "/status": _status,
    "/request": _request, "/approve": _approve, "/deny": _deny,
}


#: The commands that act as the team lead (see the module doc).
PRIVILEGED = frozenset({"/hire", "/fire", "/lock", "/release", "/approve", "/deny"})


def _refusal(ctx: CommandContext, command: str, user: str) -> CommandReply:
    if not ctx.leads:
        why = "no Slack user is the team lead yet (an admin sets chat.slack_lead_user_ids)"
    else:
        why = (f"your Slack user id ({escape(user, 40) or 'unknown'}) is not in "
               f"chat.slack_lead_user_ids")
    return CommandReply(f"Only the team lead may use {command}: {why}.", public=False)


async def run_command(ctx: CommandContext, command: str, text: str, *,
                      user: str = "") -> CommandReply:
    """Run one slash command sent by ``user`` (the sender's id); errors, and privileged
    commands from anyone but a lead, become an ephemeral reply saying why."""
    fn = COMMANDS.get(command)
    if fn is None:
        return CommandReply(f"Unknown command {escape(command, 40)}; try one of "
                            f"{' '.join(COMMANDS)}", public=False)
    if command in PRIVILEGED and user not in ctx.leads:
        log.info("chat: %s refused: sender %r is not a lead", command, user[:40])
        return _refusal(ctx, command, user)
    try:
        return CommandReply(await fn(ctx, text.split()))
    except OrchestraError as exc:
        message = exc.message.replace(str(ctx.project_root), "<project root>")
        return CommandReply(f"{command} failed: {escape(message)}", public=False)
