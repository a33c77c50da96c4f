"""The soak experiment's spec (``experiments/soak.toml``): duration, restarts, load, faults.

A soak runs the service as its own process (``orchestra serve``) against the fake
provider (``orchestra fake-llm``) with fault rates on, drives a mixed workload, and
SIGKILLs and restarts the service on a fixed period. See :mod:`orchestra_kit.lab.soak`.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import ConfigError
from .provider import ProviderSpec
from .spec_target import _typed as typed

__all__ = ["MIX_OPS", "SoakSpec", "load_soak_spec"]

#: The workload's operations (weights in ``[mix]``).
MIX_OPS = ("hire", "assign", "read", "lease")


@dataclass(frozen=True, kw_only=True)
class SoakSpec:
    """One soak run."""

    name: str = "soak"
    description: str = ""
    seed: int = 1
    duration_s: float = 600.0
    restart_every_s: float = 120.0
    users: int = 8
    think_ms: float = 50.0
    request_timeout_s: float = 10.0
    settle_s: float = 60.0
    rss_every_s: float = 1.0
    max_requests: int = 2_000_000
    mix: dict[str, float] = field(default_factory=lambda: {
        "hire": 1.0, "assign": 2.0, "read": 5.0, "lease": 2.0})
    provider: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # The experiment spec's checks, reused: numbers as in lab.spec, the provider as
        # a fake-llm config, the settings as Settings overrides (each key and value).
        for key in ("duration_s", "restart_every_s", "think_ms", "request_timeout_s",
                    "settle_s", "rss_every_s"):
            typed(f"soak.{key}", getattr(self, key), float, minimum=0)
        typed("soak.seed", self.seed, int)
        typed("soak.max_requests", self.max_requests, int, minimum=1)
        if typed("soak.users", self.users, int, minimum=1) > 1000:
            raise ConfigError("soak.users", self.users, "must be an integer 1-1000")
        unknown = set(self.mix) - set(MIX_OPS)
        if unknown:
            raise ConfigError("mix", sorted(unknown), f"operations are {', '.join(MIX_OPS)}")
        for op, weight in self.mix.items():
            typed(f"mix.{op}", weight, float, minimum=0)
        if not any(w > 0 for w in self.mix.values()):
            raise ConfigError("mix", self.mix, "at least one weight must be > 0")
        try:
            ProviderSpec(kind="fake", config=self.provider)
        except ConfigError as e:  # named as in the soak's TOML: [provider] KEY
            raise ConfigError(e.key.replace("provider.config", "provider"), e.value,
                              e.allowed) from None
        try:
            Settings().with_overrides(self.settings)
        except ConfigError as e:
            raise ConfigError(f"target.settings.{e.key}", e.value, e.allowed) from None

    def replace(self, **changes: Any) -> SoakSpec:
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)


_SOAK_KEYS = {f.name for f in dataclasses.fields(SoakSpec)} - {"mix", "provider", "settings"}


def load_soak_spec(path: str | Path, overrides: dict[str, Any] | None = None) -> SoakSpec:
    """The spec in ``path``: ``[soak]`` keys, ``[mix]``, ``[provider]`` (``orchestra
    fake-llm`` flags) and ``[target.settings]``; ``overrides`` as ``soak.KEY=value``."""
    try:
        doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError("spec", str(path), f"must be a readable TOML file ({exc})") from None
    soak = dict(doc.get("soak", {}))
    for key, value in (overrides or {}).items():
        section, _, name = key.partition(".")
        if section != "soak" or not name:
            raise ConfigError(key, value, "overrides are soak.KEY=value")
        soak[name] = value
    unknown = set(soak) - _SOAK_KEYS
    if unknown:
        raise ConfigError("soak", sorted(unknown), f"known keys: {', '.join(sorted(_SOAK_KEYS))}")
    return SoakSpec(**soak, mix=dict(doc.get("mix", SoakSpec().mix)),
                    provider=dict(doc.get("provider", {})),
                    settings=dict(doc.get("target", {}).get("settings", {})))
