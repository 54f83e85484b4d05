"""The prior contract: samples of the source distribution, in the target (log1p) space."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import Tensor, nn

from stgen.components import Configurable
from stgen.registry import PRIORS


class Prior(Configurable, nn.Module, ABC):
    """Base class of every prior.

    A prior is an ``nn.Module`` so fitted parameters live in buffers and travel with checkpoints.
    :meth:`fit` sees the raw training counts of the gene panel (default: nothing to fit).

    Args:
        n_genes: gene-panel size G (data-derived).

    :meth:`sample` draws in blocks of at most :attr:`block_elements` values (rows in order, one
    generator), so the transient memory of a draw does not grow with the slide: only the result does.

    Shapes:
        sample: ``shape = (N, G)`` -> ``[N, G]`` float tensor in log1p space (or the prior's own space).
    """

    #: values drawn per block (rows of ``G`` genes) by :meth:`sample`
    block_elements: ClassVar[int] = 1 << 21

    data_args: ClassVar[tuple[str, ...]] = ("n_genes",)

    def __init__(self, n_genes: int) -> None:
        super().__init__()
        self.n_genes = n_genes

    def fit(self, counts: Tensor) -> None:  # noqa: B027 - optional hook
        """Estimate parameters from raw training counts ``[N, G]``; default: nothing to fit."""

    def sample(
        self, shape: tuple[int, ...], generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> Tensor:
        if len(shape) != 2 or shape[1] != self.n_genes:
            raise ValueError(f"{type(self).__name__}: expected shape (N, {self.n_genes}), got {tuple(shape)}")
        n, genes = shape
        rows = max(1, self.block_elements // max(genes, 1))
        if n <= rows:
            out = self._sample((n, genes), generator)
        else:
            first = self._sample((rows, genes), generator)
            out = first.new_empty((n, genes))
            out[:rows] = first
            for start in range(rows, n, rows):
                stop = min(start + rows, n)
                out[start:stop] = self._sample((stop - start, genes), generator)
        return out.to(device) if device is not None else out

    @abstractmethod
    def _sample(self, shape: tuple[int, int], generator: torch.Generator | None) -> Tensor:
        """Draw ``shape`` samples on the CPU (``generator`` is a CPU generator or None)."""


PRIORS.set_base(Prior)
