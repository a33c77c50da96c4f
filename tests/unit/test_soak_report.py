"""Soak figures from a recorder with known contents."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestra_kit.errors import ConfigError
from orchestra_kit.lab.soak import SoakRecorder
from orchestra_kit.lab.soak_report import summarise
from orchestra_kit.lab.soak_spec import SoakSpec, load_soak_spec


def test_availability_budget_and_rss_lives() -> None:
    rec = SoakRecorder()
    for i in range(1000):  # one request every 10 ms over 10 s
        t = i / 100
        down = 5.0 <= t < 5.5
        rec.record("read", 0 if down else (404 if i % 100 == 0 else 200),
                   "ClientConnectorError" if down else "", 0.0)
        rec.requests[-1] = (t, *rec.requests[-1][1:])
    rec.restarts.append({"killed_s": 5.0, "recovered_s": 5.5, "recovery_s": 0.5})
    rec.rss += [(1.0, 0, 50.0), (4.0, 0, 52.0), (6.0, 1, 49.0), (9.0, 1, 51.0)]
    s = summarise(SoakSpec(duration_s=10, restart_every_s=5), rec,
                  {"lost_hires_count": 0, "lost_tasks_count": 0, "stuck_tasks": 0})
    assert s["requests"] == 1000 and s["failed"] == 50
    assert s["availability"] == pytest.approx(0.95)
    assert s["answered_4xx"] == 9  # 404s are answers, not failures (one fell in the outage)
    assert s["budget_share_per_restart_mean"] == pytest.approx(50 / 1.0)
    assert [(r["first_mb"], r["last_mb"]) for r in s["rss_lives"]] == [(50, 52), (49, 51)]


def test_bad_spec_keys_are_named(tmp_path: Path) -> None:
    bad = tmp_path / "s.toml"
    bad.write_text('kind = "soak"\n[soak]\nduration = 3\n')
    with pytest.raises(ConfigError, match="duration"):
        load_soak_spec(bad)
    with pytest.raises(ConfigError, match="mix"):
        SoakSpec(mix={"explode": 1.0})


@pytest.mark.parametrize(("kwargs", "key"), [
    ({"settings": {"agents.no_such_knob": 1}}, "no_such_knob"),
    ({"settings": {"agents.max_retries": -1}}, "target.settings.agents.max_retries"),
    ({"provider": {"rate_429": 2.0}}, "provider.rate_429"),
    ({"provider": {"no_such_flag": 1}}, "provider"),
    ({"mix": {"read": "lots"}}, "mix.read"),
    ({"users": True}, "soak.users"),
    ({"users": 1001}, "soak.users"),
    ({"duration_s": -1}, "soak.duration_s"),
])
def test_soak_spec_checks_like_the_experiment_spec(kwargs: dict[str, object], key: str) -> None:
    """Settings, provider flags and numbers go through the shared checks, named by key."""
    with pytest.raises(ConfigError) as exc:
        SoakSpec(**kwargs)  # type: ignore[arg-type]
    assert key in exc.value.key, exc.value
