"""Settings: layered sources, the seed's names, validation that names key and value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestra_kit.config import OptimizationFlags, Settings, reference_markdown
from orchestra_kit.errors import ConfigError

SEED_JSON = {
    "database": {"max_connections": 7, "enable_wal_mode": False, "batch_size": 50, "cache_ttl": 9},
    "async_processing": {
        "max_concurrent_sessions": 11,
        "rate_limit_requests_per_minute": 300,
        "connection_pool_size": 5,
        "request_timeout": 12,
    },
    "optimization_flags": {
        "enable_connection_pooling": False,
        "enable_batch_operations": True,
        "enable_query_caching": False,
        "enable_async_llm_processing": True,
    },
}


def test_defaults_are_all_on() -> None:
    s = Settings()
    assert s.flags == OptimizationFlags()
    assert all(vars(s.flags).values())
    assert not any(vars(OptimizationFlags.all_off()).values())


def test_seed_json_schema_accepted_as_is(tmp_path: Path) -> None:
    path = tmp_path / "performance.json"
    path.write_text(json.dumps(SEED_JSON))
    s = Settings.load(config_file=path, environ={})
    assert s.database.max_connections == 7
    assert s.database.batch_size == 50
    assert s.database.cache_ttl_seconds == 9
    assert s.flags.enable_wal_mode is False
    assert s.scheduler.max_concurrent_tasks == 11
    assert s.scheduler.max_api_requests_per_minute == 300
    assert s.agents.connection_pool_size == 5
    assert s.agents.request_timeout == 12
    assert s.flags.enable_connection_pooling is False
    assert s.flags.enable_query_caching is False


def test_precedence_defaults_file_env_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"database": {"batch_size": 50, "max_connections": 3}}))
    env = {"ORCHESTRA_BATCH_SIZE": "60", "ORCHESTRA_PORT": "9000"}
    s = Settings.load(config_file=path, environ=env, overrides={"port": 9100})
    assert s.database.max_connections == 3  # file
    assert s.database.batch_size == 60  # env beats file
    assert s.server.port == 9100  # override beats env


@pytest.mark.parametrize(
    ("env", "attr", "value"),
    [
        ({"ORCHESTRA_HOST": "127.0.0.2"}, ("server", "host"), "127.0.0.2"),
        ({"ORCHESTRA_MAX_CONCURRENT_TASKS": "8"}, ("scheduler", "max_concurrent_tasks"), 8),
        ({"ORCHESTRA_MAX_DB_CONNECTIONS": "4"}, ("database", "max_connections"), 4),
        ({"ORCHESTRA_CACHE_TTL_SECONDS": "2.5"}, ("database", "cache_ttl_seconds"), 2.5),
        ({"ORCHESTRA_ENABLE_WAL_MODE": "false"}, ("flags", "enable_wal_mode"), False),
        ({"ORCHESTRA_MAX_API_REQUESTS_PER_MINUTE": "60"},
         ("scheduler", "max_api_requests_per_minute"), 60.0),
        ({"ORCHESTRA_REQUEST_TIMEOUT": "5"}, ("agents", "request_timeout"), 5.0),
        ({"ORCHESTRA_CONNECTION_POOL_SIZE": "3"}, ("agents", "connection_pool_size"), 3),
        ({"ORCHESTRA_LOG_LEVEL": "DEBUG"}, ("log_level",), "DEBUG"),
        ({"ORCHESTRA_DATABASE__PATH": "x.db"}, ("database", "path"), "x.db"),
        ({"ORCHESTRA_API_KEYS": "secret-key-1,secret-key-2"}, ("server", "api_keys"),
         ("secret-key-1", "secret-key-2")),
    ],
)
def test_seed_environment_names(env: dict[str, str], attr: tuple[str, ...], value: object) -> None:
    s = Settings.load(environ=env)
    obj: object = s
    for a in attr:
        obj = getattr(obj, a)
    assert obj == value


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"ORCHESTRA_BATCH_SIZE": "lots"}, "ORCHESTRA_BATCH_SIZE='lots': must be an integer"),
        ({"ORCHESTRA_BATCH_SIZE": "0"}, "batch_size=0: must be > 0"),
        ({"ORCHESTRA_ENABLE_WAL_MODE": "maybe"}, "must be a boolean"),
        ({"ORCHESTRA_PORT": "70000"}, "port=70000: must be 0-65535"),
        ({"ORCHESTRA_LOG_LEVEL": "LOUD"}, "log_level='LOUD'"),
        ({"ORCHESTRA_NO_SUCH_THING": "1"}, "ORCHESTRA_NO_SUCH_THING"),
        ({"ORCHESTRA_AGENT_BACKEND": "gpt"}, "must be one of simulated, openai, opencode"),
    ],
)
def test_bad_values_name_key_and_value(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.load(environ=env)
    assert needle in str(info.value)


def test_json_types_are_strict() -> None:
    with pytest.raises(ConfigError, match="not a boolean"):
        Settings().merge_json({"database": {"batch_size": True}})
    with pytest.raises(ConfigError, match="must be a boolean"):
        Settings().merge_json({"optimization_flags": {"enable_query_caching": 1}})
    with pytest.raises(ConfigError, match="must be a JSON object"):
        Settings().merge_json([1, 2])


def test_bad_json_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        Settings.load(config_file=tmp_path / "missing.json", environ={})
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(ConfigError, match="readable JSON"):
        Settings.load(config_file=bad, environ={})


def test_api_keys_masked_in_dict() -> None:
    s = Settings().with_overrides({"api_keys": "a-long-secret,another-secret"})
    d = s.to_dict()
    assert d["server"]["api_keys"] == ["***", "***"]
    assert "a-long-secret" not in json.dumps(d)


def test_docs_reference_is_current() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    assert reference_markdown() in doc, "regenerate docs/configuration.md (see its Reference)"


@given(st.integers(min_value=1, max_value=10_000))
def test_batch_size_roundtrips_from_string(n: int) -> None:
    assert Settings().with_overrides({"batch_size": str(n)}).database.batch_size == n


@given(st.text(max_size=20).filter(lambda t: t.strip().lower() not in
                                    {"1", "0", "true", "false", "yes", "no", "on", "off"}))
def test_bool_parser_rejects_everything_else(text: str) -> None:
    with pytest.raises(ConfigError):
        Settings().with_overrides({"enable_wal_mode": text})
