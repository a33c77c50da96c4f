"""A lossless, mergeable latency histogram: a thin wrapper over HdrHistogram.

Values are recorded in milliseconds and stored as integer microseconds between
1 µs and 1 hour with 3 significant digits. Unlike ``HdrHistogram.record_value``,
which silently returns ``False`` for an out-of-range value, :meth:`record_ms` clamps
the value to the bounds and counts it in :attr:`LatencyHistogram.clamped`.

The exact maximum and sum of recorded values are kept next to the HDR counts, so
``max_ms`` and ``mean_ms`` are exact and a percentile never exceeds the maximum
(HDR reports the top of a bucket, up to 0.1 % above the recorded value). After
:meth:`LatencyHistogram.decode` only the HDR counts are known, so both fall back to
the HDR estimates and ``clamped`` restarts at 0 (a histoblob does not carry it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from hdrh.histogram import HdrHistogram

from orchestra_kit.errors import ValidationError

__all__ = ["LatencyHistogram"]

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # one hour
SIGNIFICANT_DIGITS = 3


class LatencyHistogram:
    """Latencies in ms, recorded as integer µs (1 µs .. 1 h, 3 significant digits)."""

    __slots__ = ("_hdr", "_max_us", "_sum_us", "clamped")

    def __init__(self) -> None:
        self._hdr = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
        self._max_us: int | None = 0  # None once only HDR estimates are known
        self._sum_us: int | None = 0
        self.clamped = 0

    @classmethod
    def from_values_ms(cls, values_ms: Iterable[float]) -> LatencyHistogram:
        """A histogram holding every value of ``values_ms``."""
        hist = cls()
        for value in values_ms:
            hist.record_ms(value)
        return hist

    def record_ms(self, value_ms: float) -> None:
        """Record one latency; out-of-range values are clamped and counted, never dropped."""
        if math.isnan(value_ms):
            raise ValidationError("value_ms", "a latency cannot be NaN", value=value_ms)
        scaled_us = value_ms * 1000.0
        if scaled_us > HIGHEST_US:  # also +inf, which round() would reject
            value_us = HIGHEST_US
            self.clamped += 1
        else:
            value_us = round(scaled_us)
            if value_us < LOWEST_US:
                value_us = LOWEST_US
                self.clamped += 1
        if not self._hdr.record_value(value_us):  # cannot happen after clamping; be loud
            raise ValidationError("value_ms", "HdrHistogram refused the value", value=value_ms)
        if self._max_us is not None and self._sum_us is not None:
            self._max_us = max(self._max_us, value_us)
            self._sum_us += value_us

    @property
    def count(self) -> int:
        """How many values were recorded."""
        return int(self._hdr.get_total_count())

    @property
    def max_ms(self) -> float:
        """The largest recorded value (NaN when empty)."""
        if self.count == 0:
            return math.nan
        if self._max_us is not None:
            return self._max_us / 1000.0
        return float(self._hdr.get_max_value()) / 1000.0

    @property
    def mean_ms(self) -> float:
        """The mean of recorded values (NaN when empty)."""
        if self.count == 0:
            return math.nan
        if self._sum_us is not None:
            return self._sum_us / self.count / 1000.0
        return float(self._hdr.get_mean_value()) / 1000.0

    def percentile_ms(self, q: float) -> float:
        """The value at percentile ``q`` (in percent, 0..100); NaN when empty."""
        return self.percentiles_ms([q])[q]

    def percentiles_ms(self, qs: Sequence[float]) -> dict[float, float]:
        """Several percentiles in one pass over the counts: ``{q: value_ms}``."""
        for q in qs:
            if not 0.0 <= q <= 100.0 or math.isnan(q):
                raise ValidationError("q", "a percentile must be within 0..100", value=q)
        if self.count == 0:
            return {q: math.nan for q in qs}
        values = self._hdr.get_percentile_to_value_dict(list(qs))
        top_ms = self.max_ms
        return {q: min(values[q] / 1000.0, top_ms) for q in qs}

    def encode(self) -> str:
        """The base64 "histoblob" (lossless, mergeable; fits a CSV or JSON cell)."""
        blob = self._hdr.encode()
        return blob.decode("ascii") if isinstance(blob, bytes) else str(blob)

    @classmethod
    def decode(cls, blob: str) -> LatencyHistogram:
        """A histogram from a histoblob made by :meth:`encode`."""
        if not blob:
            return cls()
        try:
            hdr = HdrHistogram.decode(blob.encode("ascii"))
        except Exception as exc:  # hdrh raises assorted errors on garbage input
            raise ValidationError("blob", f"not a histoblob ({type(exc).__name__})") from exc
        hist = cls()
        hist._hdr = hdr
        hist._max_us = None
        hist._sum_us = None
        return hist

    def merge(self, other: LatencyHistogram) -> None:
        """Add every count of ``other`` into this histogram."""
        self._hdr.add(other._hdr)
        self.clamped += other.clamped
        if (
            self._max_us is None
            or self._sum_us is None
            or other._max_us is None
            or other._sum_us is None
        ):
            self._max_us = None
            self._sum_us = None
        else:
            self._max_us = max(self._max_us, other._max_us)
            self._sum_us += other._sum_us

    def __repr__(self) -> str:
        return f"LatencyHistogram(count={self.count}, max_ms={self.max_ms}, clamped={self.clamped})"
