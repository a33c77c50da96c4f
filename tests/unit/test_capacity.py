"""Capacity reading from agent sweeps, on synthetic points (no processes started)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from orchestra_kit.errors import ConfigError
from orchestra_kit.lab.agentstats import agent_point_columns
from orchestra_kit.lab.capacity import agent_capacity, llm_limits
from orchestra_kit.lab.spec import parse_spec


def _point(agents: int, done: float, cpu_pct: float, **extra: Any) -> dict[str, Any]:
    row = {"load": agents, "success_rate": 1.0, "task_done_s_p50": done,
           "task_done_s_p99": done * 1.1, "agent_peak_rss_mb_p50": 500.0,
           "agents_rss_max_mb": 500.0 * agents, "agent_cpu_s_mean": 6.0,
           "agent_cpu_per_wall": 0.5, "agent_startup_s_p50": 5.0, "agent_startup_s_p99": 6.0,
           "machine_cpu_pct_mean": cpu_pct, "machine_mem_available_min_mb": 20_000.0,
           "machine_mem_total_mb": 24_000.0, "machine_cores": 2, "task_queue_s_p50": 0.0,
           "agent_bucket_wait_s_mean": 0.0, "provider_max_queued": 0, "provider_429": 0}
    return row | extra


def test_capacity_finds_the_doubling_and_names_cpu() -> None:
    points = pd.DataFrame([_point(1, 10.0, 40.0), _point(2, 12.0, 70.0),
                           _point(4, 25.0, 99.0), _point(8, 60.0, 100.0)])
    reading = agent_capacity(points)
    assert (reading.max_agents, reading.doubled_at, reading.limited_by) == (2, 4, "CPU")
    assert reading.memory_ceiling == int(0.8 * 24_000 / 500) and reading.cpu_ceiling == 4
    sentence = reading.sentence()
    assert "2 opencode agents at most" in sentence and "limited by CPU" in sentence


def test_capacity_names_the_scheduler_slots_before_cpu() -> None:
    points = pd.DataFrame([_point(1, 10.0, 40.0), _point(4, 30.0, 95.0, task_queue_s_p50=15.0)])
    reading = agent_capacity(points)
    assert reading.limited_by == "max_concurrent_tasks" and reading.max_agents == 1


def test_capacity_without_doubling_is_a_floor() -> None:
    points = pd.DataFrame([_point(1, 10.0, 20.0), _point(2, 11.0, 30.0)])
    reading = agent_capacity(points)
    assert reading.doubled_at is None and reading.limited_by == "nothing measured here"
    assert "floor" in reading.sentence()


def test_llm_limits_picks_the_lowest_ceiling_per_series() -> None:
    rows = []
    for variant, plateau in (("bucket", 4.8), ("provider", 12.0)):
        for users, rps in ((1, 1.6), (4, plateau * 0.95), (16, plateau)):
            rows.append({"variant": variant, "load": users, "throughput_rps": rps,
                         "task_done_s_p50": 0.6})
    settings = {"bucket": {"scheduler.max_api_requests_per_minute": 300.0},
                "provider": {"scheduler.max_api_requests_per_minute": 1e6}}
    table = llm_limits(pd.DataFrame(rows), settings, provider_capacity=8)
    by = table.set_index("series")
    assert by.loc["bucket", "predicted_limit"] == "the LLM bucket"
    assert by.loc["bucket", "ceiling_rps"] == 5.0 and by.loc["bucket", "knee_users"] == 4
    assert by.loc["provider", "predicted_limit"] == "provider capacity"


def test_point_columns_from_task_rows() -> None:
    nan = float("nan")
    rows = [{"peak_rss_mb": 100.0 * k, "cpu_s": 2.0, "startup_s": float(k), "wall_s": 4.0,
             "ttft_ms": nan, "retries": nan, "bucket_wait_s": 0.0, "queue_s": 0.1,
             "done_s": 5.0, "exit_code": 0 if k < 4 else 1} for k in range(1, 5)]
    cols = agent_point_columns(rows)
    assert cols["agent_tasks"] == 4 and cols["agent_peak_rss_mb_max"] == 400.0
    assert cols["agent_cpu_per_wall"] == 0.5 and cols["agent_exit_nonzero"] == 1
    assert cols["agent_startup_s_p50"] == 2.0 and cols["agent_retries"] == 0


@pytest.mark.parametrize(("doc", "key"), [
    ({"provider": {"kind": "cloud"}}, "provider.kind"),
    ({"provider": {"kind": "fake", "profile": "nope"}}, "provider.profile"),
    ({"provider": {"kind": "fake", "config": {"capacity": 0}}}, "provider.config.capacity"),
    ({"workload": {"description": "task {x}"}}, "workload.description"),
    ({"workload": {"expect_files": "a/b.txt"}}, "workload.expect_files"),
    ({"load": {"grace_s": -1}}, "load.grace_s"),
])
def test_spec_names_bad_provider_and_workload_keys(doc: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_spec({"name": "x", **doc})
    assert err.value.key == key


def test_seed_llm_rows_split_the_call_from_the_service() -> None:
    from orchestra_kit.lab.seedtable_llm import llm_calls_rows

    rows = [{"variant": "provider", "load": users, "task_done_s_p50": done,
             "agent_wall_s_p50": 0.60, "success_rate": ok}
            for users, done, ok in ((1, 0.62, 1.0), (64, 3.5, 0.99))]
    table = llm_calls_rows(pd.DataFrame(rows)).set_index("claim")
    assert table.loc["LLM API call latency", "measured"] == "0.62 s = call 0.60 s + service 0.020 s"
    assert table.loc["LLM API call latency", "holds"] is None
    assert bool(table.loc["50+ concurrent LLM sessions", "holds"]) is True
