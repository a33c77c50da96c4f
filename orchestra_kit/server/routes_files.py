"""File lease endpoints: lock, release, list, requests, approve, deny."""

from __future__ import annotations

from typing import Any

import pydantic
from aiohttp import web

from ..errors import ConflictError, ForbiddenError
from ..models import RequestStatus, normalise_path, validate_employee_name
from ..paths import check_files
from .http import (
    json_response,
    parse_body,
    path_id,
    query_choice,
    read_body,
    read_json,
    validation_error_from,
)
from .schemas import ActorBody, FileRequestBody, LockBody, ReleaseBody
from .state import IDENTITY, STATE

__all__ = ["routes"]

routes = web.RouteTableDef()

_REQUEST_STATUSES = frozenset(s.value for s in RequestStatus)
_PATH_LIST = pydantic.TypeAdapter(list[str], config=pydantic.ConfigDict(strict=True))


def _act_as(request: web.Request, name: str, field: str = "name") -> None:
    """403 when the caller's key is bound to another employee (``KEY=NAME`` keys); operator
    keys (unbound) and anonymous callers (no keys configured) may act for anyone."""
    identity = request.get(IDENTITY)
    if identity is not None and identity != name:
        raise ForbiddenError(f"This API key belongs to {identity!r}; it cannot act for "
                             f"{name!r}", details={"field": field, "identity": identity})


@routes.post("/files/lock")
async def lock(request: web.Request) -> web.Response:
    """Lease files for an employee; a status per path."""
    body = await parse_body(request, LockBody)
    _act_as(request, body.name)
    state = request.app[STATE]
    files = check_files(state.project_root, body.files)  # the store takes them as they are
    result = await state.require_store().lock_files(
        body.name, files, description=body.description, task_id=body.task_id)
    return json_response({"result": result})


async def _release_args(request: web.Request) -> tuple[str, list[str] | None]:
    """``{name, files?}`` in the body, or the async original's ``?name=`` + bare array."""
    name = request.query.get("name")
    if name is None:
        body = await parse_body(request, ReleaseBody)
        return body.name, body.files
    validate_employee_name(name, "name")
    raw = await read_json(request, "files")
    if raw is None:
        return name, None
    if isinstance(raw, dict):  # the {name, files?} body with ?name= too: they must agree
        try:
            body = ReleaseBody.model_validate(raw, strict=True)
        except pydantic.ValidationError as exc:
            raise validation_error_from(exc) from None
        if body.name != name:
            raise ConflictError(f"name: the query names {name!r} but the body {body.name!r}",
                                details={"field": "name"})
        return name, body.files
    try:
        files = _PATH_LIST.validate_python(raw)
    except pydantic.ValidationError as exc:
        raise validation_error_from(exc, prefix="files") from None
    return name, files


@routes.post("/files/release")
async def release(request: web.Request) -> web.Response:
    """Release some or all of an employee's leases; the paths released."""
    name, files = await _release_args(request)
    _act_as(request, name)
    state = request.app[STATE]
    checked = check_files(state.project_root, files) if files is not None else None
    released = await state.require_store().release_files(name, checked)
    return json_response({"released": list(released)})


@routes.get("/files")
async def leases(request: web.Request) -> web.Response:
    """Active leases, optionally of one employee."""
    employee = request.query.get("employee") or None
    if employee is not None:
        validate_employee_name(employee, "employee")
    items = await request.app[STATE].require_store().list_leases(employee=employee)
    return json_response({"files": [lease.to_dict() for lease in items]})


@routes.post("/files/requests")
async def request_file(request: web.Request) -> web.Response:
    """Ask for a file another employee holds: 201 when a request was created."""
    body = await parse_body(request, FileRequestBody)
    _act_as(request, body.requester, "requester")
    state = request.app[STATE]
    path = normalise_path(state.project_root, body.path, "path")
    status, req = await state.require_store().request_file(body.requester, path, body.reason)
    return json_response({"status": status, "request": req.to_dict() if req else None},
                         status=201 if status.startswith("request_sent_to") else 200)


@routes.get("/files/requests")
async def list_requests(request: web.Request) -> web.Response:
    """File requests, filtered by status and employee (requester or owner)."""
    status = query_choice(request, "status", _REQUEST_STATUSES)
    employee = request.query.get("employee") or None
    if employee is not None:
        validate_employee_name(employee, "employee")
    items = await request.app[STATE].require_store().list_requests(
        status=status, employee=employee)
    return json_response({"requests": [r.to_dict() for r in items]})


async def _actor(request: web.Request) -> str | None:
    """The actor resolving a request; required (403) when API keys are configured.

    A key bound to an employee IS that actor (claiming another is 403); with an operator
    key the claim is taken as given — such keys are not identities (docs/api.md).
    """
    raw = await read_body(request, request.app[STATE].settings.server.body_timeout_s)
    actor = None
    if raw.strip():
        actor = (await parse_body(request, ActorBody)).actor
    if actor is None:
        actor = request.headers.get("X-Actor") or None
        if actor is not None:
            validate_employee_name(actor, "actor")
    identity = request.get(IDENTITY)
    if identity is not None:
        if actor is not None:
            _act_as(request, actor, "actor")
        return str(identity)
    if actor is None and request.app[STATE].settings.server.api_keys:
        raise ForbiddenError("Only the lease owner may resolve a request: name it as 'actor'")
    return actor


@routes.post(r"/files/requests/{id:\d+}/approve")
async def approve(request: web.Request) -> web.Response:
    """Approve a request: the lease moves to the requester."""
    actor = await _actor(request)
    lease: Any = await request.app[STATE].require_store().approve_request(
        path_id(request, "request"), actor=actor)
    return json_response({"message": f"Request {request.match_info['id']} approved",
                          "lease": lease.to_dict()})


@routes.post(r"/files/requests/{id:\d+}/deny")
async def deny(request: web.Request) -> web.Response:
    """Deny a request."""
    actor = await _actor(request)
    req: Any = await request.app[STATE].require_store().deny_request(
        path_id(request, "request"), actor=actor)
    return json_response({"message": f"Request {request.match_info['id']} denied",
                          "request": req.to_dict()})
