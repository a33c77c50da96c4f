"""Input checks and row builders shared by both stores (SQLite and PostgreSQL).

Both backends validate the same way, so a bad value is worded identically whichever
database is behind the service (the field is named: ``tasks[3].priority``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ValidationError
from ..models import (
    Employee,
    Task,
    TaskMode,
    TaskStatus,
    check_files,
    validate_description,
    validate_employee_name,
    validate_model,
    validate_priority,
    validate_role,
    validate_smartness,
)

__all__ = ["check_id", "check_text", "new_employee", "new_task", "optional_text", "task_status"]


def new_employee(name: Any, role: Any, smartness: Any, *, now: float, prefix: str = "") -> Employee:
    """A validated Employee (field names carry ``prefix``, e.g. ``employees[3].``)."""
    return Employee(
        name=validate_employee_name(name, f"{prefix}name"),
        role=validate_role(role, f"{prefix}role"),
        smartness=validate_smartness(smartness, f"{prefix}smartness"),
        hired_at=now,
    )


def new_task(item: Mapping[str, Any], *, project_root: Path, now: float,
             prefix: str = "") -> Task:
    """A validated, not yet stored Task (id 0) from a request item."""
    mode = item.get("mode", TaskMode.BUILD.value)
    try:
        task_mode = TaskMode(mode)
    except ValueError:
        raise ValidationError(f"{prefix}mode", f"must be build, chat or analyze, got"
                              f" {mode!r}", value=mode) from None
    files = item.get("files", ())
    return Task(
        id=0,
        employee=validate_employee_name(item.get("employee"), f"{prefix}employee"),
        description=validate_description(item.get("description"), f"{prefix}description"),
        priority=validate_priority(item.get("priority", 5), f"{prefix}priority"),
        model=validate_model(item.get("model"), f"{prefix}model"),
        mode=task_mode,
        files=check_files(project_root, files, f"{prefix}files"),
        created_at=now,
    )


def optional_text(value: Any, field: str, max_chars: int) -> str | None:
    """None, or a non-empty string of at most ``max_chars``."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > max_chars:
        raise ValidationError(field, f"must be null or a non-empty string of at most"
                              f" {max_chars} characters, got {value!r}"[:200], value=value)
    return value


def task_status(value: Any, field: str) -> TaskStatus:
    """``value`` as a TaskStatus, or a ValidationError listing the allowed ones."""
    try:
        return TaskStatus(value)
    except ValueError:
        allowed = ", ".join(s.value for s in TaskStatus)
        raise ValidationError(field, f"must be one of {allowed}, got {value!r}",
                              value=value) from None


def check_text(value: Any, field: str, max_chars: int = 10_000) -> str:
    """A string of at most ``max_chars`` without NUL."""
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a string, got {type(value).__name__}")
    if len(value) > max_chars or "\x00" in value:
        raise ValidationError(field, f"must be at most {max_chars} characters, without NUL")
    return value


def check_id(value: Any, field: str) -> int:
    """A positive integer id (booleans refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(field, f"must be a positive integer, got {value!r}", value=value)
    return value
