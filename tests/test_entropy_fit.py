"""`sent.entropy_fit`: the entropy-performance law fitted on known data, and a run's entropy drop."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import linregress

from sent.entropy_fit import entropy_drop, fit_entropy_performance


def test_exact_data_gives_back_its_law():
    # R = -0.5 exp(H) + 1.1 at H = 0.05 ... 0.6: a = 0.5, b = 1.1, ceiling b - a = 0.6, no residual
    h = np.linspace(0.05, 0.6, 12)
    fit = fit_entropy_performance(h, -0.5 * np.exp(h) + 1.1)
    assert (fit.a, fit.b, fit.ceiling) == pytest.approx((0.5, 1.1, 0.6))
    assert fit.a_se == pytest.approx(0, abs=1e-9) and fit.r2 == pytest.approx(1.0) and fit.n == 12


def test_noisy_data_agrees_with_a_linear_regression_on_exp_h():
    rng = np.random.default_rng(0)
    h = rng.uniform(0.02, 0.3, 200)
    r = -0.8 * np.exp(h) + 1.5 + rng.normal(0, 0.05, 200)
    h[3], r[7] = np.nan, np.nan  # steps without an entropy or an accuracy are left out
    fit = fit_entropy_performance(h, r)
    keep = np.isfinite(h) & np.isfinite(r)
    line = linregress(np.exp(h[keep]), r[keep])  # r = intercept + slope x: b = intercept, a = -slope
    assert fit.n == 198
    assert fit.a == pytest.approx(-line.slope) and fit.b == pytest.approx(line.intercept)
    assert fit.a_se == pytest.approx(line.stderr) and fit.b_se == pytest.approx(line.intercept_stderr)
    assert fit.r2 == pytest.approx(line.rvalue**2)
    # the ceiling's error from the covariance of a and b: var(b) + var(a) - 2 cov(a, b); by simulation
    # of the same design, the spread of b - a across resampled noise is that error
    draws = []
    for seed in range(300):
        noise = np.random.default_rng(seed + 1).normal(0, 0.05, keep.sum())
        f = fit_entropy_performance(h[keep], -0.8 * np.exp(h[keep]) + 1.5 + noise)
        draws.append(f.ceiling)
    assert fit.ceiling_se == pytest.approx(np.std(draws), rel=0.15)


def test_too_few_steps_or_a_flat_entropy_leave_the_fit_undefined():
    assert math.isnan(fit_entropy_performance([0.1, 0.2], [0.3, 0.4]).a)
    assert math.isnan(fit_entropy_performance([0.1] * 5, [0.3, 0.4, 0.5, 0.6, 0.7]).b)
    with pytest.raises(ValueError, match="one reward per entropy"):
        fit_entropy_performance([0.1, 0.2, 0.3], [0.1])


def test_entropy_drop_uses_the_first_and_last_five_steps():
    curve = [float("nan"), 1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.2]
    drop = entropy_drop(curve)
    # first five finite: 1.0 ... 0.6 -> 0.8; last five: 0.4, 0.3, 0.2, 0.1, 0.2 -> 0.24; lowest 0.1
    assert (drop.start, drop.end, drop.lowest) == pytest.approx((0.8, 0.24, 0.1))
    assert drop.ratio == pytest.approx(0.3)
    assert math.isnan(entropy_drop([float("nan")]).ratio)
