"""Employee endpoints: list, hire, batch hire, get, fire."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ..errors import NotFoundError, OrchestraError, ValidationError
from ..models import Employee, Smartness, validate_employee_name
from .http import (
    json_response,
    parse_body,
    query_choice,
    query_int,
    read_body,
    validate_body,
)
from .plainbody import plain_hire
from .schemas import HireBatchBody, HireBody
from .state import STATE, AppState

__all__ = ["routes"]

routes = web.RouteTableDef()

_SMARTNESS = frozenset(s.value for s in Smartness)
_EMPLOYEES = ("employees",)
#: ``/employees/batch`` is the batch endpoint, never an employee's path: the name is
#: reserved (hiring it is refused), so that path answers only POST (405 + Allow: POST).
RESERVED_NAMES = frozenset({"batch"})
_NAME_PATH = "/employees/{name:(?!batch$)[^/]+}"


def _not_reserved(name: str, field: str = "name") -> None:
    if name in RESERVED_NAMES:
        raise ValidationError(field, f"{name!r} is reserved (it is the path /employees/{name})")


def error_item(error: OrchestraError) -> dict[str, Any]:
    """A batch item's error object."""
    return {"code": error.code, "message": error.message, "details": error.details}


@routes.get("/employees")
async def list_employees(request: web.Request) -> web.Response:
    """Employees, optionally filtered by role and smartness."""
    state = request.app[STATE]
    store = state.require_store()
    role = request.query.get("role") or None
    smartness = query_choice(request, "smartness", _SMARTNESS)
    limit = query_int(request, "limit", 1000, 1, 10_000)
    offset = query_int(request, "offset", 0, 0, 10**9)
    key = ("employees", role, smartness, limit, offset)
    hit = _cache_hit(request, state, store, key)
    if hit is not None:
        return hit

    async def load() -> dict[str, Any]:
        employees = await store.list_employees(role=role, smartness=smartness, limit=limit,
                                               offset=offset)
        return {"employees": [e.to_dict() for e in employees]}

    return await _cached_answer(request, state, store, key, load)


@routes.post("/employees")
async def hire(request: web.Request) -> web.Response:
    """Hire one employee: 201, or 409 when the name is taken."""
    state = request.app[STATE]
    raw = await read_body(request, state.settings.server.body_timeout_s)
    fields = plain_hire(raw)
    if fields is None:  # the model decides (and words any error)
        body = validate_body(raw, HireBody)
        fields = body.name, body.role, str(body.smartness)
    _not_reserved(fields[0])
    store = state.require_store()
    employee: Employee = await store.hire(*fields)
    return json_response(
        {"message": f"Successfully hired {employee.name} as {employee.role}",
         "employee": employee.to_dict()},
        status=201,
    )


@routes.post("/employees/batch")
async def hire_batch(request: web.Request) -> web.Response:
    """Hire up to 1000 employees in one transaction; per-item results."""
    body = await parse_body(request, HireBatchBody)
    store = request.app[STATE].require_store()
    for i, e in enumerate(body.employees):
        _not_reserved(e.name, f"employees[{i}].name")
    items = [{"name": e.name, "role": e.role, "smartness": str(e.smartness)}
             for e in body.employees]
    outcomes = await store.hire_many(items)
    results: dict[str, bool] = {}
    out_items: list[dict[str, Any]] = []
    for item, outcome in zip(items, outcomes, strict=True):
        ok = not isinstance(outcome, BaseException)
        results[item["name"]] = results.get(item["name"], False) or ok
        entry: dict[str, Any] = {"name": item["name"], "ok": ok}
        if isinstance(outcome, OrchestraError):
            entry["error"] = error_item(outcome)
        out_items.append(entry)
    hired = sum(1 for i in out_items if i["ok"])
    return json_response({
        "message": f"Successfully hired {hired}/{len(items)} employees",
        "results": results,
        "items": out_items,
    })


def _name_param(request: web.Request) -> str:
    return validate_employee_name(request.match_info["name"], "name")


@routes.get(_NAME_PATH)
async def get_employee(request: web.Request) -> web.Response:
    """One employee; 404 when absent."""
    name = _name_param(request)
    state = request.app[STATE]
    store = state.require_store()
    key = ("employee", name)
    hit = _cache_hit(request, state, store, key)
    if hit is not None:
        return hit

    async def load() -> dict[str, Any]:
        employee: Employee | None = await store.get_employee(name)
        if employee is None:
            raise NotFoundError(f"No employee named {name!r}", details={"name": name})
        return employee.to_dict()

    return await _cached_answer(request, state, store, key, load)


def _cache_hit(request: web.Request, state: AppState, store: Any,
               key: tuple[Any, ...]) -> web.Response | None:
    """The encoded answer for ``key`` when cached and still valid: served without a
    coroutine or a closure; None when the read must run (:func:`_cached_answer`)."""
    cache = state.responses
    return None if cache is None else cache.hit(request, store, key, _EMPLOYEES)


async def _cached_answer(request: web.Request, state: AppState, store: Any,
                         key: tuple[Any, ...],
                         load: Callable[[], Awaitable[dict[str, Any]]]) -> web.Response:
    """``load()`` as JSON, through the encoded-answer cache when the store caches reads."""
    cache = state.responses
    if cache is None:
        return json_response(await load())
    answer: web.Response = await cache.answer(request, store, key, _EMPLOYEES, load)
    return answer


@routes.delete(_NAME_PATH)
async def fire(request: web.Request) -> web.Response:
    """Fire an employee: leases released, requests denied, tasks cancelled and stopped."""
    name = _name_param(request)
    state = request.app[STATE]
    report = await state.require_store().fire(name)
    if state.scheduler is not None:
        state.scheduler.fired(report)
    return json_response({
        "message": f"Successfully fired {name}",
        "released_files": list(report.released_paths),
        "cancelled_tasks": list(report.cancelled_task_ids),
        "denied_requests": list(report.denied_request_ids),
    })
