"""The scheduler's in-memory ready queue: priority order, FIFO within a priority,
and at most one running task per employee.

Tasks of an employee who is busy wait in that employee's own heap; when the employee
frees up, its best waiting task returns to the global heap. So ``pop()`` always gives
the highest-priority, oldest task whose employee is free. Removal (cancel) is lazy;
when ``pop()`` drops a removed entry of a free employee, that employee's next waiting
task takes its place, so a cancel never strands the tasks parked behind it.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

__all__ = ["QueueEntry", "ReadyQueue"]


@dataclass(order=True, frozen=True, slots=True)
class QueueEntry:
    """Ordering key: higher priority first, then lower id (older) first."""

    neg_priority: int
    task_id: int
    employee: str = field(compare=False)

    @classmethod
    def of(cls, task_id: int, priority: int, employee: str) -> QueueEntry:
        """Entry for a task."""
        return cls(-priority, task_id, employee)


class ReadyQueue:
    """Priority queue of runnable tasks with per-employee serialisation."""

    def __init__(self) -> None:
        self._ready: list[QueueEntry] = []
        self._waiting: dict[str, list[QueueEntry]] = {}
        self._busy: set[str] = set()
        self._removed: set[int] = set()
        self._queued: set[int] = set()

    def __len__(self) -> int:
        return len(self._queued)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._queued

    def push(self, entry: QueueEntry) -> None:
        """Add a task (idempotent for a task already queued)."""
        if entry.task_id in self._queued:
            return
        self._queued.add(entry.task_id)
        self._removed.discard(entry.task_id)
        if entry.employee in self._busy:
            heapq.heappush(self._waiting.setdefault(entry.employee, []), entry)
        else:
            heapq.heappush(self._ready, entry)

    def remove(self, task_id: int) -> bool:
        """Forget a queued task (lazy); whether it was queued."""
        if task_id not in self._queued:
            return False
        self._queued.discard(task_id)
        self._removed.add(task_id)
        return True

    def pop(self) -> QueueEntry | None:
        """The best runnable task, marking its employee busy; None when none is runnable."""
        while self._ready:
            entry = heapq.heappop(self._ready)
            if entry.task_id in self._removed:
                self._removed.discard(entry.task_id)
                if entry.employee not in self._busy:
                    self._promote(entry.employee)
                continue
            if entry.employee in self._busy:
                heapq.heappush(self._waiting.setdefault(entry.employee, []), entry)
                continue
            self._queued.discard(entry.task_id)
            self._busy.add(entry.employee)
            return entry
        return None

    def release(self, employee: str) -> None:
        """The employee's running task ended: its best waiting task becomes runnable."""
        self._busy.discard(employee)
        self._promote(employee)

    def _promote(self, employee: str) -> None:
        """Move the employee's best waiting (not removed) task to the ready heap."""
        waiting = self._waiting.get(employee)
        while waiting:
            entry = heapq.heappop(waiting)
            if entry.task_id in self._removed:
                self._removed.discard(entry.task_id)
                continue
            heapq.heappush(self._ready, entry)
            break
        if waiting is not None and not waiting:
            del self._waiting[employee]
        # The rest stay parked; they surface one at a time as each run ends.

    def busy(self, employee: str) -> bool:
        """Whether the employee has a running task."""
        return employee in self._busy
