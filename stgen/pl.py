"""Plots (scanpy/squidpy style): functions that take a predicted AnnData and return a matplotlib figure.

They read what :func:`stgen.tl.predict` (``obsm["<key>_mean"]``) or ``stgen predict``
(``layers["<key>_mean"]``) wrote, draw on the H&E image when ``uns["spatial"]`` has one, and never
modify the AnnData. ``save=`` writes the figure (an existing file is never overwritten).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anndata as ad

from stgen import plot as _plot


def _finish(fig: Any, save: str | Path | None) -> Any:
    if save is not None:
        path = Path(save)
        if path.exists():
            raise FileExistsError(f"{path} exists; choose another file for save=")
        fig.savefig(path, dpi=120)
    return fig


def expression(adata: ad.AnnData, genes: Sequence[str], *, key: str = "stgen", scale: str = "robust",
               cmap: str = "viridis", save: str | Path | None = None) -> Any:
    """Spatial maps per gene: measured (when present), predicted (with its Pearson r) and spread.

    Args:
        adata: a predicted slide.
        genes: genes of the model's panel.
        key: the ``key_added`` the predictions were written under.
        scale: ``"robust"`` (each map its own 1st-99th percentile colour scale) or ``"shared"``
            (measured and predicted maps of a gene share one).
        cmap: matplotlib colour map of the expression maps.
        save: file to write the figure to.

    Returns:
        the matplotlib ``Figure``.
    """
    return _finish(_plot.maps_figure(_plot.predicted_slide(adata, key), list(genes), scale=scale, cmap=cmap), save)


def pearson(adata: ad.AnnData, *, key: str = "stgen", save: str | Path | None = None) -> Any:
    """Per-gene Pearson r of predicted vs measured expression on the slide (sorted bars, mean marked)."""
    return _finish(_plot.pearson_figure(_plot.predicted_slide(adata, key)), save)


def scatter(adata: ad.AnnData, genes: Sequence[str], *, key: str = "stgen", save: str | Path | None = None) -> Any:
    """Predicted vs measured log1p expression per spot, one panel per gene."""
    return _finish(_plot.scatter_figure(_plot.predicted_slide(adata, key), list(genes)), save)
