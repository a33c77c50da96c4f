"""``StoreProtocol``: what the scheduler and the server need from a store.

Two implementations conform: :class:`~orchestra_kit.store.Store` (SQLite, one process)
and :class:`~orchestra_kit.store.pg.PgStore` (PostgreSQL on asyncpg, shared by several
service instances). Both enforce the same invariants in the database (see
docs/store.md and docs/scale-out.md); mypy checks that both conform
(``_conforms`` at the bottom of :mod:`orchestra_kit.store.factory`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, Self, runtime_checkable

from ..config import DatabaseSettings
from ..errors import OrchestraError
from ..models import Employee, FileLease, FileRequest, Task, TaskStatus
from .sqlops import FireReport, RecoveryReport

__all__ = ["SharedStoreProtocol", "StoreProtocol"]


class StoreProtocol(Protocol):
    """The store's public surface; every awaited write returns after its COMMIT."""

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Open the database and apply pending migrations."""

    async def aclose(self) -> None:
        """Finish queued writes and close every connection (idempotent)."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc: object) -> None: ...

    def stats(self) -> dict[str, Any]:
        """Counters for /performance and /metrics."""

    # ------------------------------------------------------------------ employees
    async def hire(self, name: str, role: str, smartness: str = "normal") -> Employee:
        """Hire one; ConflictError when the name is taken."""

    async def hire_many(
        self, items: Sequence[Mapping[str, Any]]
    ) -> list[Employee | OrchestraError]:
        """Hire many in one transaction; a result per item."""

    async def fire(self, name: str) -> FireReport:
        """Release leases, deny requests, cancel tasks, delete, atomically."""

    async def get_employee(self, name: str) -> Employee:
        """One employee; NotFoundError when absent."""

    async def list_employees(
        self, *, role: str | None = None, smartness: str | None = None,
        limit: int = 1000, offset: int = 0,
    ) -> list[Employee]:
        """Employees in hire order."""

    # ------------------------------------------------------------------ leases
    async def lock_files(
        self, employee: str, files: Sequence[str], *, description: str = "",
        task_id: int | None = None, ttl_s: float | None = None,
    ) -> dict[str, str]:
        """``locked`` | ``already_locked`` | ``locked_by:<owner>`` per path."""

    async def release_files(self, employee: str, files: Sequence[str] | None = None) -> list[str]:
        """Release the employee's leases (all when ``files`` is None)."""

    async def release_task_leases(self, task_id: int) -> list[str]:
        """Release every lease taken for a task."""

    async def expire_leases(self) -> int:
        """Release every lease past its expiry."""

    async def list_leases(self, *, employee: str | None = None) -> list[FileLease]:
        """Active leases, oldest first."""

    async def request_file(
        self, requester: str, path: str, reason: str = ""
    ) -> tuple[str, FileRequest | None]:
        """Ask the holder of a path for it."""

    async def approve_request(self, request_id: int, *, actor: str | None = None) -> FileLease:
        """Move the lease to the requester atomically."""

    async def deny_request(self, request_id: int, *, actor: str | None = None) -> FileRequest:
        """Close a pending request."""

    async def list_requests(
        self, *, status: str | None = None, employee: str | None = None
    ) -> list[FileRequest]:
        """Requests, optionally filtered."""

    # ------------------------------------------------------------------ tasks
    async def create_task(
        self, employee: str, description: str, *, priority: int = 5, model: str | None = None,
        mode: str = "build", files: Sequence[str] = (),
    ) -> Task:
        """Queue a task for an existing employee."""

    async def create_tasks(self, items: Sequence[Mapping[str, Any]]) -> list[Task | OrchestraError]:
        """Create many in one transaction; a result per item."""

    async def get_task(self, task_id: int) -> Task:
        """One task; NotFoundError when absent."""

    async def list_tasks(
        self, *, status: str | None = None, employee: str | None = None,
        limit: int = 1000, offset: int = 0,
    ) -> list[Task]:
        """Tasks by id, optionally filtered."""

    async def queued_tasks(self) -> list[Task]:
        """Queued tasks, highest priority first, FIFO within a priority."""

    async def transition(
        self, task_id: int, new: TaskStatus, *, expect: TaskStatus | None = None,
        result: str | None = None, error: str | None = None, count_attempt: bool = False,
        max_running: int | None = None, usage: Mapping[str, Any] | None = None,
    ) -> Task:
        """Move a task along the state machine (ConflictError when illegal); ``usage``
        (what the agent run cost, ``AgentUsage.to_dict()``) is kept on the task as JSON.

        With ``max_running``, a move to ``running`` is refused with a
        :class:`~orchestra_kit.errors.CapacityError` when that many tasks already run
        (counted in the database, so the limit holds across service instances)."""

    async def set_progress(self, task_id: int, progress: int) -> None:
        """Record a task's progress percentage."""

    async def recover(self, *, max_attempts: int) -> RecoveryReport:
        """Start-up: requeue (or fail) tasks left running; free stale leases."""

    async def counts(self) -> dict[str, int]:
        """Employees, active leases, pending requests, tasks per status."""

    # ------------------------------------------------------------------ chat events
    async def claim_chat_event(self, event_id: str, message_key: str, *, channel: str,
                               user: str) -> bool:
        """Record an incoming chat event as pending; False when it (or its message) was seen
        before."""

    async def chat_event_state(self, event_id: str,
                               message_key: str) -> tuple[str, str, tuple[int, ...]] | None:
        """(event id, outcome, task ids) of a recorded chat event (``received`` while pending)."""

    async def create_chat_tasks(self, event_id: str,
                                items: Sequence[Mapping[str, Any]]) -> list[Task] | None:
        """A pending chat event's tasks, created as it is marked handled (one transaction);
        None when it was handled already."""

    async def finish_chat_event(self, event_id: str, outcome: str,
                                task_ids: Sequence[int] = ()) -> bool:
        """Mark a pending chat event handled; False when it was handled already."""

    async def chat_event_counts(self) -> dict[str, int]:
        """Chat events recorded, by outcome."""


@runtime_checkable
class SharedStoreProtocol(StoreProtocol, Protocol):
    """A store several service instances share (PostgreSQL): claims and cross-instance events."""

    instance_id: str
    shared: bool
    settings: DatabaseSettings

    async def claim_task(self, task_id: int, *, max_running: int) -> Task:
        """Claim a queued task (row, global slot, free employee, leases) in one transaction."""

    def add_event_listener(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(payload)`` for every event any instance publishes."""

    def remove_event_listener(self, callback: Callable[[str], None]) -> None:
        """Stop calling ``callback``."""

    async def publish_events(self, payloads: list[str]) -> None:
        """Send events to every instance."""
