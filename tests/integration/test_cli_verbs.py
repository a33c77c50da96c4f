"""The `orchestra VERB ...` commands against a real server on 127.0.0.1 (JSON out,
exit 0 / 1 on an error answer / 2 on bad usage)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from server_fixtures import make_settings

from orchestra_kit.cli import main
from orchestra_kit.server.app import Service


async def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(main, list(argv))  # the verbs call asyncio.run themselves
    out, err = capsys.readouterr()
    return code, out, err


async def test_verbs_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with Service(make_settings(tmp_path)) as svc:
        url = ["--url", svc.url]
        code, out, _ = await run_cli(capsys, "hire", "alice", "developer", "smart", *url)
        assert code == 0 and json.loads(out)["smartness"] == "smart"
        code, out, _ = await run_cli(capsys, "lock", "alice", "src/a.py,src/b.py", "refactor", *url)
        assert json.loads(out) == {"src/a.py": "locked", "src/b.py": "locked"}
        code, out, _ = await run_cli(capsys, "assign", "alice", "Write c.py", "--files",
                                     "src/c.py", "--priority", "9", *url)
        task = json.loads(out)
        assert code == 0 and task["files"] == ["src/c.py"] and task["priority"] == 9
        await asyncio.sleep(0.2)
        code, out, _ = await run_cli(capsys, "task", str(task["id"]), *url)
        assert json.loads(out)["status"] == "completed"
        code, out, _ = await run_cli(capsys, "release", "alice", *url)
        assert sorted(json.loads(out)) == ["src/a.py", "src/b.py"]
        code, out, _ = await run_cli(capsys, "status", *url)
        assert [e["name"] for e in json.loads(out)["employees"]] == ["alice"]


async def test_error_answers_and_bad_usage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with Service(make_settings(tmp_path)) as svc:
        url = svc.url
        code, _, err = await run_cli(capsys, "fire", "nobody", "--url", url)
        assert code == 1 and json.loads(err)["error"]["status"] == 404
        code, _, err = await run_cli(capsys, "hire", "../x", "dev", "--url", url)
        assert code == 1 and json.loads(err)["error"]["code"] == "validation_error"
    code, _, err = await run_cli(capsys, "health", "--url", url)  # the server is gone
    assert code == 1 and json.loads(err)["error"]["code"] == "connection_failed"
    code, _, _ = await run_cli(capsys, "no-such-verb")
    assert code == 2
