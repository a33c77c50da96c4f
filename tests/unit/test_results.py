"""summarise_point on hand-computed records; Slo; run directories written and loaded back."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from orchestra_kit.errors import ConfigError, NotFoundError, ValidationError
from orchestra_kit.lab.histogram import LatencyHistogram
from orchestra_kit.lab.loadgen import LoadRun, OpenLoop, RequestRecord
from orchestra_kit.lab.results import (
    POINT_KEY_COLUMNS,
    REQUEST_COLUMNS,
    SUMMARY_COLUMNS,
    RunWriter,
    Slo,
    latest_run,
    load_run,
    summarise_point,
)


def _rec(
    index: int, service_ms: float, lag_ms: float, *, ok: bool = True, status: int = 200,
    error_type: str = "",
) -> RequestRecord:  # fmt: skip
    sched = float(index)
    sent = sched + lag_ms / 1000
    end = sent + service_ms / 1000
    return RequestRecord(
        index=index, op="hire", scheduled_s=sched, sent_s=sent, end_s=end,
        latency_ms=service_ms + lag_ms, service_ms=service_ms, lag_ms=lag_ms,
        status=status, ok=ok, error_type=error_type,
    )  # fmt: skip


def _synthetic_run() -> LoadRun:
    services = [100.0] * 4 + [500.0] * 2 + [1000.0] * 2
    records = [_rec(i, s, 1.0) for i, s in enumerate(services)]
    records.append(_rec(8, 50.0, 5.0, ok=False, status=500))
    records.append(_rec(9, 0.0, 2.0, ok=False, status=0, error_type="dropped"))
    return LoadRun(
        records=records, started_wall=1.7e9, duration_s=10.0, dropped=1,
        model=OpenLoop(rate_rps=1.0), planned=10,
    )  # fmt: skip


def test_summary_columns_and_hand_computed_values() -> None:
    params = {"rate_rps": 1.0, "settings": {"batch_size": 8, "tags": ["a"]}}
    row = summarise_point(_synthetic_run(), slo=Slo(p99_ms=600.0), params=params)
    head = ["rate_rps", "settings.batch_size", "settings.tags"]
    assert list(row) == head + list(SUMMARY_COLUMNS)
    assert row["settings.tags"] == '["a"]'
    expect = {
        "n": 10, "n_ok": 8, "n_err": 2, "success_rate": 0.8, "duration_s": 10.0,
        "offered_rps": 1.0, "throughput_rps": 0.8, "goodput_rps": 0.6, "slo_attainment": 0.6,
        "mean_ms": 426.0, "max_ms": 1001.0, "service_mean_ms": 425.0, "service_max_ms": 1000.0,
        "lag_p50_ms": 1.0, "lag_p99_ms": 5.0, "lag_max_ms": 5.0, "dropped": 1,
    }  # fmt: skip
    for key, value in expect.items():
        assert row[key] == pytest.approx(value), key
    # HDR nearest rank over 8 ok latencies [101]*4 + [501]*2 + [1001]*2 (3 significant digits).
    for key, value in {"p50_ms": 101, "p90_ms": 1001, "p95_ms": 1001, "p99_ms": 1001, "p999_ms": 1001,
                       "service_p50_ms": 100, "service_p90_ms": 1000}.items():  # fmt: skip
        assert row[key] == pytest.approx(value, rel=1e-3), key
    assert json.loads(row["errors"]) == {"dropped": 1, "http_500": 1}
    hist = LatencyHistogram.decode(row["hdr_latency"])
    assert hist.count == 8 and hist.percentile_ms(50) == pytest.approx(101, rel=1e-3)


def test_littles_law_fields() -> None:
    row = summarise_point(_synthetic_run(), slo=None, params={})
    # In flight from sent/end: Σ service over sent requests / duration.
    assert row["mean_inflight"] == pytest.approx((400 + 1000 + 2000 + 50) / 1000 / 10)
    # λ·W with W the corrected latency: Σ latency over sent requests / duration.
    assert row["littles_inflight"] == pytest.approx((3408 + 55) / 1000 / 10)
    assert row["littles_residual"] == pytest.approx(0.013 / 3.45)
    assert row["goodput_rps"] == row["throughput_rps"]  # no SLO: every ok request is good


def test_littles_residual_reveals_a_generator_that_fell_behind() -> None:
    # Each request served in 5 ms but sent 200 ms late: the time went into the client.
    records = [_rec(i, 5.0, 200.0) for i in range(10)]
    run = LoadRun(
        records=records, started_wall=0.0, duration_s=10.0, dropped=0, model=OpenLoop(rate_rps=1.0)
    )
    row = summarise_point(run, slo=None, params={})
    assert row["littles_inflight"] > 30 * row["mean_inflight"]
    assert row["littles_residual"] == pytest.approx(40.0)
    assert row["lag_p99_ms"] == pytest.approx(200.0)


def test_empty_run_gives_nan_not_crash() -> None:
    run = LoadRun(
        records=[], started_wall=0.0, duration_s=1.0, dropped=0, model=OpenLoop(rate_rps=1.0)
    )
    row = summarise_point(run, slo=None, params={"concurrency": 1})
    assert row["n"] == 0 and math.isnan(row["p99_ms"]) and math.isnan(row["success_rate"])
    assert row["errors"] == "{}"


def test_params_must_not_collide_with_summary_columns() -> None:
    with pytest.raises(ValidationError, match="p99_ms"):
        summarise_point(_synthetic_run(), slo=None, params={"p99_ms": 3})


def test_slo_validation_threshold_and_met() -> None:
    with pytest.raises(ConfigError, match="p99_ms"):
        Slo(p99_ms=0)
    with pytest.raises(ConfigError, match="min_success_rate"):
        Slo(min_success_rate=1.5)
    assert Slo().threshold_ms is None
    assert Slo(p95_ms=200).threshold_ms == 200
    assert Slo(p99_ms=500, latency_ms_max=800).threshold_ms == 800
    slo = Slo(p99_ms=500, min_success_rate=0.9)
    assert slo.met({"p99_ms": 400, "success_rate": 0.95})
    assert not slo.met({"p99_ms": 600, "success_rate": 0.95})
    assert not slo.met({"p99_ms": 400, "success_rate": 0.5})
    assert not slo.met({"p99_ms": math.nan, "success_rate": 1.0})


async def test_run_directory_round_trip(tmp_path: Path) -> None:
    spec = {"name": "demo", "load": {"rates": [1, 2]}}
    writer = await RunWriter.create(tmp_path, "demo", {"spec": spec, "seed": 3})
    assert writer.path.parent == tmp_path / "demo"
    run = _synthetic_run()
    async with writer:
        for point, load in enumerate([1.0, 2.0]):
            for repeat in range(2):
                summary = summarise_point(run, slo=Slo(p99_ms=600), params={"rate_rps": load})
                await writer.add_point(point, repeat, load, run, summary)
    data = load_run(writer.path)
    assert list(data.requests.columns) == list(REQUEST_COLUMNS)
    assert len(data.requests) == 4 * 10
    assert list(data.points.columns) == [*POINT_KEY_COLUMNS, "rate_rps", *SUMMARY_COLUMNS]
    assert len(data.points) == 4
    assert data.points["load"].tolist() == [1.0, 1.0, 2.0, 2.0]
    assert data.points["run_id"].eq(writer.run_id).all()
    assert data.requests["ok"].dtype == bool
    assert data.requests["error_type"].tolist()[:10] == [""] * 9 + ["dropped"]
    assert data.requests["latency_ms"].iloc[0] == pytest.approx(101.0)
    assert data.points["p99_ms"].iloc[0] == pytest.approx(1001, rel=1e-3)
    assert LatencyHistogram.decode(data.points["hdr_latency"].iloc[0]).count == 8
    m = data.manifest
    assert m["spec"] == spec and m["seed"] == 3 and m["status"] == "complete"
    assert m["finished"] and m["started"] and m["run_id"] == writer.run_id
    assert m["git_sha"] and m["python"] and m["machine"]["cpu_count"]
    assert latest_run(tmp_path, "demo") == writer.path


async def test_writer_refuses_misuse(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="name"):
        await RunWriter.create(tmp_path, "../escape", {})
    writer = await RunWriter.create(tmp_path, "w", {})
    run = _synthetic_run()
    await writer.add_point(0, 0, 1.0, run, summarise_point(run, slo=None, params={"a": 1}))
    with pytest.raises(ValidationError, match="points.csv"):
        await writer.add_point(1, 0, 2.0, run, summarise_point(run, slo=None, params={"b": 1}))
    await writer.finish("failed")
    await writer.aclose()  # idempotent: status stays "failed"
    assert load_run(writer.path).manifest["status"] == "failed"
    with pytest.raises(ValidationError, match="finished"):
        await writer.add_point(2, 0, 3.0, run, {})


async def test_latest_run_picks_the_newest_and_load_run_handles_empty(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        latest_run(tmp_path, "none")
    first = await RunWriter.create(tmp_path, "x", {})
    second = await RunWriter.create(tmp_path, "x", {})
    await first.aclose()
    await second.aclose()
    assert latest_run(tmp_path, "x") in {first.path, second.path}
    newest = max([first, second], key=lambda w: (w.run_id.split("-")[0], w.path.stat().st_mtime_ns))
    assert latest_run(tmp_path, "x") == newest.path
    data = load_run(first.path)
    assert data.points.empty and list(data.requests.columns) == list(REQUEST_COLUMNS)
    with pytest.raises(NotFoundError):
        load_run(tmp_path / "missing")
