"""The per-task progress file (``current_task.md``), in the original system's format.

An employee's workspace holds ``current_task.md`` while a task runs; agents (and the
scheduler) update it, and people read it. :func:`render` writes the document and
:func:`parse` reads it back, so ``parse(render(doc)) == doc`` for any valid document.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["CHECKBOXES", "FileProgress", "ProgressDoc", "parse", "render"]

CHECKBOXES = (
    "Task started",
    "Files locked",
    "Work in progress",
    "Work completed",
    "Files released",
)
READY_MARK = "READY TO RELEASE"
_FILE_LINE = re.compile(r"^- (?P<path>.+?): (?P<pct>\d{1,3})% complete(?: \((?P<note>.*)\))?$")
_CHECK_LINE = re.compile(r"^- \[(?P<mark>[ xX])\] (?P<label>.+)$")


@dataclass(frozen=True, slots=True, kw_only=True)
class FileProgress:
    """How far work on one file has come."""

    path: str
    percent: int = 0
    note: str = ""

    @property
    def ready(self) -> bool:
        """The original's rule: 100 % or a note saying READY TO RELEASE."""
        return self.percent >= 100 or READY_MARK in self.note


@dataclass(frozen=True, slots=True, kw_only=True)
class ProgressDoc:
    """The content of ``current_task.md``."""

    task: str
    assigned: str = ""
    files: tuple[FileProgress, ...] = ()
    checks: tuple[bool, ...] = (False,) * len(CHECKBOXES)
    current_work: str = ""
    next_steps: str = ""
    notes: str = ""

    @property
    def overall_progress(self) -> int:
        """Integer mean of the files' percentages (checkbox share when no files)."""
        if self.files:
            return sum(min(f.percent, 100) for f in self.files) // len(self.files)
        return 100 * sum(self.checks) // len(CHECKBOXES)

    @property
    def ready_files(self) -> tuple[str, ...]:
        """Paths that may be released."""
        return tuple(f.path for f in self.files if f.ready)


def render(doc: ProgressDoc) -> str:
    """The Markdown text of ``doc``."""
    lines = [f"# Current Task: {doc.task}", "", f"## Assigned: {doc.assigned}", ""]
    lines.append("## Files Needed:")
    lines += [f"- {f.path}" for f in doc.files] or ["- (none)"]
    lines += ["", "## Progress:"]
    lines += [f"- [{'x' if done else ' '}] {label}" for label, done in zip(CHECKBOXES, doc.checks)]
    lines += ["", "## File Status:"]
    for f in doc.files:
        note = f" ({f.note})" if f.note else ""
        lines.append(f"- {f.path}: {f.percent}% complete{note}")
    for title, body in (
        ("Current Work", doc.current_work),
        ("Next Steps", doc.next_steps),
        ("Notes", doc.notes),
    ):
        lines += ["", f"## {title}:", body]
    return "\n".join(lines) + "\n"


def _sections(text: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.startswith("# Current Task:"):
            sections["task"] = [line.partition(":")[2].strip()]
        elif line.startswith("## ") and ":" in line:
            name, _, rest = line[3:].partition(":")
            current = name.strip().lower()
            sections[current] = [rest.strip()] if rest.strip() else []
        elif current:
            sections[current].append(line)
    return sections


def _block(lines: list[str]) -> str:
    return "\n".join(lines).strip()


def parse(text: str) -> ProgressDoc:
    """Read a ``current_task.md``; unknown lines are ignored, missing sections default."""
    sec = _sections(text)
    files: list[FileProgress] = []
    for line in sec.get("file status", []):
        m = _FILE_LINE.match(line.strip())
        if m:
            files.append(
                FileProgress(path=m["path"], percent=int(m["pct"]), note=m["note"] or "")
            )
    marks = {m["label"].strip(): m["mark"] != " "
             for line in sec.get("progress", []) if (m := _CHECK_LINE.match(line.strip()))}
    return ProgressDoc(
        task=_block(sec.get("task", [""])),
        assigned=_block(sec.get("assigned", [])),
        files=tuple(files),
        checks=tuple(marks.get(label, False) for label in CHECKBOXES),
        current_work=_block(sec.get("current work", [])),
        next_steps=_block(sec.get("next steps", [])),
        notes=_block(sec.get("notes", [])),
    )
