"""Merged writes (store/taskmerge.py, merged hires): one batch, per-op results identical
to the one-by-one path. A gate op holds the writer so the ops under test queue up and
are taken as one batch (deterministic, no timing)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import pytest

from orchestra_kit.config import DatabaseSettings, OptimizationFlags
from orchestra_kit.errors import ConflictError, NotFoundError
from orchestra_kit.models import TaskStatus
from orchestra_kit.store import Store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    clock = iter(range(1_000_000, 2_000_000))
    async with Store(DatabaseSettings(path=str(tmp_path / "m.db"), batch_size=1000),
                     OptimizationFlags(), project_root=tmp_path,
                     clock=lambda: next(clock) + 0.123456789) as s:
        await s.hire_many([{"name": f"e{i}", "role": "dev"} for i in range(20)])
        yield s


async def _one_batch(store: Store, *calls: Awaitable[Any], merged: int | None = None) -> list[Any]:
    """Run ``calls`` while the writer is held, so they commit as one batch; ``merged``:
    how many of them must have run merged (default: all)."""
    gate = threading.Event()
    held = asyncio.ensure_future(store._write(lambda c: gate.wait(10), ()))
    await asyncio.sleep(0.01)  # the writer is now inside the gate op
    batches, merged_before = store.stats()["batches"], store.stats()["merged_ops"]
    futs = [asyncio.ensure_future(c) for c in calls]
    await asyncio.sleep(0.01)  # every call queued its op
    gate.set()
    await held
    results = await asyncio.gather(*futs, return_exceptions=True)
    assert store.stats()["batches"] == batches + 2  # the gate's batch, then one more
    assert store.stats()["merged_ops"] - merged_before == (len(calls) if merged is None else merged)
    return results


async def test_merged_creates_get_consecutive_ids_and_exact_rows(store: Store) -> None:
    before = await store.create_task("e0", "first")
    made = await _one_batch(store, *(store.create_task(f"e{i % 20}", f"t{i}", priority=i % 11)
                                     for i in range(50)))
    assert [t.id for t in made] == list(range(before.id + 1, before.id + 51))
    for t in made:
        assert await store.get_task(t.id) == t  # what the caller got is what is stored
    assert (await store.counts())["tasks_queued"] == 51


async def test_a_create_for_an_unknown_employee_fails_alone(store: Store) -> None:
    made = await _one_batch(store, store.create_task("e1", "a"), store.create_task("ghost", "b"),
                            store.create_task("e2", "c"), merged=0)  # declined: one by one
    assert isinstance(made[1], NotFoundError) and "ghost" in str(made[1])
    assert [t.employee for t in (made[0], made[2])] == ["e1", "e2"]
    assert (await store.counts())["tasks_queued"] == 2


async def test_merged_moves_match_one_by_one(store: Store) -> None:
    tasks = [await store.create_task(f"e{i}", f"t{i}") for i in range(6)]
    moved = await _one_batch(store, *(
        store.transition(t.id, TaskStatus.RUNNING, expect=TaskStatus.QUEUED, count_attempt=True)
        for t in tasks))
    assert [(t.status, t.attempts) for t in moved] == [("running", 1)] * 6
    ended = await _one_batch(
        store,
        store.transition(tasks[0].id, TaskStatus.COMPLETED, result="ok", usage={"cpu_s": 1.5}),
        store.transition(tasks[1].id, TaskStatus.FAILED, error="boom"),
        store.transition(tasks[2].id, TaskStatus.QUEUED, expect=TaskStatus.RUNNING, error="retry"),
        store.transition(tasks[3].id, TaskStatus.RUNNING, expect=TaskStatus.QUEUED),  # conflict
        store.transition(999_999, TaskStatus.CANCELLED),  # no such task
        store.create_task("e9", "created among the moves"),
    )
    assert (ended[0].status, ended[0].result, ended[0].progress, ended[0].usage) == (
        "completed", "ok", 100, {"cpu_s": 1.5})
    assert ended[0].finished_at is not None and ended[0].started_at == moved[0].started_at
    assert (ended[1].status, ended[1].error) == ("failed", "boom")
    assert (ended[2].status, ended[2].attempts) == ("queued", 1)
    assert isinstance(ended[3], ConflictError) and "it is 'running', not 'queued'" in str(ended[3])
    assert isinstance(ended[4], NotFoundError)
    assert ended[5].status == "queued"
    for t in (*ended[:3], ended[5]):
        assert await store.get_task(t.id) == t
    counts = await store.counts()
    assert (counts["tasks_running"], counts["tasks_completed"], counts["tasks_failed"],
            counts["tasks_queued"]) == (3, 1, 1, 2)


async def test_one_running_task_per_employee_holds_in_a_merged_batch(store: Store) -> None:
    a, b = await store.create_task("e1", "a"), await store.create_task("e1", "b")
    res = await _one_batch(store, store.transition(a.id, TaskStatus.RUNNING),
                           store.transition(b.id, TaskStatus.RUNNING), merged=0)
    assert [type(r).__name__ for r in res] == ["Task", "ConflictError"]
    assert (await store.counts())["tasks_running"] == 1


async def test_two_moves_of_one_task_in_a_batch_keep_their_order(store: Store) -> None:
    t = await store.create_task("e1", "a")
    res = await _one_batch(store, store.transition(t.id, TaskStatus.CANCELLED,
                                                   expect=TaskStatus.QUEUED),
                           store.transition(t.id, TaskStatus.RUNNING, expect=TaskStatus.QUEUED),
                           merged=0)
    assert res[0].status == "cancelled" and isinstance(res[1], ConflictError)


async def test_merged_hires_with_taken_and_repeated_names(store: Store) -> None:
    res = await _one_batch(store, store.hire("n1", "dev"), store.hire("e3", "dev"),
                           store.hire("n1", "qa"), store.hire("n2", "dev"))
    assert [type(r).__name__ for r in res] == ["Employee", "ConflictError", "ConflictError",
                                               "Employee"]
    assert (await store.get_employee("n1")).role == "dev"
    assert (await store.counts())["employees"] == 22


async def test_ops_of_one_loop_iteration_reach_the_writer_as_one_item(store: Store) -> None:
    gate = threading.Event()
    held = asyncio.ensure_future(store._write(lambda c: gate.wait(10), ()))
    await asyncio.sleep(0.01)  # the writer is inside the gate op
    futs = [asyncio.ensure_future(store.hire(f"q{i}", "dev")) for i in range(5)]
    await asyncio.sleep(0.01)
    writer = store._writer
    assert writer is not None
    assert store.writer_queue_depth == 5 and writer._queue.qsize() == 1  # one hand-over
    gate.set()
    await held
    await asyncio.gather(*futs)
    assert store.writer_queue_depth == 0
