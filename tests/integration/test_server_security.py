"""Security: auth, traversal, oversize bodies, no /project-root, no leaks, rate limits."""

from __future__ import annotations

import gzip
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from server_fixtures import API_KEY, make_settings

from orchestra_kit.client import OrchestraClient
from orchestra_kit.errors import ApiError
from orchestra_kit.server import Service

LEAK = re.compile(r"Traceback|File \"|\.py\b|/tmp/|/work/|[A-Z][a-z]+Error\b|Exception|sqlite3")


@pytest.fixture
async def secure(tmp_path: Path) -> AsyncIterator[Service]:
    async with Service(make_settings(tmp_path, **{"server.api_keys": API_KEY})) as svc:
        yield svc


async def call(url: str, method: str, path: str, *, key: str | None = None,
               **kw: Any) -> tuple[int, Any, Any]:
    headers = dict(kw.pop("headers", {}))
    if key:
        headers["Authorization"] = f"Bearer {key}"
    async with aiohttp.ClientSession() as s, s.request(method, url + path, headers=headers,
                                                        **kw) as r:
        raw = await r.read()
        return r.status, raw, r.headers


async def test_mutations_need_the_key(secure: Service) -> None:
    body = {"name": "amy", "role": "dev"}
    for key in (None, "wrong-key-123456"):
        status, raw, headers = await call(secure.url, "POST", "/employees", key=key, json=body)
        assert status == 401 and b'"unauthorized"' in raw
        assert headers["WWW-Authenticate"] == "Bearer"
    assert (await call(secure.url, "DELETE", "/employees/amy"))[0] == 401
    assert (await call(secure.url, "POST", "/employees", key=API_KEY, json=body))[0] == 201
    assert (await call(secure.url, "GET", "/employees"))[0] == 200  # reads stay open


async def test_approve_needs_owner_actor_when_auth_on(secure: Service) -> None:
    async with OrchestraClient(secure.url, api_key=API_KEY) as c:
        await c.hire("own", "dev")
        await c.hire("req", "dev")
        await c.lock_files("own", ["f.py"])
        _, request = await c.request_file("req", "f.py")
        assert request is not None
        for actor in (None, "req"):
            with pytest.raises(ApiError) as e:
                await c.approve(request.id, actor=actor)
            assert e.value.http_status == 403
        assert (await c.approve(request.id, actor="own")).employee == "req"


@pytest.mark.parametrize("body", [
    {"name": "../evil", "role": "dev"}, {"name": "a/b", "role": "dev"},
    {"name": "..", "role": "dev"}, {"name": "x" * 65, "role": "dev"},
])
async def test_bad_names_rejected(tmp_path: Path, body: dict[str, str]) -> None:
    async with Service(make_settings(tmp_path)) as svc:
        status, raw, _ = await call(svc.url, "POST", "/employees", json=body)
        assert status == 422 and b'"field":"name"' in raw


@pytest.mark.parametrize("path", ["../../etc/passwd", "/etc/passwd", "a/../../b", "\u0000x"])
async def test_path_traversal_rejected(tmp_path: Path, path: str) -> None:
    async with Service(make_settings(tmp_path)) as svc, OrchestraClient(svc.url) as c:
        await c.hire("pat", "dev")
        status, body = await c.request("POST", "/files/lock", {"name": "pat", "files": [path]})
        assert status == 422, body
        assert str(tmp_path) not in str(body)
        status, body = await c.request("POST", "/files/requests",
                                       {"name": "pat", "file": path, "reason": ""})
        assert status == 422
        assert await c.list_leases() == []


async def test_oversize_body_413(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, **{"server.max_body_bytes": 2048})
    async with Service(settings) as svc:
        big = {"name": "big", "role": "dev", "pad": "x" * 4096}
        status, raw, _ = await call(svc.url, "POST", "/employees", json=big)
        assert status == 413 and b'"body_too_large"' in raw

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked
            for _ in range(8):
                yield b" " * 1024

        status, raw, _ = await call(svc.url, "POST", "/employees", data=chunks())
        assert status == 413 and b'"body_too_large"' in raw


async def test_project_root_cannot_be_changed(tmp_path: Path) -> None:
    async with Service(make_settings(tmp_path)) as svc:
        for method in ("GET", "POST"):
            status, _, _ = await call(svc.url, method, "/project-root",
                                      json={"project_root": str(tmp_path / "x")})
            assert status in (404, 405)
        assert not (tmp_path / "x").exists()


async def test_errors_leak_nothing(tmp_path: Path) -> None:
    async with Service(make_settings(tmp_path)) as svc:
        svc.state.store.list_employees = _boom  # an unexpected failure inside a handler
        status, raw, _ = await call(svc.url, "GET", "/employees")
        assert status == 500 and b'"internal_error"' in raw
        assert b"secret" not in raw and not LEAK.search(raw.decode())
        probes: list[tuple[str, str, Any]] = [
            ("POST", "/employees", b"{not json"), ("POST", "/tasks", b"[1,2]"),
            ("POST", "/files/lock", b'{"name": "a", "files": ["/etc/shadow"]}'),
            ("GET", "/tasks/123", None), ("POST", "/employees", b'{"name": 1}'),
        ]
        for method, path, data in probes:
            status, raw, _ = await call(svc.url, method, path, data=data,
                                        headers={"Content-Type": "application/json"})
            assert 400 <= status < 500
            assert not LEAK.search(raw.decode()), raw


async def _boom(**_: Any) -> Any:
    raise RuntimeError("secret internals at /work/main/orchestra_kit/x.py")


async def test_rate_limit_429_with_headers(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, **{"server.requests_per_minute": 60,
                                          "server.rate_limit_burst": 3})
    async with Service(settings) as svc:
        statuses = []
        for _ in range(5):
            status, _, headers = await call(svc.url, "GET", "/employees")
            statuses.append(status)
            assert headers["X-RateLimit-Limit"] == "3"
            assert {"X-RateLimit-Remaining", "X-RateLimit-Reset"} <= set(headers)
        assert statuses[:3] == [200, 200, 200] and statuses[3:] == [429, 429]
        assert int(headers["Retry-After"]) >= 1


async def test_gzip_for_large_answers(tmp_path: Path) -> None:
    async with Service(make_settings(tmp_path)) as svc, OrchestraClient(svc.url) as c:
        await c.hire_many([{"name": f"e{i}", "role": "dev"} for i in range(50)])
        async with aiohttp.ClientSession(auto_decompress=False) as s:
            async with s.get(svc.url + "/employees",
                             headers={"Accept-Encoding": "gzip"}) as r:
                assert r.headers["Content-Encoding"] == "gzip"
                assert b"e49" in gzip.decompress(await r.read())
            async with s.get(svc.url + "/health", headers={"Accept-Encoding": "identity"}) as r:
                assert "Content-Encoding" not in r.headers
