"""Count distributions: the zero-inflated negative binomial (ZINB), its log-likelihood and an ML fit.

Parameterisation (as in scVI): mean ``mu > 0``, inverse dispersion ``theta > 0`` and zero-inflation
probability ``pi`` in ``[0, 1)``::

    NB(x; mu, theta)  = Gamma(x + theta) / (Gamma(theta) x!) * (theta / (theta + mu))^theta
                        * (mu / (theta + mu))^x
    ZINB(0)           = pi + (1 - pi) NB(0)
    ZINB(x > 0)       = (1 - pi) NB(x)

``torch.distributions.NegativeBinomial(total_count, logits)`` is the same NB with ``theta = total_count``
and ``mu = total_count * exp(logits)``; :meth:`ZeroInflatedNegativeBinomial.from_total_count_logits`
builds a ZINB from that form.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Distribution, constraints
from torch.distributions.utils import broadcast_all, lazy_property

__all__ = [
    "ZINBFit",
    "ZeroInflatedNegativeBinomial",
    "fit_zinb",
    "nb_log_likelihood",
    "sample_gamma",
    "zinb_log_likelihood",
]


def nb_log_likelihood(x: Tensor, mu: Tensor, theta: Tensor) -> Tensor:
    """Elementwise ``log NB(x; mu, theta)`` (broadcasting)."""
    log_theta_mu = torch.log(theta + mu)
    return (
        torch.lgamma(x + theta)
        - torch.lgamma(theta)
        - torch.lgamma(x + 1.0)
        - theta * torch.log1p(mu / theta)
        + x * (torch.log(mu) - log_theta_mu)
    )


def zinb_log_likelihood(x: Tensor, mu: Tensor, theta: Tensor, pi_logits: Tensor) -> Tensor:
    """Elementwise ``log ZINB(x; mu, theta, pi = sigmoid(pi_logits))`` (broadcasting).

    ``pi_logits = -inf`` (no zero inflation) is allowed; the zero case is a log-sum-exp of the inflated
    mass and the NB mass at zero.

    Shapes:
        ``x``, ``mu``, ``theta``, ``pi_logits`` broadcast to a common shape, which is returned.
    """
    x, mu, theta, pi_logits = broadcast_all(x, mu, theta, pi_logits)
    log_pi = -F.softplus(-pi_logits)
    log_one_minus_pi = -F.softplus(pi_logits)
    nb = nb_log_likelihood(x, mu, theta)
    nb_zero = -theta * torch.log1p(mu / theta)
    at_zero = torch.logaddexp(log_pi, log_one_minus_pi + nb_zero)
    return torch.where(x == 0, at_zero, log_one_minus_pi + nb)


def sample_gamma(concentration: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Draw ``Gamma(concentration, rate=1)`` elementwise, reproducibly from ``generator``.

    Marsaglia and Tsang's squeeze-rejection method, vectorised: rejected entries are redrawn until all
    are accepted. Concentrations below 1 use ``Gamma(a) = Gamma(a + 1) * U^(1/a)``. Every random number
    comes from ``torch.randn`` / ``torch.rand`` with ``generator`` (the global RNG when it is None), so a
    seeded generator reproduces the draw exactly.
    """
    a = concentration.reshape(-1)
    small = a < 1
    boosted = torch.where(small, a + 1.0, a)
    d = boosted - 1.0 / 3.0
    c = torch.rsqrt(9.0 * d)
    out = torch.empty_like(a)
    pending = torch.arange(a.numel(), device=a.device)
    while pending.numel() > 0:
        d_p, c_p = d[pending], c[pending]
        z = torch.randn(d_p.shape, generator=generator, dtype=a.dtype, device=a.device)
        u = torch.rand(d_p.shape, generator=generator, dtype=a.dtype, device=a.device)
        v = (1.0 + c_p * z) ** 3
        safe_v = torch.where(v > 0, v, torch.ones_like(v))
        accept = (v > 0) & (torch.log(u) < 0.5 * z * z + d_p - d_p * safe_v + d_p * torch.log(safe_v))
        out[pending[accept]] = (d_p * v)[accept]
        pending = pending[~accept]
    if bool(small.any()):
        u = torch.rand(a.shape, generator=generator, dtype=a.dtype, device=a.device)
        log_scale = torch.log(u) / torch.where(small, a, torch.ones_like(a))
        out = torch.where(small, out * torch.exp(log_scale), out)
    return out.reshape(concentration.shape)


class ZeroInflatedNegativeBinomial(Distribution):
    """Zero-inflated negative binomial over non-negative integers.

    Give exactly one of ``pi`` (probability of an extra zero) and ``pi_logits``.

    Args:
        mu: NB mean, ``> 0``.
        theta: NB inverse dispersion (``total_count``), ``> 0``; ``Var_NB = mu + mu^2 / theta``.
        pi: zero-inflation probability in ``[0, 1)``.
        pi_logits: ``logit(pi)`` in ``[-inf, inf)``.
        validate_args: check parameters (``ValueError``) and ``log_prob`` values; ``None`` follows
            ``torch.distributions.Distribution``'s default.

    Shapes:
        batch shape: the broadcast shape of ``mu``, ``theta`` and ``pi`` / ``pi_logits``; event shape
        ``()``. ``sample(sample_shape)`` -> ``sample_shape + batch_shape``.
    """

    arg_constraints = {
        "mu": constraints.positive,
        "theta": constraints.positive,
        "pi": constraints.half_open_interval(0.0, 1.0),
        "pi_logits": constraints.less_than(math.inf),
    }
    support = constraints.nonnegative_integer

    def __init__(
        self,
        mu: Tensor | float,
        theta: Tensor | float,
        pi: Tensor | float | None = None,
        pi_logits: Tensor | float | None = None,
        validate_args: bool | None = None,
    ) -> None:
        if (pi is None) == (pi_logits is None):
            raise ValueError("ZeroInflatedNegativeBinomial: give exactly one of `pi` and `pi_logits`")
        if pi is not None:
            self.mu, self.theta, self.pi = broadcast_all(mu, theta, pi)
        else:
            self.mu, self.theta, self.pi_logits = broadcast_all(mu, theta, pi_logits)
        super().__init__(self.mu.shape, validate_args=validate_args)

    @classmethod
    def from_total_count_logits(
        cls,
        total_count: Tensor | float,
        logits: Tensor | float,
        pi: Tensor | float | None = None,
        pi_logits: Tensor | float | None = None,
        validate_args: bool | None = None,
    ) -> ZeroInflatedNegativeBinomial:
        """ZINB from ``torch.distributions.NegativeBinomial``'s form: ``theta = total_count``,
        ``mu = total_count * exp(logits)``; ``pi`` defaults to 0 when neither ``pi`` nor ``pi_logits``
        is given."""
        total_count, logits = broadcast_all(total_count, logits)
        if pi is None and pi_logits is None:
            pi = torch.zeros_like(total_count)
        return cls(
            total_count * torch.exp(logits),
            total_count,
            pi=pi,
            pi_logits=pi_logits,
            validate_args=validate_args,
        )

    @lazy_property
    def pi(self) -> Tensor:
        return torch.sigmoid(self.pi_logits)

    @lazy_property
    def pi_logits(self) -> Tensor:
        return torch.logit(self.pi)

    @property
    def mean(self) -> Tensor:
        return (1.0 - self.pi) * self.mu

    @property
    def variance(self) -> Tensor:
        return (1.0 - self.pi) * self.mu * (1.0 + self.mu / self.theta + self.pi * self.mu)

    def expand(self, batch_shape: torch.Size, _instance: ZeroInflatedNegativeBinomial | None = None):
        new = self._get_checked_instance(ZeroInflatedNegativeBinomial, _instance)
        batch_shape = torch.Size(batch_shape)
        new.mu = self.mu.expand(batch_shape)
        new.theta = self.theta.expand(batch_shape)
        if "pi" in self.__dict__:
            new.pi = self.pi.expand(batch_shape)
        if "pi_logits" in self.__dict__:
            new.pi_logits = self.pi_logits.expand(batch_shape)
        super(ZeroInflatedNegativeBinomial, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return zinb_log_likelihood(value, self.mu, self.theta, self.pi_logits)

    def sample(
        self, sample_shape: torch.Size | tuple[int, ...] = (), generator: torch.Generator | None = None
    ) -> Tensor:
        """Gamma-Poisson mixture with Bernoulli zero inflation, all drawn from ``generator``."""
        shape = self._extended_shape(torch.Size(sample_shape))
        with torch.no_grad():
            mu = self.mu.expand(shape)
            theta = self.theta.expand(shape)
            rate = sample_gamma(theta, generator) * (mu / theta)
            counts = torch.poisson(rate, generator=generator)
            inflated = torch.rand(
                shape, generator=generator, dtype=mu.dtype, device=mu.device
            ) < self.pi.expand(shape)
            return counts.masked_fill(inflated, 0.0)


class ZINBFit(NamedTuple):
    """Per-gene maximum-likelihood ZINB parameters (each ``[G]``)."""

    mu: Tensor
    theta: Tensor
    pi: Tensor


def _moment_init(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Method-of-moments start: NB dispersion, excess zeros as inflation, then ZINB mean and dispersion."""
    m = x.mean(0)
    v = x.var(0, unbiased=False)
    zeros = (x == 0).to(x.dtype).mean(0)
    theta = torch.where(v > m, m * m / (v - m).clamp_min(1e-12), torch.full_like(m, 1e3)).clamp(1e-3, 1e3)
    nb_zero = torch.exp(-theta * torch.log1p(m / theta))
    pi = ((zeros - nb_zero) / (1.0 - nb_zero).clamp_min(1e-12)).clamp(1e-3, 0.9)
    mu = m / (1.0 - pi)
    excess = v / ((1.0 - pi) * mu) - 1.0 - pi * mu
    theta = torch.where(excess > 0, mu / excess.clamp_min(1e-12), torch.full_like(m, 1e3)).clamp(1e-3, 1e3)
    return mu, theta, pi


def _distinct(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Distinct (gene, value) pairs of ``x [N, G]`` with their frequencies (integer data only)."""
    n, g = x.shape
    gene = torch.arange(g).expand(n, g)
    if not bool((x == x.round()).all()):
        return gene.reshape(-1), x.reshape(-1), torch.full((n * g,), 1.0 / n, dtype=x.dtype)
    values = x.long()
    span = int(values.max()) + 1
    keys, freq = torch.unique(gene * span + values, return_counts=True)
    return keys // span, (keys % span).to(x.dtype), freq.to(x.dtype) / n


def _per_gene_nll(params: Tensor, gene_idx: Tensor, values: Tensor, weight: Tensor) -> Tensor:
    log_mu, log_theta, logit_pi = params[:, gene_idx]
    ll = zinb_log_likelihood(values, log_mu.exp(), log_theta.exp(), logit_pi)
    return torch.zeros(params.shape[1], dtype=params.dtype).index_add(0, gene_idx, -weight * ll)


def fit_zinb(
    counts: Tensor,
    max_iter: int = 100,
    tol: float = 1e-8,
    min_mu: float = 1e-6,
    max_theta: float = 1e6,
) -> ZINBFit:
    """Per-gene maximum-likelihood ZINB fit of raw counts.

    Each gene's ``(log mu, log theta, logit pi)`` is optimised on its own by Levenberg-Marquardt-damped
    Newton steps (exact 3x3 Hessians from autograd) in float64, started from the method of moments; a step
    is kept only where it lowers that gene's negative log-likelihood. For integer counts the likelihood
    is evaluated once per distinct (gene, count) pair, weighted by its frequency, so the cost scales with
    the number of distinct values rather than with ``N``. Genes with no non-zero count get
    ``mu = min_mu``, ``theta = 1``, ``pi = 0``.

    Args:
        counts: non-negative raw counts.
        max_iter: maximal Newton iterations.
        tol: stop once every gene's gradient (of the mean negative log-likelihood) is below ``tol``.
        min_mu: floor on the fitted mean.
        max_theta: bound on the fitted inverse dispersion, ``theta`` in ``[1 / max_theta, max_theta]``
            (a Poisson-like gene drives it to infinity).

    Shapes:
        ``counts [N, G]`` -> ``ZINBFit(mu [G], theta [G], pi [G])`` in ``counts``' floating dtype
        (float32 for integer input).

    Returns:
        a :class:`ZINBFit` named tuple, unpackable as ``mu, theta, pi``.
    """
    counts = torch.as_tensor(counts)
    if counts.dim() != 2 or counts.shape[0] == 0:
        raise ValueError(f"fit_zinb: expected counts of shape [N, G] with N > 0, got {tuple(counts.shape)}")
    out_dtype = counts.dtype if counts.is_floating_point() else torch.float32
    x = counts.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(x).all()) or bool((x < 0).any()):
        raise ValueError("fit_zinb: counts must be finite and non-negative")
    g = x.shape[1]
    mu = torch.full((g,), min_mu, dtype=torch.float64)
    theta = torch.ones(g, dtype=torch.float64)
    pi = torch.zeros(g, dtype=torch.float64)
    active = (x > 0).any(0)
    if bool(active.any()):
        xa = x[:, active]
        mu0, theta0, pi0 = _moment_init(xa)
        gene_idx, values, weight = _distinct(xa)
        lo = torch.tensor([math.log(min_mu), -math.log(max_theta), -40.0], dtype=torch.float64)[:, None]
        hi = torch.tensor([math.inf, math.log(max_theta), 15.0], dtype=torch.float64)[:, None]
        params = torch.stack([mu0.log(), theta0.log(), torch.logit(pi0)]).clamp(lo, hi)
        damping = torch.full((xa.shape[1],), 1e-3, dtype=torch.float64)
        eye = torch.eye(3, dtype=torch.float64)
        for _ in range(max_iter):
            p = params.detach().requires_grad_(True)
            loss = _per_gene_nll(p, gene_idx, values, weight)
            (grad,) = torch.autograd.grad(loss.sum(), p, create_graph=True)
            rows = [torch.autograd.grad(grad[k].sum(), p, retain_graph=k < 2)[0] for k in range(3)]
            grad, loss = grad.detach(), loss.detach()
            if float(grad.abs().max()) < tol or bool((damping >= 1e10).all()):
                break
            hess = torch.stack(rows).permute(2, 0, 1)
            step, _ = torch.linalg.solve_ex(hess + damping[:, None, None] * eye, -grad.T.unsqueeze(-1))
            trial = (params + step.squeeze(-1).T).clamp(lo, hi)
            with torch.no_grad():
                better = _per_gene_nll(trial, gene_idx, values, weight) <= loss
            params = torch.where(better, trial, params)
            damping = torch.where(better, damping * 0.1, damping * 10.0).clamp(1e-12, 1e10)
        log_mu, log_theta, logit_pi = params
        mu[active] = log_mu.exp()
        theta[active] = log_theta.exp()
        pi[active] = torch.sigmoid(logit_pi)
    return ZINBFit(mu.to(out_dtype), theta.to(out_dtype), pi.to(out_dtype))
