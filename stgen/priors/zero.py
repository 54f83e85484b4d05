"""The zero prior: every flow starts from Y0 = 0."""

from __future__ import annotations

import torch
from torch import Tensor

from stgen.priors.base import Prior
from stgen.registry import PRIORS


@PRIORS.register("zero")
class ZeroPrior(Prior):
    """Deterministic ``Y0 = 0`` (STFlow's "zero" ablation; with it, sampling is deterministic).

    Args:
        n_genes: gene-panel size (data-derived).

    Shapes:
        sample ``(N, G)`` -> zeros ``[N, G]``.
    """

    def _sample(self, shape: tuple[int, int], generator: torch.Generator | None) -> Tensor:
        return torch.zeros(shape)
