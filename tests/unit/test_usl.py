"""Tests for orchestra_kit.lab.usl: the USL fit recovers known parameters with intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from orchestra_kit.errors import ValidationError
from orchestra_kit.lab.usl import fit_usl, usl_peak, usl_throughput

N = np.repeat([1, 2, 4, 8, 16, 32, 48, 64], 3).astype(float)


def noisy(
    lam: float, sigma: float, kappa: float, *, rel_noise: float = 0.02, seed: int = 1
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return usl_throughput(N, lam, sigma, kappa) * (1 + rng.normal(0, rel_noise, N.size))


@pytest.mark.parametrize(("lam", "sigma", "kappa"), [(100.0, 0.05, 0.001), (80.0, 0.02, 0.0005)])
def test_recovers_parameters_within_intervals(lam: float, sigma: float, kappa: float) -> None:
    fit = fit_usl(N, noisy(lam, sigma, kappa), bootstrap=300, seed=0)
    assert fit.lam_ci[0] <= lam <= fit.lam_ci[1]
    assert fit.sigma_ci[0] <= sigma <= fit.sigma_ci[1]
    assert fit.kappa_ci[0] <= kappa <= fit.kappa_ci[1]
    true_n_star, true_x_star = usl_peak(lam, sigma, kappa)
    assert fit.n_star_ci[0] <= true_n_star <= fit.n_star_ci[1]
    assert fit.x_star_ci[0] * 0.99 <= true_x_star <= fit.x_star_ci[1] * 1.01
    assert fit.has_peak and fit.r2 > 0.99
    assert fit.n_points == N.size and fit.n_distinct == 8
    assert "peaks at N*≈" in fit.summary()


def test_point_estimates_close_to_truth() -> None:
    fit = fit_usl(N, noisy(100.0, 0.05, 0.001), bootstrap=0)
    assert fit.sigma == pytest.approx(0.05, rel=0.2)
    assert fit.kappa == pytest.approx(0.001, rel=0.2)
    assert fit.n_star == pytest.approx(math.sqrt(0.95 / 0.001), rel=0.1)
    assert fit.lam_ci == (fit.lam, fit.lam)  # no bootstrap: degenerate intervals


def test_pure_linear_scaling_has_no_peak() -> None:
    fit = fit_usl(N, 100.0 * N, bootstrap=50)
    assert fit.sigma == 0.0 and fit.kappa == 0.0
    assert fit.lam == pytest.approx(100.0)
    assert math.isinf(fit.n_star) and math.isinf(fit.x_star)
    assert not fit.has_peak
    assert "linear" in fit.summary()
    noisy_fit = fit_usl(N, noisy(100.0, 0.0, 0.0), bootstrap=200)
    assert noisy_fit.sigma < 0.01 and noisy_fit.kappa < 1e-4
    assert noisy_fit.kappa_ci[0] == 0.0
    assert math.isinf(noisy_fit.n_star_ci[1])


def test_contention_only_levels_off() -> None:
    fit = fit_usl(N, noisy(50.0, 0.2, 0.0, rel_noise=0.005), bootstrap=100)
    assert fit.kappa < 1e-4
    assert fit.sigma == pytest.approx(0.2, rel=0.1)
    if not fit.has_peak:
        assert fit.x_star == pytest.approx(fit.lam / fit.sigma)
        assert "levels off" in fit.summary()


def test_predict_and_band() -> None:
    fit = fit_usl(N, noisy(100.0, 0.05, 0.001), bootstrap=100)
    grid = np.array([1.0, 31.0, 100.0])
    pred = fit.predict(grid)
    lo, hi = fit.predict_band(grid)
    assert pred.shape == lo.shape == hi.shape == (3,)
    assert np.all(lo <= pred * 1.001) and np.all(pred <= hi * 1.001)
    assert pred[1] > pred[0] and pred[1] > pred[2]


def test_seed_makes_intervals_reproducible() -> None:
    x = noisy(100.0, 0.05, 0.001)
    a, b = fit_usl(N, x, bootstrap=50, seed=7), fit_usl(N, x, bootstrap=50, seed=7)
    assert a.sigma_ci == b.sigma_ci and a.n_star_ci == b.n_star_ci


def test_validation() -> None:
    with pytest.raises(ValidationError, match="at least 4 distinct concurrency levels, got 3"):
        fit_usl([1, 2, 4, 4], [1.0, 2.0, 3.0, 3.0])
    with pytest.raises(ValidationError, match="has 3 values but n has 4"):
        fit_usl([1, 2, 3, 4], [1.0, 2.0, 3.0])
    with pytest.raises(ValidationError, match="throughput must be > 0"):
        fit_usl([1, 2, 3, 4], [1.0, 2.0, 0.0, 3.0])
    with pytest.raises(ValidationError, match="bootstrap"):
        fit_usl([1, 2, 3, 4], [1.0, 2.0, 3.0, 4.0], bootstrap=-1)


def test_peak_helper_edges() -> None:
    assert usl_peak(10.0, 1.0, 0.01) == (1.0, 10.0)
    assert usl_peak(10.0, 0.5, 0.0) == (math.inf, 20.0)
    n_star, x_star = usl_peak(10.0, 0.0, 0.01)
    assert n_star == pytest.approx(10.0) and x_star == pytest.approx(
        usl_throughput(10.0, 10.0, 0.0, 0.01)
    )


def test_weighting_options() -> None:
    x = noisy(100.0, 0.05, 0.001)
    absolute = fit_usl(N, x, bootstrap=100, weighting="absolute")
    relative = fit_usl(N, x, bootstrap=100)
    assert absolute.sigma_ci[0] <= 0.05 <= absolute.sigma_ci[1]
    assert absolute.sigma != relative.sigma  # different objective, same truth
    with pytest.raises(ValidationError, match="weighting"):
        fit_usl(N, x, weighting="log")  # type: ignore[arg-type]
