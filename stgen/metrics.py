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


#: two-sided standard-normal quantiles of the central intervals reported by :func:`calibration`
CENTRAL_Z: dict[float, float] = {0.5: 0.6744897501960817, 0.8: 1.2815515655446004, 0.95: 1.959963984540054}


def _rank_columns(a: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(a, axis=0).astype(np.float64)


def _corr_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ac = a - a.mean(0)
    bc = b - b.mean(0)
    den = np.sqrt((ac**2).sum(0) * (bc**2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (ac * bc).sum(0) / den
    r[~(den > 1e-12)] = np.nan
    return np.clip(r, -1.0, 1.0)


@dataclass
class Calibration:
    """Does a per-spot spread rank the errors, and do its intervals cover the measurements?

    Args:
        spearman: Spearman correlation of spread vs ``|mean - true|`` per gene, mean over genes.
        spearman_partial: the same with the predicted mean partialled out (partial correlation of the
            ranks): what the spread says about the error beyond the size of the prediction.
        coverage: level -> fraction of (spot, gene) pairs whose measurement lies in the central Gaussian
            interval ``mean +- z * spread`` (ideal: the level itself).
        n_genes: genes with a defined correlation.

    Shapes:
        computed from ``[N, G]`` mean, spread and truth.
    """

    spearman: float = float("nan")
    spearman_partial: float = float("nan")
    coverage: dict[float, float] = field(default_factory=dict)
    n_genes: int = 0

    def summary(self) -> dict[str, float]:
        out = {"cal_spearman": self.spearman, "cal_spearman_partial": self.spearman_partial}
        for level in CENTRAL_Z:
            out[f"cov{int(round(level * 100))}"] = self.coverage.get(level, float("nan"))
        return out


def calibration(mean: np.ndarray, spread: np.ndarray, true: np.ndarray) -> Calibration:
    """Calibration of a per-spot spread (std) against the measured values (same space, e.g. log1p).

    Spearman per gene of ``spread`` vs ``|mean - true|`` (genes where either is constant are dropped),
    raw and partialled on ``mean``: ``(r_se - r_sm r_em) / sqrt((1 - r_sm^2)(1 - r_em^2))`` on ranks.
    Coverage of the central 50/80/95 % intervals assumes a Gaussian with sd ``spread``.

    Shapes:
        mean, spread, true ``[N, G]``.
    """
    mean = np.asarray(mean, dtype=np.float64)
    spread = np.asarray(spread, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    if not (mean.shape == spread.shape == true.shape) or mean.ndim != 2:
        raise ValueError(f"calibration: mean, spread and true must be [N, G] of one shape, got {mean.shape}, "
                         f"{spread.shape}, {true.shape}")
    if (spread < 0).any() or not np.isfinite(spread).all():
        raise ValueError("calibration: spread must be finite and non-negative")
    err = np.abs(mean - true)
    rs, re, rm = _rank_columns(spread), _rank_columns(err), _rank_columns(mean)
    r_se, r_sm, r_em = _corr_columns(rs, re), _corr_columns(rs, rm), _corr_columns(re, rm)
    with np.errstate(invalid="ignore", divide="ignore"):
        den = np.sqrt((1 - r_sm**2) * (1 - r_em**2))
        # den = 0: the spread (or the error) is a monotone function of the mean: nothing left to rank
        partial = np.where(den > 1e-9, (r_se - r_sm * r_em) / den, 0.0)
    partial = np.where(np.isnan(r_se), np.nan, partial)
    # a constant mean within a gene leaves nothing to partial out
    partial = np.where(np.isnan(r_sm) & ~np.isnan(r_se), r_se, partial)
    cov = {level: float(np.mean(err <= z * spread)) for level, z in CENTRAL_Z.items()}
    ok = ~np.isnan(r_se)
    return Calibration(
        spearman=float(np.nanmean(r_se)) if ok.any() else float("nan"),
        spearman_partial=float(np.nanmean(partial)) if np.isfinite(partial).any() else float("nan"),
        coverage=cov,
        n_genes=int(ok.sum()),
    )


def calibration_of_predictions(items: Sequence[object]) -> Calibration:
    """Calibration pooled over evaluated slides (objects with ``mean``, ``std``, ``true``).

    Empty (NaN) when no slide has a spread (one sample, or a deterministic generator).
    """
    items = [it for it in items if getattr(it, "std", None) is not None]
    if not items:
        return Calibration()
    return calibration(np.concatenate([it.mean for it in items]),  # type: ignore[attr-defined]
                       np.concatenate([it.std for it in items]),  # type: ignore[attr-defined]
                       np.concatenate([it.true for it in items]))  # type: ignore[attr-defined]


def count_noise_spread(mean: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Spread of ``log1p(Y)`` for counts ``Y ~ NB(mu = expm1(mean), theta)`` (delta method).

    ``sd = sqrt(mu + mu^2 / theta) / (1 + mu)``: the sampling noise of the measured counts around a
    predicted log1p mean, per spot and gene (``theta`` per gene, e.g. fitted to the training counts). It
    is a function of the prediction only, so on its own it cannot rank errors beyond the mean.

    Shapes:
        mean ``[N, G]``, theta ``[G]`` -> ``[N, G]``.
    """
    mu = np.expm1(np.clip(np.asarray(mean, dtype=np.float64), 0.0, None))
    theta = np.asarray(theta, dtype=np.float64)[None, :]
    return np.sqrt(mu + mu**2 / theta) / (1.0 + mu)
