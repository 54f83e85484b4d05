from __future__ import annotations

import numpy as np

from stgen.data.simulate import ORACLE_LAYER, SimulationConfig, simulate
from stgen.data.slide import validate_slide


def test_slides_follow_the_contract(tiny_slides):
    for a in tiny_slides:
        validate_slide(a)
        assert ORACLE_LAYER in a.layers and {"array_row", "array_col"} <= set(a.obs)
    assert len({a.uns["stgen"]["patient"] for a in tiny_slides}) == 3


def test_counts_are_overdispersed_and_zero_inflated(tiny_slides):
    X = np.concatenate([a.X for a in tiny_slides])
    assert (X == np.round(X)).all() and X.min() >= 0
    assert (X.var(0) > X.mean(0)).mean() > 0.9
    assert (X == 0).mean() > 0.05


def _r2(X, y):
    X1 = np.column_stack([X, np.ones(len(X))])
    beta, *_ = np.linalg.lstsq(X1, y, rcond=None)
    return 1 - ((y - X1 @ beta) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)


def _neighbourhood_gain(interaction: float) -> float:
    """R^2 the neighbourhood composition adds to the spot's own composition, on the oracle."""
    cfg = SimulationConfig(n_slides=2, n_patients=1, n_spots=400, n_genes=30, interaction=interaction, seed=4)
    slides = simulate(cfg)
    own = np.concatenate([a.obsm["composition"] for a in slides])
    neigh = np.concatenate([a.obsm["neighbourhood_composition"] for a in slides])
    oracle = np.concatenate([a.layers[ORACLE_LAYER] for a in slides])
    return float(np.mean(_r2(np.hstack([own, neigh]), oracle) - _r2(own, oracle)))


def test_interaction_knob_changes_what_the_neighbourhood_explains():
    off, on = _neighbourhood_gain(0.0), _neighbourhood_gain(2.0)
    assert on > off + 0.03 and on > 3 * off, (off, on)


def test_seed_reproducible_and_features_see_own_composition_only():
    a = simulate(SimulationConfig(n_slides=1, n_spots=100, seed=7))[0]
    b = simulate(SimulationConfig(n_slides=1, n_spots=100, seed=7))[0]
    assert np.array_equal(a.X, b.X) and np.allclose(a.obsm["features"], b.obsm["features"])
    r2_own = _r2(a.obsm["composition"], a.obsm["features"]).mean()
    assert r2_own > 0.3
