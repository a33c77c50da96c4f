"""The tuning panel's knobs: which Settings keys, their groups, labels, tooltips and levels.

Each knob has a readable label and a tooltip naming its Settings key, the key's default
and, where the panel starts elsewhere (:data:`LAB_DEFAULTS`), the panel's start value.
:func:`parse_levels` turns the load-levels text into numbers and says which rule a bad
one breaks (users are whole numbers; rates are numbers; both are > 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import ipywidgets as w

from ..config import Settings
from ..errors import ConfigError

__all__ = ["KNOBS", "KNOB_GROUPS", "LAB_DEFAULTS", "SETTINGS_KNOBS", "Knob", "knob_widget", "parse_levels"]


@dataclass(frozen=True, slots=True)
class Knob:
    """One Settings key shown in the panel: its key, group and readable label."""

    key: str
    group: str
    label: str
    note: str = ""


#: Knobs in display order, grouped (Load holds the HTTP rate limit the clients meet).
KNOBS: tuple[Knob, ...] = (
    Knob("database.max_connections", "Database", "Reader connections"),
    Knob("database.batch_size", "Database", "Batch size (rows/commit)"),
    Knob("database.cache_ttl_seconds", "Database", "Cache TTL (s)"),
    Knob("scheduler.max_concurrent_tasks", "Scheduler", "Concurrent tasks"),
    Knob("scheduler.max_api_requests_per_minute", "Scheduler", "LLM calls per minute"),
    Knob("agents.connection_pool_size", "Agents", "HTTP pool size"),
    Knob("agents.sim_latency_ms", "Agents", "Simulated latency (ms)"),
    Knob("flags.enable_connection_pooling", "Flags", "Connection pooling"),
    Knob("flags.enable_wal_mode", "Flags", "WAL mode"),
    Knob("flags.enable_batch_operations", "Flags", "Batch operations"),
    Knob("flags.enable_query_caching", "Flags", "Query caching"),
    Knob("flags.enable_async_llm_processing", "Flags", "Async LLM processing"),
    Knob("server.requests_per_minute", "Load", "Server limit (req/min)", "0 = no limit"),
)

#: The Settings keys the panel exposes, in display order.
SETTINGS_KNOBS: tuple[str, ...] = tuple(k.key for k in KNOBS)

#: Group names in display order.
KNOB_GROUPS: tuple[str, ...] = ("Database", "Scheduler", "Agents", "Flags", "Load")

#: Lab starting values: the seed's 100 LLM calls/min and 1000 HTTP req/min per client
#: would make the rate limiters the only thing a load test measures.
LAB_DEFAULTS: dict[str, Any] = {
    "scheduler.max_api_requests_per_minute": 1_000_000.0,
    "scheduler.api_burst": 1000,
    "scheduler.progress_files": False,
    "server.requests_per_minute": 0.0,
}

_STYLE = {"description_width": "170px"}


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{value:,}" if isinstance(value, int) else str(value)


def tooltip(key: str, note: str = "") -> str:
    """``"database.batch_size — default 100"`` (plus the panel's start value if it differs)."""
    default = Settings().flat()[key]
    text = f"{key} — default {_fmt(default)}"
    if key in LAB_DEFAULTS and LAB_DEFAULTS[key] != default:
        text += f"; the panel starts at {_fmt(LAB_DEFAULTS[key])} (LAB_DEFAULTS)"
    return f"{text} ({note})" if note else text


def knob_widget(knob: Knob, value: Any) -> w.Widget:
    """A Checkbox / IntText / FloatText labelled for people, with the key in its tooltip."""
    common: dict[str, Any] = {"description": knob.label, "tooltip": tooltip(knob.key, knob.note)}
    if isinstance(value, bool):
        widget: w.Widget = w.Checkbox(value=value, indent=False, layout=w.Layout(width="230px"),
                                      style={"description_width": "initial"}, **common)
    elif isinstance(value, int):
        widget = w.IntText(value=value, style=_STYLE, layout=w.Layout(width="300px"), **common)
    else:
        widget = w.FloatText(value=float(value), style=_STYLE, layout=w.Layout(width="300px"),
                             **common)
    widget.add_class(f"orchestra-knob-{knob.key.replace('.', '-')}")
    return widget


def parse_levels(text: str, model: str) -> list[int] | list[float]:
    """``"1, 4, 16"`` -> [1, 4, 16]: users (closed loop) are whole numbers, rates numbers."""
    key = "load.users" if model == "closed" else "load.rate_rps"
    unit = "users" if model == "closed" else "req/s"
    parts = [p.strip() for p in str(text).replace(";", ",").split(",") if p.strip()]
    if not parts:
        raise ConfigError(key, text, f"give at least one load level in {unit}, e.g. '2, 8, 32'")
    values: list[float] = []
    for part in parts:
        try:
            number = float(part)
        except ValueError:
            raise ConfigError(key, text, f"{part!r} is not a number; levels are {unit}, "
                                         "comma-separated, e.g. '2, 8, 32'") from None
        if not math.isfinite(number) or number <= 0:
            raise ConfigError(key, text, f"levels must be greater than 0 ({part!r} is not)")
        if model == "closed" and not number.is_integer():
            raise ConfigError(key, text, f"levels must be whole numbers of users ({part!r} is "
                                         "not), e.g. '2, 8, 32'")
        values.append(number)
    if model == "closed":
        return [int(v) for v in values]
    return values
