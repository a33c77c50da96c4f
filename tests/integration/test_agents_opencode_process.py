"""OpencodeBackend's process handling, with a stand-in script for the CLI (fast, no node).

The stand-in reads its mode from the prompt on stdin (``MODE:...``), prints opencode-style JSON
lines, and for the slow modes starts a grandchild ``sleep`` so we can check that the
whole process group dies on cancel and timeout.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from orchestra_kit.agents import OpencodeBackend
from orchestra_kit.agents.base import AgentEvent, AgentRequest
from orchestra_kit.config import AgentSettings
from orchestra_kit.errors import AgentError, AgentTimeoutError, ProviderError

STAND_IN = """\
import json, os, subprocess, sys, time
prompt = sys.stdin.read()  # the backend writes the prompt to stdin (never argv)
mode = prompt.split("MODE:")[1].split()[0]
def out(obj): print(json.dumps(obj), flush=True)
with open("argv.json", "w") as f:
    json.dump({"argv": sys.argv, "cwd": os.getcwd(), "pgid": os.getpgid(0),
               "xdg": os.environ.get("XDG_DATA_HOME")}, f)
out({"type": "step_start", "part": {}})
print("some banner that is not json", flush=True)
if mode == "ok":
    with open("made.txt", "w") as f:
        f.write("x")
    out({"type": "tool_use", "part": {"tool": "write", "state": {"status": "completed",
         "input": {"filePath": os.path.abspath("made.txt")}}}})
    out({"type": "text", "part": {"text": "done"}})
    out({"type": "step_finish", "part": {"tokens": {"output": 7}}})
elif mode == "sleep":
    # Like opencode's bash tool: the command runs in a session of its own.
    child = subprocess.Popen(["sleep", "60"], start_new_session=True)
    with open("child.pid", "w") as f:
        f.write(str(child.pid))
    time.sleep(60)
elif mode == "apierror":
    out({"type": "error", "error": {"name": "APIError",
         "data": {"message": "Rate limit reached", "statusCode": 429}}})
    sys.exit(1)
elif mode == "crash":
    sys.stderr.write("x" * 10000 + "the real reason\\n")
    sys.exit(3)
"""


@pytest.fixture
def backend(tmp_path: Path) -> OpencodeBackend:
    script = tmp_path / "fake-opencode"
    script.write_text(f"#!{sys.executable}\n{STAND_IN}")
    script.chmod(0o755)
    settings = AgentSettings(backend="opencode", base_url="http://127.0.0.1:9/v1",
                             opencode_bin=str(script))
    return OpencodeBackend(settings, state_dir=tmp_path / "state")


def request(tmp_path: Path, mode: str, timeout_s: float = 30.0) -> AgentRequest:
    return AgentRequest(task_id=1, employee="alice", description=f"MODE:{mode} please",
                        model="fake-model", workspace=tmp_path / "sessions" / "alice",
                        project_root=tmp_path, timeout_s=timeout_s)


def live_members(pgid: int) -> list[int]:
    """Processes of group ``pgid`` that are not zombies (read from /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


async def assert_group_gone(pgid: int) -> None:
    """Nothing of the group runs any more, and the group is gone once init reaps orphans."""
    assert live_members(pgid) == []
    async with asyncio.timeout(5):
        while True:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            await asyncio.sleep(0.05)


async def wait_for_pid(backend: OpencodeBackend) -> int:
    async with asyncio.timeout(10):
        while 1 not in backend.running:
            await asyncio.sleep(0.02)
    return backend.running[1]


async def test_success(backend: OpencodeBackend, tmp_path: Path) -> None:
    events: list[AgentEvent] = []
    result = await backend.run(request(tmp_path, "ok"), events.append)
    assert result.files_touched == ("sessions/alice/made.txt",)
    assert result.summary == "done" and result.tokens_out == 7
    kinds = [e.kind for e in events]
    assert kinds == ["started", "progress", "file", "text", "tokens", "progress", "finished"]
    seen = json.loads((tmp_path / "sessions/alice/argv.json").read_text())
    assert Path(seen["cwd"]) == (tmp_path / "sessions/alice").resolve()
    assert seen["xdg"] == str(tmp_path / "state" / "alice" / "data")
    assert backend.running == {}


async def wait_for_child(tmp_path: Path) -> int:
    pid_file = tmp_path / "sessions/alice/child.pid"
    async with asyncio.timeout(10):
        while not pid_file.exists() or not pid_file.read_text():
            await asyncio.sleep(0.02)
    return int(pid_file.read_text())


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def test_cancel_kills_the_process_tree(backend: OpencodeBackend, tmp_path: Path) -> None:
    task = asyncio.create_task(backend.run(request(tmp_path, "sleep"), lambda e: None))
    pgid = await wait_for_pid(backend)
    child = await wait_for_child(tmp_path)
    assert pid_alive(child) and os.getpgid(child) != pgid  # it escaped the group
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await assert_group_gone(pgid)
    assert not pid_alive(child)


async def test_timeout_kills_the_process_group(backend: OpencodeBackend, tmp_path: Path) -> None:
    task = asyncio.create_task(backend.run(request(tmp_path, "sleep", 0.8), lambda e: None))
    pgid = await wait_for_pid(backend)
    child = await wait_for_child(tmp_path)
    with pytest.raises(AgentTimeoutError, match="task timeout"):
        await task
    await assert_group_gone(pgid)
    assert not pid_alive(child)


async def test_provider_error(backend: OpencodeBackend, tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match="Rate limit reached") as info:
        await backend.run(request(tmp_path, "apierror"), lambda e: None)
    assert info.value.status == 429 and info.value.retryable


async def test_crash_reports_exit_code_and_stderr_tail(backend: OpencodeBackend,
                                                       tmp_path: Path) -> None:
    with pytest.raises(AgentError, match="code 3.*the real reason") as info:
        await backend.run(request(tmp_path, "crash"), lambda e: None)
    assert len(str(info.value)) < 2500  # only the tail is kept
