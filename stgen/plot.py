"""Spatial maps of predictions: measured vs predicted expression and the spread over samples."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import numpy as np

from stgen.data.slide import SPATIAL_KEY, slide_id


def _panel(adata: ad.AnnData) -> dict[str, np.ndarray]:
    """The maps available for a predicted slide: measured log1p, predicted mean, spread."""
    out: dict[str, np.ndarray] = {}
    X = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
    if X.size and np.any(X):
        out["measured (log1p)"] = np.log1p(X)
    if "stgen_mean" not in adata.layers:
        raise ValueError(f"slide {slide_id(adata)!r} has no layers['stgen_mean']; run `stgen predict` first")
    out["predicted (log1p)"] = np.asarray(adata.layers["stgen_mean"])
    if "stgen_std" in adata.layers:
        out["spread over samples"] = np.asarray(adata.layers["stgen_std"])
    return out


def spatial_maps(adata: ad.AnnData, genes: Sequence[str], path: str | Path, spot_size: float | None = None) -> Path:
    """One row per gene: measured, predicted and (when present) spread maps; written atomically as PNG/PDF.

    Measured and predicted maps of a gene share one colour scale. The image y axis points down, as in
    the H&E image the coordinates come from.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    missing = [g for g in genes if g not in adata.var_names]
    if missing:
        raise ValueError(f"gene(s) {missing} are not in the slide's panel; choose from {list(adata.var_names)[:10]}...")
    maps = _panel(adata)
    xy = np.asarray(adata.obsm[SPATIAL_KEY])
    size = spot_size or max(4.0, 20000.0 / max(adata.n_obs, 1))
    fig, axes = plt.subplots(len(genes), len(maps), figsize=(4 * len(maps), 3.6 * len(genes)), squeeze=False)
    for row, gene in enumerate(genes):
        j = list(adata.var_names).index(gene)
        shared = [v[:, j] for k, v in maps.items() if k != "spread over samples"]
        lo, hi = float(min(v.min() for v in shared)), float(max(v.max() for v in shared))
        for col, (title, values) in enumerate(maps.items()):
            ax = axes[row, col]
            scale = {} if title == "spread over samples" else {"vmin": lo, "vmax": hi}
            sc = ax.scatter(xy[:, 0], xy[:, 1], c=values[:, j], s=size, cmap="viridis", **scale)
            ax.set_title(f"{gene}: {title}")
            ax.set_aspect("equal")
            ax.invert_yaxis()
            ax.set_xticks([])
            ax.set_yticks([])
            fig.colorbar(sc, ax=ax, shrink=0.8)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path
