"""JSON answers, the error shape, and body parsing shared by every route.

Every error answer is ``{"error": {"code", "message", "details"}, "request_id"}``.
HTTP-only errors (malformed JSON, missing key, oversize body ...) are small
:class:`~orchestra_kit.errors.OrchestraError` subclasses so one mapping handles all.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any, TypeVar

import pydantic
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from ..errors import NotFoundError, OrchestraError, ValidationError
from . import codec
from .state import STATE

__all__ = [
    "BadJsonError",
    "BadRequestError",
    "BodyTooLargeError",
    "InternalError",
    "MethodNotAllowedError",
    "RouteNotFoundError",
    "TooManySubscribersError",
    "UnauthorizedError",
    "error_body",
    "error_response",
    "json_response",
    "parse_body",
    "parse_id",
    "read_body",
    "request_body",
    "validate_body",
    "validation_error_from",
]

M = TypeVar("M", bound=pydantic.BaseModel)


class BadJsonError(OrchestraError):
    """The body is not valid JSON."""

    code = "bad_json"
    http_status = 400


class BadRequestError(OrchestraError):
    """The request itself is malformed (bad encoding, unparsable HTTP)."""

    code = "bad_request"
    http_status = 400


class RequestTimeoutError(OrchestraError):
    """The body did not arrive within ``server.body_timeout_s``."""

    code = "request_timeout"
    http_status = 408


class TooManySubscribersError(OrchestraError):
    """A task already has ``server.max_sse_subscribers_per_task`` open event streams."""

    code = "too_many_subscribers"
    http_status = 429


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
    """The error shape for ``error`` (status from its ``http_status``).

    A validation error always carries ``details.field`` and ``details.errors`` (a list of
    ``{field, problem}``), however it was raised.
    """
    if isinstance(error, ValidationError) and not (
            isinstance(error.details, dict) and "errors" in error.details):
        error.details = {"field": error.field,
                         "errors": [{"field": error.field, "problem": error.problem}]}
    return bytes_response(error_body(error.code, error.message, error.details, request_id),
                          error.http_status)


def error_body(code: str, message: str, details: Any, request_id: str) -> bytes:
    """The encoded error shape: every error answer of the API, whoever writes it."""
    return codec.encode({"error": {"code": code, "message": message, "details": details},
                         "request_id": request_id})


def _field(loc: tuple[Any, ...], prefix: str = "") -> str:
    out = prefix
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
        problems.append({"field": _field(loc, prefix), "problem": problem})
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


async def read_body(request: web.Request, timeout_s: float) -> bytes:
    """The whole body, within ``timeout_s`` (408 otherwise); 400 on a bad encoding."""
    try:
        if not timeout_s or request.content.is_eof():
            # Already all here (a small body arrives with its head): no timer to arm.
            return await request.read()
        async with asyncio.timeout(timeout_s):
            return await request.read()
    except TimeoutError:
        raise RequestTimeoutError(
            f"The request body did not arrive within {timeout_s:g} s") from None
    except (HttpProcessingError, RequestPayloadError) as exc:
        # e.g. a body that is not the gzip it claims to be, or a broken chunked encoding
        raise BadRequestError("The request body cannot be decoded",
                              details={"problem": str(exc)[:200]}) from None


def _body_timeout(request: web.Request) -> float:
    return request.app[STATE].settings.server.body_timeout_s


#: A JSON escape of a UTF-16 surrogate (pairs are fine; a lone one is not text).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _text_problem(value: Any, field: str) -> None:
    """ValidationError when a string in ``value`` holds a lone surrogate."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError(field or "body", "must be valid Unicode text (it holds "
                                  "an unpaired surrogate escape)") from None
    elif isinstance(value, dict):
        for k, v in value.items():
            _text_problem(k, field or "body")
            _text_problem(v, f"{field}.{k}" if field else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _text_problem(v, f"{field}[{i}]")


def check_text(raw: bytes, value: Any, prefix: str = "") -> None:
    """Refuse lone surrogates (``"\\ud800"``): they cannot be stored or logged as UTF-8."""
    if _SURROGATE_ESCAPE.search(raw):
        _text_problem(value, prefix)


async def parse_body(request: web.Request, model: type[M]) -> M:
    """Read and validate the JSON body with a strict model; 400/408/413/422 on failure."""
    return validate_body(await request_body(request), model)


async def request_body(request: web.Request) -> bytes:
    """The raw body, within ``server.body_timeout_s``."""
    return await read_body(request, _body_timeout(request))


def validate_body(raw: bytes, model: type[M]) -> M:
    """``raw`` validated by a strict model; 400/422 on failure."""
    if not raw.strip():
        raise BadJsonError("The request body is empty; a JSON object is required")
    try:
        parsed = model.model_validate_json(raw, strict=True)
    except pydantic.ValidationError as exc:
        raise validation_error_from(exc) from None
    if _SURROGATE_ESCAPE.search(raw):
        _text_problem(parsed.model_dump(by_alias=False), "")
    return parsed


async def read_json(request: web.Request, field: str = "body") -> Any:
    """The parsed JSON body, or None when empty; 400 when malformed."""
    raw = await read_body(request, _body_timeout(request))
    if not raw.strip():
        return None
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadJsonError("The request body is not valid JSON",
                           details={"problem": str(exc)[:200]}) from None
    check_text(raw, value, field)
    return value


def query_int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    """An integer query parameter within ``lo..hi``; 422 naming it otherwise."""
    raw = request.query.get(name)
    if raw is None:
        return default
    try:  # "" is not a number (the spec says integer); empty *filters* are "no filter"
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
_MAX_ID_DIGITS = len(str(MAX_ID))


def parse_id(raw: str) -> int | None:
    """``raw`` as a stored id, or None when it cannot be one: ASCII digits only (``str.isdigit``
    also accepts ``²`` and other scripts' digits), 1 to SQLite's 2**63 - 1."""
    if not raw or len(raw) > _MAX_ID_DIGITS or not (raw.isascii() and raw.isdigit()):
        return None
    value = int(raw)
    return value if 1 <= value <= MAX_ID else None  # ids start at 1


def path_id(request: web.Request, what: str) -> int:
    """The numeric ``{id}`` of the path; 404 when it cannot be a stored id."""
    raw = request.match_info["id"]
    value = parse_id(raw)
    if value is None:
        raise NotFoundError(f"No {what} {raw[:40]!r}")
    return value
