"""The texts the chat layer sends: short, Slack-mrkdwn safe (user text is escaped)."""

from __future__ import annotations

from collections.abc import Sequence

from ..models import Task

__all__ = ["HELP_TEXT", "completion_text", "escape", "limited_text", "progress_text",
           "taken_text"]

HELP_TEXT = (
    "Mention an employee with a task: `@alice please add a health endpoint in src/app.py` "
    "(paths in the message become the task's files). `@alice status` tells what alice is "
    "doing. Slash commands: /hire /fire /employees /assign /lock /release /progress /status "
    "/request /approve /deny."
)
_MAX_ECHO = 300


def escape(text: str, limit: int = _MAX_ECHO) -> str:
    """User or agent text made inert for Slack (no <!channel> pings, no links), shortened."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def taken_text(tasks: Sequence[Task]) -> str:
    """The first reply in the thread: who took the message on, as which task."""
    parts = [f"{escape(t.employee)} took this on as task {t.id} ({t.status})" for t in tasks]
    files = sorted({f for t in tasks for f in t.files})
    tail = f" Files: {', '.join(escape(f) for f in files)}." if files else ""
    return "; ".join(parts) + "." + tail


def progress_text(task: Task | None, task_id: int, employee: str, progress: int) -> str:
    """A progress update (edited in place in the thread)."""
    return f"Task {task_id} for {escape(employee)}: {progress}% done"


def completion_text(task: Task, files_touched: Sequence[str]) -> str:
    """The completion message: outcome, summary and files touched."""
    head = f"Task {task.id} for {escape(task.employee)} {task.status}"
    if task.status == "completed":
        body = f": {escape(task.result or 'done', 1500)}"
    else:
        body = f": {escape(task.error or str(task.status), 500)}"
    files = sorted(set(files_touched))
    tail = f"\nFiles touched: {', '.join(escape(f) for f in files)}" if files else ""
    return head + body + tail


def limited_text(user: str, reason: str, retry_after_s: float) -> str:
    """The polite answer to a sender over the limit."""
    return (f"Sorry <@{escape(user, 40)}>, I take at most {reason} from each person; "
            f"please try again in {max(1, round(retry_after_s))} s.")
