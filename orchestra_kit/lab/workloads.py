"""Workloads: what each load-generator request does against the HTTP API.

Each workload has an async ``setup(client)`` (e.g. hire the team it works with) and
``operation(client)`` returning the :data:`~orchestra_kit.lab.loadgen.Operation` the
load generator calls. Operations never raise for HTTP errors: they return an
:class:`OpResult` with the status, so a 409 or 429 is counted, not hidden.

``assign_wait`` measures time to *done* (POST /tasks, then the task's Server-Sent
Events until a terminal status), not time to the 202.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from ..errors import ConfigError
from .loadgen import Operation, OpResult
from .spec import WorkloadSpec

__all__ = ["Workload", "make_workload"]


class Client(Protocol):
    """The part of :class:`orchestra_kit.client.OrchestraClient` workloads use."""

    async def request(self, method: str, path: str, json: Any = None) -> tuple[int, Any]: ...

    def events(self, task_id: int) -> Any: ...


def _ok(op: str, status: int, good: bool) -> OpResult:
    return OpResult(op=op, ok=good, status=status, error_type="" if good else f"http_{status}")


class Workload:
    """Base: no setup, subclasses define ``op``."""

    name = "base"

    def __init__(self, spec: WorkloadSpec, seed: int) -> None:
        self.spec = spec
        self.seed = seed
        self.team: list[str] = []
        self.prefix = f"w{seed}"

    @contextlib.asynccontextmanager
    async def environment(self) -> AsyncIterator[dict[str, Any]]:
        """Around a whole point: what the workload needs running (e.g. a fake Slack), and
        the target settings it needs, yielded (default: nothing, no settings)."""
        yield {}

    async def setup(self, client: Client) -> None:
        """Prepare the target (default: nothing)."""

    def operation(self, client: Client) -> Operation:
        """The per-request callable."""

        async def op(i: int) -> OpResult:
            return await self.op(client, i)

        return op

    async def op(self, client: Client, i: int) -> OpResult:
        """One request."""
        raise NotImplementedError

    async def hire_team(self, client: Client) -> None:
        """Hire ``team_size`` employees in batches (setup for most workloads)."""
        self.team = [f"{self.prefix}-team-{k}" for k in range(self.spec.team_size)]
        for start in range(0, len(self.team), 500):
            chunk = self.team[start:start + 500]
            body = {"employees": [{"name": n, "role": "developer"} for n in chunk]}
            status, reply = await client.request("POST", "/employees/batch", body)
            if status >= 300:
                raise ConfigError("workload.team_size", self.spec.team_size,
                                  f"setup could not hire the team (HTTP {status}: {reply})")


class Hire(Workload):
    """POST /employees with a unique name per request.

    Success is any 2xx an implementation documents for a hire: this service answers
    201, the original OpenCode-Slack server 200. A duplicate name is a *conflict*
    (``error_type="conflict"``): 409 here, 400 "already exists" in the original.
    """

    name = "hire"

    async def op(self, client: Client, i: int) -> OpResult:
        status, body = await client.request(
            "POST", "/employees", {"name": f"{self.prefix}-{i}", "role": "developer"})
        if status in (200, 201):
            return OpResult(op="hire", ok=True, status=status)
        if status == 409 or (status == 400 and "exist" in str(body).lower()):
            return OpResult(op="hire", ok=False, status=status, error_type="conflict")
        return _ok("hire", status, False)


class BatchHire(Workload):
    """POST /employees/batch with ``batch_size`` new names per request."""

    name = "batch_hire"

    async def op(self, client: Client, i: int) -> OpResult:
        n = self.spec.batch_size
        emps = [{"name": f"{self.prefix}-{i}-{k}", "role": "developer"} for k in range(n)]
        status, body = await client.request("POST", "/employees/batch", {"employees": emps})
        good = status < 300 and isinstance(body, dict) and all(
            bool(v) for v in body.get("results", {}).values())
        return _ok("batch_hire", status, good)


class Assign(Workload):
    """POST /tasks to the team in turn; ``wait`` follows SSE until the task ends."""

    name = "assign"

    def __init__(self, spec: WorkloadSpec, seed: int, *, wait: bool) -> None:
        super().__init__(spec, seed)
        self.wait = wait

    async def setup(self, client: Client) -> None:
        await self.hire_team(client)

    async def op(self, client: Client, i: int) -> OpResult:
        name = self.team[i % len(self.team)]
        priority = i % 11
        body = {"name": name, "task": f"load task {i}", "priority": priority}
        status, reply = await client.request("POST", "/tasks", body)
        op = "assign_wait" if self.wait else "assign"
        if status not in (200, 201, 202) or not self.wait:
            good = status in (200, 201, 202)
            return OpResult(op=op, ok=good, status=status, priority=priority,
                            error_type="" if good else f"http_{status}")
        final = reply.get("status", "") if isinstance(reply, dict) else ""
        if status == 202:
            final = await self._final_status(client, int(reply["task_id"]))
        good = final == "completed"
        return OpResult(op=op, ok=good, status=status, priority=priority,
                        error_type="" if good else f"task_{final}")

    async def _final_status(self, client: Client, task_id: int) -> str:
        final = "unknown"
        async for event in client.events(task_id):
            final = str(event.get("status", final)) if isinstance(event, dict) else final
        return final


class LeaseContention(Workload):
    """Employees race to lease a few hot paths; winners release at once."""

    name = "lease_contention"

    async def setup(self, client: Client) -> None:
        await self.hire_team(client)

    async def op(self, client: Client, i: int) -> OpResult:
        rng = random.Random(self.seed * 1_000_003 + i)
        name = self.team[i % len(self.team)]
        path = f"src/hot_{rng.randrange(self.spec.paths)}.py"
        status, body = await client.request("POST", "/files/lock", {"name": name, "files": [path],
                                                                     "description": "contention"})
        if status != 200:
            return _ok("lease", status, False)
        won = isinstance(body, dict) and body.get("result", {}).get(path) == "locked"
        if won:
            status, _ = await client.request("POST", "/files/release", {"name": name, "files": [path]})
            if status != 200:
                return _ok("lease_release", status, False)
        return OpResult(op="lease_won" if won else "lease_lost", ok=True, status=200)


class ReadMix(Workload):
    """Reads: an employee by name (60 %), health (20 %), the list (10 %), tasks (10 %)."""

    name = "read_mix"

    async def setup(self, client: Client) -> None:
        await self.hire_team(client)

    async def op(self, client: Client, i: int) -> OpResult:
        r = (i * 7919 + self.seed) % 10
        if r < 6:
            path, op = f"/employees/{self.team[i % len(self.team)]}", "get_employee"
        elif r < 8:
            path, op = "/health", "health"
        elif r < 9:
            path, op = "/employees", "list_employees"
        else:
            path, op = "/tasks?limit=20", "list_tasks"
        status, _ = await client.request("GET", path)
        return _ok(op, status, status == 200)


class Health(Workload):
    """GET /health only."""

    name = "health"

    async def op(self, client: Client, i: int) -> OpResult:
        status, _ = await client.request("GET", "/health")
        return _ok("health", status, status == 200)


class Mix(Workload):
    """A weighted mix of the other workloads, chosen per request from a seeded stream."""

    name = "mix"

    def __init__(self, spec: WorkloadSpec, seed: int) -> None:
        super().__init__(spec, seed)
        self.parts = [(make_workload(spec, seed, kind=k), w) for k, w in spec.mix.items() if w > 0]
        self.weights = [w for _, w in self.parts]

    async def setup(self, client: Client) -> None:
        for part, _ in self.parts:
            part.prefix = f"{self.prefix}-{part.name}"
            await part.setup(client)

    async def op(self, client: Client, i: int) -> OpResult:
        part = random.Random(self.seed * 7_919 + i).choices(self.parts, self.weights)[0][0]
        return await part.op(client, i)


_FACTORIES: dict[str, Callable[[WorkloadSpec, int], Workload]] = {
    "hire": Hire,
    "batch_hire": BatchHire,
    "assign": lambda s, seed: Assign(s, seed, wait=False),
    "assign_wait": lambda s, seed: Assign(s, seed, wait=True),
    "lease_contention": LeaseContention,
    "read_mix": ReadMix,
    "health": Health,
    "mix": Mix,
    "chat": lambda s, seed: _chat_workload(s, seed),
}


def _chat_workload(spec: WorkloadSpec, seed: int) -> Workload:
    from .workload_chat import ChatWorkload  # its own module: it brings the fake Slack

    return ChatWorkload(spec, seed)


def make_workload(spec: WorkloadSpec, seed: int, *, kind: str | None = None) -> Workload:
    """The workload named by ``kind`` (default ``spec.kind``)."""
    return _FACTORIES[kind or spec.kind](spec, seed)

