"""Tests for orchestra_kit.lab.analysis: knees, self-audit, summary table, description."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from orchestra_kit.errors import ValidationError
from orchestra_kit.lab.analysis import (
    audit,
    describe_run,
    geometric_knee,
    load_label,
    load_unit,
    series_columns,
    slo_knee,
    summary_table,
    throughput_knee,
)

LOADS = (1, 2, 4, 8, 16, 32, 64, 96)


def make_points(
    loads: tuple[float, ...] = LOADS,
    repeats: int = 3,
    *,
    lam: float = 100.0,
    sigma: float = 0.05,
    kappa: float = 0.001,
    noise: float = 0.02,
    seed: int = 0,
    open_loop: bool = False,
    **extra: object,
) -> pd.DataFrame:
    """Synthetic per-point table (closed loop by default) following the USL and Little's law."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, load in enumerate(loads):
        for rep in range(repeats):
            x = lam * load / (1 + sigma * (load - 1) + kappa * load * (load - 1))
            x *= 1 + rng.normal(0, noise)
            mean_ms = load / x * 1000.0
            success = 1.0 if load <= 32 else 0.9
            n = int(x * 10)
            rows.append(
                {
                    "run_id": "r1",
                    "point": i,
                    "repeat": rep,
                    "load": float(load),
                    "concurrency": None if open_loop else load,
                    "rate_rps": float(load) if open_loop else None,
                    "n": n,
                    "n_ok": int(n * success),
                    "n_err": n - int(n * success),
                    "success_rate": success,
                    "duration_s": 10.0,
                    "offered_rps": x,
                    "throughput_rps": x,
                    "goodput_rps": x * success,
                    "slo_attainment": success,
                    "mean_ms": mean_ms,
                    "p50_ms": mean_ms * 0.9,
                    "p90_ms": mean_ms * 1.5,
                    "p95_ms": mean_ms * 1.8,
                    "p99_ms": mean_ms * 2.5,
                    "p999_ms": mean_ms * 4,
                    "max_ms": mean_ms * 5,
                    "service_p50_ms": mean_ms * 0.85,
                    "service_p90_ms": mean_ms * 1.3,
                    "service_p95_ms": mean_ms * 1.6,
                    "service_p99_ms": mean_ms * 2.0,
                    "service_p999_ms": mean_ms * 3,
                    "service_mean_ms": mean_ms * 0.9,
                    "service_max_ms": mean_ms * 4,
                    "lag_p50_ms": 0.1,
                    "lag_p99_ms": 0.5,
                    "lag_max_ms": 1.0,
                    "mean_inflight": float(load),
                    "littles_inflight": float(load),
                    "littles_residual": 0.01,
                    "hdr_latency": "HISTFAAAA",
                    "hdr_service": "HISTFAAAA",
                    "errors": "{}",
                    "dropped": 0,
                    **extra,
                }
            )
    return pd.DataFrame(rows)


def test_slo_knee_finds_highest_contiguous_load() -> None:
    points = make_points()
    means = points.groupby("load")["p99_ms"].mean()
    limit = float((means[16] + means[32]) / 2)  # between the p99 at 16 and at 32 users
    knee = slo_knee(points, p99_ms=limit)
    assert knee.knee_load == 16
    assert knee.first_violation == 32
    assert knee.highest_meeting == 16
    assert knee.violation_reason is not None and "p99" in knee.violation_reason
    assert "16 users" in knee.summary()
    assert list(knee.table["meets"]) == [True] * 5 + [False] * 3


def test_slo_knee_success_rate_and_nonmonotone() -> None:
    points = make_points()
    knee = slo_knee(points, p99_ms=1e9, min_success_rate=0.95)
    assert knee.knee_load == 32 and knee.first_violation == 64
    assert "success 90.0 % < 95 %" in (knee.violation_reason or "")
    # A dip at load 4 breaks contiguity: the knee is 2, but 8..32 still meet the SLO.
    points.loc[points["load"] == 4, "success_rate"] = 0.5
    knee = slo_knee(points, min_success_rate=0.95)
    assert knee.knee_load == 2 and knee.first_violation == 4 and knee.highest_meeting == 32
    assert "meets it again" in knee.summary()


def test_slo_knee_none_and_all() -> None:
    points = make_points()
    nothing = slo_knee(points, p99_ms=0.001)
    assert nothing.knee_load is None and nothing.highest_meeting is None
    assert nothing.first_violation == 1
    assert nothing.summary().startswith("No load meets the SLO")
    everything = slo_knee(points, p99_ms=1e9, min_success_rate=None)
    assert everything.knee_load == 96 and everything.first_violation is None
    with pytest.raises(ValidationError, match="p95_ms"):
        slo_knee(points.drop(columns=["p95_ms"]), p95_ms=10)


def test_throughput_and_geometric_knees() -> None:
    points = make_points()
    # USL peak for sigma=0.05, kappa=0.001 is N* = sqrt(0.95/0.001) ≈ 31
    assert throughput_knee(points) == 32
    knee = geometric_knee(points)
    assert knee is not None and 8 <= knee <= 64
    flat = make_points(sigma=0.0, kappa=0.0, noise=0.0)  # latency constant: no bend
    assert geometric_knee(flat) is None
    assert throughput_knee(points.iloc[0:0]) is None


def test_audit_flags_each_reason() -> None:
    points = make_points(loads=(1, 2, 4, 8, 16), repeats=1, open_loop=True)
    points.loc[0, "n"] = 5
    points.loc[1, "lag_p99_ms"] = 37.2
    points.loc[2, "littles_residual"] = -0.31
    points.loc[3, "dropped"] = 3
    out = audit(points)
    assert list(out["audit_ok"]) == [False, False, False, False, True]
    assert "too few samples" in out.loc[0, "audit_reason"]
    assert (
        out.loc[1, "audit_reason"] == "schedule lag p99 37.2 ms > 5 ms: the generator fell behind"
    )
    assert "Little's law residual 0.31 > 0.2" in out.loc[2, "audit_reason"]
    assert "3 request(s) dropped" in out.loc[3, "audit_reason"]
    assert out.loc[4, "audit_reason"] == ""
    assert "audit_ok" not in points.columns  # input untouched


def test_audit_ignores_lag_in_closed_loop() -> None:
    points = make_points(loads=(1, 2), repeats=1)
    points["lag_p99_ms"] = 100.0
    assert audit(points)["audit_ok"].all()
    points["loop"] = "open"
    assert not audit(points)["audit_ok"].any()


def test_load_unit_and_series() -> None:
    closed, opened = make_points(), make_points(open_loop=True)
    assert load_unit(closed) == "users" and load_unit(opened) == "req/s"
    assert load_label(closed) == "Concurrency (virtual users)"
    assert series_columns(closed) == []
    both = pd.concat(
        [make_points(**{"settings.wal": True}), make_points(**{"settings.wal": False})]
    )
    assert series_columns(both) == ["settings.wal"]


def test_summary_table_rounds_and_audits() -> None:
    points = make_points(loads=(1, 8, 64))
    points.loc[points.index[-1], "n"] = 3
    table = summary_table(points)
    assert list(table["load"]) == [1, 8, 64]
    assert list(table["repeats"]) == [3, 3, 3]
    assert table["success_%"].tolist() == [100.0, 100.0, 90.0]
    assert list(table["audit"]) == ["ok", "ok", "1/3 flagged"]
    expected = points[points["load"] == 8]["p99_ms"].mean()
    assert table.loc[1, "p99_ms"] == pytest.approx(expected, abs=0.05)


def test_describe_run_mentions_peak_knee_and_audit() -> None:
    points = make_points()
    points.loc[points.index[-1], "n"] = 3
    text = describe_run(points, {"p99_ms": 150.0, "min_success_rate": 0.95})
    assert "Throughput rises to" in text and "at 32 users" in text
    assert "USL fit puts the peak at N*≈3" in text
    assert "SLO (p99 ≤ 150 ms, success ≥ 95 %)" in text
    assert "1 point was flagged by the self-audit" in text
    clean = describe_run(make_points(sigma=0.0, kappa=0.0, noise=0.0, loads=(1, 2, 4, 8)))
    assert "keeps rising" in clean and "no peak" in clean and "no problem" in clean


def test_a_variant_named_by_its_database_and_instances_splits_no_series() -> None:
    from orchestra_kit.lab.analysis import series_columns

    rows = [{"load": n, "database": db, "variant": f"{db}-{n}", "workload.kind": w}
            for w in ("hire", "read")
            for db, ns in (("sqlite", (1,)), ("postgresql", (1, 2, 4))) for n in ns]
    points = pd.DataFrame(rows)
    assert series_columns(points, "load") == ["database", "workload.kind"]
    points["variant"] = [f"v{i}" for i in range(len(points))]  # no longer determined
    assert "variant" in series_columns(points, "load")
