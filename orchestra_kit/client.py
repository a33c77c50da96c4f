"""An async client for the orchestra HTTP API (the lab and the CLI verbs use it).

:class:`OrchestraClient` covers every endpoint with typed methods that return the
domain records of :mod:`orchestra_kit.models` and raise
:class:`~orchestra_kit.errors.ApiError` for error answers. :meth:`OrchestraClient.request`
is the low-level, non-raising call used for load generation. The client creates a
``ClientSession`` only when it is not handed one, and closes only what it created.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Self

import aiohttp

from .errors import ApiError
from .models import (
    TERMINAL_STATUSES,
    Employee,
    EmployeeStatus,
    FileLease,
    FileRequest,
    RequestStatus,
    Smartness,
    Task,
    TaskMode,
    TaskStatus,
)

__all__ = ["OrchestraClient", "employee_from", "lease_from", "request_from", "task_from"]

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_loads = json.loads
_NO_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_read=None)


def employee_from(d: Mapping[str, Any]) -> Employee:
    """An Employee from its JSON form."""
    return Employee(name=d["name"], role=d["role"], smartness=Smartness(d["smartness"]),
                    status=EmployeeStatus(d.get("status", "active")),
                    hired_at=d.get("hired_at", 0.0))


def task_from(d: Mapping[str, Any]) -> Task:
    """A Task from its JSON form."""
    fields = dict(d)
    fields["mode"] = TaskMode(fields["mode"])
    fields["status"] = TaskStatus(fields["status"])
    fields["files"] = tuple(fields.get("files", ()))
    return Task(**fields)


def lease_from(d: Mapping[str, Any]) -> FileLease:
    """A FileLease from its JSON form."""
    return FileLease(**d)


def request_from(d: Mapping[str, Any]) -> FileRequest:
    """A FileRequest from its JSON form."""
    fields = dict(d)
    fields["status"] = RequestStatus(fields["status"])
    return FileRequest(**fields)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    raw = headers.get("Retry-After")
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


class OrchestraClient:
    """The HTTP API as async methods; an async context manager."""

    def __init__(self, base_url: str, *, api_key: str | None = None,
                 session: aiohttp.ClientSession | None = None, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = session
        self._owns_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._headers: dict[str, str] = {"Accept": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._json_headers = {**self._headers, "Content-Type": "application/json"}
        self._closed = False

    async def __aenter__(self) -> Self:
        self._get_session()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the session if this client created it (idempotent)."""
        self._closed = True
        if self._owns_session and self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("OrchestraClient is closed; create a new one")
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    # ------------------------------------------------------------------ transport

    async def request(self, method: str, path: str, json: Any = None, *,
                      params: Mapping[str, Any] | None = None) -> tuple[int, Any]:
        """``(status, parsed body)``; never raises for HTTP errors (for load generation)."""
        status, body, _ = await self._send(method, path, json, params)
        return status, body

    async def _send(self, method: str, path: str, payload: Any,
                    params: Mapping[str, Any] | None) -> tuple[int, Any, Mapping[str, str]]:
        session = self._get_session()
        data = None if payload is None else _dumps(payload).encode()
        headers = self._headers if data is None else self._json_headers
        async with session.request(method, self.base_url + path, data=data, headers=headers,
                                   params=params, timeout=self._timeout) as resp:
            raw = await resp.read()
            ctype = resp.headers.get("Content-Type", "")
            body: Any = _loads(raw) if raw and ctype.startswith("application/json") else (
                raw.decode("utf-8", "replace"))
            return resp.status, body, resp.headers

    async def _call(self, method: str, path: str, payload: Any = None,
                    params: Mapping[str, Any] | None = None) -> Any:
        status, body, headers = await self._send(method, path, payload, params)
        if status >= 400:
            raise self._error(status, body, headers)
        return body

    @staticmethod
    def _error(status: int, body: Any, headers: Mapping[str, str]) -> ApiError:
        err = body.get("error") if isinstance(body, dict) else None
        if not isinstance(err, dict):
            return ApiError(status, "http_error", str(body)[:200],
                            request_id=headers.get("X-Request-ID"),
                            retry_after_s=_retry_after(headers))
        return ApiError(status, str(err.get("code", "error")), str(err.get("message", "")),
                        details=err.get("details"), request_id=body.get("request_id"),
                        retry_after_s=_retry_after(headers))

    # ------------------------------------------------------------------ employees

    async def hire(self, name: str, role: str, smartness: str = "normal") -> Employee:
        """Hire one employee (ApiError 409 when the name is taken)."""
        body = await self._call("POST", "/employees",
                                {"name": name, "role": role, "smartness": smartness})
        return employee_from(body["employee"])

    async def hire_many(self, items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Hire many in one transaction; the answer with per-item ``items``."""
        result: dict[str, Any] = await self._call("POST", "/employees/batch",
                                                  {"employees": list(items)})
        return result

    async def fire(self, name: str) -> dict[str, Any]:
        """Fire an employee; what was released, denied and cancelled."""
        result: dict[str, Any] = await self._call("DELETE", f"/employees/{name}")
        return result

    async def get_employee(self, name: str) -> Employee:
        """One employee (ApiError 404 when absent)."""
        return employee_from(await self._call("GET", f"/employees/{name}"))

    async def list_employees(self, *, role: str | None = None, smartness: str | None = None,
                             limit: int | None = None, offset: int | None = None
                             ) -> list[Employee]:
        """Employees, optionally filtered."""
        params = _params(role=role, smartness=smartness, limit=limit, offset=offset)
        body = await self._call("GET", "/employees", params=params)
        return [employee_from(e) for e in body["employees"]]

    # ------------------------------------------------------------------ tasks

    async def assign(self, name: str, task: str, *, priority: int = 5, model: str | None = None,
                     mode: str = "build", files: Sequence[str] = ()) -> Task:
        """Queue a task (or run it, when the server's async processing is off)."""
        payload: dict[str, Any] = {"name": name, "task": task, "priority": priority,
                                   "mode": mode}
        if model is not None:
            payload["model"] = model
        if files:
            payload["files"] = list(files)
        body = await self._call("POST", "/tasks", payload)
        return task_from(body["task"])

    async def assign_many(self, items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Queue many tasks (items in the POST /tasks shape); per-item results."""
        result: dict[str, Any] = await self._call("POST", "/tasks/batch", {"tasks": list(items)})
        return result

    async def get_task(self, task_id: int) -> Task:
        """One task."""
        return task_from(await self._call("GET", f"/tasks/{int(task_id)}"))

    async def list_tasks(self, *, status: str | None = None, employee: str | None = None,
                         limit: int | None = None, offset: int | None = None) -> list[Task]:
        """Tasks, optionally filtered."""
        params = _params(status=status, employee=employee, limit=limit, offset=offset)
        body = await self._call("GET", "/tasks", params=params)
        return [task_from(t) for t in body["tasks"]]

    async def cancel_task(self, task_id: int) -> Task:
        """Cancel one task; the task afterwards (still ``running`` when another service
        instance runs it: the cancel is requested there and that instance stops it)."""
        body = await self._call("DELETE", f"/tasks/{int(task_id)}")
        return task_from(body["task"])

    async def stop_employee(self, name: str) -> list[int]:
        """Cancel every queued and running task of an employee; the ids cancelled."""
        body = await self._call("DELETE", f"/tasks/{name}")
        return list(body["cancelled"])

    async def events(self, task_id: int) -> AsyncIterator[dict[str, Any]]:
        """The task's Server-Sent Events (dicts with ``kind``) until the stream ends."""
        session = self._get_session()
        async with session.get(f"{self.base_url}/tasks/{int(task_id)}/events",
                               headers=self._headers, timeout=_NO_TIMEOUT) as resp:
            if resp.status >= 400:
                raw = await resp.read()
                raise self._error(resp.status, _loads(raw) if raw else None, resp.headers)
            data: list[str] = []
            async for line_b in resp.content:
                line = line_b.decode("utf-8").rstrip("\r\n")
                if line.startswith("data:"):
                    data.append(line[5:].lstrip(" "))
                elif not line and data:
                    yield _loads("\n".join(data))
                    data = []

    async def wait_task(self, task_id: int) -> Task:
        """The task once terminal, following its event stream."""
        async for event in self.events(task_id):
            if event.get("kind") == "status" and event.get("status") in TERMINAL_STATUSES:
                break
        return await self.get_task(task_id)

    # ------------------------------------------------------------------ files

    async def lock_files(self, name: str, files: Sequence[str], description: str = "",
                         ) -> dict[str, str]:
        """Lease files; a status per path (locked, already_locked, locked_by:<owner>)."""
        body = await self._call("POST", "/files/lock",
                                {"name": name, "files": list(files), "description": description})
        return dict(body["result"])

    async def release_files(self, name: str, files: Sequence[str] | None = None) -> list[str]:
        """Release leases (all of them without ``files``); the paths released."""
        payload: dict[str, Any] = {"name": name}
        if files is not None:
            payload["files"] = list(files)
        body = await self._call("POST", "/files/release", payload)
        return list(body["released"])

    async def list_leases(self, employee: str | None = None) -> list[FileLease]:
        """Active leases."""
        body = await self._call("GET", "/files", params=_params(employee=employee))
        return [lease_from(x) for x in body["files"]]

    async def request_file(self, name: str, path: str, reason: str = ""
                           ) -> tuple[str, FileRequest | None]:
        """Ask the holder of a path for it; ``(status, request)``."""
        body = await self._call("POST", "/files/requests",
                                {"requester": name, "path": path, "reason": reason})
        req = body.get("request")
        return body["status"], request_from(req) if req else None

    async def approve(self, request_id: int, actor: str | None = None) -> FileLease:
        """Approve a request (as ``actor``, the lease owner); the new lease."""
        body = await self._call("POST", f"/files/requests/{int(request_id)}/approve",
                                _params(actor=actor))
        return lease_from(body["lease"])

    async def deny(self, request_id: int, actor: str | None = None) -> FileRequest:
        """Deny a request (as ``actor``, the lease owner)."""
        body = await self._call("POST", f"/files/requests/{int(request_id)}/deny",
                                _params(actor=actor))
        return request_from(body["request"])

    async def list_requests(self, *, status: str | None = None, employee: str | None = None
                            ) -> list[FileRequest]:
        """File requests, optionally filtered."""
        body = await self._call("GET", "/files/requests",
                                params=_params(status=status, employee=employee))
        return [request_from(r) for r in body["requests"]]

    # ------------------------------------------------------------------ service

    async def health(self) -> dict[str, Any]:
        """The health document (also when the server answers 503 while draining)."""
        status, body = await self.request("GET", "/health")
        if not isinstance(body, dict) or "status" not in body:
            raise ApiError(status, "http_error", str(body)[:200])
        return body

    async def performance(self) -> dict[str, Any]:
        """The /performance document."""
        result: dict[str, Any] = await self._call("GET", "/performance")
        return result

    async def status(self) -> dict[str, Any]:
        """The original's /status summary."""
        result: dict[str, Any] = await self._call("GET", "/status")
        return result

    async def metrics_text(self) -> str:
        """The Prometheus text of /metrics."""
        return str(await self._call("GET", "/metrics"))


def _params(**kw: Any) -> dict[str, Any]:
    return {k: str(v) for k, v in kw.items() if v is not None}
