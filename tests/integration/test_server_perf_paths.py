"""The fast paths of issue 13 keep the API's answers exact: encoded-answer cache (never
stale after a write, gzip once), the JSON encoder choice, resource metrics."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from server_fixtures import make_settings

from orchestra_kit.server import Service, codec


def _block_the_loop(seconds: float) -> None:
    time.sleep(seconds)  # on purpose: what a CPU-bound handler does to the loop


async def get(svc: Service, path: str, **kw: Any) -> tuple[int, bytes, Any]:
    async with aiohttp.ClientSession(auto_decompress=False) as s, \
            s.get(svc.url + path, **kw) as r:
        return r.status, await r.read(), r.headers


async def post(svc: Service, path: str, body: Any) -> int:
    async with aiohttp.ClientSession() as s, s.post(svc.url + path, json=body) as r:
        await r.read()
        return r.status


async def test_cached_answers_follow_every_write(tmp_path: Path) -> None:
    async with Service(make_settings(tmp_path)) as svc:
        assert await post(svc, "/employees", {"name": "ann", "role": "dev"}) == 201
        for _ in range(3):  # the first answer fills the cache, the next ones come from it
            status, body, _ = await get(svc, "/employees/ann")
            assert status == 200 and json.loads(body)["role"] == "dev"
        assert svc.state.responses.hits >= 2
        async with aiohttp.ClientSession() as s, s.delete(svc.url + "/employees/ann") as r:
            assert r.status == 200
        status, body, _ = await get(svc, "/employees/ann")
        assert status == 404 and json.loads(body)["error"]["code"] == "not_found"
        assert await post(svc, "/employees", {"name": "ann", "role": "qa"}) == 201
        status, body, _ = await get(svc, "/employees/ann")
        assert json.loads(body)["role"] == "qa"  # never the bytes cached before the fire


async def test_cached_list_gzip_is_compressed_once_and_exact(tmp_path: Path) -> None:
    async with Service(make_settings(tmp_path)) as svc:
        team = [{"name": f"e{i:03d}", "role": "developer"} for i in range(60)]
        assert await post(svc, "/employees/batch", {"employees": team}) == 200
        _, plain, headers = await get(svc, "/employees?limit=100",
                                      headers={"Accept-Encoding": "identity"})
        assert "Content-Encoding" not in headers
        zipped = []
        for _ in range(2):
            status, body, headers = await get(svc, "/employees?limit=100",
                                              headers={"Accept-Encoding": "gzip"})
            assert status == 200 and headers["Content-Encoding"] == "gzip"
            zipped.append(body)
        assert zipped[0] == zipped[1]  # the same cached gzip bytes, not compressed twice
        assert gzip.decompress(zipped[0]) == plain
        assert [e["name"] for e in json.loads(plain)["employees"]] == [t["name"] for t in team]


async def test_no_answer_cache_when_query_caching_is_off(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, **{"flags.enable_query_caching": False})
    async with Service(settings) as svc:
        assert svc.state.responses is None
        assert await post(svc, "/employees", {"name": "bo", "role": "dev"}) == 201
        status, body, _ = await get(svc, "/employees/bo")
        assert status == 200 and json.loads(body)["name"] == "bo"


@pytest.mark.parametrize("encoder", ["stdlib", "orjson"])
async def test_both_encoders_give_the_same_documents(tmp_path: Path, encoder: str) -> None:
    settings = make_settings(tmp_path, **{"server.json_encoder": encoder})
    try:
        async with Service(settings) as svc:
            assert codec.current() == encoder
            assert await post(svc, "/employees", {"name": "zoë", "role": "dev"}) == 422
            assert await post(svc, "/employees", {"name": "zoe", "role": "développeuse"}) == 201
            status, body, _ = await get(svc, "/employees/zoe")
            assert status == 200 and json.loads(body)["role"] == "développeuse"
            assert "développeuse".encode() in body  # UTF-8, not \\u escapes
    finally:
        codec.use("stdlib")


async def test_performance_and_metrics_report_process_resources(tmp_path: Path) -> None:
    async with Service(make_settings(tmp_path)) as svc:
        await asyncio.sleep(0.25)
        _block_the_loop(0.25)  # past a probe interval (0.1 s): the probe wakes late
        await asyncio.sleep(0.25)
        async with aiohttp.ClientSession() as s:
            async with s.get(svc.url + "/performance") as r:
                doc = await r.json()
            async with s.get(svc.url + "/metrics") as r:
                text = await r.text()
        res = doc["resource_metrics"]
        assert res["rss_bytes"] > 10 * 2**20 and res["open_fds"] > 0
        assert res["open_connections"] >= 1  # this client's own
        assert res["loop_lag_samples"] >= 3
        assert res["loop_lag_max_ms"] >= 100  # the 250 ms block, seen by the probe
        assert res["loop_lag_p50_ms"] <= res["loop_lag_p99_ms"] <= res["loop_lag_max_ms"]
        assert res["store_writer_queue_depth"] >= 0
        assert doc["memory_usage_mb"] == res["rss_mb"] and "cpu_usage" in doc
        for gauge in ("orchestra_process_rss_bytes", "orchestra_process_loop_lag_p99_ms",
                      "orchestra_process_cpu_percent", "orchestra_process_open_connections",
                      "orchestra_process_store_writer_queue_depth"):
            assert gauge in text, gauge


async def test_pipeline_runs_in_the_server_and_as_create_apps_middleware(tmp_path: Path) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from orchestra_kit.server import create_app

    for sub in ("svc", "app"):
        (tmp_path / sub).mkdir()
    async with Service(make_settings(tmp_path / "svc")) as svc:
        assert not svc.app.middlewares  # the runner's server calls the pipeline itself
        status, body, headers = await get(svc, "/nope")
        assert status == 404 and json.loads(body)["request_id"] == headers["X-Request-ID"]
    app = create_app(make_settings(tmp_path / "app"))
    assert len(app.middlewares) == 1
    async with TestClient(TestServer(app)) as client:
        r = await client.get("/nope")
        doc = await r.json()
        assert r.status == 404 and doc["error"]["code"] == "not_found"
        assert doc["request_id"] == r.headers["X-Request-ID"]
        r = await client.get("/health")
        assert r.status == 200 and "X-Request-ID" in r.headers
