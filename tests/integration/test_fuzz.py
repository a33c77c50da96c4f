"""Schemathesis against /openapi.json of a live server: no 5xx, answers conform to the spec.

The server runs as `orchestra serve` in a subprocess (fresh database, simulated backend)
and the `st` CLI fuzzes it with a fixed seed and a bounded number of cases per operation.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import sys
from pathlib import Path

import pytest

SERVE = "import sys; from orchestra_kit.server.cli import serve_main; sys.exit(serve_main(sys.argv[1:]))"
ST = shutil.which("st", path=str(Path(sys.executable).parent)) or shutil.which("st")
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_schema_conformance")

pytestmark = pytest.mark.skipif(ST is None, reason="schemathesis (st) is not installed")


async def test_schemathesis_finds_nothing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRA_")}
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVE, "--port", "0", "--db", str(tmp_path / "o.db"),
        "--project-root", str(tmp_path), "--set", "server.requests_per_minute=0",
        "--set", "agents.sim_latency_ms=1", "--set", "log_level=WARNING",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    try:
        assert server.stdout is not None
        async with asyncio.timeout(20):
            line = (await server.stdout.readline()).decode()
        url = re.search(r"serving on (http://\S+)", line)
        assert url, line
        fuzz = await asyncio.create_subprocess_exec(
            str(ST), "run", f"{url.group(1)}/openapi.json", "--max-examples", "8",
            "--phases", "fuzzing", "--checks", CHECKS, "--seed", "7",
            "--generation-database", "none", "--no-color", "--workers", "2",
            "--request-timeout", "10",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path,
            env=env)
        async with asyncio.timeout(100):
            out, _ = await fuzz.communicate()
    finally:
        if server.returncode is None:
            server.send_signal(signal.SIGTERM)
            async with asyncio.timeout(20):
                await server.wait()
    report = out.decode(errors="replace")
    assert fuzz.returncode == 0, report[-6000:]
    generated = re.search(r"(\d+) generated", report)
    assert generated and int(generated.group(1)) >= 100, report[-2000:]
    assert server.returncode == 0
