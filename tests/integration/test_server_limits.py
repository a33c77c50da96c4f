"""Connection limits (issue 12): idle/header/body timeouts, the connection cap, JSON
parser errors, accept-error log flood, SSE subscriber cap, client disconnects, key
identities and the server/CLI environment split."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
from pathlib import Path

import aiohttp
import pytest
from server_fixtures import make_settings

from orchestra_kit.config import Settings
from orchestra_kit.server import Service
from orchestra_kit.server.protocol import AcceptErrorFilter

FAST = {"server.idle_timeout_s": 0.5, "server.body_timeout_s": 0.5}


async def _closed_within(reader: asyncio.StreamReader, timeout_s: float) -> bool:
    """Whether the server closed the connection (EOF, or a reset: closing with unread
    data sends one) within ``timeout_s``."""
    try:
        async with asyncio.timeout(timeout_s):
            while await reader.read(4096):
                pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


async def test_idle_and_trickling_connections_are_closed(tmp_path: Path) -> None:
    async with Service(make_settings(tmp_path, **FAST)) as svc:
        idle_r, idle_w = await asyncio.open_connection("127.0.0.1", svc.port)
        trickle_r, trickle_w = await asyncio.open_connection("127.0.0.1", svc.port)
        for ch in b"GET /health HTTP/1.1\r\n":  # never a complete head
            trickle_w.write(bytes([ch]))
            await asyncio.sleep(0.05)
            if trickle_r.at_eof():
                break
        assert await _closed_within(idle_r, 3.0), "an idle connection stayed open"
        assert await _closed_within(trickle_r, 3.0), "a trickled header kept the connection"
        for w in (idle_w, trickle_w):
            w.close()
        async with aiohttp.ClientSession() as s, s.get(svc.url + "/health") as r:
            assert r.status == 200


async def test_slow_body_is_408(tmp_path: Path) -> None:
    async with Service(make_settings(tmp_path, **FAST)) as svc:
        reader, writer = await asyncio.open_connection("127.0.0.1", svc.port)
        writer.write(b"POST /employees HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                     b"\r\nContent-Length: 100\r\n\r\n{\"name\":")
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
        writer.close()
        assert head.startswith(b"HTTP/1.1 408"), head


async def test_connections_beyond_the_cap_are_refused(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, **{"server.max_connections": 5})
    async with Service(settings) as svc:
        held = [await asyncio.open_connection("127.0.0.1", svc.port) for _ in range(5)]
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection("127.0.0.1", svc.port)
        async with asyncio.timeout(5):
            answer = await reader.read()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 503") and b"too_many_connections" in answer
        assert b"X-Request-ID" in answer
        assert svc.state.connection_stats()["connections_refused"] == 1
        for _, w in held:
            w.close()
        await asyncio.sleep(0.1)
        async with aiohttp.ClientSession() as s, s.get(svc.url + "/metrics") as r:
            text = await r.text()
        assert r.status == 200 and re.search(r"server_connections_refused\S* 1(\.0)?\b", text)


async def test_parser_errors_answer_json_with_request_id(tmp_path: Path) -> None:
    async with Service(make_settings(tmp_path)) as svc:
        for raw in (b"FOO /x HTTP/1.1\r\n\r\n", b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
                    b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n"):
            reader, writer = await asyncio.open_connection("127.0.0.1", svc.port)
            writer.write(raw)
            async with asyncio.timeout(5):
                answer = await reader.read()
            writer.close()
            head, _, body = answer.partition(b"\r\n\r\n")
            assert re.match(rb"HTTP/1\.[01] 4\d\d", head), answer[:200]
            assert b"application/json" in head and b"X-Request-ID" in head, head
            assert b'"code":"bad_request"' in body, body


def test_accept_error_flood_is_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    seen: list[dict[str, object]] = []
    filt = AcceptErrorFilter(lambda loop, ctx: seen.append(ctx), interval_s=10.0,
                             clock=lambda: now[0])
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.ERROR, logger="orchestra_kit.server"):
            for i in range(5000):
                now[0] = i * 0.01  # 50 s of a flood
                filt(loop, {"message": AcceptErrorFilter.MESSAGE,
                            "exception": OSError(24, "Too many open files")})
            filt(loop, {"message": "something else"})
    finally:
        loop.close()
    lines = [r for r in caplog.records if AcceptErrorFilter.MESSAGE in r.getMessage()]
    assert 1 <= len(lines) <= 6, len(lines)
    assert seen == [{"message": "something else"}]


async def test_sse_subscribers_per_task_are_capped(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, **{"server.max_sse_subscribers_per_task": 2,
                                          "agents.sim_latency_ms": 3000})
    async with Service(settings) as svc, aiohttp.ClientSession() as s:
        await s.post(svc.url + "/employees", json={"name": "sse", "role": "dev"})
        async with s.post(svc.url + "/tasks", json={"name": "sse", "task": "wait"}) as r:
            task_id = (await r.json())["task_id"]
        url = f"{svc.url}/tasks/{task_id}/events"
        first, second = await s.get(url), await s.get(url)
        async with s.get(url) as third:
            assert third.status == 429
            assert (await third.json())["error"]["code"] == "too_many_subscribers"
        assert first.status == second.status == 200
        first.close()
        await asyncio.sleep(0.2)
        async with s.get(url, timeout=aiohttp.ClientTimeout(sock_read=0.5)) as again:
            assert again.status == 200
        second.close()


async def test_client_disconnect_is_not_a_server_error(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(tmp_path, **{"agents.sim_latency_ms": 3000})
    async with Service(settings) as svc, aiohttp.ClientSession() as s:
        await s.post(svc.url + "/employees", json={"name": "dc", "role": "dev"})
        async with s.post(svc.url + "/tasks", json={"name": "dc", "task": "wait"}) as r:
            task_id = (await r.json())["task_id"]
        with caplog.at_level(logging.DEBUG, logger="orchestra_kit.server"):
            for _ in range(5):
                resp = await s.get(f"{svc.url}/tasks/{task_id}/events")
                assert resp.status == 200
                await resp.content.readline()
                resp.close()  # the reader goes away mid-stream
            await asyncio.sleep(0.5)
            async with s.post(svc.url + "/tasks", json={"name": "dc", "task": "x"}) as r:
                assert r.status == 202  # the heartbeat/next event hits the closed sockets
            await s.delete(f"{svc.url}/tasks/{task_id}")
            await asyncio.sleep(0.5)
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
        counters = svc.state.metrics.counters()
        by_class = svc.state.metrics.total.by_class
        assert by_class[5] == 0, counters


async def _hire(s: aiohttp.ClientSession, url: str, key: str, name: str) -> None:
    async with s.post(url + "/employees", json={"name": name, "role": "dev"},
                      headers={"Authorization": f"Bearer {key}"}) as r:
        assert r.status == 201


async def test_keys_bound_to_employees_are_identities(tmp_path: Path) -> None:
    keys = "owner-key-0123456=own,requester-key-0123=req,operator-key-01234"
    async with Service(make_settings(tmp_path, **{"server.api_keys": keys})) as svc, \
            aiohttp.ClientSession() as s:
        own = {"Authorization": "Bearer owner-key-0123456"}
        req = {"Authorization": "Bearer requester-key-0123"}
        op = {"Authorization": "Bearer operator-key-01234"}
        for name in ("own", "req"):
            await _hire(s, svc.url, "operator-key-01234", name)
        async with s.post(svc.url + "/files/lock", json={"name": "own", "files": ["f.py"]},
                          headers=req) as r:
            assert r.status == 403  # req's key cannot lease for own
        async with s.post(svc.url + "/files/lock", json={"name": "own", "files": ["f.py"]},
                          headers=own) as r:
            assert r.status == 200
        async with s.post(svc.url + "/files/release", json={"name": "own"}, headers=req) as r:
            assert r.status == 403  # nor release own's leases
        async with s.post(svc.url + "/files/requests", json={"name": "req", "file": "f.py"},
                          headers=req) as r:
            rid = (await r.json())["request"]["id"]
        approve = f"{svc.url}/files/requests/{rid}/approve"
        async with s.post(approve, json={"actor": "own"}, headers=req) as r:
            assert r.status == 403  # claiming to be the owner does not make you the owner
        async with s.post(approve, headers={**req, "X-Actor": "own"}) as r:
            assert r.status == 403
        async with s.post(approve, headers=own) as r:  # the key names the actor
            assert r.status == 200, await r.text()
        async with s.post(svc.url + "/files/release", json={"name": "req"}, headers=op) as r:
            assert r.status == 200  # an operator key acts for anyone (documented)


def test_server_ignores_the_cli_variables(tmp_path: Path) -> None:
    env = {"ORCHESTRA_URL": "http://127.0.0.1:1", "ORCHESTRA_API_KEY": "cli-key-123456",
           "ORCHESTRA_LLM_API_KEY": "sk-provider"}
    settings = Settings.load(environ=env)
    assert settings.agents.api_key == "sk-provider"
    assert settings.server.api_keys == ()
    assert Settings.load(environ={"ORCHESTRA_API_KEY": "cli-key-123456"}).agents.api_key == ""


async def test_serve_runs_with_the_cli_variables_set(tmp_path: Path) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRA_")},
           "ORCHESTRA_URL": "http://127.0.0.1:9", "ORCHESTRA_API_KEY": "cli-key-123456"}
    code = ("import sys; from orchestra_kit.server.cli import serve_main; "
            "sys.exit(serve_main(sys.argv[1:]))")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, "--port", "0", "--db", str(tmp_path / "o.db"),
        "--project-root", str(tmp_path), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(20):
            line = (await proc.stdout.readline()).decode()
        assert "serving on" in line, line
    finally:
        if proc.returncode is None:
            proc.terminate()
        async with asyncio.timeout(20):
            _, err = await proc.communicate()
    assert proc.returncode == 0 and b"ORCHESTRA_LLM_API_KEY" in err, err[-500:]
