from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from stgen.data.spec import lattice_geometry
from stgen.wsi.lattice import lattice_points, tissue_lattice
from stgen.wsi.synthetic import synthetic_slide
from stgen.wsi.tissue import detect_tissue


def test_tissue_mask_excludes_glass_hole_and_pen():
    img, truth, ink = synthetic_slide(800)
    mask = detect_tissue(img, downsample=1.0, mpp=8.0)
    m = mask.mask
    iou = (m & truth).sum() / (m | truth).sum()
    assert iou > 0.9
    assert m[ink].mean() < 0.02  # pen strokes, on glass and over tissue
    yy, xx = np.mgrid[:800, :800]
    hole = (xx - 480) ** 2 + (yy - 360) ** 2 < 50**2
    assert m[hole].mean() < 0.02
    assert m[:30, :].sum() == 0  # glass at the top
    assert mask.pen_fraction > 0.01


@pytest.mark.parametrize("layout,neighbours", [("hex", 6), ("square", 4)])
def test_lattice_spacing_and_layout(layout, neighbours):
    pts = lattice_points(3000, 2000, 137.0, layout)
    tree = cKDTree(pts)
    d, _ = tree.query(pts, k=2)
    assert np.allclose(d[:, 1], 137.0)
    inner = (pts[:, 0] > 300) & (pts[:, 0] < 2700) & (pts[:, 1] > 300) & (pts[:, 1] < 1700)
    counts = np.array([len(n) - 1 for n in tree.query_ball_point(pts[inner], 137.0 * 1.01)])
    assert (counts == neighbours).all()
    spacing, found = lattice_geometry(pts, 0.5)
    assert spacing == pytest.approx(68.5) and found == layout


def test_tissue_lattice_keeps_only_tissue_spots():
    img, truth, _ = synthetic_slide(800)
    mask = detect_tissue(img, downsample=4.0, mpp=2.0)  # the overview of a 3200 px slide
    pts = tissue_lattice(mask, 3200, 3200, 50.0, "hex")
    assert len(pts) > 500
    cols, rows = (pts[:, 0] / 4).astype(int), (pts[:, 1] / 4).astype(int)
    assert truth[rows, cols].mean() > 0.97


def test_legacy_st_spot_table_reads_pixels_and_array_ids(her2st_root):
    from stgen.wsi.spots import read_spots

    spots = read_spots(her2st_root / "spots" / "C6_selection.tsv")
    assert spots.names[0] == "18x9" and np.allclose(spots.coords[0], [4905.52, 2362.53])
    assert spots.coords.min() > 100  # pixels, not array indices
