"""LatencyHistogram: clamping is counted, percentiles, encode/decode, merge."""

from __future__ import annotations

import math

import pytest

from orchestra_kit.errors import ValidationError
from orchestra_kit.lab.histogram import HIGHEST_US, LatencyHistogram


def test_percentiles_mean_max_of_known_values() -> None:
    hist = LatencyHistogram.from_values_ms([float(v) for v in range(1, 101)])  # 1..100 ms
    assert hist.count == 100
    assert hist.mean_ms == pytest.approx(50.5)
    assert hist.max_ms == 100.0
    pct = hist.percentiles_ms([50, 90, 99, 100])
    assert pct[50] == pytest.approx(50.0, rel=1e-3)
    assert pct[90] == pytest.approx(90.0, rel=1e-3)
    assert pct[99] == pytest.approx(99.0, rel=1e-3)
    assert pct[100] == 100.0  # never above the exact maximum
    assert hist.percentile_ms(0) == pytest.approx(1.0, rel=1e-3)
    assert hist.clamped == 0


def test_out_of_range_values_are_clamped_and_counted_not_dropped() -> None:
    hist = LatencyHistogram()
    for value in (0.0, -3.0, 0.0004, 5.0, 1e12, math.inf):
        hist.record_ms(value)
    assert hist.count == 6
    assert hist.clamped == 5
    assert hist.max_ms == HIGHEST_US / 1000.0
    assert hist.percentile_ms(0) == pytest.approx(0.001)


def test_nan_is_refused() -> None:
    with pytest.raises(ValidationError, match="value_ms"):
        LatencyHistogram().record_ms(math.nan)


@pytest.mark.parametrize("q", [-1.0, 100.5, math.nan])
def test_bad_percentile_is_refused(q: float) -> None:
    with pytest.raises(ValidationError, match="q"):
        LatencyHistogram.from_values_ms([1.0]).percentile_ms(q)


def test_empty_histogram_gives_nan() -> None:
    hist = LatencyHistogram()
    assert hist.count == 0
    assert math.isnan(hist.percentile_ms(99)) and math.isnan(hist.mean_ms)
    assert math.isnan(hist.max_ms)
    assert LatencyHistogram.decode(hist.encode()).count == 0
    assert LatencyHistogram.decode("").count == 0


def test_encode_decode_round_trip() -> None:
    values = [0.05 * i for i in range(1, 2001)]  # 0.05 .. 100 ms
    hist = LatencyHistogram.from_values_ms(values)
    blob = hist.encode()
    assert isinstance(blob, str) and blob.isascii()
    back = LatencyHistogram.decode(blob)
    assert back.count == hist.count
    for q in (50, 90, 99, 99.9):
        assert back.percentile_ms(q) == pytest.approx(hist.percentile_ms(q), rel=1e-3)
    assert back.mean_ms == pytest.approx(hist.mean_ms, rel=1e-3)
    assert back.max_ms == pytest.approx(hist.max_ms, rel=1e-3)


def test_decode_garbage_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="blob"):
        LatencyHistogram.decode("not a histoblob!")


def test_merge_adds_counts_and_clamped() -> None:
    a = LatencyHistogram.from_values_ms([1.0, 2.0, 0.0])
    b = LatencyHistogram.from_values_ms([3.0, 4.0])
    a.merge(b)
    assert a.count == 5 and a.clamped == 1
    assert a.max_ms == 4.0
    assert a.mean_ms == pytest.approx((1 + 2 + 0.001 + 3 + 4) / 5)
    c = LatencyHistogram.decode(b.encode())
    c.merge(LatencyHistogram.from_values_ms([10.0]))
    assert c.count == 3 and c.max_ms == pytest.approx(10.0, rel=1e-3)
