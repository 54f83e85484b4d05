"""ZeroInflatedNegativeBinomial against scipy and torch references; fit_zinb on simulated data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from stgen.distributions import (
    ZeroInflatedNegativeBinomial,
    fit_zinb,
    sample_gamma,
    zinb_log_likelihood,
)

MUS = [0.05, 0.5, 1.105, 4.0, 30.0]
THETAS = [0.1, 1.0, 2.5, 50.0]
PIS = [0.0, 0.2, 0.5, 0.9]
XS = np.array([0, 1, 2, 3, 5, 10, 40, 200])


def reference_log_pmf(x: np.ndarray, mu: float, theta: float, pi: float) -> np.ndarray:
    nb = stats.nbinom.logpmf(x, theta, theta / (theta + mu))
    with np.errstate(divide="ignore"):
        return np.where(x == 0, np.log(pi + (1 - pi) * np.exp(nb)), np.log1p(-pi) + nb)


def test_log_prob_matches_scipy_reference():
    for mu in MUS:
        for theta in THETAS:
            for pi in PIS:
                d = ZeroInflatedNegativeBinomial(
                    torch.tensor(mu, dtype=torch.float64), torch.tensor(theta, dtype=torch.float64), pi=pi
                )
                got = d.log_prob(torch.tensor(XS, dtype=torch.float64)).numpy()
                np.testing.assert_allclose(got, reference_log_pmf(XS, mu, theta, pi), rtol=1e-6, atol=1e-6)


def test_log_prob_pi_and_pi_logits_agree_and_broadcast():
    mu = torch.tensor([[0.5], [3.0]], dtype=torch.float64)
    theta = torch.tensor([1.0, 2.0, 7.0], dtype=torch.float64)
    pi = torch.tensor(0.3, dtype=torch.float64)
    a = ZeroInflatedNegativeBinomial(mu, theta, pi=pi)
    b = ZeroInflatedNegativeBinomial(mu, theta, pi_logits=torch.logit(pi))
    x = torch.tensor([[0.0, 1.0, 4.0], [2.0, 0.0, 9.0]], dtype=torch.float64)
    assert a.batch_shape == torch.Size([2, 3])
    torch.testing.assert_close(a.log_prob(x), b.log_prob(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        a.log_prob(x), zinb_log_likelihood(x, mu, theta, torch.logit(pi)), rtol=1e-12, atol=1e-12
    )


def test_pmf_sums_to_one():
    d = ZeroInflatedNegativeBinomial(
        torch.tensor([0.3, 1.105, 8.0], dtype=torch.float64),
        torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64),
        pi=torch.tensor([0.0, 0.5, 0.2], dtype=torch.float64),
    )
    x = torch.arange(3000, dtype=torch.float64)[:, None]
    torch.testing.assert_close(
        d.log_prob(x).exp().sum(0), torch.ones(3, dtype=torch.float64), atol=1e-8, rtol=0
    )


def test_from_total_count_logits_matches_torch_negative_binomial():
    total_count = torch.tensor([0.5, 1.0, 2.0, 4.0], dtype=torch.float64)
    logits = torch.tensor([-1.0, 0.1, 0.2, 0.4], dtype=torch.float64)
    ours = ZeroInflatedNegativeBinomial.from_total_count_logits(total_count, logits, pi=0.0)
    ref = torch.distributions.NegativeBinomial(total_count=total_count, logits=logits)
    x = torch.arange(60, dtype=torch.float64)[:, None]
    torch.testing.assert_close(ours.log_prob(x), ref.log_prob(x), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ours.mean, ref.mean)
    torch.testing.assert_close(ours.variance, ref.variance)
    default_pi = ZeroInflatedNegativeBinomial.from_total_count_logits(total_count, logits)
    torch.testing.assert_close(default_pi.log_prob(x), ref.log_prob(x), rtol=1e-9, atol=1e-9)


def test_moments_from_pmf():
    mu, theta, pi = 2.0, 1.5, 0.3
    d = ZeroInflatedNegativeBinomial(
        torch.tensor(mu, dtype=torch.float64), torch.tensor(theta, dtype=torch.float64), pi=pi
    )
    x = torch.arange(4000, dtype=torch.float64)
    p = d.log_prob(x).exp()
    m = (x * p).sum()
    torch.testing.assert_close(d.mean, m)
    torch.testing.assert_close(d.variance, ((x - m) ** 2 * p).sum())


@pytest.mark.parametrize(
    "mu,theta,pi", [(1.105, 1.0, 0.5), (5.0, 0.4, 0.2), (0.3, 3.0, 0.0), (20.0, 10.0, 0.7)]
)
def test_sample_moments_within_sampling_error(mu, theta, pi):
    n = 200_000
    d = ZeroInflatedNegativeBinomial(
        torch.tensor(mu, dtype=torch.float64), torch.tensor(theta, dtype=torch.float64), pi=pi
    )
    x = d.sample((n,), generator=torch.Generator().manual_seed(0))
    assert x.shape == (n,) and x.dtype == torch.float64
    assert bool((x >= 0).all()) and bool((x == x.round()).all())
    mean, var = d.mean.item(), d.variance.item()
    assert abs(x.mean().item() - mean) < 5 * math.sqrt(var / n)
    # standard error of the sample variance: sqrt((mu4 - var^2) / n), mu4 from the pmf
    grid = torch.arange(20_000, dtype=torch.float64)
    p = d.log_prob(grid).exp()
    mu4 = (((grid - mean) ** 4) * p).sum().item()
    assert abs(x.var().item() - var) < 5 * math.sqrt((mu4 - var**2) / n)
    p0 = math.exp(d.log_prob(torch.tensor(0.0, dtype=torch.float64)).item())
    assert abs((x == 0).double().mean().item() - p0) < 5 * math.sqrt(p0 * (1 - p0) / n)


@pytest.mark.parametrize("alpha", [0.05, 0.3, 1.0, 2.5, 40.0])
def test_sample_gamma_moments(alpha):
    n = 100_000
    a = torch.full((n,), alpha, dtype=torch.float64)
    x = sample_gamma(a, torch.Generator().manual_seed(3))
    assert bool((x >= 0).all())
    assert abs(x.mean().item() - alpha) < 5 * math.sqrt(alpha / n)
    ks = stats.kstest(x.numpy(), stats.gamma(alpha).cdf)
    assert ks.pvalue > 1e-4


def test_seeded_generator_reproducible():
    d = ZeroInflatedNegativeBinomial(torch.tensor([0.5, 1.105, 7.0]), torch.tensor([0.3, 1.0, 2.0]), pi=0.5)
    a = d.sample((1000,), generator=torch.Generator().manual_seed(123))
    b = d.sample((1000,), generator=torch.Generator().manual_seed(123))
    c = d.sample((1000,), generator=torch.Generator().manual_seed(124))
    assert a.shape == (1000, 3)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    torch.manual_seed(5)
    e = d.sample((1000,))
    torch.manual_seed(5)
    assert torch.equal(e, d.sample((1000,)))


def test_expand():
    d = ZeroInflatedNegativeBinomial(torch.tensor([1.0, 2.0]), torch.tensor(3.0), pi=torch.tensor([0.1, 0.4]))
    e = d.expand(torch.Size([5, 2]))
    assert e.batch_shape == (5, 2)
    assert e.sample(generator=torch.Generator().manual_seed(0)).shape == (5, 2)
    torch.testing.assert_close(e.mean, d.mean.expand(5, 2))
    x = torch.tensor([0.0, 3.0])
    torch.testing.assert_close(e.log_prob(x), d.log_prob(x).expand(5, 2))
    scalar = ZeroInflatedNegativeBinomial(torch.tensor(2.0), torch.tensor(0.5), pi=0.2)
    assert scalar.sample(generator=torch.Generator().manual_seed(0)).shape == ()
    assert scalar.sample((0,)).shape == (0,)
    f = ZeroInflatedNegativeBinomial(
        torch.tensor(1.0), torch.tensor(3.0), pi_logits=torch.tensor(0.2)
    ).expand((4,))
    assert f.batch_shape == (4,)
    torch.testing.assert_close(f.pi, torch.sigmoid(torch.tensor(0.2)).expand(4))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(mu=0.0, theta=1.0, pi=0.5),
        dict(mu=-1.0, theta=1.0, pi=0.5),
        dict(mu=1.0, theta=0.0, pi=0.5),
        dict(mu=1.0, theta=float("nan"), pi=0.5),
        dict(mu=1.0, theta=1.0, pi=1.0),
        dict(mu=1.0, theta=1.0, pi=-0.1),
        dict(mu=1.0, theta=1.0, pi_logits=float("inf")),
        dict(mu=1.0, theta=1.0, pi_logits=float("nan")),
        dict(mu=1.0, theta=1.0),
        dict(mu=1.0, theta=1.0, pi=0.5, pi_logits=0.0),
    ],
)
def test_invalid_parameters_raise(kwargs):
    with pytest.raises(ValueError):
        ZeroInflatedNegativeBinomial(**{k: torch.tensor(v) for k, v in kwargs.items()}, validate_args=True)


def test_invalid_value_raises_and_no_inflation_allowed():
    d = ZeroInflatedNegativeBinomial(torch.tensor(1.0), torch.tensor(1.0), pi=0.5, validate_args=True)
    with pytest.raises(ValueError):
        d.log_prob(torch.tensor(1.5))
    with pytest.raises(ValueError):
        d.log_prob(torch.tensor(-1.0))
    with pytest.raises(ValueError):
        ZeroInflatedNegativeBinomial.from_total_count_logits(-1.0, 0.1, validate_args=True)
    nb = ZeroInflatedNegativeBinomial(
        torch.tensor(2.0, dtype=torch.float64),
        torch.tensor(1.0, dtype=torch.float64),
        pi_logits=torch.tensor(-math.inf, dtype=torch.float64),
        validate_args=True,
    )
    ref = torch.distributions.NegativeBinomial(torch.tensor(1.0, dtype=torch.float64), logits=math.log(2.0))
    x = torch.arange(10, dtype=torch.float64)
    torch.testing.assert_close(nb.log_prob(x), ref.log_prob(x))


def test_fit_zinb_recovers_parameters():
    mu = torch.tensor([3.0, 4.0, 5.0, 10.0, 3.0, 8.0], dtype=torch.float64)
    theta = torch.tensor([4.0, 2.0, 3.0, 5.0, 10.0, 2.0], dtype=torch.float64)
    pi = torch.tensor([0.0, 0.1, 0.3, 0.5, 0.2, 0.4], dtype=torch.float64)
    counts = ZeroInflatedNegativeBinomial(mu, theta, pi=pi).sample(
        (20_000,), generator=torch.Generator().manual_seed(7)
    )
    fit = fit_zinb(counts.to(torch.int64))
    assert fit.mu.shape == fit.theta.shape == fit.pi.shape == (6,)
    assert fit.mu.dtype == torch.float32
    assert bool(((fit.mu.double() - mu).abs() / mu < 0.05).all()), fit.mu
    assert bool(((fit.pi.double() - pi).abs() < 0.05).all()), fit.pi
    assert bool(((fit.theta.double() - theta).abs() / theta < 0.3).all()), fit.theta
    # the fit is at least as likely as the truth
    truth = ZeroInflatedNegativeBinomial(mu, theta, pi=pi).log_prob(counts).sum()
    fitted = ZeroInflatedNegativeBinomial(fit.mu.double(), fit.theta.double(), pi=fit.pi.double()).log_prob(
        counts
    )
    assert fitted.sum() >= truth - 1e-3


def test_fit_zinb_edge_cases():
    counts = torch.zeros(50, 3)
    counts[:, 1] = 4.0
    counts[::2, 2] = 1.0
    mu, theta, pi = fit_zinb(counts)
    assert mu[0] > 0 and mu[0] < 1e-3 and pi[0] == 0
    assert abs(mu[1].item() - 4.0) < 1e-3 and pi[1] < 1e-3
    assert ((1 - pi[2]) * mu[2]).item() == pytest.approx(0.5, rel=1e-3)
    assert bool(torch.isfinite(theta).all()) and bool((theta > 0).all()) and bool((pi < 1).all())
    with pytest.raises(ValueError):
        fit_zinb(-torch.ones(4, 2))
    with pytest.raises(ValueError):
        fit_zinb(torch.ones(4))
