"""The ZINB prior: STFlow defaults, log1p space, optional per-gene fit stored in buffers."""

from __future__ import annotations

import math

import pytest
import torch

from stgen.distributions import ZeroInflatedNegativeBinomial
from stgen.priors.zinb import ZINBPrior
from stgen.registry import PRIORS


def log1p_moments(mu: float, theta: float, pi: float, cutoff: int = 5000) -> tuple[float, float]:
    """Analytic mean and standard deviation of log1p(X), X ~ ZINB, from the pmf."""
    d = ZeroInflatedNegativeBinomial(
        torch.tensor(mu, dtype=torch.float64), torch.tensor(theta, dtype=torch.float64), pi=pi
    )
    x = torch.arange(cutoff, dtype=torch.float64)
    p = d.log_prob(x).exp()
    assert abs(p.sum().item() - 1.0) < 1e-10
    y = torch.log1p(x)
    mean = (y * p).sum().item()
    return mean, math.sqrt(((y - mean) ** 2 * p).sum().item())


def test_registered():
    assert PRIORS.get("zinb") is ZINBPrior
    assert {p.name: p.default for p in ZINBPrior.params()} == {
        "total_count": 1.0,
        "logits": 0.1,
        "pi": 0.5,
        "fit": False,
    }


def test_default_parameters_are_stflow():
    prior = ZINBPrior(n_genes=4)
    torch.testing.assert_close(prior.mu, torch.full((4,), math.exp(0.1)))
    torch.testing.assert_close(prior.theta, torch.ones(4))
    torch.testing.assert_close(prior.pi, torch.full((4,), 0.5))
    assert not bool(prior.fitted)


@pytest.mark.parametrize("total_count,logits,pi", [(1.0, 0.1, 0.5), (4.0, 0.4, 0.5), (2.0, 0.2, 0.0)])
def test_sample_mean_matches_analytic_log1p_mean(total_count, logits, pi):
    n, g = 20_000, 10
    prior = ZINBPrior(n_genes=g, total_count=total_count, logits=logits, pi=pi)
    y = prior.sample((n, g), generator=torch.Generator().manual_seed(0))
    assert y.shape == (n, g) and y.dtype == torch.get_default_dtype()
    mean, sd = log1p_moments(total_count * math.exp(logits), total_count, pi)
    assert abs(y.double().mean().item() - mean) < 5 * sd / math.sqrt(n * g)


def test_sample_lives_in_log1p_space():
    n, g = 20_000, 10
    y = ZINBPrior(n_genes=g).sample((n, g), generator=torch.Generator().manual_seed(1))
    assert bool((y >= 0).all())
    counts = torch.expm1(y.double())
    assert torch.allclose(counts, counts.round(), atol=1e-3)
    mu, theta, pi = math.exp(0.1), 1.0, 0.5
    p0 = pi + (1 - pi) * (theta / (theta + mu)) ** theta
    assert abs((y == 0).double().mean().item() - p0) < 5 * math.sqrt(p0 * (1 - p0) / (n * g))


def test_seeded_and_device_arguments():
    prior = ZINBPrior(n_genes=3)
    a = prior.sample((50, 3), generator=torch.Generator().manual_seed(9))
    b = prior.sample((50, 3), generator=torch.Generator().manual_seed(9), device="cpu")
    assert torch.equal(a, b)
    with pytest.raises(ValueError):
        prior.sample((50, 4))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(total_count=0.0),
        dict(total_count=-1.0),
        dict(total_count=float("inf")),
        dict(logits=float("nan")),
        dict(logits=1000.0),
        dict(pi=1.0),
        dict(pi=-0.01),
        dict(pi=float("nan")),
    ],
)
def test_invalid_parameters_raise(kwargs):
    with pytest.raises(ValueError, match="zinb prior"):
        ZINBPrior(n_genes=3, **kwargs)


def test_invalid_n_genes_raises():
    with pytest.raises(ValueError, match="n_genes"):
        ZINBPrior(n_genes=0)


def simulated_counts() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    mu = torch.tensor([2.0, 6.0, 3.0, 12.0], dtype=torch.float64)
    theta = torch.tensor([3.0, 1.5, 2.0, 5.0], dtype=torch.float64)
    pi = torch.tensor([0.1, 0.3, 0.2, 0.6], dtype=torch.float64)
    counts = ZeroInflatedNegativeBinomial(mu, theta, pi=pi).sample(
        (5000,), generator=torch.Generator().manual_seed(2)
    )
    return counts.float(), mu, theta, pi


def test_fit_moves_buffers_to_data_and_survives_state_dict():
    counts, mu, _, pi = simulated_counts()
    prior = ZINBPrior(n_genes=4, fit=True)
    default = prior.sample((20_000, 4), generator=torch.Generator().manual_seed(0))
    prior.fit(counts)
    assert bool(prior.fitted)
    assert bool(((prior.mu.double() - mu).abs() / mu < 0.1).all()), prior.mu
    assert bool(((prior.pi.double() - pi).abs() < 0.07).all()), prior.pi
    fitted_sample = prior.sample((20_000, 4), generator=torch.Generator().manual_seed(0))
    data_mean = torch.log1p(counts).mean(0)
    assert (fitted_sample.mean(0) - data_mean).abs().max() < (default.mean(0) - data_mean).abs().max()
    assert torch.allclose(fitted_sample.mean(0), data_mean, atol=0.05)

    fresh = ZINBPrior(n_genes=4, fit=True)
    assert set(fresh.state_dict()) == {"mu", "theta", "pi", "fitted"}
    fresh.load_state_dict(prior.state_dict())
    assert bool(fresh.fitted)
    for name in ("mu", "theta", "pi"):
        assert torch.equal(getattr(fresh, name), getattr(prior, name))
    again = fresh.sample((20_000, 4), generator=torch.Generator().manual_seed(0))
    assert torch.equal(again, fitted_sample)


def test_fit_false_ignores_fit():
    counts, *_ = simulated_counts()
    prior = ZINBPrior(n_genes=4)
    before = {k: v.clone() for k, v in prior.state_dict().items()}
    prior.fit(counts)
    for k, v in prior.state_dict().items():
        assert torch.equal(v, before[k])
    assert not bool(prior.fitted)


def test_fit_checks_shape():
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        ZINBPrior(n_genes=4, fit=True).fit(torch.ones(10, 3))
