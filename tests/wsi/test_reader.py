from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from stgen.wsi.patches import crop_patch, plan_patches
from stgen.wsi.reader import PillowReader, SlideError, TiffSlideReader, open_slide
from stgen.wsi.synthetic import write_pyramid

HER2ST_MPP = 0.69


@pytest.mark.parametrize("fmt,name", [("tif", "s.tif"), ("tif", "s.tiff"), ("ome", "s.ome.tif"), ("svs", "s.svs")])
def test_pyramidal_formats_read_levels_pixels_and_mpp_from_metadata(tmp_path, her2st_crop, fmt, name):
    crop, _ = her2st_crop
    path = write_pyramid(tmp_path / name, crop, HER2ST_MPP, fmt)
    with open_slide(path) as r:
        assert isinstance(r, TiffSlideReader)
        assert r.dimensions == (1536, 1536) and r.level_count == 2
        assert r.level_downsamples == pytest.approx([1.0, 4.0])
        assert r.mpp == pytest.approx(HER2ST_MPP, rel=1e-4) and r.mpp_source == "file metadata"
        region = r.read_region(0, 300, 200, 64, 48)
        level1 = r.read_region(1, 10, 20, 16, 16)
    if fmt == "svs":  # JPEG tiles: lossy
        assert np.abs(region.astype(int) - crop[200:248, 300:364]).mean() < 8
    else:
        np.testing.assert_array_equal(region, crop[200:248, 300:364])
        np.testing.assert_array_equal(level1, crop[::4, ::4][20:36, 10:26])


def test_given_mpp_overrides_metadata_and_is_required_without_it(tmp_path, her2st_crop):
    crop, _ = her2st_crop
    tif = write_pyramid(tmp_path / "meta.tif", crop, HER2ST_MPP)
    assert open_slide(tif, mpp=0.5).mpp == 0.5
    bare = write_pyramid(tmp_path / "bare.tif", crop, None)
    with pytest.raises(SlideError, match=r"bare.tif.*--mpp"):
        open_slide(bare)
    assert open_slide(bare, mpp=0.7).mpp == 0.7
    for suffix in (".jpg", ".png"):
        p = tmp_path / f"plain{suffix}"
        Image.fromarray(crop).save(p, quality=95)
        with pytest.raises(SlideError, match=rf"plain{suffix}.*--mpp"):
            open_slide(p)
        r = open_slide(p, mpp=HER2ST_MPP)
        assert isinstance(r, PillowReader) and r.dimensions == (1536, 1536) and r.level_count == 1
    with pytest.raises(SlideError, match="must be a positive"):
        open_slide(tif, mpp=-1)


def test_unsupported_and_unreadable_files_are_clear_errors(tmp_path):
    bad = tmp_path / "x.ndpi"
    bad.write_bytes(b"not a tiff")
    with pytest.raises(SlideError, match=r"x.ndpi.*cannot be read"):
        open_slide(bad)
    other = tmp_path / "x.czi"
    other.write_bytes(b"")
    with pytest.raises(SlideError, match=r"unsupported format '.czi'.*\.svs"):
        open_slide(other)
    with pytest.raises(SlideError, match="does not exist"):
        open_slide(tmp_path / "missing.svs")


def test_patch_plan_reads_the_closest_level_and_pads_outside(tmp_path, her2st_crop):
    crop, _ = her2st_crop
    r = open_slide(write_pyramid(tmp_path / "p.tif", crop, 0.25, factors=(1, 2, 4)))
    plan = plan_patches(r, 112.0, 224)  # 0.5 um/px wanted: level 1 (0.5 um/px) exactly, no resampling
    assert (plan.level, plan.crop_px, plan.downsample) == (1, 224, 2.0)
    plan = plan_patches(r, 112.0, 112)  # 1 um/px wanted: level 2
    assert (plan.level, plan.crop_px) == (2, 112)
    corner = crop_patch(r, 0, (0.0, 0.0), 32, 32)
    assert (corner[:16, :16] == 255).all() and (corner[16:, 16:] == crop[:16, :16]).all()
    overview, ds = r.overview(max_side=256)
    assert overview.shape == (192, 192, 3) and ds == 8.0  # level 2 (384 px) halved: at most 256 px


def test_dataloader_workers_read_the_same_patches(tmp_path, her2st_crop):
    import torch
    from torch.utils.data import DataLoader

    from stgen.wsi.patches import PatchDataset, cut_patches

    crop, _ = her2st_crop
    r = open_slide(write_pyramid(tmp_path / "w.tif", crop, HER2ST_MPP))
    r.read_region(0, 0, 0, 8, 8)  # the parent has an open handle before the workers fork
    centres = np.random.default_rng(0).uniform(0, 1536, size=(40, 2))
    plan = plan_patches(r, 112.0, 64)
    ref = cut_patches(r, plan, centres)
    loader = DataLoader(PatchDataset(r, plan, centres), batch_size=7, num_workers=2)
    got = torch.cat(list(loader)).numpy()
    np.testing.assert_array_equal(got, ref)
