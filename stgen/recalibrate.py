"""Post-hoc recalibration of the per-spot spread: one scale per gene, fitted on the validation slides.

Variance scaling (Kuleshov et al. 2018; Levi et al. 2022): after training, the spread of the selected
model is multiplied per gene by ``s_g = sqrt(mean_spots((y - mean)^2 / spread^2))`` over the validation
slides, so that the standardised validation residuals have unit RMS. It fixes the width of the
intervals (coverage), not which spots get the wider ones: within a gene the ranking, hence the
Spearman correlations of :func:`stgen.metrics.calibration`, is unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from stgen.generators.base import SampleOutput

#: floor of the spread when standardising residuals, and bounds of a fitted scale
MIN_SPREAD = 1e-6
SCALE_RANGE = (1e-6, 1e6)


class SpreadScale(nn.Module):
    """Per-gene factor applied to a prediction's spread (the identity until :meth:`fit`).

    ``scale`` and ``fitted`` are buffers, so they travel in the checkpoint; a checkpoint written before
    this module existed loads as the identity.

    Args:
        n_genes: gene-panel size G.

    Shapes:
        fit: mean, spread, true ``[N, G]``; forward: a :class:`SampleOutput` with ``std [N, G]``.
    """

    scale: Tensor
    fitted: Tensor

    def __init__(self, n_genes: int) -> None:
        super().__init__()
        self.n_genes = n_genes
        self.register_buffer("scale", torch.ones(n_genes))
        self.register_buffer("fitted", torch.tensor(False))

    @torch.no_grad()
    def fit(self, mean: Any, spread: Any, true: Any) -> SpreadScale:
        """Fit ``scale`` so that ``(true - mean) / (scale * spread)`` has unit RMS per gene."""
        mean, spread, true = (np.asarray(a, dtype=np.float64) for a in (mean, spread, true))
        if not (mean.shape == spread.shape == true.shape) or mean.ndim != 2 or mean.shape[1] != self.n_genes:
            raise ValueError(f"SpreadScale.fit: expected mean, spread and true of shape [N, {self.n_genes}], got "
                             f"{mean.shape}, {spread.shape}, {true.shape}")
        if mean.shape[0] < 2:
            raise ValueError("SpreadScale.fit: need at least 2 validation spots")
        z2 = (true - mean) ** 2 / np.maximum(spread, MIN_SPREAD) ** 2
        scale = np.sqrt(z2.mean(0))
        scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0).clip(*SCALE_RANGE)
        self.scale.copy_(torch.as_tensor(scale, dtype=self.scale.dtype))
        self.fitted.fill_(True)
        return self

    def forward(self, out: SampleOutput) -> SampleOutput:
        if out.std is None or not bool(self.fitted):
            return out
        return SampleOutput(mean=out.mean, std=out.std * self.scale.to(out.std), n_samples=out.n_samples)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        for name, buf in (("scale", self.scale), ("fitted", self.fitted)):
            state_dict.setdefault(prefix + name, buf.detach().clone())  # older checkpoints: identity
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"n_genes={self.n_genes}"
