"""Metrics: counters (success = 2xx only), HDR percentiles, clamping, Prometheus text."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from orchestra_kit.metrics import HIGHEST_US, Metrics, RouteStats


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_success_is_2xx_only() -> None:
    m = Metrics()
    for status in (200, 201, 202, 404, 409, 429, 500):
        m.observe("POST /x", status, 0.001)
    c = m.counters()
    assert c["requests_total"] == 7
    assert c["requests_success"] == 3
    assert c["requests_error"] == 4 and c["requests_5xx"] == 1
    assert abs(c["error_rate"] - 4 / 7) < 1e-9


def test_percentiles_from_histogram() -> None:
    m = Metrics()
    for i in range(1, 1001):
        m.observe("GET /a", 200, i / 1_000_000 * 1000)  # 1..1000 ms
    p = m.server_metrics()["routes"]["GET /a"]["latency_ms"]
    assert 495 <= p["p50"] <= 505
    assert 985 <= p["p99"] <= 1000
    assert p["max"] == 1000.0 and p["p99_9"] <= p["max"]


def test_out_of_range_latency_is_clamped_not_dropped() -> None:
    m = Metrics()
    m.observe("GET /slow", 200, 3600.0)  # an hour: beyond the histogram
    m.observe("GET /slow", 200, 0.0)  # below 1 µs
    stats = m.routes["GET /slow"]
    assert stats.count == 2 and stats.clamped == 1
    assert stats.max_us == HIGHEST_US
    assert stats.hist.get_total_count() == 2


@given(st.lists(st.integers(min_value=-5, max_value=HIGHEST_US * 3), min_size=1, max_size=50))
def test_every_value_is_counted(values: list[int]) -> None:
    stats = RouteStats()
    for v in values:
        stats.record(200, v)
    assert stats.count == len(values) == stats.hist.get_total_count()
    assert stats.clamped == sum(1 for v in values if v > HIGHEST_US)


def test_uptime_uses_the_clock() -> None:
    clock = FakeClock()
    m = Metrics(clock=clock)
    clock.now += 12.5
    assert m.uptime_s() == 12.5
    doc = m.performance_document(database={"a": 1}, optimization={"f": True},
                                 session={"queued_tasks": 0}, active_tasks=2)
    assert doc["uptime_seconds"] == 12.5 and doc["server_metrics"]["active_tasks"] == 2
    assert doc["database_metrics"] == {"a": 1} and doc["optimization_status"] == {"f": True}


def test_prometheus_text_private_registry() -> None:
    a, b = Metrics(), Metrics()
    a.observe("GET /health", 200, 0.002)
    text = a.prometheus_text({"scheduler_queued": 3, "flag": True, "nan": float("nan")}).decode()
    assert 'orchestra_http_requests_total{route="GET /health",status_class="2xx"} 1.0' in text
    assert "orchestra_scheduler_queued 3.0" in text
    assert "orchestra_flag" not in text and "orchestra_nan" not in text
    assert 'quantile="0.99"' in text
    assert "GET /health" not in b.prometheus_text().decode()  # registries are not shared


@given(st.lists(st.tuples(st.sampled_from(["GET /a", "POST /b"]),
                          st.sampled_from([200, 201, 404, 500, 499]),
                          st.floats(0.0, 5.0)), max_size=2500))
def test_observed_answers_are_all_counted_when_read(obs: list[tuple[str, int, float]]) -> None:
    """observe() only appends (counted in batches): every read sees every answer."""
    m = Metrics()
    for route, status, latency in obs:
        m.observe(route, status, latency)
    assert m.total.count == m.answered == len(obs)
    assert sum(s.count for s in m.routes.values()) == len(obs)
    for route in {r for r, _, _ in obs}:
        assert m.routes[route].count == sum(1 for r, _, _ in obs if r == route)
    assert m.total.by_class == m.answered_by_class
    assert m.counters()["requests_error"] == sum(1 for _, s, _ in obs if s >= 400)


@given(st.lists(st.tuples(st.sampled_from([200, 404, 500, 99, 600]),
                          st.one_of(st.floats(0.0, 100.0), st.just(1e-9), st.just(3600.0))),
                max_size=300))
def test_record_all_is_record_for_each(answers: list[tuple[int, float]]) -> None:
    one, many = RouteStats(2), RouteStats(2)
    for status, latency_s in answers:
        us = int(latency_s * 1_000_000) if latency_s < 1e9 else HIGHEST_US + 1
        one.record(status, us)
    many.record_all(answers)
    assert (one.count, one.sum_us, one.max_us, one.clamped, one.by_class) == \
        (many.count, many.sum_us, many.max_us, many.clamped, many.by_class)
    if answers:
        assert one.percentiles_us() == many.percentiles_us()
