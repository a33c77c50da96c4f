"""Universal Scalability Law fit with bootstrap intervals, in plain numpy.

X(N) = λN / (1 + σ(N−1) + κN(N−1)), with λ > 0 (throughput of one user), σ ≥ 0
(contention: the serial fraction, e.g. SQLite's single writer) and κ ≥ 0 (coherency:
the cost of crosstalk between users). Throughput peaks at N* = √((1−σ)/κ).

The fit starts from a linear least-squares guess on N/X, then runs a projected
Levenberg–Marquardt on the throughput residuals (relative by default). Intervals come
from a wild bootstrap: each residual's sign is flipped at random and the curve refitted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from orchestra_kit.errors import ValidationError

__all__ = ["UslFit", "fit_usl", "usl_peak", "usl_throughput"]

FloatArray = npt.NDArray[np.float64]
Weighting = Literal["relative", "absolute"]

_ZERO = 1e-12  # σ or κ below this has no visible effect: snapped to 0 (κ = 0 → N* = ∞)
_MIN_DISTINCT_N = 4


def usl_throughput(
    n: npt.ArrayLike, lam: float | FloatArray, sigma: float | FloatArray, kappa: float | FloatArray
) -> FloatArray:
    """X(N) of the USL for the given parameters."""
    nn = np.asarray(n, dtype=float)
    return lam * nn / (1.0 + sigma * (nn - 1.0) + kappa * nn * (nn - 1.0))


def usl_peak(lam: float, sigma: float, kappa: float) -> tuple[float, float]:
    """The peak (N*, X(N*)); N* is ∞ when κ = 0 and X(N*) is then the asymptote λ/σ."""
    if sigma >= 1.0:
        return 1.0, lam
    if kappa <= _ZERO:
        return math.inf, (lam / sigma if sigma > _ZERO else math.inf)
    n_star = math.sqrt((1.0 - sigma) / kappa)
    return n_star, float(usl_throughput(n_star, lam, sigma, kappa))


def _ci(values: FloatArray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval that tolerates ∞ (no interpolation between samples)."""
    tail = (1.0 - level) / 2.0
    lo = float(np.quantile(values, tail, method="lower"))
    hi = float(np.quantile(values, 1.0 - tail, method="higher"))
    return lo, hi


@dataclass(frozen=True, kw_only=True)
class UslFit:
    """A fitted USL curve with 95 % bootstrap intervals."""

    lam: float
    sigma: float
    kappa: float
    n_star: float
    x_star: float
    lam_ci: tuple[float, float]
    sigma_ci: tuple[float, float]
    kappa_ci: tuple[float, float]
    n_star_ci: tuple[float, float]
    x_star_ci: tuple[float, float]
    r2: float
    n_points: int
    n_distinct: int
    boot_params: FloatArray = field(repr=False)  # shape (B, 3): λ, σ, κ per resample

    def predict(self, n: npt.ArrayLike) -> FloatArray:
        """Predicted throughput at concurrency ``n``."""
        return usl_throughput(n, self.lam, self.sigma, self.kappa)

    def predict_band(self, n: npt.ArrayLike, level: float = 0.95) -> tuple[FloatArray, FloatArray]:
        """Pointwise bootstrap band (lo, hi) of the predicted throughput."""
        nn = np.atleast_1d(np.asarray(n, dtype=float))
        if len(self.boot_params) == 0:
            x = self.predict(nn)
            return x, x
        b = self.boot_params
        curves = usl_throughput(nn[None, :], b[:, 0:1], b[:, 1:2], b[:, 2:3])
        tail = (1.0 - level) / 2.0
        return np.quantile(curves, tail, axis=0), np.quantile(curves, 1.0 - tail, axis=0)

    @property
    def has_peak(self) -> bool:
        """True when the fit predicts a throughput peak (κ > 0)."""
        return math.isfinite(self.n_star)

    def summary(self) -> str:
        """One sentence: parameters, their intervals, and the predicted peak."""
        params = (
            f"USL fit on {self.n_points} points ({self.n_distinct} loads, R²={self.r2:.3f}): "
            f"λ={_fmt(self.lam)} req/s per user [{_fmt(self.lam_ci[0])}, {_fmt(self.lam_ci[1])}], "
            f"σ={self.sigma:.3g} [{self.sigma_ci[0]:.3g}, {self.sigma_ci[1]:.3g}] (contention), "
            f"κ={self.kappa:.3g} [{self.kappa_ci[0]:.3g}, {self.kappa_ci[1]:.3g}] (coherency)"
        )
        if not self.has_peak:
            tail = (
                f"; no peak: throughput levels off towards {_fmt(self.x_star)} req/s"
                if math.isfinite(self.x_star)
                else "; scaling is linear (no contention, no peak)"
            )
            return params + tail + "."
        return (
            params + f"; throughput peaks at N*≈{self.n_star:.0f} "
            f"[{_fmt(self.n_star_ci[0])}, {_fmt(self.n_star_ci[1])}] "
            f"with X≈{_fmt(self.x_star)} req/s "
            f"[{_fmt(self.x_star_ci[0])}, {_fmt(self.x_star_ci[1])}]."
        )


def _fmt(v: float) -> str:
    if not math.isfinite(v):
        return "∞"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def _initial_guess(n: FloatArray, x: FloatArray) -> FloatArray:
    """Linear least squares on N/X = (1 + σ(N−1) + κN(N−1)) / λ."""
    design = np.column_stack([np.ones_like(n), n - 1.0, n * (n - 1.0)])
    (a, b, c), *_ = np.linalg.lstsq(design, n / x, rcond=None)
    lam = 1.0 / a if a > 0 else float(np.max(x / n))
    return np.array([lam, max(b * lam, 0.0), max(c * lam, 0.0)])


def _residuals_and_jacobian(
    p: FloatArray, n: FloatArray, x: FloatArray, w: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Weighted residuals w·(X − X̂) and the Jacobian of w·X̂."""
    lam, sigma, kappa = p
    nn1 = n * (n - 1.0)
    denom = 1.0 + sigma * (n - 1.0) + kappa * nn1
    pred = lam * n / denom
    jac = np.column_stack([n / denom, -pred * (n - 1.0) / denom, -pred * nn1 / denom])
    return w * (x - pred), w[:, None] * jac


def _project(p: FloatArray, lam_floor: float) -> FloatArray:
    return np.array([max(p[0], lam_floor), max(p[1], 0.0), max(p[2], 0.0)])


def _levenberg_marquardt(
    p0: FloatArray, n: FloatArray, x: FloatArray, w: FloatArray, *, max_iter: int = 200
) -> FloatArray:
    """Projected LM (Marquardt scaling) minimising Σ(X − X̂)² under the bounds.

    A parameter sitting on its bound whose descent direction points outside is frozen
    for that iteration (a tiny active set), so boundary solutions converge quickly.
    """
    lam_floor = 1e-12 * float(np.max(np.abs(x)) + 1e-300)
    p = _project(p0, lam_floor)
    r, jac = _residuals_and_jacobian(p, n, x, w)
    cost = float(r @ r)
    damping = 1e-3
    for _ in range(max_iter):
        grad = jac.T @ r
        free = ~((p <= np.array([lam_floor, 0.0, 0.0])) & (grad <= 0))
        cand_cost = _lm_step(p, n, x, w, jac[:, free], grad[free], free, damping, cost, lam_floor)
        if cand_cost is None:
            break
        (p_new, r, jac, cost_new), damping = cand_cost
        rel = (cost - cost_new) / max(cost, 1e-300)
        p, cost = p_new, cost_new
        if rel < 1e-10:
            break
    return p


def _lm_step(
    p: FloatArray,
    n: FloatArray,
    x: FloatArray,
    w: FloatArray,
    jac: FloatArray,
    grad: FloatArray,
    free: npt.NDArray[np.bool_],
    damping: float,
    cost: float,
    lam_floor: float,
) -> tuple[tuple[FloatArray, FloatArray, FloatArray, float], float] | None:
    """Raise the damping until a step lowers the cost; None when none does."""
    if not free.any():
        return None
    jtj = jac.T @ jac
    diag = np.diag(jtj).copy()
    diag[diag <= 0] = 1.0
    for _attempt in range(25):
        try:
            step_free = np.linalg.solve(jtj + damping * np.diag(diag), grad)
        except np.linalg.LinAlgError:
            damping *= 10.0
            continue
        step = np.zeros(3)
        step[free] = step_free
        cand = _project(p + step, lam_floor)
        r_c, jac_c = _residuals_and_jacobian(cand, n, x, w)
        cost_c = float(r_c @ r_c)
        if cost_c < cost:
            return (cand, r_c, jac_c, cost_c), max(damping / 3.0, 1e-12)
        damping *= 4.0
    return None


def _fit_once(n: FloatArray, x: FloatArray, w: FloatArray) -> FloatArray:
    """Best of LM started from the linear guess and from pure linear scaling."""
    guess = _initial_guess(n, x)
    starts = [guess, np.array([guess[0], 0.0, 0.0]), np.array([guess[0], guess[1], 0.0])]
    best, best_cost = starts[0], math.inf
    for start in starts:
        p = _levenberg_marquardt(start, n, x, w)
        r = w * (x - usl_throughput(n, *p))
        cost = float(r @ r)
        if cost < best_cost - 1e-12 * max(best_cost, 1.0) or best_cost == math.inf:
            best, best_cost = p, cost
    return best


def _validate(n: npt.ArrayLike, x: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    nn = np.asarray(n, dtype=float).ravel()
    xx = np.asarray(x, dtype=float).ravel()
    if nn.shape != xx.shape:
        raise ValidationError("x", f"has {xx.size} values but n has {nn.size}")
    keep = np.isfinite(nn) & np.isfinite(xx)
    nn, xx = nn[keep], xx[keep]
    if np.any(nn <= 0):
        raise ValidationError("n", "concurrency must be > 0", value=float(nn.min()))
    if np.any(xx <= 0):
        raise ValidationError("x", "throughput must be > 0 at every point", value=float(xx.min()))
    distinct = np.unique(nn).size
    if distinct < _MIN_DISTINCT_N:
        raise ValidationError(
            "n",
            f"a USL fit needs at least {_MIN_DISTINCT_N} distinct concurrency levels, "
            f"got {distinct}",
            value=distinct,
        )
    return nn, xx


def fit_usl(
    n: npt.ArrayLike,
    x: npt.ArrayLike,
    *,
    bootstrap: int = 500,
    seed: int = 0,
    weighting: Weighting = "relative",
) -> UslFit:
    """Fit the USL to throughput ``x`` measured at concurrency ``n`` (repeats allowed).

    ``weighting="relative"`` (default) minimises relative residuals (X − X̂)/X, right when
    the noise grows with throughput; ``"absolute"`` minimises plain residuals X − X̂.
    """
    if bootstrap < 0:
        raise ValidationError("bootstrap", "must be ≥ 0", value=bootstrap)
    if weighting not in ("relative", "absolute"):
        raise ValidationError("weighting", "must be 'relative' or 'absolute'", value=weighting)
    nn, xx = _validate(n, x)
    relative = weighting == "relative"
    p = _snap(_fit_once(nn, xx, 1.0 / xx if relative else np.ones_like(xx)))
    fitted = usl_throughput(nn, *p)
    resid = xx - fitted
    ss_tot = float(np.sum((xx - xx.mean()) ** 2))
    r2 = 1.0 - float(resid @ resid) / ss_tot if ss_tot > 0 else 1.0
    boot = _bootstrap(nn, xx, p, bootstrap, seed, relative=relative)
    peaks = np.array([usl_peak(*b) for b in boot]) if len(boot) else np.empty((0, 2))
    n_star, x_star = usl_peak(*p)

    def ci(col: FloatArray, point: float) -> tuple[float, float]:
        return _ci(col) if len(col) else (point, point)

    return UslFit(
        lam=float(p[0]),
        sigma=float(p[1]),
        kappa=float(p[2]),
        n_star=n_star,
        x_star=x_star,
        lam_ci=ci(boot[:, 0], p[0]),
        sigma_ci=ci(boot[:, 1], p[1]),
        kappa_ci=ci(boot[:, 2], p[2]),
        n_star_ci=ci(peaks[:, 0], n_star),
        x_star_ci=ci(peaks[:, 1], x_star),
        r2=r2,
        n_points=int(nn.size),
        n_distinct=int(np.unique(nn).size),
        boot_params=boot,
    )


def _bootstrap(
    n: FloatArray, x: FloatArray, p: FloatArray, b: int, seed: int, *, relative: bool
) -> FloatArray:
    """Wild bootstrap: flip the sign of each (rescaled) residual at random, then refit.

    Sign flips keep each point's own noise level, so heteroscedastic data (noise growing
    with load) keep honest intervals, unlike residuals shuffled between loads.
    """
    if b == 0:
        return np.empty((0, 3))
    rng = np.random.default_rng(seed)
    fitted = usl_throughput(n, *p)
    resid = (x - fitted) / fitted if relative else x - fitted
    resid = resid / (1.0 - _leverage(p, n, x, relative=relative))  # HC3-style inflation
    signs = rng.choice(np.array([-1.0, 1.0]), size=(b, n.size))
    floor = 1e-9 * float(np.max(fitted))
    out = np.empty((b, 3))
    for i in range(b):
        noise = signs[i] * resid
        xb = np.maximum(fitted * (1.0 + noise) if relative else fitted + noise, floor)
        w = 1.0 / xb if relative else np.ones_like(xb)
        out[i] = _snap(_levenberg_marquardt(p, n, xb, w, max_iter=100))
    return out


def _leverage(p: FloatArray, n: FloatArray, x: FloatArray, *, relative: bool) -> FloatArray:
    """Diagonal of the hat matrix of the linearised fit, clipped below 1."""
    _, jac = _residuals_and_jacobian(p, n, x, 1.0 / x if relative else np.ones_like(x))
    jac = jac[:, np.linalg.norm(jac, axis=0) > 0]
    hat_diag: FloatArray = np.einsum("ij,ji->i", jac, np.linalg.pinv(jac.T @ jac) @ jac.T)
    clipped: FloatArray = np.clip(hat_diag, 0.0, 0.9)
    return clipped


def _snap(p: FloatArray) -> FloatArray:
    """Round σ and κ that are zero up to float noise to exactly 0."""
    out = p.copy()
    out[1:][out[1:] <= _ZERO] = 0.0
    return out
