"""The LLM provider an experiment runs against: ``orchestra fake-llm`` as a child process.

A spec's ``[provider]`` table::

    [provider]
    kind = "fake"                    # "none" (default): the target's own agents.base_url
    profile = "opencode"             # a named latency profile (orchestra_kit/fakellm/profiles.py)
    write_file_script = "write_file" # a named script: [[script:NAME]] + [[file:PATH]] in a task
    [provider.config]                # any FakeLLMConfig value, overriding the profile's
    capacity = 8

For each (point, repeat) a fresh fake provider starts in its own process (its own
core, as a real provider would be; never in the load generator's loop), seeded with
the point's seed, on 127.0.0.1 and a free port; the target's ``agents.base_url`` is
pointed at it. Its counters (``/_fake/stats``: peak in-flight and queued) and the
outcomes of its requests (429s, faults) become ``provider_*`` columns of the point.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from ..childproc import terminate
from ..errors import ConfigError

__all__ = ["PROVIDER_COLUMNS", "FakeProviderProcess", "ProviderSpec", "fake_provider"]

PROVIDER_COLUMNS: tuple[str, ...] = (
    "provider_requests", "provider_max_in_flight", "provider_max_queued", "provider_429",
    "provider_faults", "provider_queued_ms_p50",
)  # fmt: skip
_START_TIMEOUT_S = 60.0


@dataclass(frozen=True, kw_only=True)
class ProviderSpec:
    """Which provider the target's agents talk to."""

    kind: str = "none"
    profile: str = "default"
    write_file_script: str = ""
    config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ("none", "fake"):
            raise ConfigError("provider.kind", self.kind, "must be 'none' or 'fake'")
        from ..fakellm import FakeLLMConfig  # validates profile and values now

        try:
            FakeLLMConfig.from_profile(self.profile, **self.config)
        except ConfigError as e:
            key = "provider.profile" if e.key == "profile" else f"provider.config.{e.key}"
            raise ConfigError(key, e.value, e.allowed) from None
        except TypeError as e:
            raise ConfigError("provider.config", sorted(self.config), f"unknown key ({e})") from None
        if "]" in self.write_file_script:
            raise ConfigError("provider.write_file_script", self.write_file_script,
                              "a script name without ']'")

    def argv(self, seed: int) -> list[str]:
        """``orchestra fake-llm`` arguments for this provider."""
        args = [sys.executable, "-m", "orchestra_kit.cli", "fake-llm", "--port", "0",
                "--profile", self.profile, "--seed", str(seed)]
        for key, value in self.config.items():
            args += ["--" + key.replace("_", "-"), str(value)]
        if self.write_file_script:
            args += ["--write-file-script", self.write_file_script]
        return args


@dataclass
class FakeProviderProcess:
    """A running ``orchestra fake-llm`` child: its URLs and its counters."""

    url: str
    proc: asyncio.subprocess.Process

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (``url/v1``)."""
        return self.url + "/v1"

    async def columns(self) -> dict[str, Any]:
        """The ``provider_*`` columns of a point: peak in-flight and queue, 429s, faults."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
            async with s.get(self.url + "/_fake/stats") as r:
                stats = await r.json()
            async with s.get(self.url + "/_fake/requests") as r:
                log = (await r.json())["requests"]
        outcomes = Counter(str(e.get("outcome")) for e in log)
        queued = sorted(float(e.get("queued_ms", 0.0)) for e in log if e.get("outcome") == "ok")
        return {
            "provider_requests": stats["total"],
            "provider_max_in_flight": stats["max_in_flight"],
            "provider_max_queued": stats["max_queued"],
            "provider_429": outcomes.get("429", 0),
            "provider_faults": sum(outcomes.get(k, 0) for k in ("500", "503", "hang", "cut")),
            "provider_queued_ms_p50": queued[len(queued) // 2] if queued else 0.0,
        }


@contextlib.asynccontextmanager
async def fake_provider(spec: ProviderSpec, seed: int) -> AsyncIterator[FakeProviderProcess]:
    """Start ``orchestra fake-llm`` for ``spec``; stop and reap it on exit."""
    proc = await asyncio.create_subprocess_exec(
        *spec.argv(seed), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        async with asyncio.timeout(_START_TIMEOUT_S):
            line = (await proc.stdout.readline()).decode()
        if "listening on " not in line:
            err = (await proc.stderr.read()).decode()[-2000:]
            raise ConfigError("provider", spec.profile, f"orchestra fake-llm did not start: {err}")
        yield FakeProviderProcess(url=line.rsplit("listening on ", 1)[1].strip(), proc=proc)
    finally:
        await terminate(proc, timeout_s=10)
