"""Request bodies (strict pydantic v2 models) and response shapes for the OpenAPI spec.

Request models are strict and forbid unknown fields; where the original server's
bodies used other names, both are accepted through alias choices (``name`` or
``employee``, ``task`` or ``description``, ``file`` or ``path``). Field rules reuse
the validators of :mod:`orchestra_kit.models`, so the HTTP layer, the CLI and the
store word a bad value the same way ("priority: must be an integer 0-10, got bool").
Response models exist for the OpenAPI document only; handlers build plain dicts.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from ..errors import ValidationError
from ..models import (
    MAX_DESCRIPTION_CHARS,
    MAX_FILES_PER_CALL,
    NAME_PATTERN,
    Smartness,
    TaskMode,
    validate_description,
    validate_employee_name,
    validate_model,
    validate_priority,
    validate_role,
)

__all__ = [
    "MAX_BATCH",
    "ActorBody",
    "AssignBatchBody",
    "AssignBody",
    "FileRequestBody",
    "HireBatchBody",
    "HireBody",
    "LockBody",
    "ReleaseBody",
]

MAX_BATCH = 1000
MAX_ID = 2**63 - 1  # SQLite's largest integer key
MAX_MODEL_CHARS = 200
MAX_REASON_CHARS = 2000
# What the server accepts, as JSON Schema patterns (a fuzzer checks both directions):
# a path relative to the project root, with no `..` segment, not the root itself, not
# blank (absolute paths inside the root are accepted too, but cannot be described here).
_PATH_PATTERN = (r"^(?![/\\])(?!.*(^|[/\\])\.\.([/\\]|$))(?!\.?([/\\]+\.?)*[/\\]*$)"
                 r"(?=.*\S)[^\x00]+$")
#: A role: no control characters (not even around it), one non-space at least.
ROLE_PATTERN = r"^[^\x00-\x1f]*[^\x00-\x1f\s][^\x00-\x1f]*$"
_CONTROL = re.compile(r"[\x00-\x1f]")
MAX_ROLE_CHARS = 50


def _name(v: Any) -> str:
    return validate_employee_name(v, "name")


def _role(v: Any) -> str:
    if isinstance(v, str) and len(v) > MAX_ROLE_CHARS:  # the raw text, as the schema says
        raise ValidationError("role", f"must be at most {MAX_ROLE_CHARS} characters")
    if isinstance(v, str) and _CONTROL.search(v):  # a tab or newline around it too
        raise ValidationError("role", "must not contain control characters")
    return validate_role(v, "role")


def _integral(v: Any) -> Any:
    """``5.0`` is the integer 5 (JSON Schema's ``integer``); booleans stay refused."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def _priority(v: Any) -> int:
    return validate_priority(_integral(v), "priority")


def _description(v: Any) -> str:
    return validate_description(v, "description")


# A BeforeValidator makes pydantic drop the Field constraints from the JSON Schema, so
# each type states its schema explicitly (the OpenAPI document and fuzzers rely on it).
EmployeeName = Annotated[
    str, BeforeValidator(_name),
    WithJsonSchema({"type": "string", "pattern": NAME_PATTERN, "minLength": 1, "maxLength": 64}),
]
Role = Annotated[
    str, BeforeValidator(_role),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": MAX_ROLE_CHARS,
                    "pattern": ROLE_PATTERN}),
]
Priority = Annotated[int, BeforeValidator(_priority),
                     WithJsonSchema({"type": "integer", "minimum": 0, "maximum": 10})]
Description = Annotated[
    str, BeforeValidator(_description),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": MAX_DESCRIPTION_CHARS,
                    "pattern": r"^[^\x00]*[^\x00\s][^\x00]*$"}),
]
# The pattern is for the spec only (pydantic's regex engine has no look-around); the
# server's rule is models.normalise_path, which the pattern describes.
FilePath = Annotated[str, Field(min_length=1, max_length=1024),
                     WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 1024,
                                     "pattern": _PATH_PATTERN})]
ModelName = Annotated[
    str, BeforeValidator(lambda v: validate_model(v, "model")),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": MAX_MODEL_CHARS,
                    "pattern": r"^[^\x00-\x1f\x7f]*[^\x00-\x1f\x7f\s][^\x00-\x1f\x7f]*$"}),
]
TaskId = Annotated[int, BeforeValidator(_integral), Field(ge=1, le=MAX_ID),
                   WithJsonSchema({"type": "integer", "minimum": 1, "maximum": MAX_ID})]

_STRICT = ConfigDict(strict=True, extra="forbid", populate_by_name=False)


class HireBody(BaseModel):
    """POST /employees: the original's ``{name, role, smartness}``."""

    model_config = _STRICT
    name: EmployeeName
    role: Role
    smartness: Smartness = Smartness.NORMAL


class HireBatchBody(BaseModel):
    """POST /employees/batch: ``{employees: [HireBody, ...]}`` (1-1000)."""

    model_config = _STRICT
    employees: list[HireBody] = Field(min_length=1, max_length=MAX_BATCH)


class AssignBody(BaseModel):
    """POST /tasks: the original's ``{name, task, model?, mode, priority}`` (+ ``files``)."""

    model_config = _STRICT
    name: EmployeeName = Field(validation_alias=AliasChoices("name", "employee"))
    task: Description = Field(validation_alias=AliasChoices("task", "description"))
    model: ModelName | None = None
    mode: TaskMode = TaskMode.BUILD
    priority: Priority = 5
    files: list[FilePath] = Field(default_factory=list, max_length=MAX_FILES_PER_CALL)


class AssignBatchBody(BaseModel):
    """POST /tasks/batch: ``{tasks: [AssignBody, ...]}`` (1-1000)."""

    model_config = _STRICT
    tasks: list[AssignBody] = Field(min_length=1, max_length=MAX_BATCH)


class LockBody(BaseModel):
    """POST /files/lock: the original's ``{name, files, description}``."""

    model_config = _STRICT
    name: EmployeeName
    files: list[FilePath] = Field(min_length=1, max_length=MAX_FILES_PER_CALL)
    description: Annotated[str, Field(max_length=MAX_DESCRIPTION_CHARS)] = ""
    task_id: TaskId | None = None


class ReleaseBody(BaseModel):
    """POST /files/release: ``{name, files?}`` (all of the employee's leases without files)."""

    model_config = _STRICT
    name: EmployeeName
    files: list[FilePath] | None = Field(default=None, max_length=MAX_FILES_PER_CALL)


class FileRequestBody(BaseModel):
    """POST /files/requests: ``{name|requester, file|path, reason}``."""

    model_config = _STRICT
    requester: EmployeeName = Field(validation_alias=AliasChoices("requester", "name"))
    path: FilePath = Field(validation_alias=AliasChoices("path", "file"))
    reason: Annotated[str, Field(max_length=MAX_REASON_CHARS)] = ""


class ActorBody(BaseModel):
    """POST /files/requests/{id}/approve|deny: who resolves it (required when auth is on)."""

    model_config = _STRICT
    actor: EmployeeName | None = None


# ---------------------------------------------------------------------- responses


class EmployeeOut(BaseModel):
    """An employee."""

    name: str
    role: str
    smartness: Smartness
    status: str
    hired_at: float


class TaskOut(BaseModel):
    """A task."""

    id: int
    employee: str
    description: str
    priority: int
    model: str | None
    mode: str
    files: list[str]
    status: str
    attempts: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    result: str | None
    error: str | None
    progress: int
    usage: dict[str, Any] | None = None


class LeaseOut(BaseModel):
    """A file lease."""

    id: int
    path: str
    employee: str
    description: str
    task_id: int | None
    acquired_at: float
    expires_at: float | None
    released_at: float | None


class FileRequestOut(BaseModel):
    """A request for a leased file."""

    id: int
    path: str
    requester: str
    owner: str
    reason: str
    status: str
    created_at: float
    resolved_at: float | None


class ErrorInfo(BaseModel):
    """The ``error`` object of every error answer."""

    code: str
    message: str
    details: Any = None


class ErrorBody(BaseModel):
    """Every error answer."""

    error: ErrorInfo
    request_id: str


class HireOut(BaseModel):
    """POST /employees answer."""

    message: str
    employee: EmployeeOut


class BatchItemOut(BaseModel):
    """One item of a batch answer."""

    name: str | None = None
    ok: bool
    error: ErrorInfo | None = None
    task_id: int | None = None


class HireBatchOut(BaseModel):
    """POST /employees/batch answer (the original's ``results`` map plus ``items``)."""

    message: str
    results: dict[str, bool]
    items: list[BatchItemOut]


class AssignOut(BaseModel):
    """POST /tasks answer."""

    task_id: int
    status: str
    session_id: str
    message: str
    task: TaskOut
    model: str | None
    mode: str
    priority: int


class AssignBatchOut(BaseModel):
    """POST /tasks/batch answer."""

    message: str
    results: list[dict[str, Any]]
    items: list[BatchItemOut]
