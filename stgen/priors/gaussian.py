"""Standard normal prior."""

from __future__ import annotations

import torch
from torch import Tensor

from stgen.priors.base import Prior
from stgen.registry import PRIORS


@PRIORS.register("gaussian")
class GaussianPrior(Prior):
    """i.i.d. ``N(loc, scale^2)`` per spot and gene, no log transform (STFlow's "gaussian" ablation).

    Args:
        n_genes: gene-panel size (data-derived).
        loc: mean.
        scale: standard deviation.

    Shapes:
        sample ``(N, G)`` -> ``[N, G]``.
    """

    def __init__(self, n_genes: int, loc: float = 0.0, scale: float = 1.0) -> None:
        super().__init__(n_genes)
        if scale <= 0:
            raise ValueError(f"gaussian prior: scale must be > 0, got {scale}")
        self.loc = loc
        self.scale = scale

    def _sample(self, shape: tuple[int, int], generator: torch.Generator | None) -> Tensor:
        return self.loc + self.scale * torch.randn(shape, generator=generator)
