from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import torch

from stgen.cli import main
from stgen.data.graph import log1p_panel
from stgen.data.slide import make_slide
from stgen.preprocess import FeatureScaler, PreprocessSpec, target_matrix

TINY = ["data.n_slides=4", "data.n_patients=4", "data.n_spots=150", "data.n_genes=8", "data.feature_dim=12",
        "train.crops_per_slide=4", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
        "encoder.hidden_dim=16", "encoder=mlp", "generator=regression", "prior=zero"]


def _train(tmp_path, *extra: str):
    out = tmp_path / "run"
    assert main(["run", *TINY, *extra, f"output_dir={out}"]) == 0
    return out


def test_statistics_come_from_training_slides_and_travel_in_the_checkpoint(tmp_path):
    from stgen.build import build_data
    from stgen.config import compose_run
    from stgen.predict import load_module, predict_slide

    out = _train(tmp_path)
    module = load_module(out / "checkpoints" / "best.ckpt")
    assert module.hparams.preprocess == {"standardize": True, "target": "log1p"}
    scaler = module.model.scaler
    assert scaler.active
    bundle = build_data(compose_run(TINY))
    fold = bundle.folds[0]
    feats = {s: np.asarray(a.obsm["features"], dtype=np.float64) for s, a in bundle.slides.items()}
    train = np.concatenate([feats[s] for s in fold.train])
    everything = np.concatenate(list(feats.values()))
    np.testing.assert_allclose(scaler.mean.numpy(), train.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scaler.std.numpy(), train.std(0), rtol=1e-4)
    assert not np.allclose(scaler.mean.numpy(), everything.mean(0), rtol=1e-3, atol=1e-4)
    # prediction applies the stored standardisation: same output as feeding standardised features to a
    # model whose scaler is switched off
    test_slide = bundle.slides[fold.test[0]]
    pred = predict_slide(module, test_slide)
    manual = test_slide.copy()
    manual.obsm["features"] = ((feats[fold.test[0]] - train.mean(0)) / train.std(0)).astype(np.float32)
    scaler.enabled = False
    pred_manual = predict_slide(module, manual)
    np.testing.assert_allclose(pred.mean, pred_manual.mean, rtol=1e-4, atol=1e-5)
    scaler.enabled = True


def test_standardisation_can_be_switched_off(tmp_path):
    from stgen.predict import load_module

    out = _train(tmp_path, "preprocess.standardize=false")
    module = load_module(out / "checkpoints" / "best.ckpt")
    assert module.hparams.preprocess["standardize"] is False
    assert not module.model.scaler.active


def test_checkpoint_without_scaler_loads_as_identity():
    scaler = FeatureScaler(3)
    state = {}
    scaler.load_state_dict(state, strict=True)
    x = torch.randn(5, 3)
    assert torch.equal(scaler(x), x)
    fitted = FeatureScaler(3).fit(torch.randn(20, 3) * 5 + 2)
    fresh = FeatureScaler(3)
    fresh.load_state_dict(fitted.state_dict())
    assert fresh.active and torch.allclose(fresh(x), fitted(x))
    assert PreprocessSpec.from_any(None) == PreprocessSpec(standardize=False, target="log1p")
    with pytest.raises(ValueError, match="unknown target"):
        PreprocessSpec(target="cpm")


def _slide(counts: np.ndarray, extra: np.ndarray | None = None) -> ad.AnnData:
    """A slide whose panel is genes g0, g1 plus (optionally) more genes that count towards the depth."""
    X = counts if extra is None else np.hstack([counts, extra])
    genes = [f"g{i}" for i in range(X.shape[1])]
    return make_slide(X.astype(np.float32), np.random.default_rng(0).random((len(X), 2)), slide="s", genes=genes)


def test_depth_option_changes_targets_as_documented():
    counts = np.array([[0, 10], [5, 5], [30, 0]], dtype=float)
    extra = np.array([[90], [10], [70]], dtype=float)  # totals 100, 20, 100
    a = _slide(counts, extra)
    raw = log1p_panel(a, ["g0", "g1"])
    np.testing.assert_allclose(raw, np.log1p(counts), rtol=1e-6)
    cp10k = log1p_panel(a, ["g0", "g1"], "log1p_cp10k")
    totals = np.array([100.0, 20.0, 100.0])
    np.testing.assert_allclose(cp10k, np.log1p(1e4 * counts / totals[:, None]), rtol=1e-5)
    # a section sequenced at a tenth of the depth: log1p targets drop, per-10k targets do not
    deep = _slide(counts * 10, extra * 10)
    np.testing.assert_allclose(target_matrix(deep, ["g0", "g1"], "log1p_cp10k"), cp10k, rtol=1e-5)
    assert (log1p_panel(deep, ["g0", "g1"]) - raw)[counts > 0].min() > 1.5
    # obs['total_counts'] wins over the row sums, and empty spots stay 0
    a.obs["total_counts"] = [1000.0, 0.0, 100.0]
    got = target_matrix(a, ["g0", "g1"], "log1p_cp10k")
    np.testing.assert_allclose(got[0], np.log1p(10 * counts[0]), rtol=1e-5)
    assert (got[1] == 0).all()


def test_depth_target_is_recorded_in_checkpoint_and_outputs(tmp_path):
    from stgen.predict import load_module, predict_files

    out = _train(tmp_path, "preprocess.target=log1p_cp10k")
    module = load_module(out / "checkpoints" / "best.ckpt")
    assert module.hparams.preprocess["target"] == "log1p_cp10k"
    written = sorted((out / "predictions").glob("*.h5ad"))
    pred = ad.read_h5ad(written[0])
    assert pred.uns["stgen"]["target"] == "log1p_cp10k"
    files = predict_files(out / "checkpoints" / "best.ckpt", [written[0]], tmp_path / "pred", n_samples=1)
    assert ad.read_h5ad(files[0]).uns["stgen"]["target"] == "log1p_cp10k"
