"""Experiment specs: ``experiments/NAME.toml`` parsed and validated before anything runs.

A spec names a target (an in-process service with Settings overrides, or a URL), a
workload, a load model, a sweep grid, repeats, SLOs and a seed. Every key is checked:
an unknown or bad one raises :class:`~orchestra_kit.errors.ConfigError` naming it
(``sweep."load.users"[2]: must be an integer >= 1``).

Sweep keys are ``load.<field>`` (users, think_time_s, rate_rps, arrival, burstiness,
duration_s, max_requests), ``workload.<field>``, ``target.database`` /
``target.instances``, or ``settings.<key>`` for any Settings key
(``settings.flags.enable_wal_mode``, ``settings.batch_size``). The grid is the
cartesian product of the lists; ``variant = [...]`` picks ``[variants.NAME]`` tables of
settings overrides (which may also set ``"target.database"`` and ``"target.instances"``).
``x`` names the key plotted on the x-axis: a sweep key, or ``target.instances`` /
``target.database`` when the variants set them.
"""

from __future__ import annotations

import dataclasses
import itertools
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import ConfigError
from .loadgen import ClosedLoop, LoadModel, OpenLoop
from .provider import ProviderSpec
from .results import Slo
from .spec_target import TARGET_KEYS, GeneratorSpec, TargetSpec, _fail, _typed, check_target_shape

__all__ = ["ExperimentSpec", "GeneratorSpec", "LoadSpec", "SweepPoint", "TargetSpec", "WorkloadSpec", "load_spec",
           "parse_spec"]

WORKLOAD_KINDS = ("hire", "batch_hire", "assign_wait", "assign", "lease_contention", "read_mix",
                  "health", "mix", "chat")
_TOP_KEYS = {"name", "description", "seed", "repeats", "x", "target", "generator", "workload",
             "load", "sweep", "slo", "variants", "provider"}


@dataclass(frozen=True, kw_only=True)
class WorkloadSpec:
    """What each request does (see :mod:`orchestra_kit.lab.workloads`)."""

    kind: str = "hire"
    team_size: int = 20
    batch_size: int = 100
    paths: int = 4
    wait_timeout_s: float = 30.0
    mix: dict[str, float] = field(default_factory=dict)
    #: the task text of assign workloads; {i} = request index, {seed} = the point's seed
    description: str = "load task {i}"
    #: a glob (e.g. "task-*.txt"): count the files the agents wrote in their workspaces
    expect_files: str = ""

    def __post_init__(self) -> None:
        if self.kind not in WORKLOAD_KINDS:
            raise _fail("workload.kind", self.kind, f"must be one of {', '.join(WORKLOAD_KINDS)}")
        _typed("workload.team_size", self.team_size, int, minimum=1)
        _typed("workload.batch_size", self.batch_size, int, minimum=1)
        _typed("workload.paths", self.paths, int, minimum=1)
        _typed("workload.wait_timeout_s", self.wait_timeout_s, float, minimum=0.1)
        for name, weight in self.mix.items():
            if name not in WORKLOAD_KINDS or name == "mix":
                raise _fail(f"workload.mix.{name}", weight, "unknown workload in the mix")
            _typed(f"workload.mix.{name}", weight, float, minimum=0)
        if self.kind == "mix" and not any(w > 0 for w in self.mix.values()):
            raise _fail("workload.mix", self.mix, "needs at least one positive weight")
        try:
            text = self.description.format(i=0, seed=0)
        except (KeyError, IndexError, ValueError, AttributeError):
            raise _fail("workload.description", self.description,
                        "a task text whose only {fields} are {i} and {seed}") from None
        if not text.strip():
            raise _fail("workload.description", self.description, "must not be empty")
        if not isinstance(self.expect_files, str) or "/" in self.expect_files:
            raise _fail("workload.expect_files", self.expect_files, "a file-name glob, no '/'")


@dataclass(frozen=True, kw_only=True)
class LoadSpec:
    """The load model plus its bounds."""

    model: str = "closed"
    users: int = 8
    think_time_s: float = 0.0
    think_jitter_s: float = 0.0
    rate_rps: float = 100.0
    arrival: str = "poisson"
    burstiness: float = 1.0
    ramp_s: float = 0.0
    duration_s: float = 5.0
    max_requests: int = 100_000
    max_inflight: int = 10_000
    grace_s: float = 10.0  # how long requests in flight at the end may finish

    def __post_init__(self) -> None:
        if self.model not in ("closed", "open"):
            raise _fail("load.model", self.model, "must be 'closed' or 'open'")
        _typed("load.duration_s", self.duration_s, float, minimum=0.1)
        if self.duration_s > 3600:
            raise _fail("load.duration_s", self.duration_s, "must be <= 3600 (runs are bounded)")
        _typed("load.max_requests", self.max_requests, int, minimum=1)
        _typed("load.grace_s", self.grace_s, float, minimum=0)
        if self.grace_s > 3600:
            raise _fail("load.grace_s", self.grace_s, "must be <= 3600 (runs are bounded)")
        self.to_model()  # validates the model's own fields
        expected = self.rate_rps * self.duration_s
        if self.model == "open" and expected > self.max_requests:
            # An open loop's length is its schedule; cutting it would silently shorten the run.
            raise _fail("load.max_requests", self.max_requests,
                        f"must be >= rate_rps × duration_s = {expected:,.0f} (the schedule "
                        "would be cut short); raise it or shorten load.duration_s")

    def connections(self) -> int:
        """The client's connection limit: never below what the load may keep in flight."""
        return self.users if self.model == "closed" else self.max_inflight

    def to_model(self) -> LoadModel:
        """The loadgen model this spec describes."""
        try:
            if self.model == "closed":
                return ClosedLoop(users=self.users, think_time_s=self.think_time_s,
                                  think_jitter_s=self.think_jitter_s, ramp_s=self.ramp_s)
            return OpenLoop(rate_rps=self.rate_rps, arrival=self.arrival,  # type: ignore[arg-type]
                            burstiness=self.burstiness, ramp_s=self.ramp_s,
                            max_inflight=self.max_inflight)
        except ConfigError as e:
            raise _fail(f"load.{e.key}", e.value, e.allowed) from None


@dataclass(frozen=True, kw_only=True)
class SweepPoint:
    """One cell of the grid: its parameters and the resolved pieces."""

    index: int
    params: dict[str, Any]
    load_value: float
    settings_overrides: dict[str, Any]
    load: LoadSpec
    workload: WorkloadSpec
    database: str = "sqlite"
    instances: int = 1


@dataclass(frozen=True, kw_only=True)
class ExperimentSpec:
    """A whole experiment, validated."""

    name: str
    description: str = ""
    seed: int = 0
    repeats: int = 1
    x: str = ""
    target: TargetSpec = field(default_factory=TargetSpec)
    generator: GeneratorSpec = field(default_factory=GeneratorSpec)
    workload: WorkloadSpec = field(default_factory=WorkloadSpec)
    load: LoadSpec = field(default_factory=LoadSpec)
    sweep: dict[str, list[Any]] = field(default_factory=dict)
    slo: Slo = field(default_factory=Slo)
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    provider: ProviderSpec = field(default_factory=ProviderSpec)
    source: str = ""

    def points(self) -> list[SweepPoint]:
        """The grid, in order (the first sweep key varies slowest)."""
        keys = list(self.sweep)
        combos = itertools.product(*(self.sweep[k] for k in keys)) if keys else [()]
        return [self._point(i, dict(zip(keys, values))) for i, values in enumerate(combos)]

    def _point(self, index: int, params: dict[str, Any]) -> SweepPoint:
        load_kw: dict[str, Any] = {}
        work_kw: dict[str, Any] = {}
        settings = dict(self.target.settings)
        target: dict[str, Any] = {"database": self.target.database,
                                  "instances": self.target.instances}
        for key, value in params.items():
            section, _, rest = key.partition(".")
            if section in ("load", "workload", "target"):
                {"load": load_kw, "workload": work_kw, "target": target}[section][rest] = value
            elif key == "variant":
                for k, v in self.variants[value].items():
                    if k.startswith("target."):
                        target[k.removeprefix("target.")] = v
                    else:
                        settings[k] = v
            else:
                settings[rest] = value
        load = dataclasses.replace(self.load, **load_kw)
        workload = dataclasses.replace(self.workload, **work_kw)
        x_value = params.get(self.x, target.get(self.x.removeprefix("target."), _default_x(load)))
        return SweepPoint(index=index, params=params, load_value=_as_float(x_value),
                          settings_overrides=settings, load=load, workload=workload,
                          database=target["database"], instances=target["instances"])

    @property
    def scale_out(self) -> bool:
        """Whether a point runs on PostgreSQL or with several instances (its results then
        carry ``database`` and ``instances`` columns)."""
        return any(p.database != "sqlite" or p.instances != 1 for p in self.points())

    def with_overrides(self, sets: Mapping[str, Any]) -> ExperimentSpec:
        """A copy with ``--set key=value`` pairs applied (same keys as the TOML)."""
        doc = to_document(self)
        for key, value in sets.items():
            _assign(doc, key, value)
        return parse_spec(doc, source=self.source)


def _default_x(load: LoadSpec) -> float:
    return float(load.users if load.model == "closed" else load.rate_rps)


def _as_float(v: Any) -> float:
    if isinstance(v, bool):
        return float(v)
    return float(v) if isinstance(v, int | float) else 0.0


def _section(doc: Mapping[str, Any], name: str, cls: type) -> Any:
    raw = doc.get(name, {})
    if not isinstance(raw, dict):
        raise _fail(name, raw, "must be a table")
    known = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in known:
            raise _fail(f"{name}.{key}", raw[key], f"unknown key; allowed: {', '.join(sorted(known))}")
    try:
        return cls(**raw)
    except ConfigError as e:
        if e.key.startswith(f"{name}.") or name != "slo":
            raise
        raise _fail(f"slo.{e.key}", e.value, e.allowed) from None


def _check_variants(doc: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    variants = doc.get("variants", {})
    if not isinstance(variants, dict):
        raise _fail("variants", variants, "must be a table of NAME = {settings overrides}")
    for name, overrides in variants.items():
        if not isinstance(overrides, dict):
            raise _fail(f"variants.{name}", overrides, "must be a table of settings overrides")
        for key, value in overrides.items():
            if key.startswith("target.") and key.removeprefix("target.") not in TARGET_KEYS:
                raise _fail(f"variants.{name}.{key}", value,
                            "a variant may set target.database and target.instances only")
        try:
            Settings().with_overrides({k: v for k, v in overrides.items()
                                       if not k.startswith("target.")})
        except ConfigError as e:
            raise _fail(f"variants.{name}.{e.key}", e.value, e.allowed) from None
    return {k: dict(v) for k, v in variants.items()}


def _check_sweep(doc: Mapping[str, Any]) -> dict[str, list[Any]]:
    sweep = doc.get("sweep", {})
    if not isinstance(sweep, dict):
        raise _fail("sweep", sweep, "must be a table of key = [values]")
    for key, values in sweep.items():
        if not isinstance(values, list) or not values:
            raise _fail(f"sweep.{key}", values, "must be a non-empty list of values")
        section, _, rest = key.partition(".")
        if key == "variant":
            variants = doc.get("variants", {})
            for i, v in enumerate(values):
                if not isinstance(v, str) or v not in variants:
                    raise _fail(f"sweep.variant[{i}]", v,
                                f"must name a [variants.NAME] table: {', '.join(variants) or '(none)'}")
            continue
        if section == "target" and rest not in TARGET_KEYS:
            raise _fail(f"sweep.{key}", values, "target keys to sweep: database, instances")
        if section not in ("load", "workload", "settings", "target") or not rest:
            raise _fail(f"sweep.{key}", values, "keys are 'variant' or start with load.,"
                        " workload., target. or settings.")
    return sweep


def parse_spec(doc: Mapping[str, Any], *, source: str = "") -> ExperimentSpec:
    """Validate a parsed TOML document into an :class:`ExperimentSpec`."""
    for key in doc:
        if key not in _TOP_KEYS:
            raise _fail(key, doc[key], f"unknown key; allowed: {', '.join(sorted(_TOP_KEYS))}")
    name = doc.get("name", Path(source).stem if source else "")
    if not isinstance(name, str) or not name:
        raise _fail("name", name, "must be a non-empty string")
    spec = ExperimentSpec(
        name=name,
        description=str(doc.get("description", "")),
        seed=_typed("seed", doc.get("seed", 0), int),
        repeats=_typed("repeats", doc.get("repeats", 1), int, minimum=1),
        x=str(doc.get("x", "")),
        target=_section(doc, "target", TargetSpec),
        generator=_section(doc, "generator", GeneratorSpec),
        workload=_section(doc, "workload", WorkloadSpec),
        load=_section(doc, "load", LoadSpec),
        sweep=_check_sweep(doc),
        slo=_section(doc, "slo", Slo),
        variants=_check_variants(doc),
        provider=_section(doc, "provider", ProviderSpec),
        source=source,
    )
    by_variant = {f"target.{k}" for k in TARGET_KEYS} if "variant" in spec.sweep else set()
    if spec.x and spec.x not in spec.sweep and spec.x not in by_variant:
        raise _fail("x", spec.x, f"must be one of the sweep keys: {', '.join(spec.sweep) or '(none)'}")
    _validated_points(spec)
    return spec


def _validated_points(spec: ExperimentSpec) -> list[SweepPoint]:
    points = []
    for p in spec.points():
        try:
            Settings().with_overrides(p.settings_overrides)
        except ConfigError as e:
            raise _fail(f"sweep.settings.{e.key}", e.value, e.allowed) from None
        where = ", ".join(f"{k}={v}" for k, v in p.params.items())
        check_target_shape(spec.target.kind, p.database, p.instances,
                           key=f"point {p.index} ({where}): target")
        points.append(p)
    return points


def load_spec(path: str | Path, sets: Mapping[str, Any] | None = None) -> ExperimentSpec:
    """Read and validate ``experiments/NAME.toml`` (plus ``--set`` overrides)."""
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _fail("spec", str(p), "file does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise _fail("spec", str(p), f"must be valid TOML ({e})") from None
    spec = parse_spec(doc, source=str(p))
    return spec.with_overrides(sets) if sets else spec


def to_document(spec: ExperimentSpec) -> dict[str, Any]:
    """The spec as a TOML-shaped dict (for manifests and overrides)."""
    return {
        "name": spec.name, "description": spec.description, "seed": spec.seed,
        "repeats": spec.repeats, "x": spec.x,
        "target": dataclasses.asdict(spec.target),
        "generator": dataclasses.asdict(spec.generator), "workload": dataclasses.asdict(spec.workload),
        "load": dataclasses.asdict(spec.load), "sweep": dict(spec.sweep),
        "slo": dataclasses.asdict(spec.slo), "variants": dict(spec.variants),
        "provider": dataclasses.asdict(spec.provider),
    }


def _assign(doc: dict[str, Any], key: str, value: Any) -> None:
    """``load.users=4`` / ``sweep.load.users=[1,2]`` / ``target.settings.batch_size=50``."""
    if key.startswith("sweep."):
        doc.setdefault("sweep", {})[key[len("sweep."):]] = value if isinstance(value, list) else [value]
        return
    if key.startswith("target.settings."):
        doc["target"]["settings"][key[len("target.settings."):]] = value
        return
    if key.startswith("provider.config."):
        doc["provider"]["config"][key[len("provider.config."):]] = value
        return
    section, _, rest = key.partition(".")
    if rest and isinstance(doc.get(section), dict):
        doc[section][rest] = value
    elif not rest and section in _TOP_KEYS:
        doc[section] = value
    else:
        raise _fail(key, value, "unknown key for --set")
