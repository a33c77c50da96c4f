"""Regression tests for issue 12's agent-process defects, with stand-in scripts for the
opencode CLI (fast, no node): the task text and the provider key kept out of argv and
environment, and agents left running by a SIGKILLed server ended before the restarted
server requeues their task."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import stat
import sys
from pathlib import Path

import pytest

from orchestra_kit.agents import OpencodeBackend
from orchestra_kit.agents.base import AgentRequest
from orchestra_kit.agents.opencode import build_prompt
from orchestra_kit.config import (
    AgentSettings,
    DatabaseSettings,
    OptimizationFlags,
    SchedulerSettings,
)
from orchestra_kit.models import TaskStatus
from orchestra_kit.scheduler import Scheduler
from orchestra_kit.store import Store

# Works with the prompt on stdin (now) or as the last argument (before the fix).
RECORDER = """\
import json, os, sys
prompt = sys.stdin.read() or sys.argv[-1]
with open("seen.json", "w") as f:
    json.dump({"argv": sys.argv, "stdin": prompt, "env": dict(os.environ)}, f)
print(json.dumps({"type": "text", "part": {"text": "done"}}), flush=True)
"""

SLEEPER = """\
import os, subprocess, sys, time
sys.stdin.read()
child = subprocess.Popen(["sleep", "60"], start_new_session=True)  # like opencode's bash tool
with open("agent.pid", "w") as f:
    f.write(str(os.getpid()))
with open("child.pid", "w") as f:
    f.write(str(child.pid))
time.sleep(60)
"""

# The restarted server's agent: records whether the old agent still ran when it started.
CHECKER = """\
import json, os, sys
sys.stdin.read()
def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
old = [int(open(name).read()) for name in ("agent.pid", "child.pid")]
with open("second.json", "w") as f:
    json.dump({"old_alive": [alive(p) for p in old]}, f)
print(json.dumps({"type": "text", "part": {"text": "done"}}), flush=True)
"""

SERVER = """\
import asyncio, sys
from pathlib import Path
from orchestra_kit.agents import OpencodeBackend
from orchestra_kit.config import AgentSettings, DatabaseSettings, OptimizationFlags, SchedulerSettings
from orchestra_kit.scheduler import Scheduler
from orchestra_kit.store import Store

async def main(db, root, binary):
    root = Path(root)
    async with Store(DatabaseSettings(path=db), OptimizationFlags(), project_root=root) as store:
        await store.hire("alice", "dev")
        backend = OpencodeBackend(AgentSettings(backend="opencode", base_url="http://127.0.0.1:9/v1",
                                                opencode_bin=binary), state_dir=root / "ws" / ".state")
        async with Scheduler(store, backend, SchedulerSettings(), workspace_root=root / "ws",
                             project_root=root) as sched:
            await sched.submit("alice", "sleep a while")
            while not (root / "ws" / "alice" / "child.pid").exists():
                await asyncio.sleep(0.02)
            print("READY", flush=True)
            await asyncio.sleep(600)

asyncio.run(main(*sys.argv[1:]))
"""


def script(folder: Path, name: str, body: str) -> str:
    path = folder / name
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)
    return str(path)


def pid_alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def test_prompt_on_stdin_and_key_in_a_private_file(tmp_path: Path) -> None:
    """Low: the task text was in opencode's argv (``ps``), the provider key in its env."""
    settings = AgentSettings(backend="opencode", base_url="http://127.0.0.1:9/v1",
                             api_key="sk-very-secret-123",
                             opencode_bin=script(tmp_path, "opencode", RECORDER))
    backend = OpencodeBackend(settings, state_dir=tmp_path / "state")
    request = AgentRequest(task_id=1, employee="alice", description="UNIQUE-TASK-TEXT here",
                           model="fake-model", workspace=tmp_path / "ws" / "alice",
                           project_root=tmp_path, timeout_s=30)
    result = await backend.run(request, lambda e: None)
    assert result.summary == "done"
    seen = json.loads((tmp_path / "ws" / "alice" / "seen.json").read_text())
    assert seen["stdin"] == build_prompt(request)
    assert not any("UNIQUE-TASK-TEXT" in arg for arg in seen["argv"])
    assert not any("sk-very-secret-123" in v for v in [*seen["argv"], *seen["env"].values()])
    key_file = tmp_path / "state" / "provider-key"
    assert key_file.read_text() == "sk-very-secret-123"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert list((tmp_path / "state" / "runs").glob("*.json")) == []  # the run record is gone


@pytest.mark.timeout(120)
async def test_restart_ends_the_agents_a_killed_server_left_running(tmp_path: Path) -> None:
    """Medium 9: after SIGKILL, the old agent ran on and the restarted server started a
    second one for the same task and workspace."""
    db = str(tmp_path / "t.db")
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVER, db, str(tmp_path), script(tmp_path, "sleeper", SLEEPER),
        stdout=asyncio.subprocess.PIPE)
    assert server.stdout is not None
    workspace = tmp_path / "ws" / "alice"
    old: list[int] = []
    try:
        async with asyncio.timeout(60):
            assert await server.stdout.readline() == b"READY\n"
        old = [int((workspace / name).read_text()) for name in ("agent.pid", "child.pid")]
        server.kill()
        await server.wait()
        assert all(pid_alive(pid) for pid in old)  # they outlive their server
        backend = OpencodeBackend(
            AgentSettings(backend="opencode", base_url="http://127.0.0.1:9/v1",
                          opencode_bin=script(tmp_path, "checker", CHECKER)),
            state_dir=tmp_path / "ws" / ".state")
        store = Store(DatabaseSettings(path=db), OptimizationFlags(), project_root=tmp_path)
        async with store, Scheduler(store, backend, SchedulerSettings(),
                                    workspace_root=tmp_path / "ws", project_root=tmp_path) as sched:
            (task,) = await store.list_tasks()
            final = await sched.wait(task.id, timeout_s=30)
        assert (final.status, final.attempts) == (TaskStatus.COMPLETED, 2)
        second = json.loads((workspace / "second.json").read_text())
        assert second["old_alive"] == [False, False]  # ended before the task ran again
        assert not any(pid_alive(pid) for pid in old)
    finally:
        for pid in old:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if server.returncode is None:
            server.kill()
            await server.wait()
