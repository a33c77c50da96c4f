"""The generation cache: TTL with a fake clock, and never stale after the store's writes."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from orchestra_kit.config import DatabaseSettings, OptimizationFlags
from orchestra_kit.errors import NotFoundError
from orchestra_kit.store import Store
from orchestra_kit.store.cache import MISS, GenerationCache


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_generation_and_ttl() -> None:
    clock = FakeClock()
    cache = GenerationCache(ttl_s=10, max_entries=2, clock=clock)
    cache.put("k", (1,), "v")
    assert cache.get("k", (1,)) == "v"
    assert cache.get("k", (2,)) is MISS  # a write happened since
    cache.put("k", (2,), "v2", valid_until=3.0)
    clock.now = 2.9
    assert cache.get("k", (2,)) == "v2"
    clock.now = 3.0
    assert cache.get("k", (2,)) is MISS  # capped by valid_until
    cache.put("a", (0,), 1)
    cache.put("b", (0,), 2)
    cache.put("c", (0,), 3)
    assert len(cache) == 2 and cache.get("a", (0,)) is MISS  # LRU bound
    clock.now = 100.0
    assert cache.get("c", (0,)) is MISS  # TTL
    s = cache.stats()
    assert (s["hits"], s["misses"]) == (2, 4)


async def test_read_write_read_is_fresh(tmp_path: Path) -> None:
    settings = DatabaseSettings(path=str(tmp_path / "c.db"), cache_ttl_seconds=3600)
    async with Store(settings, OptimizationFlags(), project_root=tmp_path) as store:
        with pytest.raises(NotFoundError):
            await store.get_employee("bob")
        await store.hire("bob", "dev")
        assert (await store.get_employee("bob")).role == "dev"  # negative entry not served
        assert [e.name for e in await store.list_employees()] == ["bob"]
        await store.hire("amy", "dev")
        assert [e.name for e in await store.list_employees()] == ["bob", "amy"]
        await store.lock_files("bob", ["a.py"])
        assert len(await store.list_leases()) == 1
        await store.release_files("bob")
        assert await store.list_leases() == []
        t = await store.create_task("bob", "x")
        assert (await store.get_task(t.id)).status == "queued"
        await store.transition(t.id, "running")  # type: ignore[arg-type]
        assert (await store.get_task(t.id)).status == "running"
        await store.fire("amy")
        assert [e.name for e in await store.list_employees()] == ["bob"]
        assert (await store.counts())["employees"] == 1
        await store.get_task(t.id)
        hits_before = store.stats()["cache"]["hits"]
        await store.get_task(t.id)
        assert store.stats()["cache"]["hits"] == hits_before + 1


async def test_never_stale_under_concurrency(tmp_path: Path) -> None:
    """Readers hammer the cache while writers progress a task; after each acknowledged
    write, a read started afterwards must see at least that write."""
    settings = DatabaseSettings(path=str(tmp_path / "c.db"), cache_ttl_seconds=3600)
    async with Store(settings, OptimizationFlags(), project_root=tmp_path) as store:
        await store.hire("bob", "dev")
        tasks = [await store.create_task("bob", f"t{i}") for i in range(20)]
        stale: list[tuple[int, int, int]] = []
        done = asyncio.Event()

        async def reader() -> None:
            while not done.is_set():
                await store.get_task(random.choice(tasks).id)
                await asyncio.sleep(0)

        async def writer(task_id: int) -> None:
            for p in range(1, 31):
                await store.set_progress(task_id, p)
                seen = (await store.get_task(task_id)).progress
                if seen != p:
                    stale.append((task_id, p, seen))

        readers = [asyncio.create_task(reader()) for _ in range(20)]
        try:
            await asyncio.gather(*(writer(t.id) for t in tasks))
        finally:
            done.set()
            await asyncio.gather(*readers)
        assert stale == []
        assert store.stats()["cache"]["hits"] > 0


def test_entries_past_their_ttl_do_not_pile_up_to_max_entries() -> None:
    """Soak finding: reads of ever new keys (GET /tasks/{id}) filled the cache to
    max_entries with entries that could never be served again (past their TTL)."""
    clock = FakeClock()
    cache = GenerationCache(ttl_s=30, max_entries=10_000, clock=clock)
    for i in range(5_000):  # 10 new keys a second for 500 s
        clock.now = i / 10
        cache.put(("task", i), (i,), "x" * 100)
    assert len(cache) <= 301  # what was put within one TTL, not 5,000
    assert cache.get(("task", 4_999), (4_999,)) == "x" * 100
    for _ in range(100):  # the rate drops to one a second: the cache shrinks with it
        clock.now += 1
        cache.put(("task", int(clock.now * 1000)), (0,), "y")
    assert len(cache) <= 31
