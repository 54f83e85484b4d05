"""Virtual spot lattices over the tissue, matching the training data's spot geometry."""

from __future__ import annotations

import math

import numpy as np

from stgen.data.spec import LAYOUTS
from stgen.errors import ConfigInputError
from stgen.wsi.tissue import TissueMask


def lattice_points(width: float, height: float, spacing: float, layout: str) -> np.ndarray:
    """Centres of a square or hexagonal lattice covering ``width x height`` (same units as ``spacing``).

    Square: rows and columns ``spacing`` apart. Hexagonal (Visium): rows ``spacing * sqrt(3) / 2`` apart,
    every other row shifted by ``spacing / 2``, so each spot has six neighbours at ``spacing``. The
    lattice starts half a spacing from the top-left corner.

    Shapes:
        -> ``[N, 2]`` float64 (x, y).
    """
    if layout not in LAYOUTS:
        raise ConfigInputError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if not spacing > 0:
        raise ConfigInputError(f"spot spacing must be positive, got {spacing}")
    dy = spacing if layout == "square" else spacing * math.sqrt(3) / 2
    ys = np.arange(spacing / 2, height, dy)
    xs = np.arange(spacing / 2, width, spacing)
    xx, yy = np.meshgrid(xs, ys)
    if layout == "hex":
        xx = xx + (np.arange(len(ys))[:, None] % 2) * (spacing / 2)
    pts = np.stack([xx.ravel(), yy.ravel()], axis=1)
    return pts[pts[:, 0] < width]


def tissue_lattice(mask: TissueMask, width: int, height: int, spacing_px: float, layout: str) -> np.ndarray:
    """Lattice centres (level-0 pixels) that fall on tissue, in row-major order.

    Shapes:
        -> ``[N, 2]`` float64 (x, y) in level-0 pixels.
    """
    pts = lattice_points(width, height, spacing_px, layout)
    return pts[mask.contains(pts)]
