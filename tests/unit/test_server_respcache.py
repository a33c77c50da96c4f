"""The encoded-answer cache: served only while the store's generations are current and
the TTL holds; bounded by entries and by bytes."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import make_mocked_request

from orchestra_kit.server.respcache import EncodedCache


class FakeStore:
    def __init__(self) -> None:
        self.gen = 0
        self.cache_ttl_s = 30.0

    def generations(self, tables: tuple[str, ...]) -> tuple[int, ...]:
        return (self.gen,)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_served_until_a_write_or_the_ttl() -> None:
    store, clock, loads = FakeStore(), Clock(), []
    cache = EncodedCache(max_entries=10, gzip_min_bytes=0, clock=clock)
    request = make_mocked_request("GET", "/x")

    async def load() -> Any:
        loads.append(1)
        return {"n": len(loads)}

    bodies = [(await cache.answer(request, store, "k", ("t",), load)).body for _ in range(3)]
    assert bodies == [b'{"n":1}'] * 3 and len(loads) == 1
    store.gen += 1  # a committed write to the table
    assert (await cache.answer(request, store, "k", ("t",), load)).body == b'{"n":2}'
    clock.now += 31  # past the store's TTL
    assert (await cache.answer(request, store, "k", ("t",), load)).body == b'{"n":3}'


async def test_bounded_by_entries_and_bytes() -> None:
    store = FakeStore()
    cache = EncodedCache(max_entries=3, gzip_min_bytes=0, max_bytes=250)
    request = make_mocked_request("GET", "/x")

    async def big() -> Any:
        return {"pad": "x" * 100}

    for key in range(5):
        await cache.answer(request, store, key, ("t",), big)
    assert len(cache) == 2  # 3 would exceed 250 bytes
    assert cache.stats()["bytes"] <= 250


async def test_answers_past_the_ttl_are_dropped_not_kept_to_the_bound() -> None:
    store, clock = FakeStore(), Clock()
    cache = EncodedCache(max_entries=10_000, gzip_min_bytes=0, clock=clock)
    request = make_mocked_request("GET", "/x")

    async def load() -> Any:
        return {"task": "t" * 200}

    for key in range(3_000):  # a new task read 10 times a second for 300 s
        clock.now += 0.1
        await cache.answer(request, store, ("task", key), ("t",), load)
    assert len(cache) <= 301 and cache.stats()["bytes"] <= 301 * 220


async def test_hit_serves_only_what_answer_would() -> None:
    """The coroutine-free hit path: the cached bytes while valid, else None (and the
    caller goes through answer(), which loads); a miss is not counted twice."""
    store, clock = FakeStore(), Clock()
    cache = EncodedCache(max_entries=10, gzip_min_bytes=0, clock=clock)
    request = make_mocked_request("GET", "/x")

    async def load() -> Any:
        return {"gen": store.gen}

    assert cache.hit(request, store, "k", ("t",)) is None  # nothing cached yet
    await cache.answer(request, store, "k", ("t",), load)
    hit = cache.hit(request, store, "k", ("t",))
    assert hit is not None and hit.body == b'{"gen":0}'
    store.gen += 1  # a committed write: the bytes are stale
    assert cache.hit(request, store, "k", ("t",)) is None
    assert (await cache.answer(request, store, "k", ("t",), load)).body == b'{"gen":1}'
    clock.now += 31  # past the TTL
    assert cache.hit(request, store, "k", ("t",)) is None
    assert cache.stats()["hits"] == 1 and cache.stats()["misses"] == 2
