"""The model: encoder + generator + prior (built from plain data by :func:`stgen.build.build_model`). No Lightning here."""

from __future__ import annotations

from torch import nn
from torch_geometric.data import Batch

from stgen.encoders.base import Encoder
from stgen.generators.base import Generator, LossOutput, SampleOutput
from stgen.preprocess import FeatureScaler, scaled_batch
from stgen.priors.base import Prior
from stgen.recalibrate import SpreadScale
from stgen.registry import MODEL_KINDS, REGISTRIES, Registry

#: the registries of a model spec (derived from the registry table)
KINDS: dict[str, Registry] = {kind: REGISTRIES[kind] for kind in MODEL_KINDS}


class STGenModel(nn.Module):
    """Input scaler + encoder + generator + prior (+ the per-gene recalibration of the spread).

    Args:
        encoder: the denoiser network.
        generator: training loss and sampler.
        prior: source distribution.
        scaler: standardisation of ``batch.x`` applied before every encoder call (default: identity).
        spread_scale: per-gene factor of the predicted spread, fitted on the validation slides after
            training (default: identity; see :mod:`stgen.recalibrate`).

    Shapes:
        loss(batch) uses ``batch.y [N, G]``; predict(batch) -> ``SampleOutput`` with ``mean [N, G]``.
    """

    def __init__(self, encoder: Encoder, generator: Generator, prior: Prior,
                 scaler: FeatureScaler | None = None, spread_scale: SpreadScale | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.generator = generator
        self.prior = prior
        self.scaler = scaler if scaler is not None else FeatureScaler(encoder.in_dim, enabled=False)
        self.spread_scale = spread_scale if spread_scale is not None else SpreadScale(prior.n_genes)

    def inputs(self, batch: Batch) -> Batch:
        """``batch`` with standardised features (a shallow copy; the identity when the scaler is off)."""
        return scaled_batch(batch, self.scaler)

    def loss(self, batch: Batch) -> LossOutput:
        return self.generator.loss(self.encoder, self.inputs(batch), self.prior)

    def predict(self, batch: Batch, steps: int | None = None, seed: int | None = 0,
                n_samples: int | None = None) -> SampleOutput:
        out = self.generator.predict(self.encoder, self.inputs(batch), self.prior, steps=steps, seed=seed,
                                     n_samples=n_samples)
        return self.spread_scale(out)


