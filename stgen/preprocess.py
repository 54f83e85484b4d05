"""Input standardisation and expression targets: fitted on training slides, carried by the model.

Two preprocessing choices travel with every checkpoint:

* **Feature standardisation** (:class:`FeatureScaler`): each patch-embedding column is centred and scaled
  with the mean and standard deviation of the *training* slides' spots (never validation or test). The
  statistics are buffers of the model, so training, evaluation and ``stgen predict`` apply the same
  transform to every encoder. Switch it off with ``preprocess.standardize=false``.
* **Targets** (:data:`TARGETS`): what the model learns to predict for each gene.

  ``log1p`` (default): ``log1p(counts)`` of the raw counts, as HEST-Bench and the STFlow paper score. Use
  it to compare with published numbers and when every slide was sequenced to a similar depth.

  ``log1p_cp10k``: ``log1p(10^4 * counts / total_counts)`` with ``total_counts`` the spot's counts over
  all genes stored in the slide's ``X`` (``obs['total_counts']`` when the slide provides it). Use it when
  slides differ in sequencing depth (a section sequenced at a tenth of the training depth is otherwise
  predicted at the training depth everywhere) or when predictions feed tools that expect depth-normalised
  expression. Numbers are then not comparable with HEST-Bench's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import anndata as ad
import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn

#: scale of the per-10k normalisation
CP10K = 1e4


def _dense(X: Any) -> np.ndarray:
    return X.toarray() if sp.issparse(X) else np.asarray(X)


def total_counts(adata: ad.AnnData) -> np.ndarray:
    """Counts per spot over all genes of the slide (``obs['total_counts']`` when present), ``[N]``."""
    if "total_counts" in adata.obs:
        tot = np.asarray(adata.obs["total_counts"], dtype=np.float64)
    else:
        X = adata.X
        tot = np.asarray(X.sum(axis=1)).ravel().astype(np.float64) if sp.issparse(X) else \
            np.asarray(X, dtype=np.float64).sum(axis=1)
    return tot


def _log1p_counts(adata: ad.AnnData, genes: Sequence[str] | None) -> np.ndarray:
    sub = adata[:, list(genes)] if genes is not None else adata
    return np.log1p(_dense(sub.X).astype(np.float32))


def _log1p_cp10k(adata: ad.AnnData, genes: Sequence[str] | None) -> np.ndarray:
    sub = adata[:, list(genes)] if genes is not None else adata
    counts = _dense(sub.X).astype(np.float64)
    tot = total_counts(adata)
    scale = np.divide(CP10K, tot, out=np.zeros_like(tot), where=tot > 0)  # empty spots stay 0
    return np.log1p(counts * scale[:, None]).astype(np.float32)


#: target name -> function ``(adata, genes) -> [N, G] float32``; description for outputs
TARGETS: dict[str, Callable[[ad.AnnData, Sequence[str] | None], np.ndarray]] = {
    "log1p": _log1p_counts,
    "log1p_cp10k": _log1p_cp10k,
}
TARGET_DESCRIPTIONS: dict[str, str] = {
    "log1p": "log1p counts",
    "log1p_cp10k": "log1p counts per 10k (total counts per spot over all genes of the slide)",
}


def check_target(target: str) -> str:
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; valid: {', '.join(TARGETS)} (preprocess.target)")
    return target


def target_matrix(adata: ad.AnnData, genes: Sequence[str] | None, target: str = "log1p") -> np.ndarray:
    """The expression target of ``genes`` (all genes when None): dense float32 ``[N, G]``."""
    return TARGETS[check_target(target)](adata, genes)


@dataclass
class PreprocessSpec:
    """The preprocessing recorded in a checkpoint (``hparams['preprocess']``).

    Args:
        standardize: standardise patch embeddings with training-slide statistics.
        target: one of :data:`TARGETS`.
    """

    standardize: bool = True
    target: str = "log1p"

    def __post_init__(self) -> None:
        check_target(self.target)

    @classmethod
    def from_any(cls, value: Mapping[str, Any] | PreprocessSpec | None) -> PreprocessSpec:
        """None (a checkpoint written before preprocessing existed) means: no standardisation, log1p."""
        if value is None:
            return cls(standardize=False, target="log1p")
        if isinstance(value, PreprocessSpec):
            return value
        unknown = sorted(set(value) - {"standardize", "target"})
        if unknown:
            raise ValueError(f"preprocess has no option(s) {', '.join(unknown)}; valid: standardize, target")
        return cls(**dict(value))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class FeatureScaler(nn.Module):
    """Per-column standardisation of patch embeddings with statistics of the training spots.

    Until :meth:`fit` is called (or when ``enabled`` is False) it is the identity. ``mean``, ``std`` and
    ``fitted`` are buffers, so they are saved in and restored from checkpoints; a checkpoint written
    before this module existed loads as the identity.

    Args:
        in_dim: patch-embedding width F.
        enabled: whether to standardise at all.
        eps: floor of the standard deviation (constant columns are only centred).

    Shapes:
        fit ``x [N, F]``; forward ``x [N, F]`` -> ``[N, F]``.
    """

    mean: Tensor
    std: Tensor
    fitted: Tensor

    def __init__(self, in_dim: int, enabled: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.enabled = bool(enabled)
        self.eps = eps
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        self.register_buffer("fitted", torch.tensor(False))

    @torch.no_grad()
    def fit(self, x: Tensor) -> FeatureScaler:
        """Store the column means and standard deviations of ``x`` (the training spots)."""
        x = torch.as_tensor(x, dtype=torch.float64)
        if x.dim() != 2 or x.shape[1] != self.in_dim or x.shape[0] < 2:
            raise ValueError(f"FeatureScaler.fit: expected [N >= 2, {self.in_dim}] features, got {tuple(x.shape)}")
        self.mean.copy_(x.mean(0).to(self.mean.dtype))
        std = x.std(0, unbiased=False)
        self.std.copy_(torch.where(std > self.eps, std, torch.ones_like(std)).to(self.std.dtype))
        self.fitted.fill_(True)
        return self

    @property
    def active(self) -> bool:
        return self.enabled and bool(self.fitted)

    def forward(self, x: Tensor) -> Tensor:
        if not self.active:
            return x
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        for name, buf in (("mean", self.mean), ("std", self.std), ("fitted", self.fitted)):
            state_dict.setdefault(prefix + name, buf.detach().clone())  # older checkpoints: identity
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, enabled={self.enabled}"


def scaled_batch(batch: Any, scaler: FeatureScaler) -> Any:
    """A shallow copy of a PyG batch with standardised ``x`` (the input batch is not modified)."""
    if not scaler.active:
        return batch
    out = batch.__copy__()
    out.x = scaler(batch.x)
    return out


def fit_scaler(scaler: FeatureScaler, graphs: Sequence[Any]) -> FeatureScaler:
    """Fit ``scaler`` on the spots of ``graphs`` (the training slides only)."""
    return scaler.fit(torch.cat([g.x for g in graphs]))


def apply_target(graphs: Sequence[Any], slides: Sequence[ad.AnnData], genes: Sequence[str], target: str) -> None:
    """Replace ``y`` of each slide graph with ``target`` (graphs and slides in the same order)."""
    check_target(target)
    if len(graphs) != len(slides):
        raise ValueError(f"apply_target: {len(graphs)} graphs but {len(slides)} slides")
    for g, a in zip(graphs, slides, strict=True):
        g.y = torch.from_numpy(target_matrix(a, genes, target))
