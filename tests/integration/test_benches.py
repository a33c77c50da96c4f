"""Smoke runs of `orchestra bench scheduler|http --json --quick`: they run, stop by
themselves and print one JSON object with every documented key (figures are printed,
not asserted: performance is not a pass/fail test)."""

from __future__ import annotations

import asyncio
import json

import pytest

from orchestra_kit.cli import main
from orchestra_kit.server.bench import RawConnection

SCHEDULER_KEYS = ["overhead_p50_ms", "overhead_p99_ms", "llm_overhead_p50_ms", "cpu_ms_per_task",
                  "tasks_per_s_c50", "tasks_per_s_c500", "ratelimit_error_pct", "max_burst"]
HTTP_KEYS = ["hello_rps", "get_employee_rps", "health_rps", "read_vs_hello_ratio",
             "hire_rps_c256", "hire_p99_ms_c256", "assign_rps_c256", "conn2000_ok_pct",
             "list100_rps", "list100_vs_hello_ratio", "hire_vs_hello_ratio",
             "assign_vs_hello_ratio", "read_cpu_vs_hello_ratio", "hello_cpu_us_per_req",
             "uvloop_speedup", "orjson_speedup", "uvloop_cpu_speedup", "orjson_cpu_speedup",
             "ablation_uvloop_orjson_health_rps", "ablation_asyncio_stdlib_get_employee_rps"]


@pytest.mark.timeout(180)
def test_bench_scheduler_quick_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "scheduler", "--json", "--quick"]) == 0
    doc = json.loads(capsys.readouterr().out)
    for key in SCHEDULER_KEYS:
        assert isinstance(doc[key], float | int) and doc[key] >= 0, key
    assert doc["max_burst"] <= doc["ratelimit_burst_capacity"]  # never above capacity
    assert doc["tasks_per_s_c50"] > 0


@pytest.mark.timeout(300)
def test_bench_http_quick_json(capsys: pytest.CaptureFixture[str]) -> None:
    # Every scenario still runs (each connection sends at least one request), briefly.
    assert main(["bench", "http", "--json", "--quick", "--duration", "0.3"]) == 0
    doc = json.loads(capsys.readouterr().out)
    for key in HTTP_KEYS:
        assert isinstance(doc[key], float | int) and doc[key] >= 0, key
    assert doc["hello_rps"] > 0 and doc["hire_rps_c256"] > 0
    assert doc["conn2000_ok_pct"] == 100.0
    assert doc["event_loop"] in ("asyncio", "uvloop")
    assert doc["json_encoder"] in ("stdlib", "orjson")


def test_bench_http_rejects_a_duration_that_is_not_positive(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "http", "--json", "--duration", "0"])
    assert "--duration must be > 0" in capsys.readouterr().err


async def test_raw_connection_reads_length_and_chunked_bodies() -> None:
    from aiohttp import web

    async def fixed(request: web.Request) -> web.Response:
        return web.Response(text="x" * 10)

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for part in (b"ab", b"cde"):
            await resp.write(part)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/fixed", fixed)
    app.router.add_get("/chunked", chunked)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    conn = RawConnection("127.0.0.1", port)
    try:
        statuses = [await conn.request("GET", p) for p in ("/fixed", "/chunked", "/fixed", "/nope")]
        assert statuses == [200, 200, 200, 404]  # one keep-alive connection, bodies framed right
    finally:
        await conn.aclose()
        await runner.cleanup()
    await asyncio.sleep(0)


GENERATOR_KEYS = ["open_loop_capacity_rps", "open_loop_capacity_rps_1proc",
                  "lag_p99_ms_at_capacity", "processes"]


@pytest.mark.timeout(120)
async def test_bench_generator_measures_against_a_null_server_process() -> None:
    from orchestra_kit.lab.genbench import measure_generator

    doc = await measure_generator(quick=True, processes=[1, 2], start_rps=100.0, max_rps=200.0)
    assert set(GENERATOR_KEYS) <= set(doc)
    print(json.dumps({k: doc[k] for k in GENERATOR_KEYS}))
    assert {p["processes"] for p in doc["points"]} == {1, 2}
    for point in doc["points"]:  # every measured point went through and was judged
        assert point["success_rate"] == 1.0 and point["dropped"] == 0
        assert point["sustained"] <= (point["lag_p99_ms"] <= 5.0)  # a late schedule fails
    # A rate it tried and sustained: doubling gives 100 and 200; when 200 fails (a busy
    # machine), quick mode's one bisection tries 150.
    assert doc["open_loop_capacity_rps"] in (0.0, 100.0, 150.0, 200.0)
