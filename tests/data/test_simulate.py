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


def _pearson(a, b):
    from stgen.metrics import pearson_per_gene

    return pearson_per_gene(a, b).mean


def test_oracle_sees_only_what_an_image_can_show():
    from stgen.data.simulate import DEPTH_ORACLE_LAYER

    base = dict(n_slides=2, n_patients=2, n_spots=150, n_genes=10, seed=3)
    slides = simulate(SimulationConfig(**base))
    truth = np.concatenate([np.log1p(a.X) for a in slides])
    attainable = np.concatenate([a.layers[ORACLE_LAYER] for a in slides])
    depth = np.concatenate([a.layers[DEPTH_ORACLE_LAYER] for a in slides])
    # knowing each spot's library size and the patient's offsets is worth something no image shows
    assert _pearson(depth, truth) > _pearson(attainable, truth) + 0.02
    # without unobservable depth and patient variation the two oracles differ by Monte-Carlo noise only
    quiet = simulate(SimulationConfig(**base, library_slide_sd=0, library_spot_sd=0, patient_sd=0))
    truth_q = np.concatenate([np.log1p(a.X) for a in quiet])
    attainable_q = np.concatenate([a.layers[ORACLE_LAYER] for a in quiet])
    depth_q = np.concatenate([a.layers[DEPTH_ORACLE_LAYER] for a in quiet])
    assert abs(_pearson(depth_q, truth_q) - _pearson(attainable_q, truth_q)) < 0.01


def test_embeddings_have_unequal_scales_and_slide_shifts():
    slides = simulate(SimulationConfig(n_slides=3, n_patients=3, n_spots=150, seed=5))
    feats = [np.asarray(a.obsm["features"]) for a in slides]
    sd = np.concatenate(feats).std(0)
    assert sd.max() / sd.min() > 20  # columns on very different scales, as raw embeddings
    flat = simulate(SimulationConfig(n_slides=3, n_patients=3, n_spots=150, seed=5, feature_scale_spread=0.0,
                                     slide_effect=0.0))
    sd_flat = np.concatenate([np.asarray(a.obsm["features"]) for a in flat]).std(0)
    assert sd_flat.max() / sd_flat.min() < 5
    # the slide effect shifts every spot of a slide by the same vector (a stain/scanner batch effect)
    shifted = simulate(SimulationConfig(n_slides=3, n_patients=3, n_spots=150, seed=5, feature_scale_spread=0.0,
                                        slide_effect=0.5))
    for a, b in zip(shifted, flat, strict=True):
        diff = np.asarray(a.obsm["features"], dtype=np.float64) - np.asarray(b.obsm["features"], dtype=np.float64)
        assert diff.std(0).max() < 1e-4 and np.abs(diff.mean(0)).mean() > 0.1
