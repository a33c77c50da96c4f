"""Experiment specs: every shipped spec is valid; a bad one fails before anything runs,
naming the key."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from orchestra_kit.errors import ConfigError
from orchestra_kit.lab.cli import parse_set
from orchestra_kit.lab.soak_spec import load_soak_spec
from orchestra_kit.lab.spec import load_spec, parse_spec

EXPERIMENTS = Path(__file__).parents[2] / "experiments"


def base() -> dict[str, Any]:
    return {"name": "t", "load": {"model": "closed", "duration_s": 1.0},
            "workload": {"kind": "hire"}, "sweep": {"load.users": [1, 2]}}


@pytest.mark.parametrize("path", sorted(EXPERIMENTS.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_specs_are_valid(path: Path) -> None:
    if tomllib.loads(path.read_text()).get("kind") == "soak":
        soak = load_soak_spec(path)
        assert soak.name == path.stem and soak.duration_s > soak.restart_every_s > 0
        return
    spec = load_spec(path)
    assert spec.points() and spec.name == path.stem


def test_grid_is_the_cartesian_product_and_variants_apply() -> None:
    spec = load_spec(EXPERIMENTS / "seed_table.toml")
    points = spec.points()
    assert len(points) == 7  # 1 user level x 7 variants
    off = next(p for p in points if p.params["variant"] == "all_off")
    assert off.settings_overrides["flags.enable_wal_mode"] is False
    assert off.settings_overrides["agents.sim_latency_ms"] == 50.0  # target settings kept


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"bogus": 1}, "bogus"),
        ({"load": {"model": "closed", "users": 0}}, "load.users"),
        ({"load": {"model": "sideways"}}, "load.model"),
        ({"load": {"duration_s": 99999.0}}, "load.duration_s"),
        ({"load": {"model": "open", "rate_rps": -5.0}}, "load.rate_rps"),
        ({"workload": {"kind": "dance"}}, "workload.kind"),
        ({"workload": {"kind": "hire", "team_size": "big"}}, "workload.team_size"),
        ({"target": {"settings": {"database.batch_size": 0}}}, "database.batch_size"),
        ({"target": {"settings": {"no.such": 1}}}, "no.such"),
        ({"sweep": {"load.users": []}}, "sweep.load.users"),
        ({"sweep": {"colour": [1]}}, "sweep.colour"),
        ({"sweep": {"settings.batch_size": [10, -1]}}, "batch_size"),
        ({"sweep": {"variant": ["missing"]}}, "sweep.variant[0]"),
        ({"x": "load.rate_rps"}, "x"),
        ({"slo": {"p99_ms": -1.0}}, "p99_ms"),
        ({"repeats": 0}, "repeats"),
    ],
)
def test_bad_specs_name_the_key(change: dict[str, Any], key: str) -> None:
    doc = base() | change
    with pytest.raises(ConfigError) as info:
        parse_spec(doc)
    assert key in str(info.value)


def test_set_overrides_parse_toml_values_and_refuse_nonsense() -> None:
    sets = parse_set(["load.duration_s=0.5", "sweep.load.users=[1,4]", "workload.kind=health"])
    assert sets == {"load.duration_s": 0.5, "sweep.load.users": [1, 4], "workload.kind": "health"}
    spec = load_spec(EXPERIMENTS / "concurrency_sweep.toml", sets)
    assert [p.params["load.users"] for p in spec.points()] == [1, 4]
    assert spec.load.duration_s == 0.5
    with pytest.raises(ConfigError, match="key=value"):
        parse_set(["no-equals-sign"])
    with pytest.raises(ConfigError, match="load.users"):
        load_spec(EXPERIMENTS / "concurrency_sweep.toml", {"load.users": 0})


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_spec(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [unclosed")
    with pytest.raises(ConfigError, match="valid TOML"):
        load_spec(bad)


def test_target_defaults_to_a_process_and_generator_is_validated() -> None:
    spec = parse_spec(base())
    assert spec.target.kind == "process" and spec.generator.count() == 1
    assert spec.generator.client_for(spec.workload) == "raw"
    wait = parse_spec({**base(), "workload": {"kind": "assign_wait"}})
    assert wait.generator.client_for(wait.workload) == "aiohttp"  # SSE needs aiohttp
    auto = parse_spec({**base(), "generator": {"processes": "auto"}})
    assert auto.generator.count() >= 1
    for bad in (0, "many", True):
        with pytest.raises(ConfigError, match="generator.processes"):
            parse_spec({**base(), "generator": {"processes": bad}})


def test_an_open_loop_cut_short_by_max_requests_is_refused() -> None:
    doc = {**base(), "load": {"model": "open", "rate_rps": 100.0, "duration_s": 10.0,
                              "max_requests": 500}, "sweep": {}}
    with pytest.raises(ConfigError, match=r"load.max_requests.*rate_rps × duration_s = 1,000"):
        parse_spec(doc)
    doc["load"]["max_requests"] = 1000
    assert parse_spec(doc).load.connections() == 10_000  # the open loop's max_inflight


def test_the_client_never_caps_a_closed_loop_below_its_users() -> None:
    spec = parse_spec({**base(), "sweep": {"load.users": [300]}})
    assert spec.points()[0].load.connections() == 300


def test_the_generator_engine_and_scheduler_address_are_validated() -> None:
    assert parse_spec(base()).generator.engine == "local"
    dask = parse_spec({**base(), "generator": {"engine": "dask",
                                               "scheduler_address": "tcp://10.0.0.5:8786"}})
    assert dask.generator.engine == "dask"
    assert dask.generator.scheduler_address == "tcp://10.0.0.5:8786"
    with pytest.raises(ConfigError, match="generator.engine.*'local' or 'dask'"):
        parse_spec({**base(), "generator": {"engine": "ray"}})
    with pytest.raises(ConfigError, match="generator.scheduler_address.*needs generator.engine"):
        parse_spec({**base(), "generator": {"scheduler_address": "tcp://h:8786"}})
    for bad in ("h:8786", "tcp://", 8786):
        with pytest.raises(ConfigError, match="generator.scheduler_address"):
            parse_spec({**base(), "generator": {"engine": "dask", "scheduler_address": bad}})
