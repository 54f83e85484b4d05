"""One-shot regression: the encoder maps features to expression in one pass."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F
from torch_geometric.data import Batch

from stgen.encoders.base import Encoder
from stgen.generators.base import Generator, LossOutput, make_generator, state_like
from stgen.priors.base import Prior
from stgen.registry import GENERATORS

#: training losses of the regression generator
LIKELIHOODS = ("mse", "gaussian")
#: soft bounds of the predicted log-variance (log1p space: sd from 0.007 to 20)
LOG_VAR_MIN, LOG_VAR_MAX = -10.0, 6.0
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def bounded_log_var(raw: Tensor, lo: float = LOG_VAR_MIN, hi: float = LOG_VAR_MAX) -> Tensor:
    """``raw`` softly clamped to ``[lo, hi]``: about the identity well inside, smooth (never a zero
    gradient) at the edges, so a variance cannot collapse to 0 or blow up."""
    return lo + F.softplus(hi - F.softplus(hi - raw) - lo)


def gaussian_nll(mean: Tensor, log_var: Tensor, target: Tensor, beta: float = 0.0) -> Tensor:
    """Gaussian negative log-likelihood per element, optionally beta-weighted (Seitzer et al. 2022).

    ``0.5 log(2 pi var) + (target - mean)^2 / (2 var)``, multiplied by ``stop_grad(var)^beta``: beta = 0
    is the plain NLL; beta = 0.5 keeps poorly fitted (high-variance) points from being ignored by the
    mean; beta = 1 gives the mean the gradient of the MSE.

    Shapes:
        mean, log_var, target ``[N, G]`` -> ``[N, G]``.
    """
    nll = _HALF_LOG_2PI + 0.5 * (log_var + (target - mean) ** 2 * torch.exp(-log_var))
    if beta:
        nll = nll * torch.exp(beta * log_var.detach())
    return nll


@GENERATORS.register("regression")
class RegressionGenerator(Generator):
    """One network call with ``y = 0`` and ``t = 0`` (STFlow "w/o flow matching" with the MSE loss).

    The prior is not used. ``steps`` is accepted for a uniform interface and ignored.

    ``likelihood=mse`` (default): the encoder predicts the log1p expression, trained with the MSE; the
    output is deterministic (no spread, whatever ``n_samples``).
    ``likelihood=gaussian`` (heteroscedastic, aleatoric uncertainty): the encoder outputs ``2 G`` values,
    a mean and a log-variance per gene (:meth:`encoder_out_dim`), trained with the Gaussian negative
    log-likelihood (beta-weighted, :func:`gaussian_nll`); the log-variance is softly bounded
    (:func:`bounded_log_var`). Prediction returns the mean and the predicted sd as the spread, with one
    sample already; with ``n_samples > 1`` (e.g. MC dropout) the spread is the total sd over the passes.
    A sample is a draw from the predicted Gaussian.

    Args:
        steps: ignored (always one call).
        n_samples: network passes averaged at prediction time (identical in eval mode).
        likelihood: ``mse`` or ``gaussian``.
        beta: beta of the beta-NLL (``likelihood=gaussian`` only): 0 plain NLL, 0.5 (default) the
            recommended compromise, 1 the MSE's gradient for the mean.

    Shapes:
        sample: ``[N, G]``; encoder output ``[N, G]`` (mse) or ``[N, 2 G]`` (gaussian).
    """

    uses_prior = False

    def __init__(self, steps: int = 1, n_samples: int = 1, likelihood: str = "mse", beta: float = 0.5) -> None:
        super().__init__(steps=steps, n_samples=n_samples)
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"regression generator: unknown likelihood {likelihood!r}; valid: {', '.join(LIKELIHOODS)}")
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"regression generator: beta must be in [0, 1], got {beta}")
        self.likelihood = likelihood
        self.beta = float(beta)

    @property
    def heteroscedastic(self) -> bool:
        return self.likelihood == "gaussian"

    def encoder_out_dim(self, n_genes: int) -> int:
        return 2 * n_genes if self.heteroscedastic else n_genes

    def _call(self, encoder: Encoder, batch: Batch) -> tuple[Tensor, Tensor | None]:
        like = state_like(batch)
        y0 = like.new_zeros(batch.num_nodes, encoder.out_dim)
        t = torch.zeros(batch.num_graphs, device=y0.device, dtype=y0.dtype)
        out = encoder(batch, y0, t)
        if not self.heteroscedastic:
            return out, None
        if out.shape[1] % 2:
            raise ValueError(f"regression generator (gaussian): the encoder must output 2 G values, got {out.shape[1]}")
        mean, raw = out.chunk(2, dim=1)
        return mean, bounded_log_var(raw)

    def loss(self, encoder: Encoder, batch: Batch, prior: Prior) -> LossOutput:
        mean, log_var = self._call(encoder, batch)
        if log_var is None:
            return LossOutput(loss=F.mse_loss(mean, batch.y), pred=mean, target=batch.y)
        loss = gaussian_nll(mean, log_var, batch.y, self.beta).mean()
        return LossOutput(loss=loss, pred=mean, target=batch.y)

    def sample_moments(self, encoder: Encoder, batch: Batch, prior: Prior, steps: int | None = None,
                       seed: int | None = None) -> tuple[Tensor, Tensor | None]:
        mean, log_var = self._call(encoder, batch)
        return mean, None if log_var is None else log_var.exp()

    def sample(self, encoder: Encoder, batch: Batch, prior: Prior, steps: int | None = None,
               seed: int | None = None) -> Tensor:
        mean, log_var = self._call(encoder, batch)
        if log_var is None:
            return mean
        noise = torch.randn(mean.shape, generator=make_generator(seed), dtype=mean.dtype).to(mean.device)
        return mean + (0.5 * log_var).exp() * noise
