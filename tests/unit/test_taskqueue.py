"""ReadyQueue: priority order, FIFO within a priority, one running task per employee."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from orchestra_kit.scheduler.queue import QueueEntry, ReadyQueue


def test_priority_then_fifo() -> None:
    q = ReadyQueue()
    for tid, prio, emp in [(1, 1, "a"), (2, 9, "b"), (3, 5, "c"), (4, 9, "d"), (5, 5, "e")]:
        q.push(QueueEntry.of(tid, prio, emp))
    order = []
    while (e := q.pop()) is not None:
        order.append(e.task_id)
    assert order == [2, 4, 3, 5, 1]


def test_busy_employee_waits_and_others_overtake() -> None:
    q = ReadyQueue()
    q.push(QueueEntry.of(1, 5, "a"))
    q.push(QueueEntry.of(2, 9, "a"))
    q.push(QueueEntry.of(3, 1, "b"))
    first = q.pop()
    assert first is not None and first.task_id == 2
    second = q.pop()
    assert second is not None and second.task_id == 3  # a is busy; b overtakes
    assert q.pop() is None
    q.release("a")
    third = q.pop()
    assert third is not None and third.task_id == 1


def test_remove_is_lazy_and_exact() -> None:
    q = ReadyQueue()
    q.push(QueueEntry.of(1, 5, "a"))
    q.push(QueueEntry.of(2, 5, "b"))
    assert q.remove(1) and not q.remove(1)
    popped = q.pop()
    assert popped is not None and popped.task_id == 2
    assert q.pop() is None and len(q) == 0


@given(st.lists(st.tuples(st.integers(0, 10), st.integers(0, 5)), min_size=1, max_size=60),
       st.integers(0, 2**32 - 1))
def test_invariants_under_random_schedules(items: list[tuple[int, int]], seed: int) -> None:
    """Every task runs exactly once; never two at once per employee; each pick is the
    best runnable task at that moment."""
    rng = random.Random(seed)
    q = ReadyQueue()
    pending = {}
    for tid, (prio, emp) in enumerate(items):
        entry = QueueEntry.of(tid, prio, f"e{emp}")
        pending[tid] = entry
        q.push(entry)
    running: dict[str, int] = {}
    ran: list[int] = []
    while pending or running:
        entry = q.pop() if rng.random() < 0.6 or not running else None
        if entry is not None:
            assert entry.employee not in running
            runnable = [e for e in pending.values() if e.employee not in running]
            assert entry == min(runnable)
            running[entry.employee] = entry.task_id
            ran.append(entry.task_id)
            del pending[entry.task_id]
        elif running:
            emp = rng.choice(sorted(running))
            del running[emp]
            q.release(emp)
        else:
            break
    assert sorted(ran) == list(range(len(items)))


def test_cancelled_released_entry_hands_over_to_its_sibling() -> None:
    """Issue 12, High 2: a released entry removed before it is popped must not strand
    the employee's other parked tasks."""
    q = ReadyQueue()
    for tid in (1, 2, 3):
        q.push(QueueEntry.of(tid, 5, "a"))
    first = q.pop()
    assert first is not None and first.task_id == 1
    assert q.pop() is None  # 2 and 3 are parked behind the busy employee
    q.push(QueueEntry.of(4, 9, "b"))
    q.release("a")  # 2 becomes runnable ...
    assert q.remove(2)  # ... and is cancelled before it is popped
    popped = [e.task_id for e in iter(q.pop, None)]
    assert popped == [4, 3]
    assert len(q) == 0
