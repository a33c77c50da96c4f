"""Domain records (Employee, Task, FileLease, FileRequest), their statuses and validators.

Validators raise :class:`~orchestra_kit.errors.ValidationError` naming the field, so the
HTTP layer, the CLI and the store report bad input the same way.
"""

from __future__ import annotations

import enum
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import ValidationError
from .paths import MAX_FILES_PER_CALL, CheckedFiles, check_files, normalise_path, validate_files

__all__ = [
    "MAX_DESCRIPTION_CHARS",
    "MAX_FILES_PER_CALL",
    "NAME_PATTERN",
    "TERMINAL_STATUSES",
    "CheckedFiles",
    "Employee",
    "EmployeeStatus",
    "FileLease",
    "FileRequest",
    "RequestStatus",
    "Smartness",
    "Task",
    "TaskMode",
    "TaskStatus",
    "can_transition",
    "check_files",
    "normalise_path",
    "validate_description",
    "validate_employee_name",
    "validate_files",
    "validate_model",
    "validate_priority",
    "validate_role",
    "validate_smartness",
]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
_NAME_RE = re.compile(NAME_PATTERN)
_CONTROL_RE = re.compile(r"[\x00-\x1f]")
_MODEL_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
MAX_DESCRIPTION_CHARS = 10_000
MAX_ROLE_CHARS = 50
MAX_MODEL_CHARS = 200


class Smartness(enum.StrEnum):
    """Which model tier an employee uses."""

    SMART = "smart"
    NORMAL = "normal"


_SMARTNESS = {m.value: m for m in Smartness}


class EmployeeStatus(enum.StrEnum):
    """Lifecycle of an employee row (fired employees are deleted)."""

    ACTIVE = "active"


class TaskMode(enum.StrEnum):
    """The original's task modes."""

    BUILD = "build"
    CHAT = "chat"
    ANALYZE = "analyze"


class TaskStatus(enum.StrEnum):
    """Lifecycle of a task."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"


TERMINAL_STATUSES = frozenset(
    {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.TIMED_OUT}
)

_TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.QUEUED: frozenset({TaskStatus.RUNNING, TaskStatus.CANCELLED, TaskStatus.FAILED}),
    # RUNNING -> QUEUED is a retry or a requeue at shutdown / recovery.
    TaskStatus.RUNNING: frozenset(
        {
            TaskStatus.QUEUED,
            TaskStatus.COMPLETED,
            TaskStatus.FAILED,
            TaskStatus.CANCELLED,
            TaskStatus.TIMED_OUT,
        }
    ),
}


def can_transition(old: TaskStatus, new: TaskStatus) -> bool:
    """Whether a task may move from ``old`` to ``new`` (terminal states never move)."""
    return new in _TRANSITIONS.get(old, frozenset())


class RequestStatus(enum.StrEnum):
    """Lifecycle of a file request."""

    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"


# --------------------------------------------------------------------------- validators


def validate_employee_name(name: Any, field_name: str = "name") -> str:
    """An employee name: it becomes a folder name, so only ``[A-Za-z0-9_-]``, 1-64 chars."""
    if not isinstance(name, str):
        raise ValidationError(field_name, f"must be a string, got {type(name).__name__}")
    if not _NAME_RE.fullmatch(name):  # fullmatch: `$` alone accepts "bob\n"
        raise ValidationError(
            field_name,
            f"{name[:80]!r} is not a valid name: 1-64 characters of letters, digits, '_' or '-',"
            " starting with a letter or digit",
            value=name,
        )
    return name


def validate_role(role: Any, field_name: str = "role") -> str:
    """A role: 1-50 characters, no control characters."""
    if not isinstance(role, str):
        raise ValidationError(field_name, f"must be a string, got {type(role).__name__}")
    stripped = role.strip()
    if not 1 <= len(stripped) <= MAX_ROLE_CHARS:
        raise ValidationError(
            field_name, f"must be 1-{MAX_ROLE_CHARS} characters, got {len(stripped)}", value=role
        )
    if _CONTROL_RE.search(stripped):
        raise ValidationError(field_name, "must not contain control characters", value=role)
    return stripped


def validate_smartness(value: Any, field_name: str = "smartness") -> Smartness:
    """``smart`` or ``normal`` (the original silently turned anything else into normal)."""
    found = _SMARTNESS.get(value) if isinstance(value, str) else None
    if found is not None:
        return found
    try:
        return Smartness(value)
    except ValueError:
        raise ValidationError(
            field_name, f"must be 'smart' or 'normal', got {value!r}", value=value
        ) from None


def validate_priority(value: Any, field_name: str = "priority") -> int:
    """An integer 0-10 (booleans are refused: ``false`` is not 0)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(
            field_name, f"must be an integer 0-10, got {type(value).__name__}", value=value
        )
    if not 0 <= value <= 10:
        raise ValidationError(field_name, f"must be between 0 and 10, got {value}", value=value)
    return value


def validate_description(value: Any, field_name: str = "description") -> str:
    """A task description: 1-10000 characters, not only whitespace."""
    if not isinstance(value, str):
        raise ValidationError(field_name, f"must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ValidationError(field_name, "must not be empty")
    if len(value) > MAX_DESCRIPTION_CHARS:
        raise ValidationError(
            field_name, f"must be at most {MAX_DESCRIPTION_CHARS} characters, got {len(value)}"
        )
    if "\x00" in value:
        raise ValidationError(field_name, "must not contain NUL bytes")
    return value


def validate_model(value: Any, field_name: str = "model") -> str | None:
    """A model name or None: 1-200 characters, no control characters (it reaches argv,
    environment variables and HTTP bodies, where a NUL fails late and obscurely)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(field_name, f"must be null or a string, got {type(value).__name__}")
    if not value.strip() or len(value) > MAX_MODEL_CHARS:
        raise ValidationError(field_name, f"must be null or a non-empty string of at most"
                              f" {MAX_MODEL_CHARS} characters, got {len(value)}", value=value)
    if _MODEL_CONTROL_RE.search(value):
        raise ValidationError(field_name, "must not contain control characters (NUL, newline,"
                              " ...)", value=value)
    return value


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True, kw_only=True)
class Employee:
    """A hired AI employee."""

    name: str
    role: str
    smartness: Smartness = Smartness.NORMAL
    status: EmployeeStatus = EmployeeStatus.ACTIVE
    hired_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the original's keys plus status)."""
        return {
            "name": self.name,
            "role": self.role,
            "smartness": str(self.smartness),
            "status": str(self.status),
            "hired_at": self.hired_at,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class FileLease:
    """An active or past lease of one path by one employee."""

    id: int
    path: str
    employee: str
    description: str = ""
    task_id: int | None = None
    acquired_at: float = 0.0
    expires_at: float | None = None
    released_at: float | None = None

    @property
    def active(self) -> bool:
        """Whether the lease has not been released."""
        return self.released_at is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class FileRequest:
    """A request by ``requester`` for a path leased by ``owner``."""

    id: int
    path: str
    requester: str
    owner: str
    reason: str = ""
    status: RequestStatus = RequestStatus.PENDING
    created_at: float = 0.0
    resolved_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        d = asdict(self)
        d["status"] = str(self.status)
        return d


@dataclass(frozen=True, slots=True, kw_only=True)
class Task:
    """A unit of work for one employee."""

    id: int
    employee: str
    description: str
    priority: int = 5
    model: str | None = None
    mode: TaskMode = TaskMode.BUILD
    files: tuple[str, ...] = field(default_factory=tuple)
    status: TaskStatus = TaskStatus.QUEUED
    attempts: int = 0
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    result: str | None = None
    error: str | None = None
    progress: int = 0
    usage: dict[str, Any] | None = None  # what the agent run cost (agents/usage.py)

    @property
    def terminal(self) -> bool:
        """Whether the task has finished, however it finished."""
        return self.status in TERMINAL_STATUSES

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (field by field: ``asdict`` deep-copies, ~10× the cost, and
        this is on the path of every task answer and SSE status event)."""
        return {"id": self.id, "employee": self.employee, "description": self.description,
                "priority": self.priority, "model": self.model, "mode": str(self.mode),
                "files": list(self.files), "status": str(self.status),
                "attempts": self.attempts, "created_at": self.created_at,
                "started_at": self.started_at, "finished_at": self.finished_at,
                "result": self.result, "error": self.error, "progress": self.progress,
                "usage": dict(self.usage) if self.usage is not None else None}
