from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr

from stgen.metrics import evaluate, pearson_per_gene


def test_matches_scipy_and_drops_constant_genes():
    rng = np.random.default_rng(0)
    true = rng.random((50, 4))
    pred = true + rng.normal(0, 0.3, true.shape)
    true[:, 2] = 1.0  # constant truth
    pred[:, 3] = 0.5  # constant prediction
    res = pearson_per_gene(pred, true)
    for g in (0, 1):
        assert res.per_gene[g] == pytest.approx(pearsonr(pred[:, g], true[:, g])[0], abs=1e-10)
    assert np.isnan(res.per_gene[2]) and np.isnan(res.per_gene[3])
    assert res.n_dropped == 2
    assert res.mean == pytest.approx(np.mean(res.per_gene[:2]))


def test_pooled_differs_from_per_slide_mean():
    rng = np.random.default_rng(1)
    t1, t2 = rng.random((30, 3)), rng.random((30, 3)) + 5
    p1, p2 = t1 + rng.normal(0, 1, t1.shape), t2 + rng.normal(0, 1, t2.shape)
    ev = evaluate([p1, p2], [t1, t2], ["a", "b"], ["g1", "g2", "g3"])
    pooled = pearson_per_gene(np.vstack([p1, p2]), np.vstack([t1, t2])).mean
    assert ev.pearson == pytest.approx(pooled)
    assert ev.per_slide["a"] == pytest.approx(pearson_per_gene(p1, t1).mean)
    assert ev.pearson > max(ev.per_slide.values())  # the slide offset is shared signal when pooled
    assert ev.mse == pytest.approx(np.mean((np.vstack([p1, p2]) - np.vstack([t1, t2])) ** 2))
