"""What an opencode run cost, with the stand-in CLI of test_agents_opencode_process."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_agents_opencode_process import backend, request  # noqa: F401  (the fixture)

from orchestra_kit.agents import OpencodeBackend
from orchestra_kit.errors import AgentError, AgentTimeoutError


async def test_a_run_reports_its_process_accounting(backend: OpencodeBackend,  # noqa: F811
                                                    tmp_path: Path) -> None:
    backend.sampler.interval_s = 0.02
    result = await backend.run(request(tmp_path, "ok"), lambda e: None)
    usage = result.usage
    assert usage is not None and usage.backend == "opencode" and usage.exit_code == 0
    assert usage.samples is not None and usage.samples >= 1
    assert usage.peak_rss_mb is not None and usage.peak_rss_mb > 5  # a Python stand-in
    assert usage.cpu_s is not None and usage.cpu_s >= 0 and usage.processes == 1
    assert usage.startup_s is not None and usage.wall_s is not None
    assert 0 < usage.startup_s <= usage.wall_s
    assert (usage.tokens_out, usage.llm_calls, usage.bucket_wait_s) == (7, 1, 0.0)


async def test_a_failed_run_carries_its_exit_code(backend: OpencodeBackend,  # noqa: F811
                                                  tmp_path: Path) -> None:
    with pytest.raises(AgentError) as info:
        await backend.run(request(tmp_path, "crash"), lambda e: None)
    assert info.value.usage is not None and info.value.usage["exit_code"] == 3


async def test_a_timed_out_run_was_killed_by_a_signal(backend: OpencodeBackend,  # noqa: F811
                                                      tmp_path: Path) -> None:
    backend.sampler.interval_s = 0.05
    with pytest.raises(AgentTimeoutError) as info:
        await backend.run(request(tmp_path, "sleep", 0.8), lambda e: None)
    usage = info.value.usage
    assert usage is not None and usage["exit_code"] < 0  # SIGTERM/SIGKILL from the backend
    assert usage["processes"] == 2  # the stand-in and the sleep it started in its own session
