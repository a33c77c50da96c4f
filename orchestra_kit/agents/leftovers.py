"""Agent processes that outlive their server: recorded on disk, ended at the next start.

opencode runs in a session of its own, so a server killed with SIGKILL leaves it (and
the tool commands it started, each in yet another session) running; a restarted server
would then run the same task a second time in the same workspace. So every run is
recorded before its process starts: ``<folder>/<token>.json`` holds a random token,
the task id, the server's pid and start time, and, once known, the agent's pid, process
group and start time. The token is also put in the agent's environment
(``ORCHESTRA_AGENT_RUN``), which every descendant inherits.

At start-up, :meth:`RunRecords.end_leftovers` reads the records of servers that are no
longer alive, finds every process carrying one of their tokens (and each recorded
leader whose start time still matches, so a reused pid is never hit), sends SIGTERM to
them and their process groups, SIGKILL after a grace period, and deletes the records.
Records of a live server (another service sharing the folder) are left alone.
Linux only (``/proc``); elsewhere nothing is found and the records are just cleared.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MARKER_ENV", "RunRecords", "process_start_ticks"]

MARKER_ENV = "ORCHESTRA_AGENT_RUN"
_MARKER = MARKER_ENV.encode() + b"="
log = logging.getLogger("orchestra_kit.agents")


def process_start_ticks(pid: int) -> int | None:
    """A process's start time (clock ticks since boot), None if it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == b"Z" else int(fields[19])


_OWN_START = process_start_ticks(os.getpid())


@dataclass(frozen=True, slots=True)
class _Record:
    token: str
    owner_pid: int
    owner_start: int | None
    pid: int | None
    pgid: int | None
    start: int | None

    @property
    def owner_alive(self) -> bool:
        """Whether the server that made the record still runs (the same process: a
        reused pid has another start time)."""
        return (self.owner_start is not None
                and process_start_ticks(self.owner_pid) == self.owner_start)


class RunRecords:
    """The records of one backend's agent runs, in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def new(self, task_id: int) -> str:
        """Record a run about to start; returns the token to put in its environment."""
        token = secrets.token_hex(16)
        self._write(token, {"task_id": task_id, "owner_pid": os.getpid(),
                            "owner_start": _OWN_START, "created": time.time()})
        return token

    def started(self, token: str, pid: int) -> None:
        """Add the agent's pid, process group and start time to its record."""
        path = self.folder / f"{token}.json"
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(path.read_text(encoding="utf-8"))
            data.update(pid=pid, pgid=pid, start=process_start_ticks(pid))
            self._write(token, data)

    def forget(self, token: str) -> None:
        """The run's processes are gone: drop its record."""
        with contextlib.suppress(FileNotFoundError):
            (self.folder / f"{token}.json").unlink()

    def _forget_all(self, tokens: list[str]) -> None:
        for token in tokens:
            self.forget(token)

    def _write(self, token: str, data: dict[str, object]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{token}.tmp"
        tmp.write_text(json.dumps(data), encoding="utf-8")
        tmp.replace(self.folder / f"{token}.json")

    async def end_leftovers(self, grace_s: float = 2.0) -> list[int]:
        """End the processes of runs whose server died; returns the pids signalled."""
        records = await asyncio.to_thread(self._orphaned)
        if not records:
            return []
        targets = await asyncio.to_thread(_find, records)
        signalled = set(targets)
        if targets:
            log.warning("ending %d agent processes left running by a previous server: %s",
                        len(targets), sorted(targets))
            _signal_all(targets, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while targets and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                targets = {p: g for p, g in targets.items() if process_start_ticks(p) is not None}
            final = await asyncio.to_thread(_find, records)  # and what they started meanwhile
            signalled |= set(final)
            _signal_all({**targets, **final}, signal.SIGKILL)
        await asyncio.to_thread(self._forget_all, [rec.token for rec in records])
        return sorted(signalled)

    def _orphaned(self) -> list[_Record]:
        try:
            paths = sorted(self.folder.glob("*.json"))
        except OSError:
            return []
        out: list[_Record] = []
        for path in paths:
            rec = _load(path)
            if rec is None:
                with contextlib.suppress(OSError):
                    path.unlink()  # unreadable: nothing to act on
            elif not rec.owner_alive:
                out.append(rec)
        return out


def _load(path: Path) -> _Record | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return _Record(token=path.stem, owner_pid=int(data["owner_pid"]),
                       owner_start=data.get("owner_start"), pid=data.get("pid"),
                       pgid=data.get("pgid"), start=data.get("start"))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _find(records: list[_Record]) -> dict[int, int]:
    """``{pid: pgid}`` of live processes that belong to one of ``records``' runs."""
    tokens = {rec.token.encode() for rec in records}
    found: dict[int, int] = {}
    for rec in records:  # the recorded leader, if it is still that very process
        if rec.pid is not None and rec.start is not None \
                and process_start_ticks(rec.pid) == rec.start:
            found[rec.pid] = rec.pgid or rec.pid
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc"):
            if name.isdigit() and _carries(int(name), tokens):
                found[int(name)] = _pgid(int(name))
    found.pop(os.getpid(), None)
    return {pid: pgid for pid, pgid in found.items() if pid > 1}


def _carries(pid: int, tokens: set[bytes]) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read()
    except OSError:
        return False
    if _MARKER not in env:
        return False
    return any(item[len(_MARKER):] in tokens for item in env.split(b"\0")
               if item.startswith(_MARKER))


def _pgid(pid: int) -> int:
    try:
        return os.getpgid(pid)
    except OSError:
        return pid


def _signal_all(targets: dict[int, int], sig: int) -> None:
    own_group = os.getpgrp()
    for pgid in set(targets.values()):
        if pgid > 1 and pgid != own_group:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
    for pid in targets:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
