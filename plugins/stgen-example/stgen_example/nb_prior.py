"""Negative-binomial prior (no zero inflation) fitted per gene to the training counts."""

from __future__ import annotations

import math

import torch
from stgen.distributions import nb_log_likelihood, sample_gamma
from stgen.priors.base import Prior
from torch import Tensor

METHODS = ("ml", "moments")
MIN_MU = 1e-6
MIN_THETA = 1e-4


def nb_profile_score(x: Tensor, mu: Tensor, theta: Tensor) -> Tensor:
    """Per-gene derivative of the mean NB log-likelihood in ``theta``, with ``mu`` at the sample mean.

    ``d/dtheta mean_n log NB(x_n; mu, theta) = mean_n[psi(x_n + theta) - psi(theta)]
    + log(theta / (theta + mu))``; the term ``(mu - x_n) / (theta + mu)`` averages to zero when ``mu`` is
    the sample mean.

    Shapes:
        x ``[N, G]``, mu ``[G]``, theta ``[G]`` -> ``[G]``.
    """
    return (torch.digamma(x + theta) - torch.digamma(theta)).mean(0) + torch.log(theta / (theta + mu))


def fit_nb(
    counts: Tensor, method: str = "ml", max_theta: float = 1e4, iters: int = 60
) -> tuple[Tensor, Tensor]:
    """Per-gene NB mean ``mu`` and inverse dispersion ``theta`` of raw counts.

    The ML mean of a negative binomial is the sample mean for any ``theta``, so both methods take
    ``mu = mean``. ``"moments"`` sets ``theta = mean^2 / (var - mean)``; ``"ml"`` solves the profile score
    equation (:func:`nb_profile_score`) by bisection on ``log theta`` over ``[1e-4, max_theta]``. The score
    has one root when ``var > mean``; a gene with ``var <= mean`` has no finite ML ``theta`` (it is
    Poisson-like) and gets ``theta = max_theta`` under both methods. A gene with no non-zero count gets
    ``mu = 1e-6`` and ``theta = 1``.

    Args:
        counts: non-negative raw counts.
        method: ``"ml"`` or ``"moments"``.
        max_theta: upper bound on ``theta``.
        iters: bisection steps (each halves the bracket of ``log theta``).

    Shapes:
        counts ``[N, G]`` -> ``mu [G]``, ``theta [G]`` (float64).
    """
    if method not in METHODS:
        raise ValueError(f"nb_fitted prior: method must be one of {', '.join(METHODS)}, got {method!r}")
    x = torch.as_tensor(counts).detach().to("cpu", torch.float64)
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"nb_fitted prior: expected counts of shape [N, G] with N > 0, got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()) or bool((x < 0).any()):
        raise ValueError("nb_fitted prior: counts must be finite and non-negative")
    m = x.mean(0)
    v = x.var(0, unbiased=False)
    overdispersed = (v > m) & (m > 0)
    theta = torch.full_like(m, float(max_theta))
    if method == "moments":
        mom = m * m / (v - m).clamp_min(1e-300)
        theta = torch.where(overdispersed, mom.clamp(MIN_THETA, max_theta), theta)
    elif bool(overdispersed.any()):
        xs, ms = x[:, overdispersed], m[overdispersed]
        lo = torch.full_like(ms, math.log(MIN_THETA))
        hi = torch.full_like(ms, math.log(max_theta))
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            rising = nb_profile_score(xs, ms, mid.exp()) > 0
            lo = torch.where(rising, mid, lo)
            hi = torch.where(rising, hi, mid)
        theta[overdispersed] = (0.5 * (lo + hi)).exp()
    empty = m <= 0
    mu = torch.where(empty, torch.full_like(m, MIN_MU), m)
    theta = torch.where(empty, torch.ones_like(theta), theta)
    return mu, theta


class FittedNBPrior(Prior):
    """``Y0 = log1p(X)``, ``X ~ NB(mu_g, theta_g)`` i.i.d. per spot, with per-gene parameters fitted to data.

    Unlike the built-in ``zinb`` prior there is no zero inflation: each gene's zeros come from its
    negative binomial alone. :meth:`fit` sets ``mu`` to each gene's mean raw count and ``theta`` (inverse
    dispersion, ``Var = mu + mu^2 / theta``) by maximum likelihood or the method of moments
    (:func:`fit_nb`). Before :meth:`fit`, every gene uses the constructor's ``mean`` and ``theta``.
    Samples are drawn as a Gamma-Poisson mixture, ``X ~ Poisson(G * mu / theta)`` with
    ``G ~ Gamma(theta, 1)``, every random number from the given ``torch.Generator``
    (:func:`stgen.distributions.sample_gamma`), so a seeded generator reproduces a draw exactly.

    Args:
        n_genes: gene-panel size G (data-derived).
        mean: NB mean of every gene before fitting, ``> 0``.
        theta: NB inverse dispersion of every gene before fitting, ``> 0``.
        method: ``"ml"`` (maximum likelihood) or ``"moments"`` (method of moments).
        max_theta: upper bound on the fitted ``theta`` (Poisson-like genes reach it).

    Shapes:
        buffers ``mu``, ``theta``: ``[n_genes]``; ``fitted``: ``[]`` bool.
        sample ``(N, G)`` -> ``[N, G]``, non-negative, in log1p space.
        fit ``counts [N_train, G]`` (raw counts).
    """

    mu: Tensor
    theta: Tensor
    fitted: Tensor

    def __init__(self, n_genes: int, mean: float = 1.0, theta: float = 1.0, method: str = "ml",
                 max_theta: float = 1e4) -> None:
        super().__init__(n_genes)
        if isinstance(n_genes, bool) or not isinstance(n_genes, int) or n_genes <= 0:
            raise ValueError(f"nb_fitted prior: n_genes must be a positive integer, got {n_genes!r}")
        if not (math.isfinite(mean) and mean > 0):
            raise ValueError(f"nb_fitted prior: mean must be finite and > 0, got {mean}")
        if not (math.isfinite(theta) and theta > 0):
            raise ValueError(f"nb_fitted prior: theta (inverse dispersion) must be finite, > 0, got {theta}")
        if method not in METHODS:
            raise ValueError(f"nb_fitted prior: method must be one of {', '.join(METHODS)}, got {method!r}")
        if not (math.isfinite(max_theta) and max_theta > 1):
            raise ValueError(f"nb_fitted prior: max_theta must be finite and > 1, got {max_theta}")
        self.mean_default = float(mean)
        self.theta_default = float(theta)
        self.method = method
        self.max_theta = float(max_theta)
        dtype = torch.get_default_dtype()
        self.register_buffer("mu", torch.full((n_genes,), float(mean), dtype=dtype))
        self.register_buffer("theta", torch.full((n_genes,), float(theta), dtype=dtype))
        self.register_buffer("fitted", torch.tensor(False))

    def fit(self, counts: Tensor) -> None:
        """Store per-gene estimates of raw ``counts [N, G]`` in the ``mu`` and ``theta`` buffers."""
        counts = torch.as_tensor(counts)
        if counts.dim() != 2 or counts.shape[1] != self.n_genes:
            raise ValueError(
                f"nb_fitted prior: expected counts of shape [N, {self.n_genes}], got {tuple(counts.shape)}"
            )
        mu, theta = fit_nb(counts, self.method, self.max_theta)
        with torch.no_grad():
            self.mu.copy_(mu)
            self.theta.copy_(theta)
            self.fitted.fill_(True)

    def log_likelihood(self, counts: Tensor) -> Tensor:
        """Mean NB log-likelihood per gene of raw ``counts [N, G]`` under the current buffers -> ``[G]``."""
        x = torch.as_tensor(counts, dtype=torch.float64)
        return nb_log_likelihood(x, self.mu.double().cpu(), self.theta.double().cpu()).mean(0)

    def _sample(self, shape: tuple[int, int], generator: torch.Generator | None) -> Tensor:
        mu = self.mu.detach().cpu().expand(shape)
        theta = self.theta.detach().cpu().expand(shape)
        with torch.no_grad():
            rate = sample_gamma(theta, generator) * (mu / theta)
            counts = torch.poisson(rate, generator=generator)
        return torch.log1p(counts)

    def extra_repr(self) -> str:
        return (
            f"n_genes={self.n_genes}, mean={self.mean_default}, theta={self.theta_default}, "
            f"method={self.method!r}, max_theta={self.max_theta}"
        )
