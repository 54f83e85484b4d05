from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from stgen.data.legacy_st import (
    crop_patches,
    extract_patches,
    open_image,
    patch_geometry,
    read_legacy_st,
    um_per_px_from_grid,
)
from stgen.data.slide import SlideError, validate_slide

HER2ST = Path(__file__).resolve().parents[3] / "shared" / "data" / "her2st"
needs_her2st = pytest.mark.skipif(not (HER2ST / "counts").is_dir(), reason="her2st data not available")


@pytest.fixture(scope="module")
def a1():
    return read_legacy_st(HER2ST, "A1")


@needs_her2st
def test_a1_lowres_section(a1) -> None:
    validate_slide(a1, feature_key=None)
    assert a1.shape == (346, 15045)
    meta = a1.uns["stgen"]
    assert meta["slide_id"] == "A1" and meta["patient"] == "A"
    assert meta["legacy_st"]["image_path"].endswith("A1_lowres.png")
    assert meta["legacy_st"]["image_scale"] == pytest.approx(2000 / 6954)
    assert np.median(np.asarray(a1.X.sum(axis=1)).ravel()) == pytest.approx(4291, rel=0.01)
    # the first row of A1_selection.tsv: 22x12 at pixel (4550.31, 2394.07)
    np.testing.assert_allclose(a1[["22x12"]].obsm["spatial"], [[4550.31, 2394.07]])
    assert (a1.obs.loc["22x12", ["array_x", "array_y"]].tolist()) == [22, 12]


@needs_her2st
def test_a1_patches_cover_tissue(a1) -> None:
    geom = patch_geometry(a1)
    assert geom.out_um_per_px == pytest.approx(0.5, rel=0.02)
    with open_image(a1.uns["stgen"]["legacy_st"]["image_path"]) as image:
        patches = extract_patches(a1, image)
    assert patches.img.shape == (346, 224, 224, 3) and patches.img.dtype == np.uint8
    assert patches.barcodes == list(a1.obs_names)
    np.testing.assert_allclose(patches.coords, a1.obsm["spatial"])
    mean = patches.img.reshape(346, -1).mean(1)
    assert (mean > 40).all() and (mean < 245).all()  # H&E, not blacked-out background or glass


@needs_her2st
def test_c2_full_resolution_join_and_a_few_patches() -> None:
    c2 = read_legacy_st(HER2ST, "C2")
    validate_slide(c2, feature_key=None)
    assert c2.n_obs == 187 and c2.uns["stgen"]["patient"] == "C"
    assert np.median(np.asarray(c2.X.sum(axis=1)).ravel()) == pytest.approx(8508, rel=0.01)
    spots = pd.read_csv(HER2ST / "spots" / "C2_selection.tsv", sep="\t")
    assert len(spots) - c2.n_obs in range(0, 4)
    row = spots.iloc[0]
    np.testing.assert_allclose(
        c2[[f"{int(row.x)}x{int(row.y)}"]].obsm["spatial"], [[row.pixel_x, row.pixel_y]]
    )
    um = c2.uns["stgen"]["legacy_st"]["um_per_px"]
    assert um == pytest.approx(200 / 290, rel=0.02)
    geom = patch_geometry(c2)
    assert geom.crop_px == round(112 / um) and geom.image_scale == 1.0
    patches = extract_patches(c2, indices=[0, 50, 100])
    assert patches.img.shape == (3, 224, 224, 3)
    assert patches.um_per_px == pytest.approx(0.5, rel=0.01)
    assert Image.MAX_IMAGE_PIXELS is None or Image.MAX_IMAGE_PIXELS >= 92_000_000
    assert 60 < patches.img.mean() < 240


def _write_section(root: Path, name: str, image_name: str) -> None:
    for d in ("counts", "spots", "images"):
        (root / d).mkdir(parents=True, exist_ok=True)
    ids = [(x, y) for x in range(2, 6) for y in range(3, 6)]
    counts = pd.DataFrame(
        np.arange(len(ids) * 4).reshape(len(ids), 4),
        index=[f"{x}x{y}" for x, y in ids],
        columns=["GA", "GB", "GC", "GD"],
    )
    counts.iloc[:-1].to_csv(root / "counts" / f"{name}.tsv.gz", sep="\t")
    spots = pd.DataFrame(
        {
            "x": [x for x, _ in ids],
            "y": [y for _, y in ids],
            "new_x": 0.0,
            "new_y": 0.0,
            "pixel_x": [10.0 + 20 * (x - 2) for x, _ in ids],
            "pixel_y": [5.0 + 20 * (y - 3) for _, y in ids],
            "selected": 1,
        }
    )
    spots.to_csv(root / "spots" / f"{name}_selection.tsv", sep="\t", index=False)
    Image.new("RGB", (80, 60), (200, 100, 150)).save(root / "images" / image_name)


def test_synthetic_section_grid_resolution_and_border_padding(tmp_path: Path) -> None:
    _write_section(tmp_path, "Z1", "Z1.jpg")
    z = read_legacy_st(tmp_path, "Z1", patient="P9")
    assert z.n_obs == 11 and z.uns["stgen"]["patient"] == "P9"
    assert z.uns["stgen"]["legacy_st"]["um_per_px"] == pytest.approx(10.0)  # 20 px per 200 um step
    assert z.X.toarray()[0].tolist() == [0, 1, 2, 3]
    patches = extract_patches(z, patch_um=200.0, out_px=20)  # 20 px crops, no resampling
    assert patches.img.shape == (11, 20, 20, 3)
    corner = patches.img[0]  # centred at (10, 5): rows above the image are padded white
    assert (corner[:5] == 255).all() and np.abs(corner[10].astype(int) - [200, 100, 150]).max() < 8
    assert um_per_px_from_grid(
        pd.read_csv(tmp_path / "spots" / "Z1_selection.tsv", sep="\t")
    ) == pytest.approx(10)


def test_lowres_image_of_unknown_scale_needs_image_scale(tmp_path: Path) -> None:
    _write_section(tmp_path, "Z2", "Z2_lowres.png")
    with pytest.raises(SlideError, match="image_scale"):
        read_legacy_st(tmp_path, "Z2")
    z = read_legacy_st(tmp_path, "Z2", image_scale=0.5)
    patches = extract_patches(z, patch_um=200.0, out_px=16)  # 10 px crops of the half-scale image, resampled
    assert patches.img.shape == (11, 16, 16, 3)
    assert patch_geometry(z, patch_um=200.0, out_px=16).crop_px == 10


def test_crop_patches_outside_image_is_all_padding() -> None:
    img = Image.new("RGB", (30, 30), (0, 0, 0))
    out = crop_patches(img, np.array([[100.0, 100.0], [15.0, 15.0]]), crop_px=8, out_px=16, pad_value=7)
    assert (out[0] == 7).all() and (out[1] == 0).all()
