"""HEST-Bench metrics: Pearson per gene over all pooled test spots, mean over genes; per-slide Pearson; MSE.

Constant genes (zero variance in the truth or the prediction) have no Pearson correlation
(``scipy.stats.pearsonr`` gives NaN): they are dropped from the mean and counted, never turned into 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class PearsonResult:
    """Per-gene Pearson correlations and their mean over the genes that have one.

    Args:
        per_gene: ``[G]`` correlations, NaN for constant genes.
        mean: mean over non-NaN genes (NaN when every gene is constant).
        n_dropped: genes dropped because truth or prediction is constant.
    """

    per_gene: np.ndarray
    mean: float
    n_dropped: int


def pearson_per_gene(pred: np.ndarray, true: np.ndarray, eps: float = 1e-12) -> PearsonResult:
    """Pearson correlation of each column of ``pred`` with the same column of ``true``.

    Shapes:
        pred, true ``[N, G]`` -> per_gene ``[G]``.
    """
    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    if pred.shape != true.shape or pred.ndim != 2:
        raise ValueError(f"pearson_per_gene: shapes must match and be (N, G), got {pred.shape} and {true.shape}")
    pc = pred - pred.mean(0)
    tc = true - true.mean(0)
    sp = np.sqrt((pc**2).sum(0))
    st = np.sqrt((tc**2).sum(0))
    constant = (sp <= eps * max(1.0, float(np.abs(pred).max(initial=0)))) | (
        st <= eps * max(1.0, float(np.abs(true).max(initial=0)))
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (pc * tc).sum(0) / (sp * st)
    r = np.clip(r, -1.0, 1.0)
    r[constant] = np.nan
    valid = ~np.isnan(r)
    mean = float(r[valid].mean()) if valid.any() else float("nan")
    return PearsonResult(per_gene=r, mean=mean, n_dropped=int((~valid).sum()))


@dataclass
class Evaluation:
    """Metrics of one evaluation (one fold, one split).

    Args:
        pearson: pooled mean Pearson over genes (HEST protocol).
        per_gene: pooled Pearson per gene ``[G]``.
        genes: gene names.
        per_slide: Pearson (mean over genes) computed within each slide.
        mse: mean squared error over spots and genes (log1p space).
        n_dropped: constant genes dropped from the pooled mean.
        n_spots: pooled spots.
    """

    pearson: float
    per_gene: np.ndarray
    genes: list[str]
    per_slide: dict[str, float] = field(default_factory=dict)
    mse: float = float("nan")
    n_dropped: int = 0
    n_spots: int = 0

    def summary(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {
            "pearson": self.pearson,
            "mse": self.mse,
            "genes_dropped": self.n_dropped,
            "n_spots": self.n_spots,
        }
        if self.per_slide:
            vals = np.array(list(self.per_slide.values()), dtype=float)
            out["pearson_slide_mean"] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
        return out


def evaluate(
    preds: Sequence[np.ndarray], trues: Sequence[np.ndarray], slide_ids: Sequence[str], genes: Sequence[str]
) -> Evaluation:
    """Pool predictions over slides (HEST protocol) and compute the pooled and per-slide metrics."""
    if not (len(preds) == len(trues) == len(slide_ids)) or not preds:
        raise ValueError("evaluate: need the same positive number of predictions, truths and slide ids")
    pooled_p = np.concatenate([np.asarray(p) for p in preds])
    pooled_t = np.concatenate([np.asarray(t) for t in trues])
    pooled = pearson_per_gene(pooled_p, pooled_t)
    per_slide = {str(s): pearson_per_gene(p, t).mean for p, t, s in zip(preds, trues, slide_ids, strict=True)}
    return Evaluation(
        pearson=pooled.mean,
        per_gene=pooled.per_gene,
        genes=list(genes),
        per_slide=per_slide,
        mse=float(np.mean((pooled_p - pooled_t) ** 2)),
        n_dropped=pooled.n_dropped,
        n_spots=len(pooled_t),
    )
