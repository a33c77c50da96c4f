"""The real opencode CLI, run through OpencodeBackend against the fake provider (offline).

Needs the binary (``make opencode``); skipped with that message when it is missing.
Each run of opencode takes a few seconds on this machine.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from orchestra_kit.agents import OpencodeBackend
from orchestra_kit.agents.base import AgentEvent, AgentRequest
from orchestra_kit.agents.opencode import _process_tree, find_opencode
from orchestra_kit.config import AgentSettings
from orchestra_kit.errors import AgentTimeoutError, AgentUnavailableError
from orchestra_kit.fakellm import FakeLLM, FakeLLMConfig, ScriptedReply, write_file_script

# A cold opencode start takes 5-30 s on a loaded 2-core machine: generous limits.
pytestmark = [pytest.mark.opencode, pytest.mark.timeout(300)]
STARTUP_LIMIT_S = 120.0

try:
    OPENCODE_BIN = str(find_opencode(AgentSettings()))
except AgentUnavailableError as exc:
    pytest.skip(f"opencode CLI missing: {exc}", allow_module_level=True)

FAST: dict[str, Any] = {"ttft_ms": 5.0, "ttft_jitter_ms": 0.0, "tokens_per_s": 5000.0}


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("opencode-state")  # shared: later runs start faster


def make_backend(base_url: str, state_dir: Path) -> OpencodeBackend:
    settings = AgentSettings(backend="opencode", base_url=base_url, opencode_bin=OPENCODE_BIN)
    return OpencodeBackend(settings, state_dir=state_dir)


def request(root: Path, description: str, timeout_s: float = 60.0) -> AgentRequest:
    return AgentRequest(task_id=1, employee="alice", description=description,
                        model="fake-model", files=("hello.txt",),
                        workspace=root / "sessions" / "alice", project_root=root,
                        timeout_s=timeout_s)


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of group ``pgid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


async def assert_group_gone(pgid: int) -> None:
    assert group_members(pgid) == []
    async with asyncio.timeout(5):  # orphaned zombies are reaped by init
        while True:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            await asyncio.sleep(0.05)


def is_sleep(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes() == b"sleep\x0060\x00"
    except OSError:
        return False


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def wait_for_pid(backend: OpencodeBackend) -> int:
    async with asyncio.timeout(10):
        while 1 not in backend.running:
            await asyncio.sleep(0.02)
    return backend.running[1]


async def test_writes_a_real_file(tmp_path: Path, state_dir: Path) -> None:
    target = tmp_path / "sessions" / "alice" / "hello.txt"
    script = write_file_script(str(target), "hello from opencode\n")
    events: list[AgentEvent] = []
    async with FakeLLM(FakeLLMConfig(script=script, **FAST)) as fake:
        backend = make_backend(fake.base_url, state_dir)
        result = await backend.run(request(tmp_path, "Create hello.txt"), events.append)
        tool_calls = [r for r in fake.requests if r.has_tools]
    assert target.read_text() == "hello from opencode\n"
    assert result.files_touched == ("sessions/alice/hello.txt",)
    kinds = [e.kind for e in events]
    assert kinds[0] == "started" and kinds[-1] == "finished"
    assert {"progress", "file", "tokens"} <= set(kinds)
    assert [e.path for e in events if e.kind == "file"] == ["sessions/alice/hello.txt"]
    assert "Wrote" in result.summary and result.tokens_out > 0
    assert len(tool_calls) == 2  # the write call, then the closing text


async def test_cancel_kills_opencode_and_its_bash_child(tmp_path: Path, state_dir: Path) -> None:
    sleeper = (ScriptedReply(tool_calls=(("bash", {"command": "sleep 60",
                                                   "description": "Wait a minute"}),)),)
    async with FakeLLM(FakeLLMConfig(script=sleeper, **FAST)) as fake:
        backend = make_backend(fake.base_url, state_dir)
        task = asyncio.create_task(backend.run(request(tmp_path, "Wait"), lambda e: None))
        pgid = await wait_for_pid(backend)
        async with asyncio.timeout(STARTUP_LIMIT_S):  # until its bash tool runs `sleep 60`
            while not (sleepers := [pid for pid in _process_tree(pgid) if is_sleep(pid)]):
                assert not task.done(), task
                await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await assert_group_gone(pgid)
    assert not any(alive(pid) for pid in sleepers)  # its own session did not save it
    assert backend.running == {}


async def test_timeout_kills_opencode(tmp_path: Path, state_dir: Path) -> None:
    async with FakeLLM(FakeLLMConfig(rate_hang=1.0, hang_max_s=30.0, **FAST)) as fake:
        backend = make_backend(fake.base_url, state_dir)
        task = asyncio.create_task(
            backend.run(request(tmp_path, "Hang", timeout_s=3.0), lambda e: None))
        pgid = await wait_for_pid(backend)
        with pytest.raises(AgentTimeoutError, match="task timeout"):
            await task
    await assert_group_gone(pgid)
