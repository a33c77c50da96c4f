"""Per-point summaries of a load run, and runs on disk (``results/NAME/RUN_ID/``).

The schema (every column, its unit and meaning) is documented in
``docs/results-schema.md``. Files are written with the ``csv`` module through
``asyncio.to_thread`` (never blocking the loop) and read back with pandas
(imported lazily, so the core package does not need it).
"""

from __future__ import annotations

import asyncio
import csv
import json
import math
import os
import re
import secrets
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from orchestra_kit.errors import ConfigError, NotFoundError, ValidationError
from orchestra_kit.lab.histogram import LatencyHistogram
from orchestra_kit.lab.loadmodel import LoadRun, OpenLoop, RequestRecord
from orchestra_kit.lab.machine import environment

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "POINT_KEY_COLUMNS",
    "REQUEST_COLUMNS",
    "SUMMARY_COLUMNS",
    "RunData",
    "RunWriter",
    "Slo",
    "environment",
    "flatten_params",
    "latest_run",
    "load_run",
    "summarise_point",
]

PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0), ("p90", 90.0), ("p95", 95.0), ("p99", 99.0), ("p999", 99.9),
)  # fmt: skip
_LATENCY_COLS = [f"{name}_ms" for name, _ in PERCENTILES] + ["mean_ms", "max_ms"]
SUMMARY_COLUMNS: tuple[str, ...] = (
    "n", "n_ok", "n_err", "success_rate", "duration_s", "offered_rps", "throughput_rps",
    "goodput_rps", "slo_attainment", *_LATENCY_COLS, *(f"service_{c}" for c in _LATENCY_COLS),
    "lag_p50_ms", "lag_p99_ms", "lag_max_ms", "mean_inflight", "littles_inflight",
    "littles_residual", "hdr_latency", "hdr_service", "errors", "dropped",
    "queue_p99_ms", "queue_max_ms", "gen_processes", "gen_loop_lag_p99_ms", "gen_cpu_pct",
    "target_kind", "service_cpu_s", "service_peak_rss_mb", "service_exit_code",
    "ceiling_rps", "point_error",
)  # fmt: skip
REQUEST_COLUMNS: tuple[str, ...] = (
    "run_id", "point", "repeat", "op", "scheduled_s", "sent_s", "end_s", "latency_ms",
    "service_ms", "lag_ms", "status", "ok", "error_type", "queue_ms", "worker", "user",
    "priority",
)  # fmt: skip
TEXT_COLUMNS = frozenset(("error_type", "hdr_latency", "hdr_service", "errors", "op",
                          "target_kind", "point_error"))
POINT_KEY_COLUMNS: tuple[str, ...] = ("run_id", "point", "repeat", "load")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_TINY = 1e-9


@dataclass(frozen=True, kw_only=True)
class Slo:
    """A service-level objective for a point, and the per-request goodput threshold."""

    p99_ms: float | None = None
    p95_ms: float | None = None
    latency_ms_max: float | None = None
    min_success_rate: float = 0.95

    def __post_init__(self) -> None:
        for key in ("p99_ms", "p95_ms", "latency_ms_max"):
            value = getattr(self, key)
            if value is not None and (not _is_number(value) or not value > 0):
                raise ConfigError(key, value, "None or a finite number > 0 (ms)")
        msr = self.min_success_rate
        if not _is_number(msr) or not 0.0 <= msr <= 1.0:
            raise ConfigError("min_success_rate", msr, "a number within 0..1")

    @property
    def threshold_ms(self) -> float | None:
        """A request is *good* when ok and its corrected latency is at most this."""
        for value in (self.latency_ms_max, self.p99_ms, self.p95_ms):
            if value is not None:
                return float(value)
        return None

    def met(self, row: Mapping[str, Any]) -> bool:
        """Whether a summary row meets every bound of this SLO."""
        checks = [(self.p99_ms, "p99_ms"), (self.p95_ms, "p95_ms"), (self.latency_ms_max, "max_ms")]
        for bound, col in checks:
            if bound is not None and not float(row[col]) <= bound:  # NaN fails
                return False
        return float(row["success_rate"]) >= self.min_success_rate


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts become dotted keys (``settings.batch_size``); other non-scalars JSON."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_params(value, f"{name}."))
        elif value is None or isinstance(value, bool | int | float | str):
            out[name] = value
        else:
            out[name] = json.dumps(value, default=str, sort_keys=True)
    return out


def _rank_percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile with HdrHistogram's rounding; NaN when empty."""
    if not sorted_values:
        return math.nan
    rank = max(1, int(q * len(sorted_values) / 100.0 + 0.5))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def _latency_block(prefix: str, values_ms: list[float]) -> tuple[dict[str, float], str]:
    hist = LatencyHistogram.from_values_ms(values_ms)
    pct = hist.percentiles_ms([q for _, q in PERCENTILES])
    block = {f"{prefix}{name}_ms": pct[q] for name, q in PERCENTILES}
    block[f"{prefix}mean_ms"] = math.fsum(values_ms) / len(values_ms) if values_ms else math.nan
    block[f"{prefix}max_ms"] = max(values_ms) if values_ms else math.nan
    return block, hist.encode()


def _error_key(rec: RequestRecord) -> str:
    return rec.error_type or (f"http_{rec.status}" if rec.status else "error")


def _inflight_block(sent: list[RequestRecord], duration_s: float) -> dict[str, float]:
    """Measured in-flight (from sent/end) next to Little's L = λ·W with W from the schedule."""
    busy_s = math.fsum(max(0.0, min(r.end_s, duration_s) - max(r.sent_s, 0.0)) for r in sent)
    measured = busy_s / duration_s
    predicted = (len(sent) / duration_s) * (
        math.fsum(r.latency_ms for r in sent) / 1000.0 / len(sent) if sent else 0.0
    )
    return {
        "mean_inflight": measured,
        "littles_inflight": predicted,
        "littles_residual": abs(measured - predicted) / max(measured, _TINY),
    }


def summarise_point(
    run: LoadRun, *, slo: Slo | None = None, params: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """One summary row: flattened ``params`` first, then :data:`SUMMARY_COLUMNS`."""
    head = flatten_params(params or {})
    clash = sorted(set(head) & (set(SUMMARY_COLUMNS) | set(POINT_KEY_COLUMNS)))
    if clash:
        raise ValidationError("params", f"keys {clash} collide with summary columns")
    recs, dur = run.records, max(run.duration_s, _TINY)
    ok = [r for r in recs if r.ok]
    sent = [r for r in recs if r.error_type != "dropped"]
    limit = slo.threshold_ms if slo is not None else None
    n_good = sum(1 for r in ok if limit is None or r.latency_ms <= limit)
    n = len(recs)
    row: dict[str, Any] = {
        "n": n,
        "n_ok": len(ok),
        "n_err": n - len(ok),
        "success_rate": len(ok) / n if n else math.nan,
        "duration_s": run.duration_s,
        "offered_rps": _offered_rps(run),
        "throughput_rps": len(ok) / dur,
        "goodput_rps": n_good / dur,
        "slo_attainment": n_good / n if n else math.nan,
    }
    latency, hdr_latency = _latency_block("", [r.latency_ms for r in ok])
    service, hdr_service = _latency_block("service_", [r.service_ms for r in ok])
    lags = sorted(r.lag_ms for r in sent)
    row |= latency | service
    row |= {
        "lag_p50_ms": _rank_percentile(lags, 50.0),
        "lag_p99_ms": _rank_percentile(lags, 99.0),
        "lag_max_ms": lags[-1] if lags else math.nan,
    }
    row |= _inflight_block(sent, dur)
    errors = Counter(_error_key(r) for r in recs if not r.ok)
    row |= {
        "hdr_latency": hdr_latency,
        "hdr_service": hdr_service,
        "errors": json.dumps(dict(sorted(errors.items()))),
        "dropped": run.dropped,
    }
    return head | row | _health_block(run, sent)


def _offered_rps(run: LoadRun) -> float:
    """Open loop: the schedule's own rate (arrivals / sending window), not / a span with
    the drain; closed loop (the load adapts): requests / run duration."""
    if isinstance(run.model, OpenLoop) and run.send_window_s > 0:
        return run.planned / run.send_window_s
    return len(run.records) / max(run.duration_s, _TINY)


def _health_block(run: LoadRun, sent: list[RequestRecord]) -> dict[str, Any]:
    """Client queue, generator health, the service process and the point's error."""
    queues = sorted(r.queue_ms for r in sent)
    gen, target = run.generator, run.extra.get("target", {})
    return {
        "queue_p99_ms": _rank_percentile(queues, 99.0),
        "queue_max_ms": queues[-1] if queues else math.nan,
        "gen_processes": gen.get("processes", 1),
        "gen_loop_lag_p99_ms": gen.get("loop_lag_p99_ms", math.nan),
        "gen_cpu_pct": gen.get("cpu_pct", math.nan),
        "target_kind": target.get("kind", ""),
        "service_cpu_s": target.get("cpu_s", math.nan),
        "service_peak_rss_mb": target.get("peak_rss_mb", math.nan),
        "service_exit_code": target.get("exit_code", math.nan),
        "ceiling_rps": run.extra.get("ceiling_rps", math.nan),
        "point_error": run.extra.get("error", ""),
    }


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str, sort_keys=False) + "\n")
    os.replace(tmp, path)


def _append_rows(path: Path, columns: Sequence[str], rows: list[dict[str, Any]]) -> None:
    new = not path.exists()
    with path.open("a", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="raise")
        if new:
            writer.writeheader()
        writer.writerows(rows)


def _request_rows(run_id: str, point: int, repeat: int, run: LoadRun) -> list[dict[str, Any]]:
    return [
        {
            "run_id": run_id,
            "point": point,
            "repeat": repeat,
            "op": r.op,
            "scheduled_s": round(r.scheduled_s, 6),
            "sent_s": round(r.sent_s, 6),
            "end_s": round(r.end_s, 6),
            "latency_ms": round(r.latency_ms, 4),
            "service_ms": round(r.service_ms, 4),
            "lag_ms": round(r.lag_ms, 4),
            "status": r.status,
            "ok": r.ok,
            "error_type": r.error_type,
            "queue_ms": round(r.queue_ms, 4),
            "worker": r.worker,
            "user": r.user,
            "priority": "" if r.priority is None else r.priority,
        }
        for r in run.records
    ]


class RunWriter:
    """Writes one run directory incrementally; file I/O runs in a thread (async methods)."""

    def __init__(self, path: Path, run_id: str, manifest: dict[str, Any]) -> None:
        self.path = path
        self.run_id = run_id
        self.manifest = manifest
        self._point_columns: list[str] | None = None
        self._lock = asyncio.Lock()
        self._finished = False

    @classmethod
    async def create(cls, root: Path, name: str, manifest: Mapping[str, Any]) -> RunWriter:
        """Make ``root/name/RUN_ID/`` and write the first manifest (status "running")."""
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ValidationError("name", "must match [A-Za-z0-9][A-Za-z0-9._-]*", value=name)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        run_id = f"{stamp}-{secrets.token_hex(3)}"
        path = Path(root) / name / run_id
        env = await asyncio.to_thread(environment)
        full = {**dict(manifest), "name": name, "run_id": run_id, "status": "running"}
        full |= {"started": _utc_now(), "finished": None, **env}
        await asyncio.to_thread(path.mkdir, parents=True, exist_ok=False)
        await asyncio.to_thread(_write_json, path / "manifest.json", full)
        return cls(path, run_id, full)

    async def add_point(
        self, point: int, repeat: int, load: float, run: LoadRun, summary: Mapping[str, Any]
    ) -> None:
        """Append the run's requests to requests.csv and its summary row to points.csv."""
        if self._finished:
            raise ValidationError("RunWriter", f"run {self.run_id} is finished; cannot add a point")
        row = {"run_id": self.run_id, "point": point, "repeat": repeat, "load": load, **summary}
        async with self._lock:
            if self._point_columns is None:
                self._point_columns = list(row)
            extra = sorted(set(row) - set(self._point_columns))
            if extra:
                raise ValidationError("summary", f"columns {extra} not in points.csv header")
            rows = _request_rows(self.run_id, point, repeat, run)
            await asyncio.to_thread(_append_rows, self.path / "requests.csv", REQUEST_COLUMNS, rows)
            await asyncio.to_thread(
                _append_rows, self.path / "points.csv", self._point_columns, [row]
            )

    async def finish(self, status: str = "complete") -> None:
        """Record the finish time and status in manifest.json (idempotent)."""
        if self._finished:
            return
        self._finished = True
        self.manifest |= {"status": status, "finished": _utc_now()}
        await asyncio.to_thread(_write_json, self.path / "manifest.json", self.manifest)

    async def aclose(self) -> None:
        """Same as :meth:`finish` with status "complete" (idempotent)."""
        await self.finish()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        stopped = exc_type is not None and issubclass(exc_type, asyncio.CancelledError)
        await self.finish("complete" if exc_type is None else "stopped" if stopped else "failed")


@dataclass(frozen=True)
class RunData:
    """A run loaded from disk: per-request and per-point DataFrames plus the manifest."""

    path: Path
    manifest: dict[str, Any]
    requests: pd.DataFrame
    points: pd.DataFrame


def _read_csv(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    import pandas as pd

    if not path.exists():
        return pd.DataFrame(columns=list(columns))
    # Numbers written as ``nan`` (a point without a successful request) must read back
    # as NaN, not text; text columns keep empty strings and the word "nan" as they are.
    header = pd.read_csv(path, nrows=0).columns
    text_cols = {c: str for c in header if c in TEXT_COLUMNS}
    return pd.read_csv(path, dtype=text_cols, keep_default_na=False, na_values={
        c: ["", "nan", "NaN"] for c in header if c not in text_cols})


def load_run(path: Path | str) -> RunData:
    """Load ``results/NAME/RUN_ID`` (blocking file reads; fine in a notebook cell)."""
    run_dir = Path(path)
    manifest_path = run_dir / "manifest.json"
    if not manifest_path.is_file():
        raise NotFoundError(f"No run at {str(run_dir)!r}: manifest.json is missing")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    requests = _read_csv(run_dir / "requests.csv", REQUEST_COLUMNS)
    points = _read_csv(run_dir / "points.csv", (*POINT_KEY_COLUMNS, *SUMMARY_COLUMNS))
    return RunData(path=run_dir, manifest=manifest, requests=requests, points=points)


def latest_run(root: Path | str, name: str) -> Path:
    """The newest run directory of experiment ``name`` under ``root``."""
    base = Path(root) / name
    runs = [p for p in base.glob("*") if (p / "manifest.json").is_file()] if base.is_dir() else []
    if not runs:
        raise NotFoundError(f"No runs of {name!r} under {str(Path(root))!r}")
    return max(runs, key=lambda p: (p.name.split("-")[0], p.stat().st_mtime_ns, p.name))
