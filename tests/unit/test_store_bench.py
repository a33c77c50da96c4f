"""Smoke test of `orchestra bench store --json --quick`."""

from __future__ import annotations

import json

import pytest

from orchestra_kit.store.bench import cli_main

KEYS = [
    "baseline_single_commit_ops_s", "group_commit_ops_s_c1", "group_commit_ops_s_c64",
    "group_commit_ops_s_c512", "single_commit_ops_s_c512", "group_commit_speedup",
    "write_p50_ms_c512", "write_p99_ms_c512", "cached_read_us", "uncached_read_us",
    "cached_read_speedup", "batch_hire_rows_s", "wal_on_single_writer_ops_s",
    "wal_off_single_writer_ops_s",
]


def test_bench_quick_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["--json", "--quick"]) == 0
    out = capsys.readouterr().out.strip()
    doc = json.loads(out)  # exactly one JSON object on stdout
    for key in KEYS:
        assert isinstance(doc[key], float) and doc[key] > 0, key
    assert doc["quick"] is True
