"""The target section: database and instances, validated before anything runs."""

from __future__ import annotations

from typing import Any

import pytest

from orchestra_kit.errors import ConfigError
from orchestra_kit.lab.pgpoint import point_database_url, redact_url
from orchestra_kit.lab.spec import parse_spec


def doc(**extra: Any) -> dict[str, Any]:
    return {"name": "t", "load": {"model": "closed", "duration_s": 1.0}, **extra}


@pytest.mark.parametrize(
    ("change", "key", "words"),
    [
        ({"target": {"database": "mysql"}}, "target.database", "'sqlite' or 'postgresql'"),
        ({"target": {"instances": 2}}, "target.instances", "needs target.database"),
        ({"target": {"database": "postgresql", "instances": 0}}, "target.instances", ">= 1"),
        ({"target": {"database": "postgresql", "instances": True}}, "target.instances",
         "integer"),
        ({"target": {"kind": "inprocess", "database": "postgresql"}}, "target.database",
         "kind = 'process'"),
        ({"target": {"database_url": "mysql://x"}}, "target.database_url", "postgresql://"),
        ({"target": {"settings": {"database.url": "postgresql://x/y"}}},
         "target.settings.database.url", "target.database"),
        ({"sweep": {"target.instances": [1, 2]}},
         "point 1 (target.instances=2): target.instances", "needs target.database"),
        ({"sweep": {"target.colour": [1]}}, "sweep.target.colour", "database, instances"),
        ({"variants": {"v": {"target.kind": "url"}}, "sweep": {"variant": ["v"]}},
         "variants.v.target.kind", "target.database and target.instances only"),
        ({"x": "target.instances"}, "x", "sweep keys"),
    ],
)
def test_bad_targets_fail_naming_the_key(change: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_spec(doc(**change))
    assert info.value.key == key
    assert words in str(info.value)


def test_variants_set_the_database_and_the_x_axis_is_instances() -> None:
    spec = parse_spec(doc(
        x="target.instances",
        variants={"lite": {"target.database": "sqlite", "batch_size": 50},
                  "pg3": {"target.database": "postgresql", "target.instances": 3}},
        sweep={"variant": ["lite", "pg3"]}))
    lite, pg3 = spec.points()
    assert (lite.database, lite.instances, lite.load_value) == ("sqlite", 1, 1.0)
    assert (pg3.database, pg3.instances, pg3.load_value) == ("postgresql", 3, 3.0)
    assert lite.settings_overrides == {"batch_size": 50}  # target keys are not settings
    assert spec.scale_out and not parse_spec(doc()).scale_out


def test_point_urls_get_a_fresh_schema_and_keep_their_parameters() -> None:
    a = point_database_url("postgresql://u:pw@h:5/db?sslmode=disable&search_path=x", 2, 1)
    b = point_database_url("postgresql://u:pw@h:5/db?sslmode=disable", 2, 1)
    assert "sslmode=disable" in a and "search_path=lab_p2_r1_" in a and "search_path=x" not in a
    assert a != b  # never the same schema twice
    assert redact_url(a).startswith("postgresql://u:***@h:5/db?")
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"
