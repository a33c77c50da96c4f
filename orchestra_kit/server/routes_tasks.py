"""Task endpoints: assign, batch assign, list, get, events (SSE), cancel."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

from aiohttp import web

from ..errors import ConflictError, NotFoundError, OrchestraError
from ..models import Task, TaskStatus, validate_employee_name
from ..paths import CheckedFiles, PathChecker, check_files
from .http import (
    TooManySubscribersError,
    dumps,
    json_response,
    parse_body,
    parse_id,
    path_id,
    query_choice,
    query_int,
    read_body,
    validate_body,
)
from .plainbody import PlainAssign, plain_assign
from .routes_employees import error_item
from .schemas import AssignBatchBody, AssignBody
from .state import REQUEST_ID, STATE, AppState

__all__ = ["SSE_HEARTBEAT_S", "routes"]

routes = web.RouteTableDef()

#: Seconds between SSE heartbeat comments (keeps proxies from closing an idle stream).
SSE_HEARTBEAT_S = 15.0
AUTO_HIRE_ROLE = "developer"
_STATUSES = frozenset(s.value for s in TaskStatus)
#: ``/tasks/batch`` is the batch endpoint, never a task or employee reference (the name
#: is reserved), so that path answers only POST.
_ID_PATH = "/tasks/{id:(?!batch$)[^/]+}"


def _submit_kwargs(state: AppState, body: AssignBody | PlainAssign, field: str = "files",
                   check: PathChecker | None = None) -> dict[str, Any]:
    # Checked here once: the store and the task's leases take CheckedFiles as they are.
    if not body.files:
        files: CheckedFiles | tuple[()] = ()
    elif check is not None:
        files = check.files(body.files, field)
    else:
        files = check_files(state.project_root, body.files, field)
    return {"priority": body.priority, "model": body.model, "mode": str(body.mode),
            "files": files}


async def _auto_hire(state: AppState, names: set[str]) -> None:
    """Hire missing employees as developers (the original's behaviour, when configured)."""
    store = state.require_store()
    for name in sorted(names):
        with contextlib.suppress(ConflictError):
            await store.hire(name, AUTO_HIRE_ROLE, "normal")


def _assign_answer(task: Task) -> dict[str, Any]:
    return {
        "message": f"Task {task.id} for {task.employee} is {task.status}",
        "task_id": task.id,
        "status": str(task.status),
        "session_id": str(task.id),
        "task": task.to_dict(),
        "model": task.model,
        "mode": str(task.mode),
        "priority": task.priority,
    }


@routes.post("/tasks")
async def assign(request: web.Request) -> web.Response:
    """Queue a task (202); with async processing off, run it and answer 200 when done."""
    state = request.app[STATE]
    raw = await read_body(request, state.settings.server.body_timeout_s)
    body: AssignBody | PlainAssign | None = plain_assign(raw)
    if body is None:  # the model decides (and words any error)
        body = validate_body(raw, AssignBody)
    scheduler = state.require_scheduler()
    kwargs = _submit_kwargs(state, body)
    run = (scheduler.submit if state.settings.flags.enable_async_llm_processing
           else scheduler.run_now)
    try:
        task: Task = await run(body.name, body.task, **kwargs)
    except NotFoundError:
        if not state.settings.scheduler.auto_hire:
            raise
        await _auto_hire(state, {body.name})
        task = await run(body.name, body.task, **kwargs)
    status = 202 if state.settings.flags.enable_async_llm_processing else 200
    return json_response(_assign_answer(task), status=status)


#: Paths in one batch above which their checks run in a worker thread, off the loop.
BATCH_PATHS_IN_THREAD = 2000


async def _batch_items(state: AppState, body: AssignBatchBody) -> list[dict[str, Any]]:
    """The store items of a batch, files checked once per distinct path (in a thread when
    there are many, so a maximal batch does not stall every other request); the store
    does not check them again (CheckedFiles)."""
    check = PathChecker(state.project_root)

    def build() -> list[dict[str, Any]]:
        return [{"employee": t.name, "description": t.task,
                 **_submit_kwargs(state, t, f"tasks[{i}].files", check)}
                for i, t in enumerate(body.tasks)]

    if sum(len(t.files) for t in body.tasks) > BATCH_PATHS_IN_THREAD:
        return await asyncio.to_thread(build)
    return build()


@routes.post("/tasks/batch")
async def assign_batch(request: web.Request) -> web.Response:
    """Queue up to 1000 tasks in one transaction; per-item results."""
    body = await parse_body(request, AssignBatchBody)
    state = request.app[STATE]
    scheduler = state.require_scheduler()
    items = await _batch_items(state, body)
    if state.settings.scheduler.auto_hire:
        await _auto_hire(state, {i["employee"] for i in items})
    outcomes = await scheduler.submit_many(items)
    results: list[dict[str, Any]] = []
    out_items: list[dict[str, Any]] = []
    for item, outcome in zip(items, outcomes, strict=True):
        if isinstance(outcome, Task):
            results.append({"employee": item["employee"], "success": True,
                            "session_id": str(outcome.id)})
            out_items.append({"name": item["employee"], "ok": True, "task_id": outcome.id})
        else:
            err = outcome if isinstance(outcome, OrchestraError) else OrchestraError(
                "The task could not be queued")
            results.append({"employee": item["employee"], "success": False,
                            "error": err.message})
            out_items.append({"name": item["employee"], "ok": False, "error": error_item(err)})
    queued = sum(1 for i in out_items if i["ok"])
    return json_response({"message": f"Queued {queued}/{len(items)} tasks",
                          "results": results, "items": out_items})


@routes.get("/tasks")
async def list_tasks(request: web.Request) -> web.Response:
    """Tasks, filtered by status and employee."""
    status = query_choice(request, "status", _STATUSES)
    employee = request.query.get("employee") or None
    if employee is not None:
        validate_employee_name(employee, "employee")
    limit = query_int(request, "limit", 100, 1, 10_000)
    offset = query_int(request, "offset", 0, 0, 10**9)
    tasks = await request.app[STATE].require_store().list_tasks(
        status=status, employee=employee, limit=limit, offset=offset)
    return json_response({"tasks": [t.to_dict() for t in tasks]})


@routes.get(_ID_PATH)
async def get_task(request: web.Request) -> web.Response:
    """One task; 404 when absent (or not a task id)."""
    task_id = path_id(request, "task")
    task = await request.app[STATE].require_store().get_task(task_id)
    if task is None:
        raise NotFoundError(f"No task {task_id}")
    return json_response(task.to_dict())


@routes.get(r"/tasks/{id:\d+}/events")
async def task_events(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events of one task until it is terminal (heartbeat comments meanwhile)."""
    state = request.app[STATE]
    task_id = path_id(request, "task")
    scheduler = state.scheduler
    # A task just submitted is in the scheduler's memory: no read (a cache miss after
    # every write) to know it exists.
    live = getattr(scheduler, "live_task", None)
    task = (live(task_id) if live is not None else None) or \
        await state.require_store().get_task(task_id)
    if task is None:
        raise NotFoundError(f"No task {task_id}")
    with _subscriber_slot(state, task_id):
        scheduler = state.scheduler
        resp = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no", "X-Request-ID": request[REQUEST_ID]})
        await resp.prepare(request)
        if scheduler is None:
            await resp.write(_sse("status", {
                "task_id": task.id, "kind": "status", "status": str(task.status),
                "progress": task.progress, "data": {}, "t": 0.0}))
        else:
            await _stream(resp, scheduler.subscribe(task_id, heartbeat_s=SSE_HEARTBEAT_S),
                          getattr(request.protocol, "lost", None))
        await resp.write_eof()
    return resp


@contextlib.contextmanager
def _subscriber_slot(state: AppState, task_id: int) -> Iterator[None]:
    """One of the task's ``server.max_sse_subscribers_per_task`` stream slots (429 when
    all are taken: each stream costs memory and a scheduler subscription)."""
    cap = state.settings.server.max_sse_subscribers_per_task
    streams = state.sse_streams
    if streams.get(task_id, 0) >= cap:
        raise TooManySubscribersError(
            f"Task {task_id} already has {cap} open event streams; retry later",
            details={"limit": cap})
    streams[task_id] = streams.get(task_id, 0) + 1
    try:
        yield
    finally:
        left = streams[task_id] - 1
        if left:
            streams[task_id] = left
        else:
            del streams[task_id]


def _sse(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + dumps(data) + b"\n\n"


async def _stream(resp: web.StreamResponse, events: AsyncIterator[Any],
                  lost: asyncio.Future[None] | None) -> None:
    """Write events until the iterator ends (terminal status, or the service drains);
    ``None`` from the iterator is a heartbeat. Ends with ConnectionResetError as soon as
    ``lost`` (the client disconnected) is done, even between events."""
    try:
        while True:
            event = await _next_or_lost(events, lost)
            if event is _END:
                break
            if event is None:
                await resp.write(b": heartbeat\n\n")
            else:
                await resp.write(_sse(event.kind, event.to_dict()))
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


_END = object()


async def _next_or_lost(events: AsyncIterator[Any], lost: asyncio.Future[None] | None) -> Any:
    """The next event (``_END`` at the end), or ConnectionResetError when ``lost`` is done."""
    nxt = asyncio.ensure_future(anext(events, _END))
    if lost is None:
        return await nxt
    try:
        await asyncio.wait((nxt, lost), return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not nxt.done():
            nxt.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await nxt
    if nxt.cancelled() or not nxt.done():
        raise ConnectionResetError("The event stream's reader disconnected")
    return nxt.result()


@routes.delete(_ID_PATH)
async def cancel(request: web.Request) -> web.Response:
    """Cancel a task by id (200 once it ended; 202 when it runs on another instance: the
    cancel request is committed and that instance stops it); or, given an employee
    name, that employee's tasks (original)."""
    ref = request.match_info["id"]
    state = request.app[STATE]
    if ref.isascii() and ref.isdigit():
        task_id = parse_id(ref)
        if task_id is None:
            raise NotFoundError(f"No task {ref[:40]!r}")
        task: Task = await state.require_scheduler().cancel(task_id)
        if not task.terminal:  # it runs on another instance, which was asked to stop it
            return json_response({"message": f"Task {task.id} runs on another instance:"
                                  " cancel requested", "task": task.to_dict(),
                                  "cancel_requested": True}, status=202)
        return json_response({"message": f"Task {task.id} is {task.status}",
                              "task": task.to_dict()})
    name = validate_employee_name(ref, "name")
    if await state.require_store().get_employee(name) is None:
        raise NotFoundError(f"No employee named {name!r}", details={"name": name})
    ids = await state.require_scheduler().cancel_employee(name)
    return json_response({"message": f"Stopped {len(ids)} task(s) of {name}",
                          "cancelled": ids})
