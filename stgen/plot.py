"""Figures of a predicted slide: spatial maps, per-gene Pearson bars, predicted-vs-measured scatter.

A predicted slide is an AnnData holding predictions under a key (default ``stgen``): either the layers
``<key>_mean``/``<key>_std`` (``stgen predict``, a run's ``predictions/``) or the ``obsm`` data frames
written by :func:`stgen.tl.predict`. Measured expression (raw counts in ``X``) is used when the slide
has it, transformed to the model's target (log1p counts, or log1p counts per 10k, as recorded with the
prediction) so that both are on one scale. When ``uns["spatial"][library]`` holds an H&E image and its scale factors
(squidpy/Visium layout), spots are drawn on the image at their true size.

Each map gets its own robust colour scale (the 1st-99th percentile of its values, ``scale="robust"``)
so a prediction with a smaller dynamic range than the measurement is not drawn flat;
``scale="shared"`` gives measured and predicted maps of a gene one common (robust) scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np

from stgen.data.slide import SPATIAL_KEY, slide_id
from stgen.preprocess import check_target, target_matrix

SCALES = ("robust", "shared")
#: percentiles that bound a robust colour scale
ROBUST_QUANTILES = (0.01, 0.99)


@dataclass
class PredictedSlide:
    """What the figures draw from one predicted slide.

    Args:
        slide: slide id (for titles).
        genes: the predicted gene panel.
        predicted: ``[N, G]`` predicted expression (the model's target, see ``target``).
        measured: ``[N, G]`` measured expression as the same target, or None for a slide without expression.
        spread: ``[N, G]`` spread over samples, or None.
        xy: ``[N, 2]`` spot centres in full-resolution pixels.
        image: H&E image ``[H, W(, 3)]`` to draw under the spots, or None.
        image_scale: image pixels per full-resolution pixel.
        spot_diameter: spot diameter in full-resolution pixels.
        target: the expression target of ``predicted`` and ``measured`` (a key of
            :data:`stgen.preprocess.TARGETS`).
    """

    slide: str
    genes: list[str]
    predicted: np.ndarray
    measured: np.ndarray | None
    spread: np.ndarray | None
    xy: np.ndarray
    image: np.ndarray | None = None
    image_scale: float = 1.0
    spot_diameter: float = 1.0
    target: str = "log1p"

    @property
    def unit(self) -> str:
        """Short axis/title label of the target, e.g. ``log1p`` or ``log1p cp10k``."""
        return self.target.replace("_", " ")

    def column(self, gene: str) -> int:
        if gene not in self.genes:
            raise ValueError(f"gene {gene!r} is not in the predicted panel of slide {self.slide!r}; choose from "
                             f"{', '.join(self.genes[:10])}{' ...' if len(self.genes) > 10 else ''}")
        return self.genes.index(gene)

    def pearson(self) -> np.ndarray:
        """``[G]`` Pearson r of predicted vs measured per gene over the slide's spots (NaN when constant)."""
        if self.measured is None:
            raise ValueError(f"slide {self.slide!r} has no measured expression to compare with")
        return pearson_columns(self.predicted, self.measured)


def pearson_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Column-wise Pearson r of two ``[N, G]`` arrays (NaN where a column is constant)."""
    a = np.asarray(a, dtype=np.float64) - np.mean(a, axis=0)
    b = np.asarray(b, dtype=np.float64) - np.mean(b, axis=0)
    den = np.sqrt((a * a).sum(0) * (b * b).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(0) / np.where(den > 0, den, 1.0), np.nan)


def _dense(x: Any) -> np.ndarray:
    return np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float64)


def _stored(adata: ad.AnnData, name: str) -> tuple[np.ndarray, list[str]] | None:
    """A prediction array stored as ``obsm`` data frame or as a layer, with its genes."""
    if name in adata.obsm:
        value = adata.obsm[name]
        if hasattr(value, "columns"):
            return np.asarray(value, dtype=np.float64), [str(c) for c in value.columns]
        genes = list(adata.uns.get(name.rsplit("_", 1)[0] + "_params", {}).get("genes", []))
        if len(genes) == np.shape(value)[1]:
            return np.asarray(value, dtype=np.float64), genes
    if name in adata.layers:
        return _dense(adata.layers[name]), [str(g) for g in adata.var_names]
    return None


def predicted_slide(adata: ad.AnnData, key: str = "stgen") -> PredictedSlide:
    """Collect predictions, measurements, coordinates and the H&E image of a predicted slide."""
    mean = _stored(adata, f"{key}_mean")
    sid = slide_id(adata)
    if mean is None:
        raise ValueError(f"slide {sid!r} has no predictions under key {key!r} (layers or obsm '{key}_mean'); run "
                         "`stgen predict` or stgen.tl.predict first")
    predicted, genes = mean
    spread = _stored(adata, f"{key}_std")
    target = _target(adata, key)
    measured = None
    present = [g for g in genes if g in adata.var_names]
    if len(present) == len(genes) and adata.n_vars:
        X = _dense(adata[:, genes].X)
        if X.size and np.any(X):
            measured = target_matrix(adata, genes, target).astype(np.float64)
    if SPATIAL_KEY not in adata.obsm:
        raise ValueError(f"slide {sid!r} has no obsm['spatial'] coordinates to draw the maps")
    xy = np.asarray(adata.obsm[SPATIAL_KEY], dtype=np.float64)
    image, scale, diameter = _image(adata)
    if diameter is None:
        diameter = _spacing(xy)
    return PredictedSlide(slide=sid, genes=genes, predicted=predicted, measured=measured,
                          spread=None if spread is None else spread[0], xy=xy, image=image, image_scale=scale,
                          spot_diameter=diameter, target=target)


def _target(adata: ad.AnnData, key: str) -> str:
    """The target recorded with the predictions (``uns[key]`` of ``stgen predict``, ``uns[key_params]`` of
    :func:`stgen.tl.predict`); ``log1p`` for outputs that predate the option."""
    for name in (key, f"{key}_params"):
        info = adata.uns.get(name)
        if isinstance(info, dict) and "target" in info:
            return check_target(str(info["target"]))
    return "log1p"


def _image(adata: ad.AnnData) -> tuple[np.ndarray | None, float, float | None]:
    """H&E image, its scale (image px per full-resolution px) and the spot diameter, from ``uns["spatial"]``."""
    spatial = adata.uns.get("spatial")
    if not isinstance(spatial, dict) or not spatial:
        return None, 1.0, None
    lib = next(iter(spatial.values()))
    if not isinstance(lib, dict):
        return None, 1.0, None
    images = lib.get("images", {}) or {}
    factors = lib.get("scalefactors", {}) or {}
    diameter = factors.get("spot_diameter_fullres")
    diameter = float(diameter) if diameter is not None else None
    for res in ("hires", "lowres"):
        scale = factors.get(f"tissue_{res}_scalef")
        if res in images and scale is not None:
            return np.asarray(images[res]), float(scale), diameter
    return None, 1.0, diameter


def _spacing(xy: np.ndarray) -> float:
    """Median distance from a spot to its nearest neighbour (a spot diameter when none is recorded)."""
    if len(xy) < 2:
        return 1.0
    from scipy.spatial import cKDTree

    d, _ = cKDTree(xy).query(xy, k=2)
    spacing = float(np.median(d[:, 1]))
    return 0.9 * spacing if spacing > 0 else 1.0


def robust_limits(*values: np.ndarray) -> tuple[float, float]:
    """Colour limits: the 1st and 99th percentile of the values (never an empty range)."""
    v = np.concatenate([np.ravel(x) for x in values])
    v = v[np.isfinite(v)]
    if not v.size:
        return 0.0, 1.0
    lo, hi = (float(q) for q in np.quantile(v, ROBUST_QUANTILES))
    if hi <= lo:
        lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        hi = lo + 1e-6
    return lo, hi


def _draw_map(ax: Any, slide: PredictedSlide, values: np.ndarray, limits: tuple[float, float], cmap: str) -> Any:
    from matplotlib.collections import EllipseCollection

    s = slide.image_scale
    xy = slide.xy * s
    d = slide.spot_diameter * s
    if slide.image is not None:
        ax.imshow(slide.image)
    spots = EllipseCollection(widths=d, heights=d, angles=0, units="xy", offsets=xy, offset_transform=ax.transData,
                              cmap=cmap, edgecolors="none", alpha=0.85 if slide.image is not None else 1.0)
    spots.set_array(np.asarray(values, dtype=np.float64))
    spots.set_clim(*limits)
    ax.add_collection(spots)
    pad = d
    ax.set_xlim(xy[:, 0].min() - pad, xy[:, 0].max() + pad)
    ax.set_ylim(xy[:, 1].max() + pad, xy[:, 1].min() - pad)  # image rows grow downwards
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    return spots


def maps_figure(slide: PredictedSlide, genes: Sequence[str], scale: str = "robust", cmap: str = "viridis") -> Any:
    """One row per gene: measured, predicted and (when present) spread maps, each with its colour bar."""
    import matplotlib.pyplot as plt

    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    if not genes:
        raise ValueError("give at least one gene to map")
    cols = [c for c in ("measured", "predicted", "spread") if c == "predicted" or getattr(slide, c) is not None]
    span = np.ptp(slide.xy, axis=0) + slide.spot_diameter
    height = float(np.clip(3.4 * span[1] / max(span[0], 1e-9), 1.8, 6.0)) + 0.9  # follow the slide's aspect
    fig, axes = plt.subplots(len(genes), len(cols), figsize=(4.4 * len(cols), height * len(genes)), squeeze=False)
    for row, gene in enumerate(genes):
        j = slide.column(gene)
        r = float(slide.pearson()[j]) if slide.measured is not None else float("nan")
        both = [slide.predicted[:, j]] + ([slide.measured[:, j]] if slide.measured is not None else [])
        shared = robust_limits(*both)
        for col, what in enumerate(cols):
            ax = axes[row, col]
            values = getattr(slide, what)[:, j]
            limits = shared if scale == "shared" and what != "spread" else robust_limits(values)
            spots = _draw_map(ax, slide, values, limits, "magma" if what == "spread" else cmap)
            title = {"measured": f"{gene} measured ({slide.unit})", "spread": f"{gene} spread over samples",
                     "predicted": f"{gene} predicted ({slide.unit})" + (f", r = {r:.2f}" if np.isfinite(r) else "")}[what]
            ax.set_title(f"{title}\nslide {slide.slide}", fontsize=10)
            fig.colorbar(spots, ax=ax, shrink=0.75, extend="both" if scale == "robust" else "neither")
    fig.tight_layout()
    return fig


def pearson_figure(slide: PredictedSlide, max_genes: int = 60) -> Any:
    """Per-gene Pearson r of predicted vs measured on the slide, sorted, with the mean marked."""
    import matplotlib.pyplot as plt

    r = slide.pearson()
    order = [i for i in np.argsort(-np.nan_to_num(r, nan=-2.0)) if np.isfinite(r[i])]
    shown = order[:max_genes]
    fig, ax = plt.subplots(figsize=(6.0, 1.2 + 0.22 * max(len(shown), 1)))
    ax.barh(range(len(shown)), [r[i] for i in shown], color=["#3b7dd8" if r[i] >= 0 else "#d8573b" for i in shown])
    ax.set_yticks(range(len(shown)), [slide.genes[i] for i in shown], fontsize=8)
    ax.invert_yaxis()
    mean = float(np.nanmean(r)) if np.isfinite(r).any() else float("nan")
    ax.axvline(mean, color="k", linestyle="--", linewidth=1, label=f"mean r = {mean:.3f}")
    ax.axvline(0, color="grey", linewidth=0.5)
    ax.set_xlabel("Pearson r (predicted vs measured, over spots)")
    n_const = int(np.isnan(r).sum())
    extra = f"; {len(order) - len(shown)} more not shown" if len(order) > len(shown) else ""
    extra += f"; {n_const} constant gene(s) left out" if n_const else ""
    ax.set_title(f"slide {slide.slide}: per-gene Pearson ({len(order)} genes{extra})", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def scatter_figure(slide: PredictedSlide, genes: Sequence[str]) -> Any:
    """Predicted vs measured expression (the model's target) per spot, one panel per gene, with r and the
    diagonal."""
    import matplotlib.pyplot as plt

    if slide.measured is None:
        raise ValueError(f"slide {slide.slide!r} has no measured expression to compare with")
    if not genes:
        raise ValueError("give at least one gene for the scatter")
    r = slide.pearson()
    n = len(genes)
    ncol = min(n, 4)
    nrow = (n + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 3.5 * nrow), squeeze=False)
    for i, gene in enumerate(genes):
        ax = axes[i // ncol, i % ncol]
        j = slide.column(gene)
        x, y = slide.measured[:, j], slide.predicted[:, j]
        ax.scatter(x, y, s=6, alpha=0.6, color="#3b7dd8", edgecolors="none")
        lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
        ax.plot([lo, hi], [lo, hi], color="grey", linewidth=0.8, linestyle="--")
        ax.set_xlabel(f"measured {slide.unit}")
        ax.set_ylabel(f"predicted {slide.unit}")
        ax.set_title(f"{gene} (slide {slide.slide}), r = {r[j]:.2f}", fontsize=10)
    for k in range(n, nrow * ncol):
        axes[k // ncol, k % ncol].axis("off")
    fig.tight_layout()
    return fig


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Write a figure atomically; an existing file is never overwritten."""
    import matplotlib.pyplot as plt

    path = Path(path)
    if path.exists():
        plt.close(fig)
        raise FileExistsError(f"{path} exists; choose another output file")
    from stgen.io import atomic_write

    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi))
    finally:
        plt.close(fig)
    return path


def _agg() -> None:
    import matplotlib

    matplotlib.use("Agg")


def spatial_maps(adata: ad.AnnData, genes: Sequence[str], path: str | Path, key: str = "stgen",
                 scale: str = "robust") -> Path:
    """Measured, predicted and spread maps of ``genes`` written to ``path`` (PNG/PDF, never overwritten)."""
    _agg()
    return save_figure(maps_figure(predicted_slide(adata, key), genes, scale=scale), path)


def pearson_bars(adata: ad.AnnData, path: str | Path, key: str = "stgen") -> Path:
    """Per-gene Pearson bars of a predicted slide written to ``path``."""
    _agg()
    return save_figure(pearson_figure(predicted_slide(adata, key)), path)


def predicted_vs_measured(adata: ad.AnnData, genes: Sequence[str], path: str | Path, key: str = "stgen") -> Path:
    """Predicted-vs-measured scatter of ``genes`` written to ``path``."""
    _agg()
    return save_figure(scatter_figure(predicted_slide(adata, key), genes), path)
