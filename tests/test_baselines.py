from __future__ import annotations

import numpy as np
import pytest

from stgen.baselines import RidgeProbe


def _pearson_per_gene(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(0)
    b = b - b.mean(0)
    return (a * b).sum(0) / np.sqrt((a * a).sum(0) * (b * b).sum(0))


def _linear_data(n: int, f: int = 20, g: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(f, g))
    X = rng.normal(size=(n, f)) * rng.uniform(0.5, 3.0, size=f) + rng.normal(size=f)
    Y = X @ W + 0.05 * rng.normal(size=(n, g)) + 3.0
    return X, Y


def test_ridge_recovers_a_linear_map() -> None:
    X, Y = _linear_data(400)
    probe = RidgeProbe().fit(X[:300], Y[:300])
    assert probe.n_components_ == 20
    assert probe.alpha_ == pytest.approx(100 / (20 * 6))
    pred = probe.predict(X[300:])
    assert pred.shape == (100, 6)
    assert _pearson_per_gene(pred, Y[300:]).min() > 0.99
    # HEST's probe: uncentred target, no intercept -> correlations right, offsets missing
    assert abs((pred - Y[300:]).mean()) > 1.0


def test_centred_target_restores_the_scale() -> None:
    X, Y = _linear_data(400, seed=1)
    probe = RidgeProbe(center_target=True).fit(X[:300], Y[:300])
    pred = probe.predict(X[300:])
    assert np.abs(pred - Y[300:]).mean() < 0.2
    assert RidgeProbe(center_target=True).fit(X[:300], Y[:300, 0]).predict(X[300:]).shape == (100,)


def test_pca_is_capped_by_samples_and_features() -> None:
    rng = np.random.default_rng(0)
    few = RidgeProbe().fit(rng.normal(size=(12, 50)), rng.normal(size=(12, 3)))
    assert few.n_components_ == 12 and few.alpha_ == pytest.approx(100 / (12 * 3))
    assert few.transform(rng.normal(size=(4, 50))).shape == (4, 12)
    narrow = RidgeProbe(n_components=256).fit(rng.normal(size=(500, 8)), rng.normal(size=(500, 2)))
    assert narrow.n_components_ == 8
    wide = RidgeProbe(n_components=16).fit(rng.normal(size=(100, 40)), rng.normal(size=(100, 2)))
    assert wide.n_components_ == 16


def test_errors() -> None:
    with pytest.raises(RuntimeError, match="fit"):
        RidgeProbe().predict(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="Y must be"):
        RidgeProbe().fit(np.zeros((5, 3)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="n_components"):
        RidgeProbe(n_components=0)
