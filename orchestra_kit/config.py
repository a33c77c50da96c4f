"""Settings: one frozen dataclass per component, built once from layered sources.

Precedence (later wins): defaults < JSON file (the seed's ``performance config``
schema, or our own sectioned keys) < environment (``ORCHESTRA_`` + the seed's names)
< explicit overrides (CLI flags, ``--set key=value``, experiment specs).

Every key can be named as ``section.field`` (``database.batch_size``) or, where the
field name is unique, by the bare field (``batch_size``); the seed's names are aliases
(``max_db_connections``, ``max_concurrent_sessions``, ``cache_ttl`` ...). A bad value
raises :class:`~orchestra_kit.errors.ConfigError` naming key, value and what is allowed.
Components receive their own slice (``settings.database``); none reads the environment.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .config_chat import ChatSettings
from .errors import ConfigError

__all__ = [
    "AgentSettings",
    "ChatSettings",
    "DatabaseSettings",
    "OptimizationFlags",
    "SchedulerSettings",
    "ServerSettings",
    "Settings",
]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
EVENT_LOOPS = ("asyncio", "uvloop")
JSON_ENCODERS = ("stdlib", "orjson")
BACKENDS = ("simulated", "openai", "opencode")


def _check(cond: bool, key: str, value: Any, allowed: str) -> None:
    if not cond:
        raise ConfigError(key, value, allowed)


def _positive(obj: Any, section: str, *names: str) -> None:
    for n in names:
        v = getattr(obj, n)
        _check(v > 0, f"{section}.{n}", v, "must be > 0")


def _non_negative(obj: Any, section: str, *names: str) -> None:
    for n in names:
        v = getattr(obj, n)
        _check(v >= 0, f"{section}.{n}", v, "must be >= 0")


@dataclass(frozen=True, kw_only=True)
class OptimizationFlags:
    """The seed's five optimisations; each selects a real code path (DESIGN §3)."""

    enable_connection_pooling: bool = True
    enable_wal_mode: bool = True
    enable_batch_operations: bool = True
    enable_query_caching: bool = True
    enable_async_llm_processing: bool = True

    @classmethod
    def all_off(cls) -> OptimizationFlags:
        """Every optimisation off: the "before" configuration."""
        return cls(**{f.name: False for f in dataclasses.fields(cls)})


@dataclass(frozen=True, kw_only=True)
class DatabaseSettings:
    """The store: SQLite at ``path``, or PostgreSQL when ``url`` is set."""

    path: str = "orchestra.db"
    url: str = ""
    max_connections: int = 20
    batch_size: int = 100
    group_commit_window_ms: float = 1.0
    idle_checkpoint_commits: int = 20
    cache_ttl_seconds: float = 30.0
    cache_max_entries: int = 10_000
    busy_timeout_ms: int = 10_000
    lease_ttl_s: float = 3600.0
    heartbeat_interval_s: float = 2.0
    instance_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        _check(bool(self.path), "database.path", self.path, "must be a file path or ':memory:'")
        _check(not self.url or self.url.startswith(("postgresql://", "postgres://")),
               "database.url", self.url,
               "must be empty (SQLite at database.path) or a postgresql:// URL")
        _positive(self, "database", "heartbeat_interval_s")
        _check(self.instance_timeout_s > self.heartbeat_interval_s, "database.instance_timeout_s",
               self.instance_timeout_s, "must be > database.heartbeat_interval_s")
        _positive(self, "database", "max_connections", "batch_size", "cache_max_entries")
        _positive(self, "database", "lease_ttl_s", "busy_timeout_ms")
        _non_negative(self, "database", "group_commit_window_ms", "cache_ttl_seconds",
                      "idle_checkpoint_commits")
        _check(self.max_connections <= 256, "database.max_connections", self.max_connections,
               "must be <= 256")
        _check(self.batch_size <= 10_000, "database.batch_size", self.batch_size,
               "must be <= 10000")
        _check(self.idle_checkpoint_commits <= 1_000_000, "database.idle_checkpoint_commits",
               self.idle_checkpoint_commits, "must be <= 1000000")


@dataclass(frozen=True, kw_only=True)
class SchedulerSettings:
    """Task execution: limits, LLM rate limit, timeouts, retries."""

    max_concurrent_tasks: int = 50
    max_api_requests_per_minute: float = 100.0
    api_burst: int = 10
    task_timeout_s: float = 1800.0
    max_attempts: int = 3
    retry_backoff_s: float = 1.0
    retry_backoff_max_s: float = 30.0
    shutdown_grace_s: float = 10.0
    auto_hire: bool = False
    progress_files: bool = True
    progress_persist_interval_s: float = 0.5

    def __post_init__(self) -> None:
        _positive(self, "scheduler", "max_concurrent_tasks", "max_api_requests_per_minute")
        _positive(self, "scheduler", "api_burst", "task_timeout_s", "max_attempts")
        _non_negative(self, "scheduler", "retry_backoff_s", "retry_backoff_max_s",
                      "shutdown_grace_s", "progress_persist_interval_s")
        _check(self.max_concurrent_tasks <= 100_000, "scheduler.max_concurrent_tasks",
               self.max_concurrent_tasks, "must be <= 100000")


@dataclass(frozen=True, kw_only=True)
class AgentSettings:
    """Agent backends and the HTTP client pool they share."""

    backend: Literal["simulated", "openai", "opencode"] = "simulated"
    base_url: str = ""
    api_key: str = ""
    model_smart: str = "fake-smart"
    model_normal: str = "fake-model"
    opencode_bin: str = ""
    connection_pool_size: int = 20
    request_timeout: float = 30.0
    max_retries: int = 3
    retry_budget_ratio: float = 0.2
    sim_latency_ms: float = 50.0
    sim_jitter_ms: float = 10.0
    sim_failure_rate: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.backend in BACKENDS, "agents.backend", self.backend,
               f"must be one of {', '.join(BACKENDS)}")
        _positive(self, "agents", "connection_pool_size", "request_timeout")
        _non_negative(self, "agents", "max_retries", "sim_latency_ms", "sim_jitter_ms",
                      "retry_budget_ratio")
        _check(0.0 <= self.sim_failure_rate <= 1.0, "agents.sim_failure_rate",
               self.sim_failure_rate, "must be between 0 and 1")
        if self.base_url:
            _check(self.base_url.startswith(("http://", "https://")), "agents.base_url",
                   self.base_url, "must start with http:// or https://")
        _check(bool(self.model_smart) and bool(self.model_normal), "agents.model_smart",
               self.model_smart, "model names must not be empty")


@dataclass(frozen=True, kw_only=True)
class ServerSettings:
    """The HTTP API."""

    host: str = "127.0.0.1"
    port: int = 8080
    requests_per_minute: float = 1000.0
    rate_limit_burst: int = 100
    api_keys: tuple[str, ...] = ()
    max_body_bytes: int = 1_048_576
    gzip_min_bytes: int = 1024
    shutdown_timeout_s: float = 10.0
    # orchestra serve's own loop, and the encoder of every answer (process-wide); a
    # package missing at start is a ConfigError naming the key (server/loops, codec).
    event_loop: Literal["asyncio", "uvloop"] = "uvloop"
    json_encoder: Literal["stdlib", "orjson"] = "orjson"
    idle_timeout_s: float = 30.0
    body_timeout_s: float = 30.0
    max_connections: int = 10_000  # lowered at start to fit the open-file limit
    max_sse_subscribers_per_task: int = 100
    # The collector of the process that owns the loop (orchestra serve, the bench's
    # servers): young-generation threshold (0 keeps the interpreter's 700) and whether
    # the objects alive once the service has started are frozen out of collections
    # (server/loops.py; docs/benchmarks.md has the measurements).
    gc_young_threshold: int = 10_000
    gc_freeze: bool = True

    def __post_init__(self) -> None:
        for name, allowed in (("event_loop", EVENT_LOOPS), ("json_encoder", JSON_ENCODERS)):
            _check(getattr(self, name) in allowed, f"server.{name}", getattr(self, name),
                   f"must be one of {', '.join(allowed)}")
        _check(bool(self.host), "server.host", self.host, "must not be empty")
        _check(0 <= self.port <= 65535, "server.port", self.port, "must be 0-65535")
        _non_negative(self, "server", "requests_per_minute", "gzip_min_bytes",
                      "shutdown_timeout_s", "gc_young_threshold")
        _positive(self, "server", "rate_limit_burst", "max_body_bytes", "idle_timeout_s",
                  "body_timeout_s", "max_connections", "max_sse_subscribers_per_task")
        _check(self.max_connections <= 1_000_000, "server.max_connections",
               self.max_connections, "must be <= 1000000")
        for i, k in enumerate(self.api_keys):
            key, _ = split_api_key(k)
            _check(len(key) >= 8, f"server.api_keys[{i}]", "***", "must be at least 8 characters")

    def key_identities(self) -> tuple[tuple[str, str | None], ...]:
        """``(key, employee name or None)`` for every configured key (``KEY=NAME`` entries
        bind a key to one employee; a bare key is an operator key, not an identity)."""
        return tuple(split_api_key(k) for k in self.api_keys)


_KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def split_api_key(entry: str) -> tuple[str, str | None]:
    """``"KEY=NAME"`` -> ``(KEY, NAME)`` when NAME is a valid employee name, else the whole
    entry is a bare key (so base64 keys ending in ``=`` stay keys)."""
    key, sep, name = entry.rpartition("=")
    if sep and key and _KEY_NAME.match(name):
        return key, name
    return entry, None


_SECTIONS = ("database", "scheduler", "agents", "server", "flags", "chat")


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything configurable, one slice per component."""

    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    agents: AgentSettings = field(default_factory=AgentSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    flags: OptimizationFlags = field(default_factory=OptimizationFlags)
    chat: ChatSettings = field(default_factory=ChatSettings)
    project_root: str = "."
    workspace_dir: str = "sessions"
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        _check(self.log_level.upper() in LOG_LEVELS, "log_level", self.log_level,
               f"must be one of {', '.join(LOG_LEVELS)}")
        _check(bool(self.project_root), "project_root", self.project_root, "must not be empty")

    # ------------------------------------------------------------------ building

    @classmethod
    def load(
        cls,
        *,
        config_file: str | Path | None = None,
        environ: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> Settings:
        """Defaults < JSON file < environment < overrides, validated once."""
        s = cls()
        if config_file is not None:
            s = s.merge_json_file(config_file)
        s = s.merge_env(os.environ if environ is None else environ)
        return s.with_overrides(overrides or {})

    def merge_json_file(self, path: str | Path) -> Settings:
        """Apply a JSON config file (seed schema or sectioned keys)."""
        p = Path(path)
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError("config_file", str(p), "file does not exist") from None
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError("config_file", str(p), f"must be readable JSON ({e})") from None
        return self.merge_json(doc)

    def merge_json(self, doc: Any) -> Settings:
        """Apply a parsed JSON document: ``{section: {key: value}}`` or flat keys."""
        if not isinstance(doc, dict):
            raise ConfigError("config_file", type(doc).__name__, "must be a JSON object")
        flat: dict[str, Any] = {}
        for key, value in doc.items():
            if isinstance(value, dict):
                for sub, v in value.items():
                    flat[f"{key}.{sub}"] = v
            else:
                flat[key] = value
        return self.with_overrides(flat, strict_types=True)

    def merge_env(self, environ: Mapping[str, str]) -> Settings:
        """Apply ``ORCHESTRA_*`` variables (the seed's names, or any field name)."""
        flat = {
            k[len("ORCHESTRA_"):].lower().replace("__", "."): v
            for k, v in environ.items()
            if k.startswith("ORCHESTRA_") and v != "" and k not in CLIENT_ENV
        }
        return self.with_overrides(flat, source="ORCHESTRA_")

    def with_overrides(
        self, overrides: Mapping[str, Any], *, strict_types: bool = False, source: str = ""
    ) -> Settings:
        """A copy with ``{key: value}`` applied; strings are parsed to the field's type."""
        by_section: dict[str, dict[str, Any]] = {}
        top: dict[str, Any] = {}
        for raw_key, value in overrides.items():
            label = f"{source}{raw_key.upper().replace('.', '__')}" if source else raw_key
            section, name = resolve_key(raw_key, label=label)
            hint = field_type(section, name)
            coerced = coerce(label, value, hint, strict=strict_types)
            if section:
                by_section.setdefault(section, {})[name] = coerced
            else:
                top[name] = coerced
        changes: dict[str, Any] = dict(top)
        for section, values in by_section.items():
            changes[section] = dataclasses.replace(getattr(self, section), **values)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with API keys masked (for manifests and /status)."""
        d = dataclasses.asdict(self)
        d["server"]["api_keys"] = ["***"] * len(self.server.api_keys)
        if d["agents"]["api_key"]:
            d["agents"]["api_key"] = "***"
        for secret in ("slack_signing_secret", "slack_bot_token", "slack_app_token"):
            if d["chat"][secret]:
                d["chat"][secret] = "***"
        return d

    def flat(self) -> dict[str, Any]:
        """``{"section.field": value}`` for every knob (for tables and widgets)."""
        out: dict[str, Any] = {}
        for k, v in self.to_dict().items():
            if isinstance(v, dict):
                out.update({f"{k}.{sub}": sv for sub, sv in v.items()})
            else:
                out[k] = v
        return out


# ---------------------------------------------------------------------- key resolution

_SECTION_CLASSES: dict[str, type] = {
    "database": DatabaseSettings,
    "scheduler": SchedulerSettings,
    "agents": AgentSettings,
    "server": ServerSettings,
    "flags": OptimizationFlags,
    "chat": ChatSettings,
}

#: The CLI verbs' variables (the server's URL and the key to call it): never settings, so
#: a user's orchestra key is not taken for the LLM provider's key, and ``orchestra serve``
#: runs in a shell where the CLI is configured. The provider's key is ORCHESTRA_LLM_API_KEY.
CLIENT_ENV = frozenset({"ORCHESTRA_URL", "ORCHESTRA_API_KEY"})

# The seed's names (JSON sections and environment variables) -> our keys.
ALIASES: dict[str, str] = {
    "database.max_connections": "database.max_connections",
    "database.enable_wal_mode": "flags.enable_wal_mode",
    "database.cache_ttl": "database.cache_ttl_seconds",
    "database.batch_size": "database.batch_size",
    "async_processing.max_concurrent_sessions": "scheduler.max_concurrent_tasks",
    "async_processing.rate_limit_requests_per_minute": "scheduler.max_api_requests_per_minute",
    "async_processing.connection_pool_size": "agents.connection_pool_size",
    "async_processing.request_timeout": "agents.request_timeout",
    "optimization_flags.enable_connection_pooling": "flags.enable_connection_pooling",
    "optimization_flags.enable_batch_operations": "flags.enable_batch_operations",
    "optimization_flags.enable_query_caching": "flags.enable_query_caching",
    "optimization_flags.enable_async_llm_processing": "flags.enable_async_llm_processing",
    "optimization_flags.enable_wal_mode": "flags.enable_wal_mode",
    "max_db_connections": "database.max_connections",
    "max_concurrent_sessions": "scheduler.max_concurrent_tasks",
    "db_path": "database.path",
    "database_url": "database.url",
    "cache_ttl": "database.cache_ttl_seconds",
    "http_requests_per_minute": "server.requests_per_minute",
    "agent_backend": "agents.backend",
    "api_keys": "server.api_keys",
    "llm_api_key": "agents.api_key",
    # the bare name meant the database's before server.max_connections existed; it still does
    "max_connections": "database.max_connections",
    "chat_enabled": "chat.enabled",
}


def _unique_fields() -> dict[str, str]:
    seen: dict[str, list[str]] = {}
    for section, cls in _SECTION_CLASSES.items():
        for f in dataclasses.fields(cls):
            seen.setdefault(f.name, []).append(section)
    return {name: secs[0] for name, secs in seen.items() if len(secs) == 1}


_UNIQUE = _unique_fields()
_TOP_LEVEL = {"project_root", "workspace_dir", "log_level"}


def all_keys() -> list[str]:
    """Every canonical ``section.field`` key plus the top-level ones."""
    keys = [f"{s}.{f.name}" for s, c in _SECTION_CLASSES.items() for f in dataclasses.fields(c)]
    return keys + sorted(_TOP_LEVEL)


def resolve_key(key: str, *, label: str | None = None) -> tuple[str, str]:
    """``(section, field)`` for a dotted, bare or alias key; ConfigError when unknown."""
    k = key.strip().lower()
    k = ALIASES.get(k, k)
    if k in _TOP_LEVEL:
        return "", k
    if "." in k:
        section, _, name = k.partition(".")
        cls = _SECTION_CLASSES.get(section)
        if cls is not None and name in {f.name for f in dataclasses.fields(cls)}:
            return section, name
    elif k in _UNIQUE:
        return _UNIQUE[k], k
    raise ConfigError(label or key, key, "unknown setting; see docs/configuration.md for the keys")


def field_type(section: str, name: str) -> Any:
    """The resolved type hint of a settings field."""
    cls = _SECTION_CLASSES[section] if section else Settings
    return typing.get_type_hints(cls)[name]


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def coerce(key: str, value: Any, hint: Any, *, strict: bool = False) -> Any:
    """``value`` converted to ``hint``; strings are parsed, JSON types checked when strict."""
    origin = typing.get_origin(hint)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and not strict and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ConfigError(key, value, "must be a boolean (true/false)")
    if hint is int or hint is float:
        if isinstance(value, bool):
            raise ConfigError(key, value, f"must be a number ({hint.__name__}), not a boolean")
        if isinstance(value, int | float) and (hint is float or float(value).is_integer()):
            return hint(value)
        if isinstance(value, str) and not strict:
            try:
                return hint(value.strip())
            except ValueError:
                pass
        raise ConfigError(key, value, f"must be {'an integer' if hint is int else 'a number'}")
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value in allowed:
            return value
        raise ConfigError(key, value, f"must be one of {', '.join(map(str, allowed))}")
    if origin is tuple:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ConfigError(key, value, "must be a list of strings or a comma-separated string")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(key, value, "must be a string")
    raise ConfigError(key, value, f"unsupported type {hint!r}")  # pragma: no cover


# Sections whose keys are documented as ORCHESTRA_SECTION__FIELD even where the bare
# field name would do (ORCHESTRA_CHAT__ENABLED says more than ORCHESTRA_ENABLED).
_PREFIXED_IN_DOCS = frozenset({"chat"})


def reference_markdown() -> str:
    """The configuration reference table (docs/configuration.md is generated from it)."""
    env_names: dict[str, list[str]] = {}
    for k, v in ALIASES.items():
        if "." not in k:
            env_names.setdefault(v, []).append(k)
    rows = ["| key | default | environment | seed JSON |", "|---|---|---|---|"]
    defaults = Settings().flat()
    seed_json = {v: k for k, v in ALIASES.items() if "." in k and not k.startswith(v)}
    for key in all_keys():
        section, _, name = key.rpartition(".")
        unique = _UNIQUE.get(name) == section and section not in _PREFIXED_IN_DOCS
        bare = name if unique or not section else key.replace(".", "__")
        env = f"`ORCHESTRA_{bare.upper()}`"
        if env.strip("`") in CLIENT_ENV:  # the CLI's variable, not a setting
            env = f"`ORCHESTRA_{key.replace('.', '__').upper()}`"
        for alias in env_names.get(key, ()):
            env += f", `ORCHESTRA_{alias.upper()}`"
        seed = f"`{seed_json[key]}`" if key in seed_json else ""
        rows.append(f"| `{key}` | `{defaults.get(key)!r}` | {env} | {seed} |")
    return "\n".join(rows) + "\n"
