"""Compare two runs per load: an effect threshold AND a significance test must agree.

Per load, the per-repeat values of one metric (e.g. ``p99_ms``) of the base run and of
the new run are compared: ratio of medians (new / base), a two-sided permutation test
on the difference of means (exact when the split count is small, else seeded random
permutations), and a bootstrap 95 % interval of the ratio. A change is reported only
when |ratio − 1| > threshold and p < alpha, as asv and pyperf do, and, when ``min_abs``
is set, the medians also differ by more than that absolute amount (in the metric's
unit): a p99 of 2 ms that doubles to 4 ms on a busy CI machine is +100 % and may be
"significant", yet says nothing about the build. Repeats, not individual requests, are
the unit: requests within one run are correlated.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from orchestra_kit.errors import ValidationError

__all__ = ["Comparison", "compare", "permutation_pvalue", "ratio_ci", "unit_of"]

FloatArray = npt.NDArray[np.float64]

_EXACT_LIMIT = 20_000  # enumerate every split up to this many
_RANDOM_PERMUTATIONS = 10_000
_BOOTSTRAP = 2_000


def unit_of(metric: str) -> str:
    """The display unit implied by a column name (``p99_ms`` → ``ms``)."""
    if metric.endswith("_ms"):
        return " ms"
    if metric.endswith("_rps"):
        return " req/s"
    if metric.endswith("_s"):
        return " s"
    return ""


def _splits(total: int, k: int, n_perm: int, rng: np.random.Generator) -> npt.NDArray[np.bool_]:
    """Boolean masks (rows) choosing the k members of group "new" out of ``total``."""
    if math.comb(total, k) <= _EXACT_LIMIT:
        masks = np.zeros((math.comb(total, k), total), dtype=bool)
        for i, combo in enumerate(itertools.combinations(range(total), k)):
            masks[i, list(combo)] = True
        return masks
    order = np.argsort(rng.random((n_perm, total)), axis=1)
    masks = np.zeros((n_perm, total), dtype=bool)
    np.put_along_axis(masks, order[:, :k], True, axis=1)
    return masks


def permutation_pvalue(
    base: npt.ArrayLike, new: npt.ArrayLike, *, seed: int = 0, n_perm: int = _RANDOM_PERMUTATIONS
) -> float:
    """Two-sided permutation p-value of the difference of means (exact when feasible)."""
    a = np.asarray(base, dtype=float)
    b = np.asarray(new, dtype=float)
    if a.size < 1 or b.size < 1:
        return math.nan
    pooled = np.concatenate([a, b])
    total = pooled.size
    observed = abs(b.mean() - a.mean())
    rng = np.random.default_rng(seed)
    masks = _splits(total, b.size, n_perm, rng)
    sum_new = masks.astype(float) @ pooled
    diffs = np.abs(sum_new / b.size - (pooled.sum() - sum_new) / a.size)
    tol = 1e-12 * max(1.0, float(np.max(np.abs(pooled))))
    extreme = int(np.sum(diffs >= observed - tol))
    if math.comb(total, b.size) <= _EXACT_LIMIT:
        return float(extreme / masks.shape[0])
    return float((extreme + 1) / (masks.shape[0] + 1))


def min_pvalue(n_base: int, n_new: int) -> float:
    """The smallest p-value an exact two-sided permutation test can give."""
    return 2.0 / math.comb(n_base + n_new, n_new) if n_base and n_new else 1.0


def ratio_ci(
    base: npt.ArrayLike, new: npt.ArrayLike, *, seed: int = 0, n_boot: int = _BOOTSTRAP
) -> tuple[float, float]:
    """Bootstrap 95 % interval of median(new) / median(base)."""
    a = np.asarray(base, dtype=float)
    b = np.asarray(new, dtype=float)
    rng = np.random.default_rng(seed)
    ma = np.median(a[rng.integers(0, a.size, (n_boot, a.size))], axis=1)
    mb = np.median(b[rng.integers(0, b.size, (n_boot, b.size))], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = mb / ma
    ratios = ratios[np.isfinite(ratios)]
    if ratios.size == 0:
        return math.nan, math.nan
    return float(np.quantile(ratios, 0.025)), float(np.quantile(ratios, 0.975))


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """Per-load comparison rows, the significant changes, and a verdict in words."""

    metric: str
    higher_is_better: bool
    threshold: float
    alpha: float
    rows: pd.DataFrame
    min_abs: float = 0.0

    @property
    def regressions(self) -> pd.DataFrame:
        """Rows with a significant change for the worse."""
        return self.rows[self.rows["outcome"] == "regression"]

    @property
    def improvements(self) -> pd.DataFrame:
        """Rows with a significant change for the better."""
        return self.rows[self.rows["outcome"] == "improvement"]

    @property
    def is_regression(self) -> bool:
        """True when at least one load regressed significantly."""
        return len(self.regressions) > 0

    @property
    def verdict(self) -> str:
        """Sentences: each significant change, or the largest non-significant move."""
        return _verdict(self)


def _row(
    base: FloatArray,
    new: FloatArray,
    *,
    higher_is_better: bool,
    threshold: float,
    alpha: float,
    min_abs: float,
    seed: int,
) -> dict[str, object]:
    """Statistics for one load."""
    base_median = float(np.median(base)) if base.size else math.nan
    new_median = float(np.median(new)) if new.size else math.nan
    ratio = new_median / base_median if base_median else math.nan
    out: dict[str, object] = {
        "n_base": base.size,
        "n_new": new.size,
        "base_median": base_median,
        "new_median": new_median,
    }
    out["ratio"] = ratio
    out["change_pct"] = (ratio - 1.0) * 100.0
    if base.size < 2 or new.size < 2:
        out.update(ci_lo_pct=math.nan, ci_hi_pct=math.nan, p_value=math.nan)
        out["outcome"] = "too few repeats"
        return out
    lo, hi = ratio_ci(base, new, seed=seed)
    p = permutation_pvalue(base, new, seed=seed)
    out.update(ci_lo_pct=(lo - 1.0) * 100.0, ci_hi_pct=(hi - 1.0) * 100.0, p_value=p)
    big = math.isfinite(ratio) and abs(ratio - 1.0) > threshold
    if big and p < alpha and abs(new_median - base_median) <= min_abs:
        out["outcome"] = "below floor"  # relatively large and significant, absolutely small
    elif big and p < alpha:
        worse = (ratio < 1.0) if higher_is_better else (ratio > 1.0)
        out["outcome"] = "regression" if worse else "improvement"
    else:
        out["outcome"] = "no change"
    return out


def compare(
    base: pd.DataFrame,
    new: pd.DataFrame,
    *,
    metric: str = "p99_ms",
    higher_is_better: bool = False,
    threshold: float = 0.10,
    alpha: float = 0.05,
    min_abs: float = 0.0,
    by: str = "load",
    seed: int = 0,
) -> Comparison:
    """Compare ``metric`` of two per-point tables at every ``by`` value present in both.

    A load counts as changed when the ratio of medians moves by more than ``threshold``,
    the medians differ by more than ``min_abs`` (metric units), and p < ``alpha``."""
    for name, df in (("base", base), ("new", new)):
        for col in (metric, by):
            if col not in df.columns:
                raise ValidationError(f"{name}.{col}", "no such column", value=sorted(df.columns))
    if threshold < 0 or not 0 < alpha < 1:
        raise ValidationError(
            "threshold/alpha", "need threshold ≥ 0 and 0 < alpha < 1", value=(threshold, alpha)
        )
    if not (math.isfinite(min_abs) and min_abs >= 0):
        raise ValidationError("min_abs", "need a finite number ≥ 0", value=min_abs)
    common = sorted(set(base[by].dropna()) & set(new[by].dropna()))
    records = []
    for key in common:
        a = base.loc[base[by] == key, metric].to_numpy(dtype=float)
        b = new.loc[new[by] == key, metric].to_numpy(dtype=float)
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        stats = _row(
            a, b, higher_is_better=higher_is_better, threshold=threshold, alpha=alpha,
            min_abs=min_abs, seed=seed,
        )
        records.append({by: key, "metric": metric, **stats})
    columns = [
        by,
        "metric",
        "n_base",
        "n_new",
        "base_median",
        "new_median",
        "ratio",
        "change_pct",
        "ci_lo_pct",
        "ci_hi_pct",
        "p_value",
        "outcome",
    ]
    rows = pd.DataFrame.from_records(records, columns=columns)
    rows.attrs["by"] = by
    return Comparison(
        metric=metric,
        higher_is_better=higher_is_better,
        threshold=threshold,
        alpha=alpha,
        rows=rows,
        min_abs=min_abs,
    )


def _fmt_value(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.1f}" if abs(v) >= 10 else f"{v:.3g}"


def _fmt_key(v: object) -> str:
    return f"{v:g}" if isinstance(v, (int, float, np.number)) else str(v)


def _sentence(cmp: Comparison, row: pd.Series) -> str:
    unit = unit_of(cmp.metric)
    by = cmp.rows.attrs.get("by", "load")
    return (
        f"{cmp.metric} at {by} {_fmt_key(row[by])}: {_fmt_value(row['base_median'])} → "
        f"{_fmt_value(row['new_median'])}{unit} ({row['change_pct']:+.1f} %, 95 % CI "
        f"[{row['ci_lo_pct']:+.0f} %, {row['ci_hi_pct']:+.0f} %], p={row['p_value']:.2g}): "
        f"significant {row['outcome']}."
    )


def _verdict(cmp: Comparison) -> str:
    rows = cmp.rows
    if rows.empty:
        return f"No load is present in both runs: nothing to compare for {cmp.metric}."
    parts = [
        _sentence(cmp, r)
        for _, r in rows.iterrows()
        if r["outcome"] in ("regression", "improvement")
    ]
    tested = rows[rows["outcome"] != "too few repeats"]
    floored = rows[rows["outcome"] == "below floor"]
    if not parts:
        if tested.empty:
            parts.append(
                f"No verdict on {cmp.metric}: fewer than 2 repeats per side at every load, "
                "so no change can be called significant (run ≥ 5 repeats)."
            )
        elif len(floored):
            parts.append(f"No change counted in {cmp.metric} at any load.")
        else:
            moves = tested.loc[tested["change_pct"].abs().fillna(-1).idxmax()]
            parts.append(
                f"No significant change in {cmp.metric} at any load (largest move "
                f"{moves['change_pct']:+.1f} %, p={moves['p_value']:.2g})."
            )
    if len(floored):
        unit = unit_of(cmp.metric)
        by = rows.attrs.get("by", "load")
        where = ", ".join(
            f"{by} {_fmt_key(r[by])} {_fmt_value(r['base_median'])} → "
            f"{_fmt_value(r['new_median'])}{unit} ({r['change_pct']:+.0f} %, p={r['p_value']:.2g})"
            for _, r in floored.iterrows())
        parts.append(f"Large and significant, yet not counted since the medians differ by "
                     f"no more than the floor of {cmp.min_abs:g}{unit}: {where}.")
    parts.extend(_caveats(cmp, rows, tested))
    return " ".join(parts)


def _caveats(cmp: Comparison, rows: pd.DataFrame, tested: pd.DataFrame) -> list[str]:
    """Warnings about loads that could not be tested or could never reach significance."""
    out = []
    short = len(rows) - len(tested)
    if short and len(tested):
        out.append(f"{short} load(s) had fewer than 2 repeats per side and were not tested.")
    floors = [min_pvalue(int(r.n_base), int(r.n_new)) for r in tested.itertuples()]
    hopeless = [f for f in floors if f >= cmp.alpha]
    if hopeless:
        where = "at every load" if len(hopeless) == len(floors) else f"at {len(hopeless)} load(s)"
        out.append(
            f"With so few repeats {where} the test cannot reach p < {cmp.alpha:g} "
            f"(smallest possible p={min(hopeless):.2g}); run ≥ 5 repeats per side."
        )
    return out
