"""Tissue detection on a low-resolution overview: no spots on glass, pen marks or holes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class TissueMask:
    """Where the tissue is, on a low-resolution grid.

    Args:
        mask: ``[H, W]`` bool, True on tissue.
        downsample: level-0 pixels per mask pixel.
        threshold: the saturation threshold used (Otsu, clipped).
        pen_fraction: fraction of the overview flagged as pen ink.

    Shapes:
        :meth:`contains`: ``[N, 2]`` level-0 (x, y) -> ``[N]`` bool.
    """

    mask: np.ndarray
    downsample: float
    threshold: float = 0.0
    pen_fraction: float = 0.0

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Whether each level-0 point ``(x, y)`` falls on tissue (outside the mask: False)."""
        pts = np.asarray(points, dtype=np.float64)
        col = np.floor(pts[:, 0] / self.downsample).astype(np.int64)
        row = np.floor(pts[:, 1] / self.downsample).astype(np.int64)
        h, w = self.mask.shape
        inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
        out = np.zeros(len(pts), dtype=bool)
        out[inside] = self.mask[row[inside], col[inside]]
        return out

    @property
    def fraction(self) -> float:
        return float(self.mask.mean()) if self.mask.size else 0.0

    def save_png(self, path: str | Path) -> Path:
        """Write the mask as an 8-bit PNG (tissue white), atomically."""
        from PIL import Image

        from stgen.io import atomic_write

        return atomic_write(path, Image.fromarray((self.mask * 255).astype(np.uint8)).save)


def otsu(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of values in [0, 1]."""
    hist, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    hist = hist.astype(np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(centres[int(np.argmax(between))])


def detect_tissue(overview: np.ndarray, downsample: float, mpp: float, *, min_area_um2: float = 20_000.0,
                  min_saturation: float = 0.04, max_saturation: float = 0.1,
                  min_texture: float = 0.008) -> TissueMask:
    """Tissue mask of an RGB overview.

    Tissue is stained (saturated) and neither glass nor ink: saturation above Otsu's threshold (clipped
    to ``[min_saturation, max_saturation]``: glass is below 0.03, pale H&E stroma and fat about 0.1),
    not near-white, not black, textured (grey-level standard deviation over 7 x 7 overview pixels above
    ``min_texture``) unless strongly stained (2.5 times the threshold): smooth eosin haze on the glass is
    not tissue; and not pen ink. Ink is told from stain by colour: green ink has green
    well above red (H&E at most a few percent), blue ink has red under a fifth of blue at high
    saturation (haematoxylin keeps red above about a third of blue), black ink is dark and grey. Ink is
    grown by one pixel to drop its halo; the mask is closed then opened with a 3 x 3 square, and pieces
    smaller than ``min_area_um2`` are removed. Holes wider than a few overview pixels stay holes.

    Args:
        overview: ``[H, W, 3]`` uint8 RGB at ``downsample`` level-0 pixels per pixel.
        downsample: level-0 pixels per overview pixel.
        mpp: level-0 micrometres per pixel.
        min_area_um2: smallest tissue piece kept, in square micrometres.
        min_saturation, max_saturation: bounds of the saturation threshold.
        min_texture: local grey-level standard deviation of tissue (0-1 scale).
    """
    from scipy import ndimage

    rgb = overview.astype(np.float32) / 255.0
    mx, mn = rgb.max(axis=2), rgb.min(axis=2)
    sat = (mx - mn) / np.maximum(mx, 1e-6)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    ink = (g > r + 0.12) & (g >= b - 0.05) & (sat > 0.25)  # green
    ink |= (r < 0.22 * b) & (sat > 0.6)  # blue
    ink |= (mx < 0.2) & (sat < 0.3)  # black
    ink = ndimage.binary_dilation(ink, iterations=1)
    candidates = (mx > 0.12) & (mn < 0.92) & ~ink
    thr = otsu(sat[candidates]) if candidates.any() else max_saturation
    thr = float(np.clip(thr, min_saturation, max_saturation))
    gray = rgb.mean(axis=2)
    mean = ndimage.uniform_filter(gray, 7)
    texture = np.sqrt(np.maximum(ndimage.uniform_filter(gray * gray, 7) - mean * mean, 0.0))
    # faintly stained but smooth areas (eosin haze on the glass) are not tissue unless strongly stained
    mask = candidates & (sat > thr) & ((texture > min_texture) | (sat > 2.5 * thr))
    square = np.ones((3, 3), dtype=bool)
    mask = ndimage.binary_opening(ndimage.binary_closing(mask, structure=square), structure=square) & ~ink
    px_area_um2 = (downsample * mpp) ** 2
    labels, n = ndimage.label(mask)
    if n:
        sizes = np.bincount(labels.ravel(), minlength=n + 1) * px_area_um2
        keep = sizes >= min_area_um2
        keep[0] = False
        mask = keep[labels]
    return TissueMask(mask=mask, downsample=float(downsample), threshold=thr, pen_fraction=float(ink.mean()))
