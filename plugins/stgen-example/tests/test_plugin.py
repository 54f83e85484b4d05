from __future__ import annotations

import math
from importlib import metadata

import pytest
import torch
from stgen.cli import main
from stgen.distributions import nb_log_likelihood, sample_gamma
from stgen.registry import ENCODERS, PRIORS, RegistryError
from stgen.testing import check_encoder, check_prior, toy_batch

from stgen_example.gatv2 import GATv2Encoder, distance_features
from stgen_example.nb_prior import FittedNBPrior, fit_nb

TINY = ["data.n_slides=4", "data.n_patients=4", "data.n_spots=120", "data.n_genes=8", "data.feature_dim=16",
        "train.crops_per_slide=4", "trainer.max_epochs=2", "optim.lr=0.003",
        "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1", "encoder.hidden_dim=32",
        "encoder.num_layers=2", "generator.steps=2"]


def nb_counts(mu: list[float], theta: list[float], n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mu_t, theta_t = torch.tensor(mu, dtype=torch.float64), torch.tensor(theta, dtype=torch.float64)
    shape = (n, len(mu))
    rate = sample_gamma(theta_t.expand(shape).clone(), g) * (mu_t / theta_t)
    return torch.poisson(rate, generator=g)


# -- discovery ------------------------------------------------------------------------------------
def test_entry_points_come_from_the_installed_distribution():
    dist = metadata.distribution("stgen-example")
    groups = {(ep.group, ep.name): ep.value for ep in dist.entry_points}
    assert groups[("stgen.encoders", "gatv2")] == "stgen_example.gatv2:GATv2Encoder"
    assert groups[("stgen.priors", "nb_fitted")] == "stgen_example.nb_prior:FittedNBPrior"
    enc = ENCODERS.entry("gatv2")
    assert enc.source == "stgen-example" and enc.obj is GATv2Encoder
    assert enc.origin == "stgen_example.gatv2:GATv2Encoder"
    prior = PRIORS.entry("nb_fitted")
    assert prior.source == "stgen-example" and prior.obj is FittedNBPrior
    assert "gatv2" not in ENCODERS.load_errors and "nb_fitted" not in PRIORS.load_errors


# -- encoder --------------------------------------------------------------------------------------
@pytest.mark.parametrize("params", [{"hidden_dim": 32, "num_layers": 2, "heads": 2}, {}])
def test_gatv2_passes_the_encoder_contract(params):
    check_encoder(GATv2Encoder, **params)


def test_distance_features_add_self_loops_and_ignore_pixel_scale():
    batch = toy_batch(sizes=(15, 9), k=4)
    n, e = batch.num_nodes, batch.edge_index.size(1)
    index, attr = distance_features(batch.pos, batch.edge_index, batch.batch, num_rbf=6)
    assert index.shape == (2, e + n) and attr.shape == (e + n, 8)
    assert torch.equal(index[:, e:], torch.arange(n).repeat(2, 1))
    assert torch.all(attr[e:, 6] == 0) and torch.all(attr[:e, 6] > 0)
    assert torch.allclose(attr[:e, 6].view(n, 4).mean(1), torch.ones(n), atol=1e-5)
    _, scaled = distance_features(batch.pos * 7.5, batch.edge_index, batch.batch, num_rbf=6)
    assert torch.allclose(attr, scaled, atol=1e-5)


def test_gatv2_uses_neighbours():
    torch.manual_seed(0)
    enc = GATv2Encoder(in_dim=12, out_dim=5, hidden_dim=16, num_layers=1, heads=2, k=6).eval()
    batch = toy_batch(12, 5, sizes=(20,))
    y, t = torch.zeros(20, 5), torch.zeros(1)
    src, dst = batch.edge_index
    spot = 0
    neighbour = int(src[dst == spot][0])
    far = [i for i in range(20) if i != spot and not bool(((src == i) & (dst == spot)).any())][0]
    with torch.no_grad():
        ref = enc(batch, y, t)
        for other, should_change in ((neighbour, True), (far, False)):
            moved = batch.clone()
            moved.x = batch.x.clone()
            moved.x[other] += 3.0
            changed = not torch.allclose(enc(moved, y, t)[spot], ref[spot])
            assert changed is should_change


def test_gatv2_rejects_bad_sizes():
    with pytest.raises(ValueError, match="divisible by heads"):
        GATv2Encoder(in_dim=4, out_dim=3, hidden_dim=30, heads=4)


# -- prior ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["ml", "moments"])
def test_nb_prior_passes_the_prior_contract(method):
    check_prior(FittedNBPrior, method=method)


def test_fit_moves_the_mean_to_the_data_mean():
    counts = nb_counts([0.5, 4.0, 25.0], [0.5, 2.0, 8.0], n=3000)
    prior = FittedNBPrior(n_genes=3, mean=1.0)
    gen = torch.Generator().manual_seed(0)
    before = torch.expm1(prior.sample((4000, 3), gen)).mean(0)
    prior.fit(counts)
    assert bool(prior.fitted)
    data_mean = counts.mean(0).float()
    assert torch.allclose(prior.mu, data_mean, rtol=1e-6)
    after = torch.expm1(prior.sample((4000, 3), torch.Generator().manual_seed(0))).mean(0)
    assert ((after - data_mean).abs() < (before - data_mean).abs()).all()
    assert torch.allclose(after, data_mean, rtol=0.1)


def test_ml_fit_recovers_theta_and_maximises_the_likelihood():
    mu, theta = [0.5, 3.0, 20.0], [0.3, 2.0, 5.0]
    counts = nb_counts(mu, theta, n=6000, seed=1)
    fit_mu, fit_theta = fit_nb(counts)
    assert torch.allclose(fit_theta, torch.tensor(theta, dtype=torch.float64), rtol=0.15)
    ll = nb_log_likelihood(counts, fit_mu, fit_theta).mean(0)
    for factor in (0.9, 1.1):
        assert (nb_log_likelihood(counts, fit_mu, fit_theta * factor).mean(0) < ll).all()
        assert (nb_log_likelihood(counts, fit_mu * factor, fit_theta).mean(0) < ll).all()
    _, mom_theta = fit_nb(counts, method="moments")
    assert torch.allclose(mom_theta, fit_theta, rtol=0.2)


def test_fit_handles_poisson_like_and_empty_genes():
    g = torch.Generator().manual_seed(3)
    counts = torch.stack([torch.poisson(torch.full((500,), 4.0), g), torch.zeros(500)], dim=1)
    counts[:, 0] = 4.0  # no variance at all
    prior = FittedNBPrior(n_genes=2, max_theta=1e3)
    prior.fit(counts)
    assert prior.theta[0] == pytest.approx(1e3) and prior.mu[0] == pytest.approx(4.0)
    assert prior.mu[1] > 0 and math.isfinite(float(prior.theta[1]))
    s = prior.sample((50, 2), torch.Generator().manual_seed(0))
    assert torch.isfinite(s).all() and (s[:, 1] == 0).all()
    with pytest.raises(ValueError, match="non-negative"):
        prior.fit(-counts - 1)
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        prior.fit(counts[:, :1])


def test_prior_rejects_bad_parameters():
    with pytest.raises(ValueError, match="method"):
        FittedNBPrior(n_genes=3, method="em")
    with pytest.raises(ValueError, match="theta"):
        FittedNBPrior(n_genes=3, theta=0.0)


# -- command line and checkpoints -----------------------------------------------------------------
def test_describe_and_list_show_the_plugin(capsys):
    assert main(["describe", "encoder", "gatv2"]) == 0
    out = capsys.readouterr().out
    assert "package stgen-example" in out and "encoder.heads" in out and "encoder.num_rbf" in out
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    rows = [line.split()[:3] for line in out.splitlines()]
    assert ["encoder", "gatv2", "stgen-example"] in rows
    assert ["prior", "nb_fitted", "stgen-example"] in rows


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("plugin-run") / "run"
    rc = main(["run", "encoder=gatv2", "prior=nb_fitted", "generator=flow", *TINY, f"output_dir={out}"])
    assert rc == 0
    return out


def test_cli_run_records_the_plugin_in_the_checkpoint(trained):
    from stgen.lit import STGenLightning

    ckpt_path = trained / "checkpoints" / "best.ckpt"
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    sources = ckpt["hyper_parameters"]["sources"]
    assert sources["encoder"]["source"] == "stgen-example" and sources["encoder"]["name"] == "gatv2"
    assert sources["prior"]["source"] == "stgen-example" and sources["generator"]["source"] == "stgen"
    STGenLightning.check_sources(str(ckpt_path))
    module = STGenLightning.load_from_checkpoint(ckpt_path, map_location="cpu")
    assert isinstance(module.model.encoder, GATv2Encoder)
    prior = module.model.prior
    assert isinstance(prior, FittedNBPrior) and bool(prior.fitted) and prior.mu.max() > 1.0


def test_checkpoint_naming_a_missing_plugin_says_what_to_install(trained, tmp_path):
    from stgen.lit import STGenLightning

    ckpt = torch.load(trained / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    ckpt["hyper_parameters"]["sources"]["encoder"] = {
        "name": "graph_mamba", "source": "stgen-mamba", "origin": "stgen_mamba.encoder:GraphMamba"}
    ckpt["hyper_parameters"]["model_spec"]["encoder"]["name"] = "graph_mamba"
    path = tmp_path / "needs-plugin.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(RegistryError) as err:
        STGenLightning.check_sources(str(path))
    msg = str(err.value)
    assert "graph_mamba" in msg and "pip install stgen-mamba" in msg
