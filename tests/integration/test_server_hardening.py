"""Regression tests for defects found by probing the service (issue 12, server half).

Each test reproduces one probe: unbounded memory on unmatched routes, 500s on odd input,
plain-text parser errors, a misleading error field, OpenAPI gaps.
"""

from __future__ import annotations

import gc
import gzip
import io
import json
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from server_fixtures import make_settings

from orchestra_kit.server import Service
from orchestra_kit.server.openapi import openapi_document


@pytest.fixture
async def svc(tmp_path: Path) -> AsyncIterator[Service]:
    async with Service(make_settings(tmp_path)) as service:
        yield service


async def call(svc: Service, method: str, path: str, **kw: Any) -> tuple[int, bytes, Any]:
    async with aiohttp.ClientSession() as s, s.request(method, svc.url + path, **kw) as r:
        return r.status, await r.read(), r.headers


async def test_unmatched_routes_do_not_grow_memory(svc: Service) -> None:
    """aiohttp builds a new system route per unmatched request; nothing may keep them."""
    async with aiohttp.ClientSession() as s:
        async def burst(n: int, start: int) -> None:
            for i in range(start, start + n):
                method = ("GET", "PUT", "PATCH", "DELETE")[i % 4]
                async with s.request(method, f"{svc.url}/nope/{i}") as r:
                    assert r.status == 404
                async with s.put(f"{svc.url}/employees") as r:
                    assert r.status == 405

        await burst(200, 0)  # warm up: allocator pools, the labels of the fixed routes
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            await burst(700, 200)
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
    assert grown < 1_000_000, f"{grown} bytes kept after 3,000 unmatched requests"
    labels = set(svc.state.metrics.routes)
    assert len([k for k in labels if "unmatched" in k]) <= 8, sorted(labels)  # one per method


@pytest.mark.parametrize("path", ["/tasks/\u00b2", "/tasks/" + "9" * 5000, "/tasks/\u0661"])
@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_odd_task_ids_are_not_500(svc: Service, method: str, path: str) -> None:
    status, raw, headers = await call(svc, method, path)
    assert status in (404, 422), raw[:300]
    assert b'"error"' in raw and "X-Request-ID" in headers


async def test_huge_task_id_on_lock_is_422(svc: Service) -> None:
    await call(svc, "POST", "/employees", json={"name": "ann", "role": "dev"})
    for task_id in (2**63, 10**30):
        status, raw, _ = await call(svc, "POST", "/files/lock",
                                    json={"name": "ann", "files": ["a.py"], "task_id": task_id})
        assert status == 422 and b'"task_id"' in raw, raw[:300]


async def test_lone_surrogate_in_release_body_is_4xx(svc: Service) -> None:
    body = b'{"name": "ann", "files": ["\\ud800.py"]}'
    for path in ("/files/release", "/files/lock"):
        status, raw, _ = await call(svc, "POST", path, data=body,
                                    headers={"Content-Type": "application/json"})
        assert status in (400, 422), (path, raw[:300])
    status, raw, _ = await call(svc, "POST", "/files/release?name=ann", data=b'["\\udc00"]',
                                headers={"Content-Type": "application/json"})
    assert status in (400, 422), raw[:300]


async def test_invalid_gzip_body_is_400(svc: Service) -> None:
    good = gzip.compress(b'{"name": "gz", "role": "dev"}')
    for data in (b"not gzip at all", b"\x1f\x8b\x08\x00" + b"junk" * 8):
        status, raw, headers = await call(
            svc, "POST", "/employees", data=data,
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
        assert status == 400, raw[:300]
        assert b'"error"' in raw and "X-Request-ID" in headers
    status, _, _ = await call(svc, "POST", "/employees", data=good,
                              headers={"Content-Encoding": "gzip",
                                       "Content-Type": "application/json"})
    assert status == 201


async def test_release_query_form_names_the_files_field(svc: Service) -> None:
    status, raw, _ = await call(svc, "POST", "/files/release?name=ann", json="a.py")
    assert status == 422 and b'"field":"files"' in raw and b"filesbody" not in raw, raw
    status, raw, _ = await call(svc, "POST", "/files/release?name=ann",
                                json={"name": "bob", "files": ["a.py"]})
    assert status == 409 and b'"field":"name"' in raw, raw  # query and body disagree
    status, raw, _ = await call(svc, "POST", "/files/release?name=ann", json=[1])
    assert status == 422 and b'"field":"files[0]"' in raw, raw


async def test_every_422_has_details_errors(svc: Service) -> None:
    probes = [("GET", "/tasks?limit=abc", None), ("GET", "/tasks?status=nah", None),
              ("GET", "/tasks?limit=", None),
              ("GET", "/employees/-bad", None), ("POST", "/files/lock",
                                                {"name": "x", "files": ["../../etc"]}),
              ("GET", "/files?employee=a/b", None)]
    for method, path, body in probes:
        async with aiohttp.ClientSession() as s, s.request(method, svc.url + path,
                                                            json=body) as r:
            doc = await r.json()
            assert r.status == 422, (path, doc)
            errors = doc["error"]["details"]["errors"]
            assert errors and errors[0]["field"] == doc["error"]["details"]["field"], doc


def test_openapi_keeps_name_and_path_patterns() -> None:
    schemas = openapi_document()["components"]["schemas"]
    name = schemas["HireBody"]["properties"]["name"]
    assert name.get("pattern"), name
    files = schemas["LockBody"]["properties"]["files"]["items"]
    assert files.get("pattern"), files


async def test_release_spec_requires_the_named_body_and_the_server_agrees(svc: Service) -> None:
    """Schemathesis found (ST202): with the body and ?name= both optional in the spec, a
    request naming nobody was schema-valid yet refused. The spec now requires the
    {name, files?} body; the async original's ?name= form is a deprecated extra."""
    op = openapi_document()["paths"]["/files/release"]["post"]
    assert op["requestBody"]["required"] is True
    body = openapi_document()["components"]["schemas"]["ReleaseBody"]
    assert body["required"] == ["name"]
    (query,) = op["parameters"]
    assert query["name"] == "name" and query["deprecated"] is True and not query["required"]
    status, raw, _ = await call(svc, "POST", "/files/release")
    assert status == 400 and b"body" in raw  # what the spec says: the body is required
    await call(svc, "POST", "/employees", json={"name": "rel", "role": "dev"})
    assert (await call(svc, "POST", "/files/release", json={"name": "rel"}))[0] == 200
    assert (await call(svc, "POST", "/files/release?name=rel", json=[]))[0] == 200  # legacy
    status, raw, _ = await call(svc, "POST", "/files/release?name=other", json={"name": "rel"})
    assert status == 409, raw


async def test_options_batch_advertises_only_post(svc: Service) -> None:
    status, _, headers = await call(svc, "OPTIONS", "/employees/batch")
    allowed = {m.strip() for m in headers.get("Allow", "").split(",") if m.strip()}
    assert status in (200, 204, 405)
    assert "POST" in allowed and not allowed & {"DELETE", "GET"}, headers.get("Allow")


async def test_max_batch_checks_each_path_once_off_the_loop(
        svc: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    """200 tasks x 100 paths (mostly shared): each distinct path normalised once in the
    whole request, in a worker thread (the store and the tasks' leases take the checked
    paths as they are); duplicates within a task collapse."""
    import threading

    from orchestra_kit import paths as paths_mod

    calls: list[str] = []
    loop_thread: list[bool] = []
    real = paths_mod._normalise

    def counting(checker: Any, path: str, field: str) -> str:
        calls.append(path)
        loop_thread.append(threading.current_thread() is threading.main_thread())
        return real(checker, path, field)

    monkeypatch.setattr(paths_mod, "_normalise", counting)
    await call(svc, "POST", "/employees", json={"name": "bat", "role": "dev"})
    files = [f"m{j % 50}" for j in range(100)]  # 50 distinct, each twice
    body = {"tasks": [{"name": "bat", "task": f"t{i}", "files": files} for i in range(200)]}
    status, raw, _ = await call(svc, "POST", "/tasks/batch",
                                data=io.BytesIO(json.dumps(body).encode()),
                                headers={"Content-Type": "application/json"})
    assert status == 200, raw[:300]
    task = (await svc.state.store.list_tasks(limit=1))[0]
    assert len(task.files) == 50
    await svc.state.require_scheduler().wait(task.id)  # its leases were taken and released
    assert sorted(calls) == sorted(f"m{j}" for j in range(50)) and not any(loop_thread)
