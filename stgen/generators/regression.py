"""One-shot regression: the encoder maps features to expression in one pass."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F
from torch_geometric.data import Batch

from stgen.encoders.base import Encoder
from stgen.generators.base import Generator, LossOutput, state_like
from stgen.priors.base import Prior
from stgen.registry import GENERATORS


@GENERATORS.register("regression")
class RegressionGenerator(Generator):
    """One network call with ``y = 0`` and ``t = 0``; MSE in log1p space (STFlow "w/o flow matching").

    The prior is not used. ``steps`` is accepted for a uniform interface and ignored.

    Args:
        steps: ignored (always one call).
        n_samples: ignored in effect: the output is deterministic, so the spread is zero.

    Shapes:
        sample: ``[N, G]``.
    """

    uses_prior = False

    def __init__(self, steps: int = 1, n_samples: int = 1) -> None:
        super().__init__(steps=steps, n_samples=n_samples)

    def _call(self, encoder: Encoder, batch: Batch) -> Tensor:
        like = state_like(batch)
        y0 = like.new_zeros(batch.num_nodes, encoder.out_dim)
        t = torch.zeros(batch.num_graphs, device=y0.device, dtype=y0.dtype)
        return encoder(batch, y0, t)

    def loss(self, encoder: Encoder, batch: Batch, prior: Prior) -> LossOutput:
        pred = self._call(encoder, batch)
        return LossOutput(loss=F.mse_loss(pred, batch.y), pred=pred, target=batch.y)

    def sample(self, encoder: Encoder, batch: Batch, prior: Prior, steps: int | None = None,
               seed: int | None = None) -> Tensor:
        return self._call(encoder, batch)
