"""Tests for orchestra_kit.lab.comparison: effect threshold AND significance over repeats."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from orchestra_kit.errors import ValidationError
from orchestra_kit.lab.comparison import compare, min_pvalue, permutation_pvalue, ratio_ci, unit_of


def run(
    scale: float = 1.0, *, repeats: int = 5, seed: int = 0, loads: tuple[int, ...] = (8, 32)
) -> pd.DataFrame:
    """Per-repeat rows: p99 grows with load, throughput shrinks when ``scale`` > 1."""
    rng = np.random.default_rng(seed)
    rows = [
        {
            "load": load,
            "repeat": r,
            "p99_ms": 40.0 * scale * (1 + load / 32) * rng.lognormal(0, 0.05),
            "throughput_rps": 100.0 * load / scale * rng.lognormal(0, 0.03),
        }
        for load in loads
        for r in range(repeats)
    ]
    return pd.DataFrame(rows)


def test_same_distribution_is_not_significant() -> None:
    for seed in range(5):
        cmp = compare(run(seed=100 + seed), run(seed=200 + seed))
        assert not cmp.is_regression and cmp.improvements.empty
        assert cmp.verdict.startswith("No significant change in p99_ms at any load (largest move")


def test_injected_slowdown_is_a_regression() -> None:
    cmp = compare(run(seed=1), run(1.3, seed=2))
    assert cmp.is_regression
    assert list(cmp.regressions["load"]) == [8, 32]
    row = cmp.rows.iloc[1]
    assert row["p_value"] == pytest.approx(2 / 252)  # exact test, 5 vs 5 all apart
    assert row["ci_lo_pct"] < row["change_pct"] < row["ci_hi_pct"]
    assert 15 < row["change_pct"] < 45
    assert "p99_ms at load 32:" in cmp.verdict and "ms (+" in cmp.verdict
    assert "significant regression." in cmp.verdict


def test_speedup_is_an_improvement() -> None:
    cmp = compare(run(seed=1), run(0.7, seed=2))
    assert not cmp.is_regression
    assert len(cmp.improvements) == 2
    assert "significant improvement" in cmp.verdict


def test_higher_is_better_metric() -> None:
    slower = compare(run(seed=1), run(1.3, seed=2), metric="throughput_rps", higher_is_better=True)
    assert slower.is_regression and "req/s" in slower.verdict
    faster = compare(run(seed=1), run(0.7, seed=2), metric="throughput_rps", higher_is_better=True)
    assert not faster.is_regression and len(faster.improvements) == 2


def test_small_effect_below_threshold_is_ignored() -> None:
    base = run(seed=1)
    new = base.copy()
    new["p99_ms"] *= 1.05  # certain, but under the 10 % threshold
    cmp = compare(base, new)
    assert not cmp.is_regression
    assert (cmp.rows["p_value"] < 0.05).all()
    assert (cmp.rows["outcome"] == "no change").all()


def test_absolute_floor_keeps_small_latencies_from_counting() -> None:
    # CI once saw p99 at 2 users go 2.1 -> 4.25 ms (+102 %, p = 0.008): noise at that scale.
    base = pd.DataFrame({"load": [2] * 5, "p99_ms": [2.0, 2.1, 2.1, 2.2, 2.0]})
    new = pd.DataFrame({"load": [2] * 5, "p99_ms": [4.1, 4.25, 4.3, 4.2, 4.4]})
    plain = compare(base, new)
    assert plain.is_regression  # without a floor it counts
    floored = compare(base, new, min_abs=5.0)
    assert not floored.is_regression
    assert list(floored.rows["outcome"]) == ["below floor"]
    assert floored.verdict.startswith("No change counted in p99_ms at any load.")
    assert "floor of 5 ms: load 2 2.1 → 4.25 ms (+102 %" in floored.verdict
    # A change larger than the floor still counts: the floor is an AND, not a mute.
    big = new.assign(p99_ms=new["p99_ms"] * 3)
    assert compare(base, big, min_abs=5.0).is_regression
    with pytest.raises(ValidationError, match="min_abs"):
        compare(base, new, min_abs=-1.0)
    with pytest.raises(ValidationError, match="min_abs"):
        compare(base, new, min_abs=math.nan)


def test_too_few_repeats_never_significant() -> None:
    cmp = compare(run(seed=1, repeats=1), run(2.0, seed=2, repeats=1))
    assert not cmp.is_regression
    assert (cmp.rows["outcome"] == "too few repeats").all()
    assert "fewer than 2 repeats" in cmp.verdict
    three = compare(run(seed=1, repeats=3), run(2.0, seed=2, repeats=3))
    assert not three.is_regression  # exact test cannot go below p=0.1 with 3 vs 3
    assert "cannot reach p < 0.05" in three.verdict


def test_only_common_loads_and_validation() -> None:
    cmp = compare(run(loads=(8, 16)), run(loads=(16, 32)))
    assert list(cmp.rows["load"]) == [16]
    assert "nothing to compare" in compare(run(loads=(8,)), run(loads=(16,))).verdict
    with pytest.raises(ValidationError, match="new.p95_ms"):
        compare(run().assign(p95_ms=1.0), run(), metric="p95_ms")
    with pytest.raises(ValidationError, match="alpha"):
        compare(run(), run(), alpha=1.5)


def test_statistics_helpers() -> None:
    assert permutation_pvalue([1, 2, 3], [1, 2, 3]) == 1.0
    assert permutation_pvalue([1, 2, 3, 4, 5], [11, 12, 13, 14, 15]) == pytest.approx(2 / 252)
    big = permutation_pvalue(np.arange(15.0), np.arange(15.0) + 100, seed=3)  # random permutations
    assert big == pytest.approx(1 / 10_001)
    assert min_pvalue(5, 5) == pytest.approx(2 / 252)
    lo, hi = ratio_ci([10, 10, 10], [20, 20, 20])
    assert lo == hi == 2.0
    assert all(math.isnan(v) for v in ratio_ci([0.0, 0.0], [1.0, 2.0]))
    assert (
        unit_of("p99_ms") == " ms"
        and unit_of("goodput_rps") == " req/s"
        and unit_of("success_rate") == ""
    )
