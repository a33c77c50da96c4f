"""The target and generator sections of an experiment spec (see :mod:`.spec`).

``[target]`` says where the load goes and, for ``kind = "process"``, which database the
service runs on: ``database = "sqlite"`` (its own file, one instance) or
``"postgresql"`` with ``instances = N`` (``orchestra serve --workers N`` on one shared
database: the run starts one throwaway PostgreSQL for all its points, or uses
``database_url``; every (point, repeat) gets a fresh schema). ``[generator]`` says how
the load is generated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..config import Settings
from ..errors import ConfigError

if TYPE_CHECKING:
    from .spec import WorkloadSpec

__all__ = ["DATABASES", "TARGET_KEYS", "TARGET_KINDS", "GeneratorSpec", "TargetSpec",
           "check_target_shape"]

TARGET_KINDS = ("process", "inprocess", "url")
DATABASES = ("sqlite", "postgresql")
#: The target fields a sweep or a variant may set (``target.database = "postgresql"``).
TARGET_KEYS = ("database", "instances")
MAX_INSTANCES = 16


def _fail(key: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(key, value, allowed)


def _typed(key: str, value: Any, kind: type, *, minimum: float | None = None) -> Any:
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        ok, value = True, float(value)
    if not ok:
        raise _fail(key, value, f"must be {'an integer' if kind is int else kind.__name__}")
    if minimum is not None and value < minimum:
        raise _fail(key, value, f"must be >= {minimum:g}")
    return value


def check_target_shape(kind: str, database: Any, instances: Any, *, key: str = "target") -> None:
    """ConfigError unless ``database`` and ``instances`` fit together and with ``kind``;
    ``key`` prefixes the keys named (``variants.pg2.target``, ``sweep.target``)."""
    if database not in DATABASES:
        raise _fail(f"{key}.database", database, "must be 'sqlite' or 'postgresql'")
    _typed(f"{key}.instances", instances, int, minimum=1)
    if instances > MAX_INSTANCES:
        raise _fail(f"{key}.instances", instances, f"must be <= {MAX_INSTANCES}")
    if instances > 1 and database != "postgresql":
        raise _fail(f"{key}.instances", instances,
                    "more than 1 needs target.database = 'postgresql' (a SQLite database"
                    " belongs to one process)")
    if (database != "sqlite" or instances > 1) and kind != "process":
        raise _fail(f"{key}.database", database,
                    f"PostgreSQL and several instances need target.kind = 'process', not {kind!r}")


@dataclass(frozen=True, kw_only=True)
class TargetSpec:
    """Where the load goes: ``process`` (a fresh ``orchestra serve`` child per point and
    repeat, the default), ``inprocess`` (the service in the generator's own process and
    event loop: for debugging, its points are marked) or ``url`` (an external service).

    ``database`` / ``instances`` (process targets): SQLite (one instance), or PostgreSQL
    with ``instances`` service processes on one port; ``database_url``: an existing
    PostgreSQL to use (a fresh schema per point) instead of a throwaway cluster."""

    kind: str = "process"
    url: str = ""
    api_key: str = ""
    start_timeout_s: float = 30.0
    database: str = "sqlite"
    instances: int = 1
    database_url: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in TARGET_KINDS:
            raise _fail("target.kind", self.kind, "must be 'process', 'inprocess' or 'url'")
        _typed("target.start_timeout_s", self.start_timeout_s, float, minimum=1)
        if self.kind == "url" and not self.url.startswith(("http://", "https://")):
            raise _fail("target.url", self.url, "must be an http(s) URL when target.kind = 'url'")
        check_target_shape(self.kind, self.database, self.instances)
        if not isinstance(self.database_url, str) or (
                self.database_url and not self.database_url.startswith(("postgresql://",
                                                                        "postgres://"))):
            raise _fail("target.database_url", self.database_url,
                        "must be empty (a throwaway cluster) or a postgresql:// URL")
        for key in ("database.url", "database.path"):
            if key in self.settings:
                raise _fail(f"target.settings.{key}", self.settings[key],
                            "is set by the target for each point: use target.database"
                            " (and target.database_url)")
        Settings().with_overrides(self.settings)  # validates every key and value now


@dataclass(frozen=True, kw_only=True)
class GeneratorSpec:
    """How the load is generated: ``processes`` = N worker processes or ``"auto"``
    (the cores this process may use, minus one for the service); ``engine`` runs them
    as local ``spawn`` processes (``"local"``) or on dask.distributed (``"dask"``: on
    ``scheduler_address``, or a ``LocalCluster`` of N processes when it is empty)."""

    processes: int | str = 1
    client: str = "auto"
    engine: str = "local"
    scheduler_address: str = ""

    def __post_init__(self) -> None:
        if self.client not in ("auto", "aiohttp", "raw"):
            raise _fail("generator.client", self.client, "must be 'auto', 'aiohttp' or 'raw'")
        if self.engine not in ("local", "dask"):
            raise _fail("generator.engine", self.engine, "must be 'local' or 'dask'")
        addr = self.scheduler_address
        if not isinstance(addr, str):
            raise _fail("generator.scheduler_address", addr, "must be a string")
        if addr and self.engine != "dask":
            raise _fail("generator.scheduler_address", addr, "needs generator.engine = 'dask'")
        if addr and (not addr.startswith(("tcp://", "tls://")) or ":" not in addr[6:]):
            raise _fail("generator.scheduler_address", addr,
                        "must be a dask scheduler address like 'tcp://HOST:8786'")
        p = self.processes
        if p != "auto" and (not isinstance(p, int) or isinstance(p, bool) or not 1 <= p <= 64):
            raise _fail("generator.processes", p, "must be an integer 1..64 or \"auto\"")

    def count(self) -> int:
        """The number of worker processes this spec asks for on this machine."""
        from .workers import auto_processes

        return auto_processes() if self.processes == "auto" else int(self.processes)

    def client_for(self, workload: WorkloadSpec) -> str:
        """``auto``: the lean raw client unless the workload follows tasks by SSE."""
        if self.client != "auto":
            return self.client
        sse = workload.kind == "assign_wait" or workload.mix.get("assign_wait", 0) > 0
        return "aiohttp" if sse else "raw"
