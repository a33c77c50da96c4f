"""Several instances when things go wrong: a LISTEN connection that drops (reconnect,
then resynchronise), and a cancel sent to an instance that does not run the task."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from test_scale_out import db_rows, pg_settings

from orchestra_kit.client import OrchestraClient
from orchestra_kit.models import TaskStatus
from orchestra_kit.server import Service
from orchestra_kit.store.pg import PgStore
from orchestra_kit.store.pg_base import RESYNC


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.02)
    return False


def store_of(service: Service) -> PgStore:
    store = service.state.store
    assert isinstance(store, PgStore)
    return store


async def runner_and_other(pair: tuple[Service, Service], pg_url: str,
                           task_id: int) -> tuple[Service, Service]:
    """(the instance running the task, the other one)."""
    by_id = {store_of(s).instance_id: s for s in pair}
    rows: list[Any] = []

    async def claimed() -> bool:
        nonlocal rows
        rows = await db_rows(pg_url, "SELECT instance FROM tasks WHERE id = $1", task_id)
        return rows[0][0] is not None

    assert await until(claimed)
    runner = by_id[rows[0][0]]
    return runner, pair[0] if runner is pair[1] else pair[1]


async def test_listener_reconnects_after_pg_terminate_backend(tmp_path: Path,
                                                              pg_url: str) -> None:
    settings = pg_settings(tmp_path, pg_url)
    async with PgStore(pg_url, settings.database, settings.flags, project_root=tmp_path) as a, \
            PgStore(pg_url, settings.database, settings.flags, project_root=tmp_path) as b:
        heard: list[str] = []
        a.add_event_listener(heard.append)
        await b.hire("x", "dev")

        async def invalidated() -> bool:  # b's notification reached a: nothing in flight
            return bool(a.stats()["notifications"] >= 1)

        assert await until(invalidated)
        assert [e.name for e in await a.list_employees()] == ["x"]
        reads = a.stats()["reads"]
        await a.list_employees()
        assert a.stats()["reads"] == reads  # served from the cache
        pid = a.listener_pid
        assert pid > 0
        (row,) = await db_rows(pg_url, "SELECT pg_terminate_backend($1)", pid)
        assert row[0] is True

        async def back() -> bool:
            return a.listener_reconnects == 1 and a.listener_pid not in (0, pid)

        assert await until(back)
        assert RESYNC in heard  # the listeners were told to re-read what they follow
        await a.list_employees()
        assert a.stats()["reads"] == reads + 1  # nothing cached survives a reconnect
        await b.publish_events(['{"after": 1}'])

        async def hears() -> bool:
            return '{"after": 1}' in heard

        assert await until(hears)  # listening again
        assert a.stats()["listener_reconnects"] == 1


async def test_a_stream_gets_the_end_it_missed_while_its_listener_was_down(
        tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = pg_settings(tmp_path, pg_url, **{"agents.sim_latency_ms": 700})
    async with Service(settings) as a, Service(settings) as b, OrchestraClient(a.url) as ca:
        await ca.hire("sse", "dev")
        task = await ca.assign("sse", "follow me")
        runner, other = await runner_and_other((a, b), pg_url, task.id)
        other_store = store_of(other)
        listener = other_store._listener
        assert listener is not None
        blocked = True
        real_connect = listener._connect

        async def connect() -> None:  # the server "unreachable" for this listener only
            if blocked:
                raise OSError("unreachable (test)")
            await real_connect()

        monkeypatch.setattr(listener, "_connect", connect)
        events: list[dict[str, Any]] = []
        async with OrchestraClient(other.url) as co:
            async def follow() -> None:
                async for e in co.events(task.id):
                    events.append(e)

            async def subscribed() -> bool:
                return bool(events)

            follower = asyncio.create_task(follow())
            assert await until(subscribed)
            await db_rows(pg_url, "SELECT pg_terminate_backend($1)", store_of(other).listener_pid)

            async def ended() -> bool:
                rows = await db_rows(pg_url, "SELECT status FROM tasks WHERE id = $1", task.id)
                return bool(rows[0][0] == "completed")

            assert await until(ended)
            await asyncio.sleep(0.3)
            assert "completed" not in [e.get("status") for e in events]  # really missed
            blocked = False
            await asyncio.wait_for(follower, 15)
    assert events[-1]["kind"] == "status" and events[-1]["status"] == "completed"
    assert other_store.listener_reconnects == 1
    assert runner is not other


async def test_cancel_on_one_instance_stops_the_run_on_the_other(tmp_path: Path,
                                                                pg_url: str) -> None:
    settings = pg_settings(tmp_path, pg_url, **{"agents.sim_latency_ms": 8000})
    async with Service(settings) as a, Service(settings) as b, OrchestraClient(a.url) as ca:
        await ca.hire("long", "dev")
        task = await ca.assign("long", "long work")
        runner, other = await runner_and_other((a, b), pg_url, task.id)
        t0 = time.monotonic()
        async with aiohttp.ClientSession() as s, s.delete(f"{other.url}/tasks/{task.id}") as r:
            assert r.status == 202
            body = await r.json()
        assert body["cancel_requested"] is True and body["task"]["status"] == "running"
        (row,) = await db_rows(pg_url, "SELECT cancel_requested FROM tasks WHERE id = $1",
                               task.id)
        assert row[0] == "cancelled by request"  # committed before the answer

        async def stopped() -> bool:
            rows = await db_rows(pg_url, "SELECT status FROM tasks WHERE id = $1", task.id)
            return bool(rows[0][0] == "cancelled")

        assert await until(stopped, 5)
        assert time.monotonic() - t0 < 5  # stopped, not run to its 8 s end
        assert runner.state.scheduler.stats()["running"] == 0  # type: ignore[union-attr]
        async with aiohttp.ClientSession() as s, s.delete(f"{other.url}/tasks/{task.id}") as r:
            assert r.status == 200 and (await r.json())["task"]["status"] == "cancelled"
    (row,) = await db_rows(pg_url, "SELECT status, error, attempts FROM tasks WHERE id = $1",
                           task.id)
    assert tuple(row) == ("cancelled", "cancelled by request", 1)


async def test_a_cancel_request_whose_notification_is_lost_is_found_by_the_sweep(
        tmp_path: Path, pg_url: str) -> None:
    settings = pg_settings(tmp_path, pg_url, **{"agents.sim_latency_ms": 8000})
    async with Service(settings) as a, Service(settings) as b, OrchestraClient(a.url) as ca:
        await ca.hire("quiet", "dev")
        task = await ca.assign("quiet", "long work")
        _runner, other = await runner_and_other((a, b), pg_url, task.id)
        # A payload nobody can decode: only the runner's sweep (every 0.2 s) finds it.
        assert await store_of(other).request_cancel(task.id, "swept", "not an event")

        async def stopped() -> bool:
            rows = await db_rows(pg_url, "SELECT status, error FROM tasks WHERE id = $1",
                                 task.id)
            return tuple(rows[0]) == ("cancelled", "swept")

        assert await until(stopped, 5)


async def test_a_cancel_request_wins_over_a_requeue_and_over_recovery(tmp_path: Path,
                                                                     pg_url: str) -> None:
    settings = pg_settings(tmp_path, pg_url)
    db, flags = settings.database, settings.flags
    async with PgStore(pg_url, db, flags, project_root=tmp_path, clock=lambda: 1000.0) as dead, \
            PgStore(pg_url, db, flags, project_root=tmp_path) as alive:
        await dead.hire_many([{"name": "p", "role": "dev"}, {"name": "q", "role": "dev"}])
        retried = await dead.create_task("p", "will be retried")
        orphan = await dead.create_task("q", "its instance dies")
        for t in (retried, orphan):
            await dead.claim_task(t.id, max_running=10)
            assert await alive.request_cancel(t.id, "stop it", "x") is not None
        assert await alive.request_cancel(10**9, "no such task", "x") is None
        back = await dead.transition(retried.id, TaskStatus.QUEUED, expect=TaskStatus.RUNNING)
        assert (back.status, back.error) == (TaskStatus.CANCELLED, "stop it")
        # `dead` heartbeats with a clock stuck at 1000 s: to `alive` it has been silent.
        report = await alive.recover(max_attempts=3)
        assert report.cancelled_task_ids == (orphan.id,) and not report.requeued_task_ids
        assert (await alive.get_task(orphan.id)).status == TaskStatus.CANCELLED
