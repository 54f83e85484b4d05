"""The Gaussian (heteroscedastic) regression head and the per-gene recalibration of the spread."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from torch import nn
from torch_geometric.data import Batch, Data

from stgen.build import build_model
from stgen.generators.base import SampleOutput
from stgen.generators.regression import (
    LOG_VAR_MAX,
    LOG_VAR_MIN,
    RegressionGenerator,
    bounded_log_var,
    gaussian_nll,
)
from stgen.metrics import calibration
from stgen.recalibrate import SpreadScale
from stgen.testing import check_generator, toy_batch

GAUSSIAN = {"name": "regression", "likelihood": "gaussian"}


def test_gaussian_regression_passes_the_generator_contract():
    check_generator(RegressionGenerator, likelihood="gaussian")
    check_generator(RegressionGenerator, likelihood="gaussian", beta=0.0, n_samples=2)
    with pytest.raises(ValueError, match="likelihood"):
        RegressionGenerator(likelihood="poisson")
    with pytest.raises(ValueError, match="beta"):
        RegressionGenerator(likelihood="gaussian", beta=2.0)


@pytest.mark.parametrize("encoder", [{"name": "mlp", "hidden_dim": 16, "num_layers": 1},
                                     {"name": "gnn", "hidden_dim": 16, "num_layers": 1},
                                     {"name": "fa_local", "hidden_dim": 16, "edge_dim": 16, "num_layers": 2}])
def test_every_encoder_gets_a_mean_and_a_log_variance_per_gene(encoder):
    g = 5
    spec = {"encoder": encoder, "generator": GAUSSIAN, "prior": {"name": "gaussian"}}
    model = build_model(spec, in_dim=12, n_genes=g)
    assert model.encoder.out_dim == 2 * g
    batch = toy_batch(12, g)
    out = model.loss(batch)
    assert out.pred.shape == batch.y.shape and torch.isfinite(out.loss)
    out.loss.backward()
    model.eval()
    pred = model.predict(batch, n_samples=1)  # one sample: the head's sd is the spread
    assert pred.mean.shape == batch.y.shape and pred.std is not None and pred.std.shape == batch.y.shape
    assert (pred.std > 0).all()
    # the MSE default keeps one output per gene and no spread with one sample
    mse = build_model({**spec, "generator": {"name": "regression"}}, in_dim=12, n_genes=g)
    assert mse.encoder.out_dim == g and mse.predict(batch, n_samples=1).std is None


def test_log_variance_is_softly_bounded_and_the_nll_is_the_gaussian_one():
    raw = torch.linspace(-40, 40, 201, requires_grad=True)
    lv = bounded_log_var(raw)
    assert lv.min() > LOG_VAR_MIN - 1e-6 and lv.max() < LOG_VAR_MAX + 1e-6
    assert torch.allclose(bounded_log_var(torch.tensor([-2.0, 0.0, 1.0])), torch.tensor([-2.0, 0.0, 1.0]), atol=0.05)
    lv.sum().backward()
    assert (raw.grad > 0).all()  # never a dead gradient at the bounds
    m, v, y = torch.tensor([[0.3]]), torch.tensor([[0.7]]), torch.tensor([[1.1]])
    ref = -torch.distributions.Normal(m, v.sqrt()).log_prob(y)
    assert torch.allclose(gaussian_nll(m, v.log(), y), ref)
    assert torch.allclose(gaussian_nll(m, v.log(), y, beta=0.5), ref * v.sqrt())


def _heteroscedastic(n: int, seed: int) -> tuple[Batch, torch.Tensor]:
    """Features x; the mean depends on x0, x1; the noise sd on x2 only (0.05 to 0.8)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    mean = torch.stack([torch.sin(x[:, 0]) + 0.5 * x[:, 1], 0.8 * x[:, 0] - torch.cos(x[:, 1]),
                        torch.tanh(x[:, 0] + x[:, 1])], 1) + 2.0
    sd = (0.05 + 0.75 * torch.sigmoid(2.5 * x[:, 2]))[:, None].expand(-1, 3)
    y = mean + sd * torch.randn(n, 3, generator=g)
    data = Data(x=x, pos=torch.rand(n, 2, generator=g) * 100, y=y)
    return Batch.from_data_list([data]), sd


def _train(generator: dict, batch: Batch, steps: int = 400, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(0)
    spec = {"encoder": {"name": "mlp", "hidden_dim": 32, "num_layers": 2, "dropout": dropout},
            "generator": generator, "prior": {"name": "gaussian"}}
    model = build_model(spec, in_dim=4, n_genes=3)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        model.loss(batch).loss.backward()
        opt.step()
    model.eval()
    return model


def _plain_nll(model: nn.Module, batch: Batch) -> float:
    with torch.no_grad():
        out = model.predict(batch, n_samples=1)
    return float(gaussian_nll(out.mean, 2 * out.std.log(), batch.y).mean())


def test_the_head_learns_which_spots_are_noisy_and_mc_dropout_does_not():
    train, _ = _heteroscedastic(3000, 0)
    test, sd = _heteroscedastic(3000, 1)
    spec = {"encoder": {"name": "mlp", "hidden_dim": 32, "num_layers": 2},
            "generator": GAUSSIAN, "prior": {"name": "gaussian"}}
    torch.manual_seed(0)
    untrained = build_model(spec, in_dim=4, n_genes=3).eval()
    model = _train(GAUSSIAN, train)
    before, after = _plain_nll(untrained, train), _plain_nll(model, train)
    assert after < before - 0.5, (before, after)  # the NLL decreases
    with torch.no_grad():
        out = model.predict(test, n_samples=1)
    cal = calibration(out.mean.numpy(), out.std.numpy(), test.y.numpy())
    assert cal.spearman_partial > 0.3, cal  # it ranks the errors beyond the size of the prediction
    # the learnt sd follows the true noise sd
    r = np.corrcoef(out.std.numpy().ravel(), sd.numpy().ravel())[0, 1]
    assert r > 0.8, r
    # MC dropout of the same network trained with the MSE: its spread says little about these errors
    mse = _train({"name": "regression"}, train, dropout=0.2)
    for m in mse.modules():
        if isinstance(m, nn.Dropout):
            m.train()
    with torch.no_grad():
        mc = mse.predict(test, n_samples=16)
    mc_cal = calibration(mc.mean.numpy(), mc.std.numpy(), test.y.numpy())
    assert cal.spearman_partial > mc_cal.spearman_partial + 0.2, (cal, mc_cal)


def test_recalibration_on_validation_data_gives_nominal_coverage_on_held_out_data():
    rng = np.random.default_rng(0)
    g = 3

    def draw(n):
        mean = rng.normal(2, 1, (n, g))
        sd = rng.uniform(0.1, 1.0, (n, g))
        return mean, sd, mean + sd * rng.normal(size=(n, g))

    wrong = np.array([0.3, 1.0, 3.0])  # the model's spread is too narrow, right, too wide per gene
    vm, vs, vt = draw(4000)
    tm, ts, tt = draw(4000)
    scale = SpreadScale(g).fit(vm, vs * wrong, vt)
    np.testing.assert_allclose(scale.scale.numpy(), 1 / wrong, rtol=0.05)
    raw = SampleOutput(mean=torch.tensor(tm), std=torch.tensor(ts * wrong), n_samples=1)
    fixed = scale(raw)
    before = calibration(tm, raw.std.numpy(), tt)
    after = calibration(tm, fixed.std.numpy(), tt)
    assert abs(before.coverage[0.8] - 0.8) > 0.05
    for level, cov in after.coverage.items():
        assert abs(cov - level) < 0.02, (level, cov)
    assert after.spearman == pytest.approx(before.spearman)  # a per-gene scale keeps the ranking
    # identity until fitted; no spread stays no spread; an older checkpoint (no buffers) loads as identity
    assert SpreadScale(g)(raw) is raw
    assert scale(SampleOutput(mean=raw.mean, std=None, n_samples=1)).std is None
    fresh = SpreadScale(g)
    fresh.load_state_dict({})
    assert not bool(fresh.fitted) and torch.equal(fresh.scale, torch.ones(g))
    with pytest.raises(ValueError, match="shape"):
        SpreadScale(g).fit(vm[:, :2], vs[:, :2], vt[:, :2])


def test_ablation_with_the_gaussian_head_recalibrates_and_predict_writes_the_spread(tmp_path, capsys):
    import anndata as ad

    from stgen.checkpoint import read_checkpoint
    from stgen.cli import main

    tiny = ["data.n_slides=4", "data.n_patients=4", "data.n_spots=120", "data.n_genes=6", "data.feature_dim=8",
            "train.crops_per_slide=2", "trainer.max_epochs=2", "encoder.hidden_dim=16", "encoder.num_layers=1",
            "eval.ridge=false"]
    out = tmp_path / "abl"
    rc = main(["ablate", *tiny, "-o", str(out), "--variants", "mlp_regression_gaussian",
               "mlp_regression_gaussian_mc_dropout", "--seeds", "0", "1", "--no-reference"])
    assert rc == 0, capsys.readouterr().err
    rows = {(r["variant"], r["seed"]): r for r in csv.DictReader((out / "rows.csv").open())}
    for seed in ("0", "1"):
        r = rows[("mlp_regression_gaussian", seed)]
        assert all(np.isfinite(float(r[k])) for k in ("cal_spearman_partial", "cov80", "cov80_uncal"))
        # re-evaluated with MC dropout: the scale is refitted on the validation slides for that spread
        r = rows[("mlp_regression_gaussian_mc_dropout", seed)]
        assert all(np.isfinite(float(r[k])) for k in ("cal_spearman_partial", "cov80", "cov80_uncal"))
    assert np.isfinite(float(rows[("mlp_regression_gaussian_ensemble2", "-1")]["cov80"]))
    # the members' spread already models the measurement noise: no NB count noise on top of it
    assert not any(v.endswith("_count_noise") for v, _ in rows)
    assert "before recalibration" in (out / "report.md").read_text()
    run = out / "runs" / "mlp_regression_gaussian-s0"
    metrics = json.loads((run / "metrics.json").read_text())["folds"][0]
    assert metrics["spread_scale_median"] > 0
    state = read_checkpoint(run / "checkpoints" / "best.ckpt")["state_dict"]
    assert bool(state["model.spread_scale.fitted"])  # the validation-fitted scale travels in the checkpoint
    scales = [float(r["spread_scale"]) for r in csv.DictReader((run / "per_gene.csv").open())]
    np.testing.assert_allclose(scales, state["model.spread_scale.scale"].numpy(), rtol=1e-6)
    stored = sorted((run / "predictions").glob("*.h5ad"))[0]
    assert main(["predict", str(run / "checkpoints" / "best.ckpt"), str(stored), "-o", str(tmp_path / "p")]) == 0
    again = ad.read_h5ad(tmp_path / "p" / stored.name)
    first = ad.read_h5ad(stored)
    assert "stgen_std" in again.layers and "stgen_std" in first.layers  # one sample, still a spread
    np.testing.assert_allclose(again.layers["stgen_std"], first.layers["stgen_std"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(again.layers["stgen_mean"], first.layers["stgen_mean"], rtol=1e-5, atol=1e-6)


def test_several_passes_combine_the_predicted_and_the_pass_to_pass_variance():
    from stgen.encoders.mlp import MLPEncoder
    from stgen.priors.gaussian import GaussianPrior

    gen = RegressionGenerator(likelihood="gaussian")
    torch.manual_seed(0)
    enc = MLPEncoder(in_dim=12, out_dim=gen.encoder_out_dim(5), hidden_dim=16, num_layers=2, dropout=0.3)
    enc.train()  # dropout on: every pass differs (MC dropout)
    batch, prior = toy_batch(12, 5), GaussianPrior(5)
    torch.manual_seed(1)
    out = gen.predict(enc, batch, prior, n_samples=4)
    torch.manual_seed(1)
    with torch.no_grad():
        draws = [gen.sample_moments(enc, batch, prior) for _ in range(4)]
    means = torch.stack([m for m, _ in draws])
    total = means.var(0, unbiased=True) + torch.stack([v for _, v in draws]).mean(0)
    assert torch.allclose(out.mean, means.mean(0), atol=1e-6)
    assert torch.allclose(out.std, total.sqrt(), atol=1e-6)
    assert (out.std ** 2 > torch.stack([v for _, v in draws]).mean(0) + 1e-9).any()  # the passes add variance
