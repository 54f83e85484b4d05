from __future__ import annotations

import numpy as np
import pytest

from stgen.metrics import Calibration, calibration, calibration_of_predictions


def test_gaussian_errors_with_the_stated_spread_are_calibrated():
    rng = np.random.default_rng(0)
    n, g = 4000, 5
    mean = rng.normal(2, 1, (n, g))
    spread = rng.uniform(0.1, 2.0, (n, g))  # independent of the mean
    true = mean + spread * rng.normal(size=(n, g))
    cal = calibration(mean, spread, true)
    for level, cov in cal.coverage.items():
        assert abs(cov - level) < 0.02, (level, cov)
    # |error| = spread * |z|: Spearman of spread vs |error| is about 0.55 here (not 1: |z| varies)
    assert 0.4 < cal.spearman < 0.7
    assert abs(cal.spearman_partial - cal.spearman) < 0.03  # nothing to partial out
    wide = calibration(mean, 3 * spread, true)
    assert wide.coverage[0.5] > 0.85  # over-wide intervals over-cover


def test_a_spread_that_only_restates_the_mean_has_no_partial_correlation():
    rng = np.random.default_rng(1)
    n, g = 4000, 4
    mean = rng.uniform(0.5, 4, (n, g))
    true = mean + 0.3 * mean * rng.normal(size=(n, g))  # errors grow with the prediction
    spread = 0.3 * mean  # a spread that says nothing beyond the mean
    cal = calibration(mean, spread, true)
    assert cal.spearman > 0.3
    assert cal.spearman_partial == 0.0
    noisy = calibration(mean, spread * np.exp(0.05 * rng.normal(size=(n, g))), true)
    assert noisy.spearman > 0.3 and abs(noisy.spearman_partial) < 0.05
    assert calibration(mean, rng.uniform(0.1, 1, (n, g)), true).spearman < 0.05  # a random spread


def test_no_spread_gives_nan_and_bad_input_is_named():
    class Item:
        def __init__(self, std):
            self.mean, self.std, self.true = np.zeros((3, 2)), std, np.ones((3, 2))

    empty = calibration_of_predictions([Item(None)])
    assert isinstance(empty, Calibration) and np.isnan(empty.spearman)
    assert set(empty.summary()) == {"cal_spearman", "cal_spearman_partial", "cov50", "cov80", "cov95"}
    with pytest.raises(ValueError, match="spread"):
        calibration(np.zeros((3, 2)), -np.ones((3, 2)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="one shape"):
        calibration(np.zeros((3, 2)), np.ones((3, 1)), np.zeros((3, 2)))


def test_count_noise_spread_matches_simulated_counts_for_large_means():
    from stgen.metrics import count_noise_spread

    rng = np.random.default_rng(2)
    theta = np.array([5.0, 50.0])
    mu = np.array([[40.0, 200.0]])
    sd = count_noise_spread(np.log1p(mu), theta)[0]
    lam = rng.gamma(theta, mu[0] / theta, size=(200_000, 2))
    mc = np.log1p(rng.poisson(lam)).std(0)
    np.testing.assert_allclose(sd, mc, rtol=0.1)
    assert (count_noise_spread(np.zeros((3, 2)), theta) == 0).all()
