"""Black-box tests of every endpoint through real sockets, a real store and the simulator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from server_fixtures import make_settings

from orchestra_kit.client import OrchestraClient
from orchestra_kit.errors import ApiError
from orchestra_kit.server import Service


@pytest.fixture
async def svc(tmp_path: Path) -> AsyncIterator[Service]:
    async with Service(make_settings(tmp_path)) as service:
        yield service


@pytest.fixture
async def client(svc: Service) -> AsyncIterator[OrchestraClient]:
    async with OrchestraClient(svc.url) as c:
        yield c


async def raw(svc: Service, method: str, path: str, **kw: Any) -> tuple[int, Any, Any]:
    async with aiohttp.ClientSession() as s, s.request(method, svc.url + path, **kw) as r:
        ctype = r.headers.get("Content-Type", "")
        body = await r.json() if ctype.startswith("application/json") else await r.text()
        return r.status, body, r.headers


async def test_health_shape(svc: Service) -> None:
    status, body, headers = await raw(svc, "GET", "/health")
    assert status == 200
    assert body["status"] == "healthy" and body["chat_enabled"] is False
    assert body["counts"]["employees"] == 0
    assert set(body["performance_metrics"]) >= {"requests_total", "requests_success",
                                                "requests_error", "error_rate",
                                                "avg_response_time_ms", "active_tasks"}
    assert headers["X-Request-ID"]


async def test_request_id_echoed_when_sane(svc: Service) -> None:
    _, _, headers = await raw(svc, "GET", "/health", headers={"X-Request-ID": "abc-123"})
    assert headers["X-Request-ID"] == "abc-123"
    _, _, headers = await raw(svc, "GET", "/health", headers={"X-Request-ID": "bad id\t<>"})
    assert headers["X-Request-ID"] != "bad id\t<>"


async def test_hire_original_body_then_conflict(svc: Service) -> None:
    status, body, _ = await raw(svc, "POST", "/employees",
                                json={"name": "alice", "role": "developer", "smartness": "smart"})
    assert status == 201
    assert body["employee"]["name"] == "alice" and body["employee"]["smartness"] == "smart"
    status, body, headers = await raw(svc, "POST", "/employees",
                                      json={"name": "alice", "role": "developer"})
    assert status == 409 and body["error"]["code"] == "conflict"
    assert body["request_id"] == headers["X-Request-ID"]


async def test_employee_get_list_fire(client: OrchestraClient, svc: Service) -> None:
    await client.hire("bob", "tester")
    assert (await client.get_employee("bob")).role == "tester"
    assert [e.name for e in await client.list_employees(role="tester")] == ["bob"]
    report = await client.fire("bob")
    assert report["message"].endswith("bob")
    with pytest.raises(ApiError) as e:
        await client.get_employee("bob")
    assert e.value.http_status == 404 and e.value.code == "not_found"
    status, _, _ = await raw(svc, "DELETE", "/employees/bob")
    assert status == 404


async def test_batch_hire_per_item(client: OrchestraClient) -> None:
    await client.hire("dup", "dev")
    answer = await client.hire_many([{"name": "n1", "role": "dev"}, {"name": "dup", "role": "dev"},
                                     {"name": "n2", "role": "dev", "smartness": "smart"}])
    assert answer["results"] == {"n1": True, "dup": False, "n2": True}
    assert [i["ok"] for i in answer["items"]] == [True, False, True]
    assert answer["items"][1]["error"]["code"] == "conflict"
    assert len(await client.list_employees()) == 3


async def test_assign_original_body_runs_to_completion(svc: Service,
                                                       client: OrchestraClient) -> None:
    await client.hire("carol", "dev")
    status, body, _ = await raw(svc, "POST", "/tasks", json={
        "name": "carol", "task": "write tests", "model": None, "mode": "build", "priority": 7})
    assert status == 202
    assert body["status"] == "queued" and body["session_id"] == str(body["task_id"])
    assert body["priority"] == 7 and body["mode"] == "build"
    done = await asyncio.wait_for(client.wait_task(body["task_id"]), 10)
    assert done.status == "completed"
    assert [t.id for t in await client.list_tasks(employee="carol")] == [body["task_id"]]
    assert [t.id for t in await client.list_tasks(status="queued")] == []


async def test_assign_unknown_employee_404(svc: Service) -> None:
    status, body, _ = await raw(svc, "POST", "/tasks", json={"name": "ghost", "task": "x"})
    assert status == 404 and body["error"]["code"] == "not_found"


async def test_auto_hire_when_configured(tmp_path: Path) -> None:
    async with Service(make_settings(tmp_path, **{"scheduler.auto_hire": True})) as svc, \
            OrchestraClient(svc.url) as c:
        task = await c.assign("newbie", "do work")
        assert (await c.get_employee("newbie")).role == "developer"
        assert task.employee == "newbie"


async def test_sync_mode_answers_200_with_final_task(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, **{"flags.enable_async_llm_processing": False})
    async with Service(settings) as svc, OrchestraClient(svc.url) as c:
        await c.hire("dora", "dev")
        status, body = await c.request("POST", "/tasks", {"name": "dora", "task": "x"})
        assert status == 200 and body["task"]["status"] == "completed"


async def test_task_batch_per_item(client: OrchestraClient) -> None:
    await client.hire("eve", "dev")
    answer = await client.assign_many([{"name": "eve", "task": "a"},
                                       {"name": "nobody", "task": "b"}])
    assert [r["success"] for r in answer["results"]] == [True, False]
    assert answer["items"][1]["error"]["code"] == "not_found"


async def test_cancel_by_id_and_by_name(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, **{"agents.sim_latency_ms": 5000})
    async with Service(settings) as svc, OrchestraClient(svc.url) as c:
        await c.hire("fay", "dev")
        t1 = await c.assign("fay", "long one")
        t2 = await c.assign("fay", "queued behind")
        assert (await c.cancel_task(t2.id)).status == "cancelled"
        assert await c.stop_employee("fay") == [t1.id]
        assert (await c.get_task(t1.id)).status == "cancelled"
        status, _ = await c.request("DELETE", "/tasks/nobody")
        assert status == 404


async def test_get_task_404_and_bad_query(svc: Service) -> None:
    assert (await raw(svc, "GET", "/tasks/999"))[0] == 404
    assert (await raw(svc, "GET", "/tasks/99999999999999999999999"))[0] == 404
    status, body, _ = await raw(svc, "GET", "/tasks?status=bogus")
    assert status == 422 and body["error"]["details"]["field"] == "status"
    status, body, _ = await raw(svc, "GET", "/employees?limit=abc")
    assert status == 422 and "limit" in body["error"]["message"]


async def test_files_lock_request_approve_release(client: OrchestraClient, svc: Service) -> None:
    await client.hire("gus", "dev")
    await client.hire("hal", "dev")
    status, body, _ = await raw(svc, "POST", "/files/lock", json={
        "name": "gus", "files": ["src/a.py", "src/b.py"], "description": "refactor"})
    assert status == 200 and body == {"result": {"src/a.py": "locked", "src/b.py": "locked"}}
    assert await client.lock_files("hal", ["src/a.py"]) == {"src/a.py": "locked_by:gus"}
    state, req = await client.request_file("hal", "src/a.py", "need it")
    assert state == "request_sent_to:gus" and req is not None
    assert [r.id for r in await client.list_requests(status="pending")] == [req.id]
    lease = await client.approve(req.id, actor="gus")
    assert lease.employee == "hal" and lease.path == "src/a.py"
    assert {x.path: x.employee for x in await client.list_leases()} == {
        "src/a.py": "hal", "src/b.py": "gus"}
    assert await client.release_files("gus") == ["src/b.py"]
    # the async original's form: ?name= and a bare JSON array
    status, body, _ = await raw(svc, "POST", "/files/release?name=hal", json=["src/a.py"])
    assert status == 200 and body == {"released": ["src/a.py"]}
    status, body, _ = await raw(svc, "POST", "/files/release?name=hal")
    assert status == 200 and body == {"released": []}


async def test_deny_request(client: OrchestraClient) -> None:
    await client.hire("ida", "dev")
    await client.hire("jon", "dev")
    await client.lock_files("ida", ["x.py"])
    _, req = await client.request_file("jon", "x.py")
    assert req is not None
    with pytest.raises(ApiError) as e:
        await client.deny(req.id, actor="jon")
    assert e.value.http_status == 403
    assert (await client.deny(req.id, actor="ida")).status == "denied"


async def test_status_performance_metrics(client: OrchestraClient, svc: Service) -> None:
    await client.hire("kim", "dev")
    await client.lock_files("kim", ["k.py"])
    status = await client.status()
    assert status["chat_enabled"] is False
    assert [e["name"] for e in status["employees"]] == ["kim"]
    assert [f["path"] for f in status["locked_files"]] == ["k.py"]
    perf = await client.performance()
    server = perf["server_metrics"]
    assert server["requests_success"] >= 3 and "p99" in server["response_time_ms"]
    assert perf["database_metrics"]["database_metrics"]["employee_count"] == 1
    assert perf["optimization_status"]["enable_wal_mode"] is True
    assert "queued_tasks" in perf["session_metrics"]
    text = await client.metrics_text()
    assert 'orchestra_http_requests_total{route="POST /employees",status_class="2xx"} 1.0' in text
    assert "orchestra_store_count_employees 1.0" in text


async def test_success_counts_only_2xx(client: OrchestraClient) -> None:
    with pytest.raises(ApiError):
        await client.get_employee("nobody")
    perf = await client.performance()
    assert perf["server_metrics"]["requests_error"] == 1
    assert perf["server_metrics"]["requests_success"] == 0


async def test_openapi_and_docs(svc: Service) -> None:
    status, spec, _ = await raw(svc, "GET", "/openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.1")
    for path in ("/employees", "/tasks", "/tasks/{id}/events", "/files/lock",
                 "/files/requests/{id}/approve", "/health", "/status"):
        assert path in spec["paths"]
    assert "ErrorBody" in spec["components"]["schemas"]
    status, html, headers = await raw(svc, "GET", "/docs")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "openapi.json" in html and "http://" not in html and "https://" not in html


async def test_unknown_route_and_method(svc: Service) -> None:
    status, body, _ = await raw(svc, "GET", "/nope")
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body, headers = await raw(svc, "PUT", "/employees")
    assert status == 405 and body["error"]["code"] == "method_not_allowed"
    assert "POST" in headers["Allow"]
