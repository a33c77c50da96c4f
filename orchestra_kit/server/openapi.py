"""The OpenAPI 3.1 document, assembled from the pydantic models' JSON Schema.

Request bodies and response shapes come from :mod:`.schemas`; the operation table
below lists every path, method, parameter and the statuses each can answer, so a
fuzzer (schemathesis) can check the server against it.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from ..models import NAME_PATTERN
from . import schemas as s

__all__ = ["OPERATIONS", "openapi_document", "slack_paths"]

_REF = "#/components/schemas/{model}"
_MUTATING = {"post", "put", "patch", "delete"}

_ERROR_TEXT = {
    "400": "Malformed JSON body", "401": "Missing or wrong API key (when keys are configured)",
    "403": "Not allowed for this actor", "404": "Not found", "405": "Method not allowed",
    "408": "The request body did not arrive in time",
    "409": "Conflict with the current state", "413": "Request body too large",
    "422": "Validation failed (the field is named)", "429": "Rate limited (see Retry-After)",
    "503": "Starting or draining",
}

NAME_PARAM = {"name": "name", "in": "path", "required": True,
              "schema": {"type": "string", "pattern": "^(?!batch$)" + NAME_PATTERN[1:]}}
ID_PARAM = {"name": "id", "in": "path", "required": True,
            "schema": {"type": "integer", "minimum": 0}}


def _q(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


_LIMIT = _q("limit", {"type": "integer", "minimum": 1, "maximum": 10000})
_OFFSET = _q("offset", {"type": "integer", "minimum": 0, "maximum": 1000000000})
#: An empty filter is no filter.
_EMPLOYEE_Q = _q("employee", {"type": "string", "pattern": "^(|" + NAME_PATTERN[1:-1] + ")$"})
# An empty filter is no filter: "" is in each enum.
_TASK_STATUS = _q("status", {"type": "string", "enum": [
    "", "queued", "running", "completed", "failed", "cancelled", "timed_out"]})

#: The async original's form of release (``?name=`` with a bare JSON array of paths, or
#: no body) is still served but not described by the schema: OpenAPI cannot say "the
#: name in the query or in the body", and with both optional a request naming nobody
#: would be schema-valid. Given with the body, the query's name must match it (409).
_RELEASE_NAME = {**_q("name", {"type": "string", "pattern": NAME_PATTERN}), "deprecated": True,
                 "description": "The async original's form: the employee whose leases to "
                                "release, with a bare JSON array of paths or no body (all). "
                                "With the {name, files?} body it must name the same employee "
                                "(409 otherwise)."}
_OBJ: dict[str, Any] = {"type": "object"}
_SSE_EVENT = {"type": "object", "description": "one event: status | progress | file | text",
              "properties": {"event": {"type": "string"}, "data": {"type": "string"}}}


def _LIST_OF(key: str, ref: str) -> dict[str, Any]:
    return {"type": "object", "required": [key],
            "properties": {key: {"type": "array", "items": {"$ref": _REF.format(model=ref)}}}}


# (method, path, summary, request model, success status, success schema or model, params,
#  extra error statuses)
Op = tuple[str, str, str, type[BaseModel] | None, str, Any, list[dict[str, Any]], tuple[str, ...]]
OPERATIONS: list[Op] = [
    ("get", "/health", "Liveness and readiness", None, "200", _OBJ, [], ()),
    ("get", "/performance", "The seed's metrics document", None, "200", _OBJ, [], ()),
    ("get", "/metrics", "Prometheus text format", None, "200", "text", [], ()),
    ("get", "/status", "The original's summary", None, "200", _OBJ, [], ()),
    ("get", "/openapi.json", "This document", None, "200", _OBJ, [], ()),
    ("get", "/docs", "API documentation page", None, "200", "html", [], ()),
    ("get", "/employees", "List employees", None, "200", _LIST_OF("employees", "EmployeeOut"),
     [_q("role", {"type": "string"}), _q("smartness", {"type": "string",
                                                         "enum": ["", "smart", "normal"]}),
      _LIMIT, _OFFSET], ("422",)),
    ("post", "/employees", "Hire an employee", s.HireBody, "201", s.HireOut, [], ("409",)),
    ("post", "/employees/batch", "Hire up to 1000 employees in one transaction",
     s.HireBatchBody, "200", s.HireBatchOut, [], ()),
    ("get", "/employees/{name}", "One employee", None, "200", s.EmployeeOut, [NAME_PARAM],
     ("404", "422")),
    ("delete", "/employees/{name}", "Fire an employee", None, "200", _OBJ, [NAME_PARAM],
     ("404", "422")),
    ("post", "/tasks", "Assign a task (202 queued; 200 finished when async processing is off)",
     s.AssignBody, "202", s.AssignOut, [], ("200", "404", "409")),
    ("post", "/tasks/batch", "Assign up to 1000 tasks", s.AssignBatchBody, "200",
     s.AssignBatchOut, [], ()),
    ("get", "/tasks", "List tasks", None, "200", _LIST_OF("tasks", "TaskOut"),
     [_TASK_STATUS, _EMPLOYEE_Q, _LIMIT, _OFFSET], ("422",)),
    ("get", "/tasks/{id}", "One task", None, "200", s.TaskOut, [ID_PARAM], ("404",)),
    ("get", "/tasks/{id}/events", "Server-Sent Events of a task until it ends", None, "200",
     "sse", [ID_PARAM], ("404",)),
    ("delete", "/tasks/{id}", "Cancel a task by id, or an employee's tasks by name", None,
     "200", _OBJ, [{"name": "id", "in": "path", "required": True,
                    "schema": {"type": "string", "pattern": r"^(\d+|[A-Za-z0-9][A-Za-z0-9_-]{0,63})$"}}],
     ("202", "404", "409", "422")),
    ("post", "/files/lock", "Lease files", s.LockBody, "200", _OBJ, [], ("403", "404", "409")),
    ("post", "/files/release", ("Release leases: the body {name, files?} (all of them without"
     " files)"), s.ReleaseBody, "200", _OBJ, [_RELEASE_NAME], ("403", "404", "409")),
    ("get", "/files", "Active leases", None, "200", _LIST_OF("files", "LeaseOut"),
     [_EMPLOYEE_Q], ("422",)),
    ("post", "/files/requests", "Request a leased file", s.FileRequestBody, "201", _OBJ, [],
     ("200", "403", "404", "409")),
    ("get", "/files/requests", "List file requests", None, "200",
     _LIST_OF("requests", "FileRequestOut"),
     [_q("status", {"type": "string", "enum": ["", "pending", "approved", "denied"]}),
      _EMPLOYEE_Q], ("422",)),
    ("post", "/files/requests/{id}/approve", "Approve a request (the lease owner)",
     s.ActorBody, "200", _OBJ, [ID_PARAM], ("403", "404", "409")),
    ("post", "/files/requests/{id}/deny", "Deny a request (the lease owner)", s.ActorBody,
     "200", _OBJ, [ID_PARAM], ("403", "404", "409")),
]

#: Bodies that may be left out (approve/deny take the actor from the key or X-Actor).
_OPTIONAL_BODIES: tuple[type[BaseModel], ...] = (s.ActorBody,)

_SLACK_HEADERS = [
    {"name": "X-Slack-Signature", "in": "header", "required": False,
     "schema": {"type": "string"}},
    {"name": "X-Slack-Request-Timestamp", "in": "header", "required": False,
     "schema": {"type": "string"}},
    {"name": "X-Slack-Retry-Num", "in": "header", "required": False,
     "schema": {"type": "string"}},
]


def _slack_operation(summary: str, media: str) -> dict[str, Any]:
    """A Slack route: signed by Slack (no bearer key), 404 while chat is disabled."""
    any_body = {"schema": {"type": "object"} if media == "application/json"
                else {"type": "string"}}
    text = {"text/plain": {"schema": {"type": "string"}}}
    return {
        "summary": summary, "parameters": _SLACK_HEADERS,
        "requestBody": {"required": True, "content": {media: any_body}},
        "security": [{}],
        "responses": {
            "200": {"description": "Acknowledged (url_verification: the challenge)",
                    "content": {"application/json": {"schema": _OBJ}, **text}},
            "401": {"description": "Missing, wrong or stale Slack signature",
                    "content": {"application/json": {"schema": _OBJ}, **text}},
            "404": {"description": "Chat is not enabled (or an event with no listener)",
                    "content": {"application/json": {"schema": _OBJ}, **text}},
            "413": {"description": _ERROR_TEXT["413"], "content": _content(s.ErrorBody)},
            "429": {"description": "The Slack team is over its budget "
                                   "(chat.team_requests_per_minute); Slack retries later",
                    "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                    "content": {"application/json": {"schema": _OBJ}}},
            "503": {"description": _ERROR_TEXT["503"], "content": _content(s.ErrorBody)},
        },
    }


def slack_paths() -> dict[str, dict[str, Any]]:
    """The Slack routes' entries of the document."""
    return {
        "/slack/events": {"post": _slack_operation(
            "Slack Events API: url_verification, app_mention, channel messages",
            "application/json")},
        "/slack/commands": {"post": _slack_operation(
            "Slack slash commands (/hire /fire /employees /assign /lock /release /progress "
            "/status /request /approve /deny)", "application/x-www-form-urlencoded")},
    }

_RESPONSE_MODELS: list[type[BaseModel]] = [s.ErrorBody, s.HireOut, s.HireBatchOut, s.AssignOut, s.AssignBatchOut,
                    s.EmployeeOut, s.TaskOut, s.LeaseOut, s.FileRequestOut]


def _content(schema: Any) -> dict[str, Any]:
    if schema == "text":
        return {"text/plain": {"schema": {"type": "string"}}}
    if schema == "html":
        return {"text/html": {"schema": {"type": "string"}}}
    if schema == "sse":
        return {"text/event-stream": {"schema": _SSE_EVENT}}
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        schema = {"$ref": _REF.format(model=schema.__name__)}
    return {"application/json": {"schema": schema}}


def _operation(op: Op) -> dict[str, Any]:
    method, _path, summary, body, ok, ok_schema, params, extra = op
    errors = {"429", "503"} | set(extra)
    if method in _MUTATING:
        errors |= {"401"}
    if body is not None:
        errors |= {"400", "408", "413", "422"}
    responses: dict[str, Any] = {ok: {"description": "Success", "content": _content(ok_schema)}}
    for code in sorted(errors - {ok}):
        if code == "200":
            responses[code] = {"description": "Success", "content": _content(ok_schema)}
        elif code == "202":  # DELETE /tasks/{id} of a task running on another instance
            responses[code] = {"description": "Cancel requested: another instance runs the"
                               " task and stops it", "content": _content(ok_schema)}
        else:
            responses[code] = {"description": _ERROR_TEXT[code], "content": _content(s.ErrorBody)}
    out: dict[str, Any] = {"summary": summary, "parameters": params, "responses": responses}
    if body is not None:
        out["requestBody"] = {"required": body not in _OPTIONAL_BODIES,
                              "content": _content(body)}
    if method in _MUTATING:
        out["security"] = [{}, {"bearerAuth": []}]
    return out


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The whole OpenAPI 3.1 document (built once per process)."""
    models: list[type[BaseModel]] = [op[3] for op in OPERATIONS if op[3] is not None]
    unique = list(dict.fromkeys(models + _RESPONSE_MODELS))
    inputs: list[tuple[type[BaseModel], Literal["validation"]]] = [
        (m, "validation") for m in unique]
    _, defs = models_json_schema(inputs, ref_template=_REF)
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op[1], {})[op[0]] = _operation(op)
    paths.update(slack_paths())
    return {
        "openapi": "3.1.0",
        "info": {"title": "orchestra_kit API", "version": "1.0.0",
                 "description": "AI employees, file leases and prioritised tasks over HTTP. "
                                "Mutating requests need 'Authorization: Bearer <key>' when "
                                "API keys are configured."},
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
    }
