"""Picklable workloads for the generator-worker tests (spawned workers import this module)."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from typing import Any

from orchestra_kit.lab.loadgen import Operation, OpResult


class GetPath:
    """GET ``path``; ok on 200. ``burn_s`` blocks the event loop per request (a starved
    generator, on purpose)."""

    def __init__(self, path: str, burn_s: float = 0.0) -> None:
        self.path = path
        self.burn_s = burn_s

    def operation(self, client: Any) -> Operation:
        async def op(index: int) -> OpResult:
            if self.burn_s:
                time.sleep(self.burn_s)  # noqa: ASYNC251 - starving the loop is the point
            status, _ = await client.request("GET", self.path)
            return OpResult("get", status == 200, status)

        return op


class DieInWorker(GetPath):
    """Kills its worker process at the 5th request (a worker that dies mid-run)."""

    def operation(self, client: Any) -> Operation:
        inner = super().operation(client)

        async def op(index: int) -> OpResult:
            if index >= 5:
                os._exit(3)
            return await inner(index)

        return op


def call(url: str, method: str = "GET") -> Any:
    """A blocking JSON call to the truth server (tests only; 127.0.0.1)."""
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())
