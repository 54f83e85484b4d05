"""The one patch-extraction path: square patches of a physical size around spot centres, from any reader.

Whole-slide prediction, ``stgen convert`` (legacy ST) and therefore the HEST-style folders it writes all
cut patches here, so a spot gets the same pixels whichever way it reaches the feature backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from stgen.errors import ConfigInputError
from stgen.wsi.reader import SlideReader

#: resampling of the crop to the patch size (HEST convention: bicubic)
RESAMPLE = Image.Resampling.BICUBIC


@dataclass(frozen=True)
class PatchPlan:
    """How patches are cut from a slide.

    Args:
        level: pyramid level read.
        crop_px: side of the square crop, in pixels of ``level``.
        out_px: side of the patch after resampling.
        downsample: level-0 pixels per pixel of ``level``.
        patch_um: side of the patch in micrometres.
    """

    level: int
    crop_px: int
    out_px: int
    downsample: float
    patch_um: float

    @property
    def out_um_per_px(self) -> float:
        """Resolution of the resampled patch, micrometres per pixel (from the rounded crop)."""
        return self.patch_um / self.out_px


def plan_patches(reader: SlideReader, patch_um: float, out_px: int) -> PatchPlan:
    """Patches of ``patch_um`` micrometres resampled to ``out_px``, read from the closest pyramid level.

    The closest level is the coarsest one that is still at least as fine as the patch resolution
    (``patch_um / out_px`` µm/px), so patches are never upsampled from a coarser level than necessary.
    """
    if patch_um <= 0 or out_px < 1:
        raise ConfigInputError(f"patch size must be positive, got {patch_um} um / {out_px} px")
    target = patch_um / out_px
    level = 0
    for i, ds in enumerate(reader.level_downsamples):
        if reader.mpp * ds <= target * 1.001:
            level = i
    level_mpp = reader.mpp * reader.level_downsamples[level]
    crop = max(1, int(round(patch_um / level_mpp)))
    return PatchPlan(level=level, crop_px=crop, out_px=int(out_px), downsample=reader.level_downsamples[level],
                     patch_um=float(patch_um))


def crop_patch(reader: SlideReader, level: int, centre: Sequence[float], crop_px: int, out_px: int,
               pad_value: int = 255) -> np.ndarray:
    """One square crop of ``crop_px`` level pixels centred on ``centre`` (x, y in level pixels), resampled
    to ``out_px`` (bicubic); parts outside the image are ``pad_value``.

    Shapes:
        -> ``[out_px, out_px, 3]`` uint8.
    """
    cx, cy = float(centre[0]), float(centre[1])
    left = int(round(cx - crop_px / 2))
    top = int(round(cy - crop_px / 2))
    tile = np.array(reader.read_region(level, left, top, crop_px, crop_px, pad_value=pad_value), dtype=np.uint8)
    if crop_px != out_px:
        tile = np.array(Image.fromarray(tile).resize((out_px, out_px), RESAMPLE), dtype=np.uint8)
    return tile


def cut_patches(reader: SlideReader, plan: PatchPlan, centres_level0: np.ndarray, pad_value: int = 255) -> np.ndarray:
    """Patches at level-0 centres ``[N, 2]`` -> ``[N, out_px, out_px, 3]`` uint8 (in memory: small N only)."""
    out = np.empty((len(centres_level0), plan.out_px, plan.out_px, 3), dtype=np.uint8)
    for i, c in enumerate(np.asarray(centres_level0, dtype=np.float64)):
        out[i] = crop_patch(reader, plan.level, c / plan.downsample, plan.crop_px, plan.out_px, pad_value)
    return out


class PatchDataset:
    """A torch ``Dataset`` of the patches of one slide, read on demand (workers reopen the slide).

    Args:
        reader: the slide (sent to DataLoader workers; TIFF handles reopen lazily there).
        plan: how to cut.
        centres: ``[N, 2]`` spot centres in level-0 pixels.

    Shapes:
        item ``i`` -> ``[out_px, out_px, 3]`` uint8 tensor.
    """

    def __init__(self, reader: SlideReader, plan: PatchPlan, centres: np.ndarray) -> None:
        self.reader = reader
        self.plan = plan
        self.centres = np.asarray(centres, dtype=np.float64)

    def __len__(self) -> int:
        return len(self.centres)

    def __getitem__(self, i: int):
        import torch

        p = self.plan
        return torch.from_numpy(crop_patch(self.reader, p.level, self.centres[i] / p.downsample, p.crop_px, p.out_px))
