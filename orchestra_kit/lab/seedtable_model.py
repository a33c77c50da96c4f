"""The seed table as data: rows, the seed's claims and the rule that checks each one.

:class:`SeedTable` holds one tidy row per (row, level) with the before/after values
(mean over repeats, interval = min..max of the repeats), the improvement factor, the
seed's claim, whether it holds (``<NA>`` where the seed claimed nothing at that level)
and a note. It renders as Markdown, charts itself from the saved numbers, says in
sentences where the seed's claims do not hold, and saves/loads as CSV + JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..errors import NotFoundError, ValidationError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["CLAIMS", "COLUMNS", "Claim", "SeedTable", "judge", "make_row", "spread"]

COLUMNS: tuple[str, ...] = (
    "row", "metric", "level", "before", "before_lo", "before_hi", "after", "after_lo",
    "after_hi", "improvement", "seed_claim", "claim_holds", "note",
)  # fmt: skip
_KIND_UNIT = {"latency": "(ms)", "success": "(%)", "users": "(users)"}
OK_SUCCESS_PCT = 95.0  # "supports N" means at least this success rate at N


@dataclass(frozen=True, kw_only=True)
class Claim:
    """What the seed claimed for a row and how it is checked.

    ``kind``: ``faster`` (before/after >= ``min_factor``), ``capacity`` (before fails /
    after succeeds at the levels listed), ``users`` (after >= ``min_after`` users and
    after/before >= ``min_factor``), ``info`` (measured for context, nothing claimed).
    """

    row: str
    metric: str
    unit: str
    text: str
    kind: str
    min_factor: float = 1.0
    min_after: float = 0.0
    before_fails_at: tuple[int, ...] = ()
    after_ok_at: tuple[int, ...] = ()
    before_max_pct: float | None = None


CLAIMS: dict[str, Claim] = {
    "llm_post": Claim(row="LLM API calls", metric="POST /tasks wait", unit="ms",
                      text="2.1 s → 0.5 s latency (3-5x faster)", kind="faster", min_factor=3.0),
    "llm_done": Claim(row="LLM API calls", metric="time to done (the LLM call)", unit="ms",
                      text="2.1 s → 0.5 s latency (3-5x faster)", kind="faster", min_factor=3.0),
    "db": Claim(row="Database operations", metric="ms per write (POST /employees)", unit="ms",
                text="100 ms/op → 20 ms/op (5x faster)", kind="faster", min_factor=5.0),
    "employees": Claim(row="Concurrent employee creation", metric="success (POST /employees)",
                       unit="%", text="fails at 10+ → supports 50+ (5x capacity)",
                       kind="capacity", before_fails_at=(10, 50, 500), after_ok_at=(10, 50, 500)),
    "http": Claim(row="HTTP requests", metric="success (GET /health, a connection per client)",
                  unit="%", text="fails at 50+ → supports 500+ (10x capacity)", kind="capacity",
                  before_fails_at=(50, 500, 2000), after_ok_at=(50, 500, 2000)),
    "assign": Claim(row="Task assignment success rate", metric="success (assign and wait)",
                    unit="%", text="87 % at 15 concurrent → 95 % at 50 concurrent",
                    kind="capacity", before_fails_at=(15,), after_ok_at=(50,),
                    before_max_pct=87.0),
    "users": Claim(row="Overall scalability",
                   metric="users thinking 1 s ± 0.5 s at p95 ≤ 150 ms (mixed workload)",
                   unit="users", text="10 concurrent users → 100+ (10x scalability)",
                   kind="users", min_factor=10.0, min_after=100.0),
    "users_inflight": Claim(row="Overall scalability",
                            metric="in-flight clients, no think time, at p95 ≤ 150 ms",
                            unit="users", text="(not claimed: reported beside the users row)",
                            kind="info"),
}


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, min, max) of the repeats; NaNs ignored; all NaN when empty."""
    clean = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not clean:
        return math.nan, math.nan, math.nan
    return sum(clean) / len(clean), min(clean), max(clean)


def _factor(claim: Claim, before: float, after: float) -> float:
    """Improvement as a factor > 1 when better: before/after for ms, after/before else."""
    num, den = (before, after) if claim.unit == "ms" else (after, before)
    if math.isnan(num) or math.isnan(den):
        return math.nan
    if den == 0:
        return math.inf if num > 0 else 1.0
    return num / den


def _level_number(level: str) -> int | None:
    head = level.split()[0] if level else ""
    return int(head) if head.isdigit() else None


def judge(key: str, level: str, before: float, after: float) -> tuple[bool | None, str]:
    """Whether the seed's claim holds for this row and level, and a plain note why."""
    claim = CLAIMS[key]
    factor = _factor(claim, before, after)
    if claim.kind == "faster":
        holds = factor >= claim.min_factor
        return holds, f"{_fmt(factor)}x measured, {claim.min_factor:g}x claimed"
    if claim.kind == "info":
        return None, "no claim: zero think time, every client always has a request in flight"
    if claim.kind == "users":
        holds = after >= claim.min_after and factor >= claim.min_factor
        return holds, (f"after {_fmt(after)} users (claimed ≥ {claim.min_after:g}), "
                       f"{_fmt(factor)}x (claimed {claim.min_factor:g}x)")
    return _judge_capacity(claim, _level_number(level), before, after)


def _judge_capacity(claim: Claim, n: int | None, before: float,
                    after: float) -> tuple[bool | None, str]:
    checks: list[tuple[bool, str]] = []
    if n in claim.before_fails_at:
        limit = claim.before_max_pct if claim.before_max_pct is not None else OK_SUCCESS_PCT
        word = f"≤ {limit:g} %" if claim.before_max_pct is not None else f"< {limit:g} %"
        failed = before <= limit if claim.before_max_pct is not None else before < limit
        checks.append((failed, f"before {before:.1f} % (claimed {word})"))
    if n in claim.after_ok_at:
        checks.append((after >= OK_SUCCESS_PCT,
                       f"after {after:.1f} % (claimed ≥ {OK_SUCCESS_PCT:g} %)"))
    if not checks:
        return None, "no claim at this level"
    return all(ok for ok, _ in checks), "; ".join(text for _, text in checks)


def make_row(key: str, level: str, before: Sequence[float], after: Sequence[float],
             note: str = "") -> dict[str, Any]:
    """One table row from the per-repeat values of both sides."""
    claim = CLAIMS[key]
    b, b_lo, b_hi = spread(before)
    a, a_lo, a_hi = spread(after)
    holds, why = judge(key, level, b, a)
    return {"row": claim.row, "metric": f"{claim.metric} ({claim.unit})", "level": level,
            "before": b, "before_lo": b_lo, "before_hi": b_hi, "after": a, "after_lo": a_lo,
            "after_hi": a_hi, "improvement": _factor(claim, b, a), "seed_claim": claim.text,
            "claim_holds": holds, "note": "; ".join(p for p in (why, note) if p)}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        return "∞" if math.isinf(v) else f"{v:,.3g}" if abs(v) < 100 else f"{v:,.0f}"
    return "–" if v is pd.NA or v is None else str(v)


@dataclass(kw_only=True)
class SeedTable:
    """The measured seed table (``table``), the per-flag ablation and run facts."""

    table: pd.DataFrame
    ablation: pd.DataFrame = field(default_factory=pd.DataFrame)
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @classmethod
    def from_rows(cls, rows: Sequence[dict[str, Any]], *, ablation: pd.DataFrame | None = None,
                  meta: dict[str, Any] | None = None) -> SeedTable:
        """Build from :func:`make_row` dicts (column order and dtypes fixed)."""
        table = pd.DataFrame(list(rows), columns=list(COLUMNS))
        table["claim_holds"] = table["claim_holds"].astype("boolean")
        return cls(table=table, ablation=ablation if ablation is not None else pd.DataFrame(),
                   meta=dict(meta or {}))

    def to_markdown(self) -> str:
        """The table as GitHub Markdown: value [lo–hi] per side, factor, claim, verdict."""
        head = "| row | metric | level | before | after | improvement | seed claim | holds? |"
        lines = [head, "|---|---|---|---|---|---|---|---|"]
        for r in self.table.itertuples(index=False):
            holds = "n/a" if r.claim_holds is pd.NA else ("**yes**" if r.claim_holds else "**no**")
            lines.append(
                f"| {r.row} | {r.metric} | {r.level} | {_fmt(r.before)} "
                f"[{_fmt(r.before_lo)}–{_fmt(r.before_hi)}] | {_fmt(r.after)} "
                f"[{_fmt(r.after_lo)}–{_fmt(r.after_hi)}] | {_fmt(r.improvement)}x | "
                f"{r.seed_claim} | {holds} |")
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def verdicts(self) -> list[str]:
        """One plain sentence per row: the numbers, and whether the seed's claim holds."""
        out = []
        for r in self.table.itertuples(index=False):
            if r.claim_holds is pd.NA:
                word = "The seed made no claim here"
            else:
                word = "The seed's claim holds" if r.claim_holds else "The seed's claim DOES NOT hold"
            out.append(f"{r.row}, {r.metric} at {r.level}: {_fmt(r.before)} before → "
                       f"{_fmt(r.after)} after ({_fmt(r.improvement)}x). {word} "
                       f"(claimed: {r.seed_claim}): {r.note}.")
        return out

    def verdicts_markdown(self) -> str:
        """The verdicts as a Markdown bullet list (for ``IPython.display.Markdown``)."""
        return "\n".join(f"- {v}" for v in self.verdicts())

    def plot(self, kind: str = "latency") -> Figure:
        """Before/after bars with min–max whiskers: ``latency`` (ms), ``success`` (%), ``users``."""
        from .plots import plot_before_after

        unit = _KIND_UNIT.get(kind)
        if unit is None:
            raise ValidationError("kind", "must be 'latency', 'success' or 'users'", value=kind)
        rows = self.table[self.table["metric"].str.endswith(unit)]
        if rows.empty:
            raise ValidationError("kind", f"the table has no {kind} rows", value=kind)
        labels = [f"{r.row}\n{r.metric.rsplit(' (', 1)[0]}\n{r.level}" for r in rows.itertuples()]
        long = pd.concat([pd.DataFrame({"label": labels, "variant": side,
                                        "value": rows[col].to_numpy(),
                                        "lo": rows[f"{col}_lo"].to_numpy(),
                                        "hi": rows[f"{col}_hi"].to_numpy()})
                          for side, col in (("before (all flags off)", "before"),
                                            ("after (all flags on)", "after"))])
        fig = plot_before_after(long, ylabel=f"{kind} {unit}",
                                title=f"Seed table, measured: {kind}")
        if kind == "latency":
            fig.axes[0].set_yscale("log")
        fig.axes[0].tick_params(axis="x", labelsize="x-small")
        return fig

    def ablation_plot(self) -> Figure:
        """Per variant (one flag off, all off), p95 latency and throughput relative to all on."""
        from .plots import plot_before_after

        if self.ablation.empty:
            raise ValidationError("ablation", "no ablation measured (run measure_seed_table)")
        long = self.ablation[self.ablation["metric"].isin(["p95_ms", "throughput_rps"])]
        df = pd.DataFrame({"label": long["variant"],
                           "variant": long["metric"].map({"p95_ms": "p95 latency ÷ all_on",
                                                          "throughput_rps": "throughput ÷ all_on"}),
                           "value": long["ratio"], "lo": long["ratio_lo"], "hi": long["ratio_hi"]})
        fig = plot_before_after(df, ylabel="relative to all flags on (1 = no change)",
                                title="Which optimisation buys what (one flag off at a time)")
        fig.axes[0].axhline(1.0, color="black", linewidth=0.8)
        return fig

    def figures(self) -> dict[str, Figure]:
        """Every chart by name (for saving as PNG)."""
        figs = {f"seed-table-{k}": self.plot(k) for k, unit in _KIND_UNIT.items()
                if self.table["metric"].str.endswith(unit).any()}
        if not self.ablation.empty:
            figs["seed-table-ablation"] = self.ablation_plot()
        return figs

    def save_charts(self, directory: str | Path, *, formats: Sequence[str] = ("png",)) -> list[Path]:
        """Write every chart of :meth:`figures` under ``directory``; the paths written."""
        from .plot_common import save_figure

        paths: list[Path] = []
        for name, fig in self.figures().items():
            paths += save_figure(fig, directory, name, formats=formats)
        return paths

    def save(self, directory: str | Path) -> Path:
        """Write table.csv, ablation.csv and meta.json under ``directory``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.table.to_csv(d / "table.csv", index=False)
        self.ablation.to_csv(d / "ablation.csv", index=False)
        (d / "meta.json").write_text(json.dumps(self.meta, indent=2, default=str) + "\n")
        self.path = d
        return d

    @classmethod
    def load(cls, directory: str | Path) -> SeedTable:
        """Read a table saved by :meth:`save` (charts re-plot without re-measuring)."""
        d = Path(directory)
        if not (d / "table.csv").is_file():
            raise NotFoundError(f"No seed table at {str(d)!r}: table.csv is missing")
        table = pd.read_csv(d / "table.csv", dtype={"level": str, "note": str})
        table["claim_holds"] = table["claim_holds"].astype("boolean")
        table["note"] = table["note"].astype(object).where(table["note"].notna(), "")
        try:
            ablation = pd.read_csv(d / "ablation.csv")
        except (FileNotFoundError, pd.errors.EmptyDataError):
            ablation = pd.DataFrame()
        meta_path = d / "meta.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        return cls(table=table[list(COLUMNS)], ablation=ablation, meta=meta, path=d)
