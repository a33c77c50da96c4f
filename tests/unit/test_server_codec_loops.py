"""The opt-in speed-ups: the JSON encoder and the event loop, validated settings."""

from __future__ import annotations

import asyncio
import gc
import json

import pytest

from orchestra_kit.config import Settings
from orchestra_kit.errors import ConfigError
from orchestra_kit.metrics import RouteStats
from orchestra_kit.server import codec
from orchestra_kit.server.loops import freeze_startup_objects, loop_factory, run, tune_gc

DOC = {"name": "zoë", "n": 3, "x": 1.5, "items": [1, None, True], "nested": {"k": "v"}}


@pytest.mark.parametrize("name", ["stdlib", "orjson"])
def test_encoders_write_the_same_compact_utf8_json(name: str) -> None:
    try:
        codec.use(name)
        out = codec.encode(DOC)
    finally:
        codec.use("stdlib")
    assert json.loads(out) == DOC
    assert "zoë".encode() in out and b": " not in out and b", " not in out


def test_unknown_encoder_and_loop_are_config_errors_naming_the_key() -> None:
    with pytest.raises(ConfigError, match="server.json_encoder"):
        codec.use("ujson")
    with pytest.raises(ConfigError, match="server.event_loop"):
        loop_factory("trio")
    with pytest.raises(ConfigError, match="ORCHESTRA_EVENT_LOOP"):
        Settings.load(environ={"ORCHESTRA_EVENT_LOOP": "tokio"})
    with pytest.raises(ConfigError, match="server.json_encoder"):
        Settings.load(environ={}, overrides={"server.json_encoder": "simplejson"})


def test_settings_accept_both_choices() -> None:
    s = Settings.load(environ={"ORCHESTRA_EVENT_LOOP": "uvloop",
                               "ORCHESTRA_JSON_ENCODER": "orjson"})
    assert (s.server.event_loop, s.server.json_encoder) == ("uvloop", "orjson")


@pytest.mark.parametrize("name", ["asyncio", "uvloop"])
def test_run_uses_the_loop_named(name: str) -> None:
    async def loop_type() -> str:
        return type(asyncio.get_running_loop()).__module__

    module = run(loop_type(), name)
    assert module.startswith("uvloop") == (name == "uvloop")


def test_deferred_latency_recording_keeps_percentiles_and_counts() -> None:
    stats = RouteStats(2)
    values = [100 + i for i in range(1000)] + [50_000] * 10  # µs
    for v in values:
        stats.record(200, v)
    assert stats.count == 1010 and stats.max_us == 50_000
    p = stats.percentiles_us()
    assert abs(p[50.0] - 605) <= 605 * 0.02  # within the histogram's own 1 %
    assert p[99.9] == 50_000 and stats.hist.get_total_count() == 1010


def test_gc_tuning_sets_the_young_threshold_and_freezes() -> None:
    before = gc.get_threshold()
    try:
        tune_gc(0)
        assert gc.get_threshold() == before  # 0: unchanged
        tune_gc(12_345)
        assert gc.get_threshold() == (12_345, *before[1:])
        freeze_startup_objects()
        assert gc.get_freeze_count() > 0
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def test_gc_settings_are_validated_and_default_on() -> None:
    s = Settings.load(environ={})
    assert s.server.gc_young_threshold == 10_000 and s.server.gc_freeze
    with pytest.raises(ConfigError, match="server.gc_young_threshold"):
        Settings.load(environ={}, overrides={"server.gc_young_threshold": -1})
