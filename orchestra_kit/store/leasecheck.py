"""Checks shared by both stores' lease and request ops: pure functions of rows already
read (inside the caller's transaction), so SQLite and PostgreSQL decide alike."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import ConflictError, ForbiddenError, NotFoundError, ValidationError
from ..models import FileRequest, RequestStatus, validate_employee_name, validate_files
from .checks import check_id, check_text

__all__ = ["check_own_task", "check_pending", "lease_args", "request_status"]


def lease_args(root: Path, employee: str, files: Sequence[str], description: str,
               task_id: int | None, ttl_s: float | None,
               default_ttl_s: float) -> tuple[list[str], str, float]:
    """A lease request's checked arguments: (paths, description, ttl in seconds)."""
    validate_employee_name(employee, "employee")
    paths = validate_files(  # a task's CheckedFiles are taken as they are
        root, files if isinstance(files, str | tuple) else list(files))
    description = check_text(description, "description")
    if task_id is not None:
        check_id(task_id, "task_id")
    ttl = default_ttl_s if ttl_s is None else ttl_s
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl > 0:
        raise ValidationError("ttl_s", f"must be a positive number, got {ttl_s!r}")
    return paths, description, float(ttl)


def check_pending(req: FileRequest | None, request_id: int, actor: str | None) -> FileRequest:
    """``req`` when it exists, is pending and ``actor`` (if given) owns the lease asked for."""
    if req is None:
        raise NotFoundError(f"Request #{request_id} does not exist",
                            details={"request_id": request_id})
    if req.status != RequestStatus.PENDING:
        raise ConflictError(f"Request #{request_id} is already {req.status.value}, not pending",
                            details={"request_id": request_id, "status": req.status.value})
    if actor is not None and actor != req.owner:
        raise ForbiddenError(f"Only {req.owner!r} may resolve request #{request_id},"
                             f" not {actor!r}", details={"actor": actor})
    return req


def check_own_task(owner: str | None, employee: str, task_id: int) -> None:
    """A lease tagged with a task ends with that task: only the task's own employee
    (``owner``, None when there is no such task: NotFoundError) may tag one
    (ConflictError)."""
    if owner is None:
        raise NotFoundError(f"Task {task_id} does not exist", details={"task_id": task_id})
    if owner != employee:  # a well-formed request at odds with the stored state: 409
        raise ConflictError(f"Cannot tie a lease to task {task_id}: it belongs to {owner!r},"
                            f" not {employee!r} (a lease may only be tied to the employee's"
                            " own task)", details={"task_id": task_id, "owner": owner})


def request_status(status: str | None) -> str | None:
    """A request-status filter, validated (None: any status)."""
    if status is None:
        return None
    try:
        return RequestStatus(status).value
    except ValueError:
        raise ValidationError("status", f"must be one of pending, approved, denied,"
                              f" got {status!r}", value=status) from None
