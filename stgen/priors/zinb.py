"""ZINB prior: STFlow's default source distribution, log1p-transformed zero-inflated negative binomial."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from stgen.distributions import ZeroInflatedNegativeBinomial, fit_zinb
from stgen.priors.base import Prior
from stgen.registry import PRIORS


@PRIORS.register("zinb")
class ZINBPrior(Prior):
    """``Y0 = log1p(X)``, ``X ~ ZINB(mu, theta, pi)`` i.i.d. per spot and gene (STFlow's default prior).

    The NB part uses ``torch.distributions.NegativeBinomial``'s ``(total_count, logits)`` form:
    ``theta = total_count`` and ``mu = total_count * exp(logits)``; an extra zero has probability ``pi``.
    The defaults are STFlow's: ``total_count = 1``, ``logits = 0.1`` (NB mean ``e^0.1 ~ 1.105``),
    ``pi = sigmoid(0) = 0.5``.

    The paper's grid search over (mean-like, dispersion-like) in ``{0.1, 0.2, 0.4} x {1, 2, 4}`` is a grid
    over ``(logits, total_count)``: "mean-like" is ``logits`` (the NB mean is ``total_count * e^logits``,
    not the grid value itself) and "dispersion-like" is ``total_count`` (the inverse dispersion: larger is
    less over-dispersed, ``Var_NB = mu + mu^2 / total_count``). ``pi`` stays 0.5 throughout the grid.

    With ``fit=True``, :meth:`fit` replaces the defaults by per-gene maximum-likelihood estimates
    ``(mu, theta, pi)`` of the raw training counts (an stgen extension; STFlow's prior is not fitted).
    The per-gene parameters are buffers (``mu``, ``theta``, ``pi``, plus the flag ``fitted``), so they
    travel with the ``state_dict``; sampling always uses the buffers.

    Args:
        n_genes: gene-panel size (data-derived).
        total_count: NB inverse dispersion ``theta``, ``> 0`` (the grid's "dispersion-like").
        logits: NB logits; the NB mean is ``total_count * exp(logits)`` (the grid's "mean-like").
        pi: zero-inflation probability in ``[0, 1)``.
        fit: estimate per-gene parameters from the training counts in :meth:`fit`.

    Shapes:
        buffers ``mu``, ``theta``, ``pi``: ``[n_genes]``; ``fitted``: ``[]`` bool.
        sample ``(N, G)`` -> ``[N, G]``, non-negative, in log1p space.
        fit ``counts [N_train, G]`` (raw counts).
    """

    mu: Tensor
    theta: Tensor
    pi: Tensor
    fitted: Tensor

    def __init__(
        self, n_genes: int, total_count: float = 1.0, logits: float = 0.1, pi: float = 0.5, fit: bool = False
    ) -> None:
        super().__init__(n_genes)
        if isinstance(n_genes, bool) or not isinstance(n_genes, int) or n_genes <= 0:
            raise ValueError(f"zinb prior: n_genes must be a positive integer, got {n_genes!r}")
        if not (math.isfinite(total_count) and total_count > 0):
            raise ValueError(
                f"zinb prior: total_count (inverse dispersion) must be finite and > 0, got {total_count}"
            )
        if not math.isfinite(logits):
            raise ValueError(f"zinb prior: logits must be finite, got {logits}")
        if not (0.0 <= pi < 1.0):
            raise ValueError(f"zinb prior: pi (zero-inflation probability) must be in [0, 1), got {pi}")
        mean = total_count * math.exp(logits) if logits < 700 else math.inf
        if not (math.isfinite(mean) and mean > 0):
            raise ValueError(
                f"zinb prior: NB mean total_count * exp(logits) = {mean} must be finite and > 0 "
                f"(total_count={total_count}, logits={logits})"
            )
        self.total_count = float(total_count)
        self.logits = float(logits)
        self.pi_default = float(pi)
        self.fit_to_data = bool(fit)
        dtype = torch.get_default_dtype()
        self.register_buffer("mu", torch.full((n_genes,), mean, dtype=dtype))
        self.register_buffer("theta", torch.full((n_genes,), float(total_count), dtype=dtype))
        self.register_buffer("pi", torch.full((n_genes,), float(pi), dtype=dtype))
        self.register_buffer("fitted", torch.tensor(False))

    def fit(self, counts: Tensor) -> None:
        """Store per-gene ML estimates of raw ``counts [N, G]`` when built with ``fit=True``; else no-op."""
        if not self.fit_to_data:
            return
        counts = torch.as_tensor(counts)
        if counts.dim() != 2 or counts.shape[1] != self.n_genes:
            raise ValueError(
                f"zinb prior: expected counts of shape [N, {self.n_genes}], got {tuple(counts.shape)}"
            )
        mu, theta, pi = fit_zinb(counts)
        with torch.no_grad():
            self.mu.copy_(mu)
            self.theta.copy_(theta)
            self.pi.copy_(pi)
            self.fitted.fill_(True)

    def distribution(self) -> ZeroInflatedNegativeBinomial:
        """The per-gene count distribution (CPU, batch shape ``[n_genes]``)."""
        return ZeroInflatedNegativeBinomial(
            self.mu.detach().cpu(), self.theta.detach().cpu(), pi=self.pi.detach().cpu(), validate_args=False
        )

    def _sample(self, shape: tuple[int, int], generator: torch.Generator | None) -> Tensor:
        counts = self.distribution().sample(torch.Size(shape[:1]), generator=generator)
        return torch.log1p(counts)

    def extra_repr(self) -> str:
        return (
            f"n_genes={self.n_genes}, total_count={self.total_count}, logits={self.logits}, "
            f"pi={self.pi_default}, fit={self.fit_to_data}"
        )
