"""The real ``opencode`` CLI as an agent backend.

Each task runs ``opencode run --pure --format json --model local/<model>`` as an argv
list (never a shell) in its own process group, with the employee's workspace as its
working folder. The prompt goes in on stdin (opencode reads it when no message is
given), so the task text never shows in ``ps``. The provider is passed in
``OPENCODE_CONFIG_CONTENT`` (an OpenAI-compatible "local" provider at
``agents.base_url``); a provider key is not put there but in a file only we can read
(``state_dir/provider-key``), which the config names (``{file:...}``). The offline
switches are set, and each employee gets its own XDG folders under
``state_dir/<employee>`` so runs never share opencode's state. Each run is recorded
under ``state_dir/runs`` (:mod:`.leftovers`) so that a server restarted after a crash
ends the runs its predecessor left behind before it requeues their tasks. Output lines are parsed as they arrive
(:mod:`.opencode_events`). On timeout or cancellation the whole process group gets
SIGTERM, then SIGKILL after 2 s, and is reaped before the error propagates; so are the
tool commands opencode starts in sessions of their own (found through /proc).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
from collections import deque
from pathlib import Path
from typing import Any

from ..config import AgentSettings
from ..errors import AgentError, AgentTimeoutError, AgentUnavailableError, ProviderError
from .base import Acquire, AgentEvent, AgentRequest, AgentResult, Emit
from .leftovers import MARKER_ENV, RunRecords
from .opencode_events import PROVIDER_ERROR_MARKERS, OpencodeEventParser

__all__ = ["OPENCODE_VERSION", "OpencodeBackend", "build_prompt", "find_opencode"]

OPENCODE_VERSION = "1.18.33"
_RELATIVE_BIN = Path(".tools/opencode/node_modules/.bin/opencode")
_REPO_ROOT = Path(__file__).resolve().parents[2]
INSTALL_HINT = (f"install it with `make opencode` in the project folder, or "
                f"`npm install --prefix .tools/opencode opencode-ai@{OPENCODE_VERSION}`, "
                f"or set agents.opencode_bin to its path")
_TERM_GRACE_S = 2.0
_STDERR_KEEP = 4096
_LINE_LIMIT = 32 * 1024 * 1024
_ENV_KEEP = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "LC_CTYPE",
             "TERM", "TZ", "TMPDIR", "SYSTEMROOT")


def find_opencode(settings: AgentSettings) -> Path:
    """The opencode binary: ``opencode_bin``, the project's ``.tools`` copy, else PATH."""
    if settings.opencode_bin:
        path = Path(settings.opencode_bin).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise AgentUnavailableError(
            f"agents.opencode_bin={settings.opencode_bin!r} is not an executable file; "
            + INSTALL_HINT)
    for base in (Path.cwd(), _REPO_ROOT):
        candidate = base / _RELATIVE_BIN
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("opencode")
    if found:
        return Path(found)
    raise AgentUnavailableError("The opencode CLI was not found (looked in ./.tools/opencode, "
                                f"{_REPO_ROOT / '.tools/opencode'} and PATH); " + INSTALL_HINT)


def build_prompt(request: AgentRequest) -> str:
    """The instructions given to opencode for one task."""
    files = "\n".join(f"- {f}" for f in request.files) or "- (no files named; choose sensibly)"
    return (
        f"You are {request.employee}, a software engineer on a team.\n"
        f"Work only in the current folder (your workspace); do not touch files elsewhere.\n\n"
        f"Task:\n{request.description}\n\n"
        f"Files you hold for this task:\n{files}\n\n"
        f"When you are done, reply with a one-paragraph summary of what you changed."
    )


def _local_model(model: str) -> str:
    return model.removeprefix("local/")


class OpencodeBackend:
    """Runs each task through the real opencode CLI against ``agents.base_url``."""

    name = "opencode"

    def __init__(self, settings: AgentSettings, *, acquire: Acquire | None = None,
                 state_dir: Path) -> None:
        self.settings = settings
        self._acquire = acquire
        self.state_dir = Path(state_dir)
        self.binary = find_opencode(settings)
        if not settings.base_url:
            raise AgentUnavailableError(
                "The opencode backend needs agents.base_url (an OpenAI-compatible URL such "
                "as http://127.0.0.1:8000/v1); it is empty")
        self.running: dict[int, int] = {}  # task_id -> process (group) id, while running
        self.records = RunRecords(self.state_dir / "runs")
        self.key_file = self.state_dir / "provider-key"

    def config_content(self, model: str) -> dict[str, Any]:
        """The ``OPENCODE_CONFIG_CONTENT`` document: one local provider, offline."""
        s = self.settings
        names = dict.fromkeys((s.model_normal, s.model_smart, _local_model(model)))
        return {
            "$schema": "https://opencode.ai/config.json",
            "provider": {"local": {
                "npm": "@ai-sdk/openai-compatible",
                "name": "Local",
                "options": {"baseURL": s.base_url,
                            "apiKey": f"{{file:{self.key_file}}}" if s.api_key else "sk-local"},
                "models": {n: {"name": n} for n in names},
            }},
            "model": f"local/{_local_model(model)}",
            "autoupdate": False,
            "share": "disabled",
        }

    def build_env(self, request: AgentRequest, home: Path) -> dict[str, str]:
        """A minimal environment: basics from ours, the config, offline switches, own XDG."""
        env = {k: os.environ[k] for k in _ENV_KEEP if k in os.environ}
        env.update({
            # opencode takes its project folder from $PWD, not from the real cwd.
            "PWD": str(request.workspace.resolve()),
            "OPENCODE_CONFIG_CONTENT": json.dumps(self.config_content(request.model)),
            "OPENCODE_DISABLE_MODELS_FETCH": "1",
            "OPENCODE_DISABLE_AUTOUPDATE": "1",
            "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
            "OPENCODE_DISABLE_SHARE": "1",
        })
        for kind in ("data", "config", "cache", "state"):
            env[f"XDG_{kind.upper()}_HOME"] = str(home / kind)
        return env

    def argv(self, request: AgentRequest) -> list[str]:
        """The command line (an argv list, never a shell string)."""
        return [str(self.binary), "run", "--pure", "--format", "json",
                "--model", f"local/{_local_model(request.model)}"]

    async def run(self, request: AgentRequest, emit: Emit) -> AgentResult:
        """Run opencode for one task; AgentError / ProviderError / AgentTimeoutError on failure."""
        home = self.state_dir / request.employee
        await asyncio.to_thread(_make_dirs, request.workspace, home)
        if self.settings.api_key:
            await asyncio.to_thread(_write_private, self.key_file, self.settings.api_key)
        if self._acquire is not None:
            await self._acquire()
        parser = OpencodeEventParser(workspace=request.workspace.resolve(),
                                     project_root=request.project_root.resolve())
        stderr_tail: deque[bytes] = deque()
        emit(AgentEvent(kind="started"))
        rc = await self._run_process(request, home, parser, stderr_tail, emit)
        stderr_text = b"".join(stderr_tail).decode("utf-8", "replace")
        _check_outcome(rc, parser, stderr_text)
        emit(AgentEvent(kind="progress", progress=100))
        emit(AgentEvent(kind="finished"))
        return AgentResult(summary="\n".join(parser.texts).strip(),
                           files_touched=tuple(parser.files_touched),
                           llm_calls=parser.steps, tokens_out=parser.tokens_out)

    async def _run_process(self, request: AgentRequest, home: Path,
                           parser: OpencodeEventParser, stderr_tail: deque[bytes],
                           emit: Emit) -> int:
        token = await asyncio.to_thread(self.records.new, request.task_id)
        proc = await asyncio.create_subprocess_exec(
            *self.argv(request), cwd=request.workspace,
            env={**self.build_env(request, home), MARKER_ENV: token},
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True, limit=_LINE_LIMIT)
        self.running[request.task_id] = proc.pid
        try:
            await asyncio.to_thread(self.records.started, token, proc.pid)
            async with asyncio.timeout(request.timeout_s) as scope:
                async with asyncio.TaskGroup() as tg:
                    assert proc.stdin and proc.stdout is not None and proc.stderr is not None
                    tg.create_task(_send_prompt(proc.stdin, build_prompt(request)))
                    tg.create_task(_read_events(proc.stdout, parser, emit))
                    tg.create_task(_read_tail(proc.stderr, stderr_tail))
                    rc = await proc.wait()
                    _signal_group(proc.pid, signal.SIGKILL)  # stragglers holding the pipes
            return rc
        except TimeoutError:
            await _terminate(proc)
            if scope.expired():
                raise AgentTimeoutError(
                    f"opencode ran past the task timeout ({request.timeout_s:g}s) for task "
                    f"{request.task_id}; its process group was killed") from None
            raise
        except BaseException:
            await _terminate(proc)
            raise
        finally:
            self.running.pop(request.task_id, None)
            self.records.forget(token)  # one unlink; no await, so no cancel can skip it

    async def end_leftovers(self) -> list[int]:
        """End agent processes a crashed predecessor left running; the pids signalled."""
        return await self.records.end_leftovers(_TERM_GRACE_S)

    async def aclose(self) -> None:
        """Nothing is held between runs (each run owns and reaps its process)."""


def _make_dirs(workspace: Path, home: Path) -> None:
    workspace.mkdir(parents=True, exist_ok=True)
    for kind in ("data", "config", "cache", "state"):
        (home / kind).mkdir(parents=True, exist_ok=True)


def _write_private(path: Path, text: str) -> None:
    """Write ``path`` readable by its owner only (created with mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(text)


async def _send_prompt(stdin: asyncio.StreamWriter, prompt: str) -> None:
    """Give opencode its prompt on stdin, then EOF (a process that died early is the
    exit code's business, not this writer's)."""
    try:
        stdin.write(prompt.encode("utf-8"))
        await stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        stdin.close()


async def _read_events(stream: asyncio.StreamReader, parser: OpencodeEventParser,
                       emit: Emit) -> None:
    while True:
        try:
            raw = await stream.readline()
        except ValueError:  # a line longer than the limit: skip it
            parser.other_lines.append("<overlong output line skipped>")
            continue
        if not raw:
            return
        for event in parser.feed(raw.decode("utf-8", "replace")):
            emit(event)


async def _read_tail(stream: asyncio.StreamReader, tail: deque[bytes]) -> None:
    kept = 0
    while chunk := await stream.read(4096):
        tail.append(chunk)
        kept += len(chunk)
        while kept - len(tail[0]) >= _STDERR_KEEP:
            kept -= len(tail.popleft())


def _signal_group(pgid: int, sig: int) -> None:
    if pgid <= 1 or pgid == os.getpgrp():
        return  # never signal init or our own group
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _signal_pid(pid: int, sig: int) -> None:
    if pid <= 1 or pid == os.getpid():
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _process_tree(root: int) -> dict[int, int]:
    """``{pid: pgid}`` of ``root``'s descendants (Linux /proc; empty elsewhere).

    opencode starts its tool commands (``bash``) in their own session, so killing its
    process group alone would leave them running: we follow the parent links instead.
    """
    children: dict[int, list[int]] = {}
    groups: dict[int, int] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return {}
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        pid = int(name)
        children.setdefault(int(fields[1]), []).append(pid)
        groups[pid] = int(fields[2])
    found: dict[int, int] = {}
    stack = list(children.get(root, []))
    while stack:
        pid = stack.pop()
        if pid not in found:
            found[pid] = groups.get(pid, pid)
            stack.extend(children.get(pid, []))
    return found


def _signal_tree(leader: int, tree: dict[int, int], sig: int) -> None:
    _signal_group(leader, sig)
    for pgid in set(tree.values()):
        _signal_group(pgid, sig)
    for pid in tree:
        _signal_pid(pid, sig)


async def _terminate(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the process tree, SIGKILL it after the grace period, reap the leader."""
    # Synchronous on purpose (a few ms of /proc reads): an await here could be cancelled
    # again before any signal is sent, leaking the processes.
    tree = _process_tree(proc.pid)
    _signal_tree(proc.pid, tree, signal.SIGTERM)
    try:
        async with asyncio.timeout(_TERM_GRACE_S):
            await proc.wait()
    except TimeoutError:
        pass
    finally:
        for pid in list(tree):  # anything they started meanwhile
            tree.update(_process_tree(pid))
        _signal_tree(proc.pid, tree, signal.SIGKILL)
    await proc.wait()


def _check_outcome(rc: int, parser: OpencodeEventParser, stderr_text: str) -> None:
    """Raise the right error for a failed run (provider error events win)."""
    if parser.error is not None:
        status = parser.error_status()
        raise ProviderError(f"opencode reported a provider error (exit {rc}): "
                            f"{parser.error_message()}", status=status or 502)
    seen = stderr_text + "\n".join(parser.other_lines)
    marker = next((m for m in PROVIDER_ERROR_MARKERS if m in seen), None)
    if rc != 0 and marker is not None:
        status = 429 if "rate" in marker.lower() else 502
        raise ProviderError(f"opencode failed with exit code {rc} on a provider error "
                            f"({marker}): {seen[-1000:].strip()}", status=status)
    if rc != 0:
        err = AgentError(f"opencode exited with code {rc}; stderr tail: "
                         f"{stderr_text[-2000:].strip() or '(empty)'}")
        err.retryable = rc < 0  # killed by a signal from outside: worth another try
        raise err
