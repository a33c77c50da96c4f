"""Request metrics of the HTTP API: counters and per-route HDR latency histograms.

:class:`Metrics` is owned by one application (never global). The middleware calls
:meth:`Metrics.observe` once per request; ``/performance`` renders
:meth:`Metrics.performance_document` and ``/metrics`` renders
:meth:`Metrics.prometheus_text` through a private ``CollectorRegistry``. Gauges that
belong to other components (queue depth, running tasks, pool use, cache hit ratio)
are pulled at scrape time and passed in, so nothing here polls.

Success means 2xx only (the original counted every answered request as a success).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from hdrh.histogram import HdrHistogram
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["HIGHEST_US", "LOWEST_US", "Metrics", "RouteStats"]

LOWEST_US = 1
HIGHEST_US = 60_000_000  # one minute; longer requests are clamped to it, never dropped
SIGNIFICANT_DIGITS = 3  # the overall histogram
ROUTE_SIGNIFICANT_DIGITS = 2  # per route: 1 % buckets keep scrapes cheap with many routes
PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)
_KEPT_BITS = 11  # latency rounding before the histogram: < 0.1 % (histograms: 1 % / 0.1 %)
_MAX_PENDING = 4096
_MAX_OBSERVED = 1024  # answers appended by Metrics.observe before they are counted


class RouteStats:
    """Latency histogram and status counts of one ``METHOD /route``.

    Recording is on every request's path, and ``HdrHistogram.record_value`` is pure
    Python (~2 µs; py-spy showed it twice per request). So a request only bumps a count
    in a dict keyed by its latency rounded to 11 significant bits (finer than the
    histograms' own buckets, so no precision is lost), and the counts go into the
    histogram — one ``record_value(value, count)`` per distinct value — when it is read
    or the dict grows large.
    """

    __slots__ = ("_hist", "_pending", "by_class", "clamped", "count", "max_us", "sum_us")

    def __init__(self, significant_digits: int = SIGNIFICANT_DIGITS) -> None:
        self._hist = HdrHistogram(LOWEST_US, HIGHEST_US, significant_digits)
        self.count = 0
        self.sum_us = 0
        self.max_us = 0
        self.clamped = 0
        self.by_class = [0, 0, 0, 0, 0, 0]  # index = status // 100
        self._pending: dict[int, int] = {}

    def record(self, status: int, latency_us: int) -> None:
        """Count one answer; out-of-range latencies are clamped and counted."""
        if latency_us < LOWEST_US:
            latency_us = LOWEST_US
        elif latency_us > HIGHEST_US:
            latency_us = HIGHEST_US
            self.clamped += 1
        shift = latency_us.bit_length() - _KEPT_BITS
        key = (latency_us >> shift) << shift if shift > 0 else latency_us
        pending = self._pending
        pending[key] = pending.get(key, 0) + 1
        if len(pending) > _MAX_PENDING:
            self.flush()
        self.count += 1
        self.sum_us += latency_us
        self.max_us = max(self.max_us, latency_us)
        cls = status // 100
        self.by_class[cls if 0 <= cls <= 5 else 0] += 1

    def record_all(self, answers: list[tuple[int, float]]) -> None:
        """:meth:`record` for each ``(status, latency_s)``, in one loop (no call per
        answer: this is where every request's latency ends up)."""
        pending = self._pending
        by_class = self.by_class
        total_us = 0
        most = self.max_us
        clamped = 0
        for status, latency_s in answers:
            us = int(latency_s * 1_000_000) if latency_s < 1e9 else HIGHEST_US + 1
            if us < LOWEST_US:
                us = LOWEST_US
            elif us > HIGHEST_US:
                us = HIGHEST_US
                clamped += 1
            shift = us.bit_length() - _KEPT_BITS
            key = (us >> shift) << shift if shift > 0 else us
            pending[key] = pending.get(key, 0) + 1
            total_us += us
            most = max(most, us)
            cls = status // 100
            by_class[cls if 0 <= cls <= 5 else 0] += 1
        self.count += len(answers)
        self.sum_us += total_us
        self.max_us = most
        self.clamped += clamped
        if len(pending) > _MAX_PENDING:
            self.flush()

    def flush(self) -> None:
        """Move the pending counts into the histogram."""
        pending, self._pending = self._pending, {}
        for value, n in pending.items():
            self._hist.record_value(value, n)

    @property
    def hist(self) -> HdrHistogram:
        """The histogram, with every recorded latency in it."""
        self.flush()
        return self._hist

    def percentiles_us(self) -> dict[float, int]:
        """``{percentile: µs}`` in one pass over the histogram, capped at the exact maximum."""
        found = self.hist.get_percentile_to_value_dict(list(PERCENTILES))
        return {p: min(int(found.get(p, 0)), self.max_us) for p in PERCENTILES}

    def percentiles_ms(self) -> dict[str, float]:
        """p50..p99.9 in ms (never above the exact maximum), plus mean and max."""
        if not self.count:
            return {"p50": 0.0, "p90": 0.0, "p95": 0.0, "p99": 0.0, "p99_9": 0.0,
                    "mean": 0.0, "max": 0.0}
        values = self.percentiles_us()
        out = {_pct_key(p): values[p] / 1000.0 for p in PERCENTILES}
        out["mean"] = self.sum_us / self.count / 1000.0
        out["max"] = self.max_us / 1000.0
        return out


def _pct_key(p: float) -> str:
    return "p" + (str(int(p)) if float(p).is_integer() else str(p).replace(".", "_"))


class Metrics:
    """Counters and per-route latency histograms of one HTTP application."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.started_at = clock()
        self._routes: dict[str, RouteStats] = {}
        self._total = RouteStats()
        #: Answers observed but not yet counted: ``(route, status, latency_s)``.
        self._observed: list[tuple[str, int, float]] = []
        #: Answers so far, their latencies summed (s), and per status class (index
        #: ``status // 100``): what /health and the counters report.
        self.answered = 0
        self.answered_s = 0.0
        self.answered_by_class = [0, 0, 0, 0, 0, 0]
        self.in_flight = 0
        self._scrape_gauges: Mapping[str, float] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))

    # ------------------------------------------------------------------ recording

    def observe(self, route: str, status: int, latency_s: float) -> None:
        """Record one answered request of ``route`` (``"GET /employees/{name}"``).

        On every request's path, so it only appends: the answers are counted (two
        :meth:`RouteStats.record` each) when anything reads the counts, or every
        :data:`_MAX_OBSERVED` answers."""
        observed = self._observed
        observed.append((route, status, latency_s))
        if len(observed) >= _MAX_OBSERVED:
            self._count_observed()
        # The counters /health reports on every call, kept current (no flush there).
        self.answered += 1
        self.answered_s += latency_s
        cls = status // 100
        self.answered_by_class[cls if 0 <= cls <= 5 else 0] += 1

    def _count_observed(self) -> None:
        observed, self._observed = self._observed, []
        by_route: dict[str, list[tuple[int, float]]] = {}
        for route, status, latency_s in observed:
            answers = by_route.get(route)
            if answers is None:
                answers = by_route[route] = []
            answers.append((status, latency_s))
        routes = self._routes
        for route, answers in by_route.items():
            stats = routes.get(route)
            if stats is None:
                stats = routes[route] = RouteStats(ROUTE_SIGNIFICANT_DIGITS)
            stats.record_all(answers)
        self._total.record_all([(status, lat) for _, status, lat in observed])

    @property
    def routes(self) -> dict[str, RouteStats]:
        """Per-route stats (``"GET /employees/{name}"``), every observed answer counted."""
        if self._observed:
            self._count_observed()
        return self._routes

    @property
    def total(self) -> RouteStats:
        """All routes together, every observed answer counted."""
        if self._observed:
            self._count_observed()
        return self._total

    # ------------------------------------------------------------------ reading

    def uptime_s(self) -> float:
        """Seconds since the metrics were created (the application start)."""
        return self._clock() - self.started_at

    def counters(self) -> dict[str, Any]:
        """The original's request counters, success meaning 2xx only."""
        total = self.answered
        by_class = self.answered_by_class
        errors = by_class[4] + by_class[5]
        return {
            "requests_total": total,
            "requests_success": by_class[2],
            "requests_error": errors,
            "requests_4xx": by_class[4],
            "requests_5xx": by_class[5],
            "error_rate": errors / total if total else 0.0,
            "avg_response_time_ms": (self.answered_s / total * 1000.0) if total else 0.0,
        }

    def server_metrics(self) -> dict[str, Any]:
        """Counters plus overall and per-route latency percentiles."""
        out = self.counters()
        out["response_time_ms"] = self.total.percentiles_ms()
        out["routes"] = {
            route: {"count": s.count, "2xx": s.by_class[2], "4xx": s.by_class[4],
                    "5xx": s.by_class[5], "latency_ms": s.percentiles_ms()}
            for route, s in sorted(self.routes.items())
        }
        out["latency_clamped"] = self.total.clamped
        out["in_flight"] = self.in_flight
        return out

    def performance_document(
        self,
        *,
        database: Mapping[str, Any],
        optimization: Mapping[str, Any],
        session: Mapping[str, Any],
        active_tasks: int = 0,
    ) -> dict[str, Any]:
        """The seed's ``/performance`` document, with histogram percentiles for raw lists."""
        server = self.server_metrics()
        server["active_tasks"] = active_tasks
        return {
            "server_metrics": server,
            "uptime_seconds": round(self.uptime_s(), 3),
            "database_metrics": dict(database),
            "optimization_status": dict(optimization),
            "session_metrics": dict(session),
        }

    def prometheus_text(self, gauges: Mapping[str, float] | None = None) -> bytes:
        """Prometheus exposition text; ``gauges`` are other components' values right now."""
        self._scrape_gauges = gauges or {}
        try:
            return generate_latest(self.registry)
        finally:
            self._scrape_gauges = {}

    def collect(self) -> Iterator[Metric]:
        """Metric families for the private registry (called by prometheus_client)."""
        requests = CounterMetricFamily(
            "orchestra_http_requests", "HTTP requests answered", labels=["route", "status_class"]
        )
        latency = GaugeMetricFamily(
            "orchestra_http_latency_seconds", "HTTP latency percentiles from an HDR histogram",
            labels=["route", "quantile"],
        )
        for route, s in sorted(self.routes.items()):
            for cls in (2, 3, 4, 5):
                if s.by_class[cls]:
                    requests.add_metric([route, f"{cls}xx"], s.by_class[cls])
            if s.count:
                for p, value_us in s.percentiles_us().items():
                    latency.add_metric([route, str(p / 100.0)], value_us / 1e6)
        yield requests
        yield latency
        yield GaugeMetricFamily("orchestra_http_in_flight", "Requests being handled",
                                value=self.in_flight)
        yield GaugeMetricFamily("orchestra_uptime_seconds", "Seconds since start",
                                value=self.uptime_s())
        for name, value in sorted(self._scrape_gauges.items()):
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if math.isfinite(value):
                yield GaugeMetricFamily(f"orchestra_{_metric_name(name)}", name, value=value)


def _metric_name(key: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in key).strip("_").lower()


class _Collector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self._metrics.collect()
