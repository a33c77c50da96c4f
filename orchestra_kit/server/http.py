"""JSON answers, the error shape, and body parsing shared by every route.

Every error answer is ``{"error": {"code", "message", "details"}, "request_id"}``.
HTTP-only errors (malformed JSON, missing key, oversize body ...) are small
:class:`~orchestra_kit.errors.OrchestraError` subclasses so one mapping handles all.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

import pydantic
from aiohttp import web

from ..errors import NotFoundError, OrchestraError, ValidationError
from . import codec

__all__ = [
    "BadJsonError",
    "BodyTooLargeError",
    "InternalError",
    "MethodNotAllowedError",
    "RouteNotFoundError",
    "UnauthorizedError",
    "error_response",
    "json_response",
    "parse_body",
    "validation_error_from",
]

M = TypeVar("M", bound=pydantic.BaseModel)


class BadJsonError(OrchestraError):
    """The body is not valid JSON."""

    code = "bad_json"
    http_status = 400


class UnauthorizedError(OrchestraError):
    """A mutating request without a valid API key."""

    code = "unauthorized"
    http_status = 401


class RouteNotFoundError(OrchestraError):
    """No route matches the path."""

    code = "not_found"
    http_status = 404


class MethodNotAllowedError(OrchestraError):
    """The path exists but not with this method."""

    code = "method_not_allowed"
    http_status = 405


class InternalError(OrchestraError):
    """An unexpected failure; the answer says nothing more (the log has the traceback)."""

    code = "internal_error"
    http_status = 500


class BodyTooLargeError(OrchestraError):
    """The request body is over ``server.max_body_bytes``."""

    code = "body_too_large"
    http_status = 413


def dumps(data: Any) -> bytes:
    """Compact UTF-8 JSON (the encoder ``server.json_encoder`` chose)."""
    return codec.encode(data)


def json_response(data: Any, status: int = 200) -> web.Response:
    """A JSON answer."""
    return bytes_response(codec.encode(data), status)


def bytes_response(body: bytes, status: int = 200) -> web.Response:
    """A JSON answer from already encoded bytes."""
    return web.Response(body=body, status=status, content_type="application/json")


def error_response(error: OrchestraError, request_id: str) -> web.Response:
    """The error shape for ``error`` (status from its ``http_status``)."""
    body = {
        "error": {"code": error.code, "message": error.message, "details": error.details},
        "request_id": request_id,
    }
    return json_response(body, status=error.http_status)


def _field(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "body"


_PROBLEMS = {
    "missing": "is required",
    "extra_forbidden": "is not an allowed field",
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
}


def validation_error_from(exc: pydantic.ValidationError, prefix: str = "") -> OrchestraError:
    """Our 400/422 error for a pydantic error (``bad_json`` when the JSON itself is bad)."""
    problems: list[dict[str, str]] = []
    for err in exc.errors(include_url=False, include_input=False):
        if err["type"] == "json_invalid":
            return BadJsonError("The request body is not valid JSON",
                                details={"problem": str(err.get("ctx", {}).get("error", ""))})
        loc = tuple(err["loc"])
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, ValidationError):
            problem = cause.problem
        elif err["type"] in _PROBLEMS:
            problem = _PROBLEMS[err["type"]]
        else:
            problem = _problem_text(err)
        field = _field(loc)
        problems.append({"field": f"{prefix}{field}" if prefix else field, "problem": problem})
    first = problems[0] if problems else {"field": "body", "problem": "is invalid"}
    error = ValidationError(first["field"], first["problem"])
    error.details = {"field": first["field"], "errors": problems}
    if len(problems) > 1:
        error.message += f" (and {len(problems) - 1} more)"
    return error


def _problem_text(err: Any) -> str:
    msg = str(err.get("msg", "is invalid"))
    msg = msg.removeprefix("Value error, ")
    msg = msg[0].lower() + msg[1:] if msg else msg
    return msg if msg.startswith(("must", "is ")) else f"invalid: {msg}"


async def parse_body(request: web.Request, model: type[M]) -> M:
    """Read and validate the JSON body with a strict model; 400/413/422 on failure."""
    raw = await request.read()
    if not raw.strip():
        raise BadJsonError("The request body is empty; a JSON object is required")
    try:
        return model.model_validate_json(raw, strict=True)
    except pydantic.ValidationError as exc:
        raise validation_error_from(exc) from None


async def read_json(request: web.Request) -> Any:
    """The parsed JSON body, or None when empty; 400 when malformed."""
    raw = await request.read()
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadJsonError("The request body is not valid JSON",
                           details={"problem": str(exc)[:200]}) from None


def query_int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    """An integer query parameter within ``lo..hi``; 422 naming it otherwise."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError(name, f"must be an integer {lo}-{hi}, got {raw[:40]!r}") from None
    if not lo <= value <= hi:
        raise ValidationError(name, f"must be between {lo} and {hi}, got {value}")
    return value


def query_choice(request: web.Request, name: str, choices: frozenset[str]) -> str | None:
    """An optional query parameter that must be one of ``choices``."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if raw not in choices:
        raise ValidationError(name, f"must be one of {', '.join(sorted(choices))}, got {raw[:40]!r}")
    return raw


MAX_ID = 2**63 - 1


def path_id(request: web.Request, what: str) -> int:
    """The numeric ``{id}`` of the path; ids beyond SQLite's range cannot exist (404)."""
    value = int(request.match_info["id"])
    if value > MAX_ID:
        raise NotFoundError(f"No {what} {value}")
    return value
