"""Legacy Spatial Transcriptomics (ST) sections (her2st layout) read into the Slide contract, and patches.

Layout of a data set root (the ``almaan/her2st`` convention)::

    counts/<section>.tsv.gz          # spots x genes raw counts; first column = "{x}x{y}" array id
    spots/<section>_selection.tsv    # x y new_x new_y pixel_x pixel_y selected (one row per array spot)
    images/<section>.jpg             # full-resolution H&E (or <section>_lowres.png with a known scale)

Spot coordinates are kept in full-resolution image pixels (``obsm['spatial']`` = ``[pixel_x, pixel_y]``,
x = column, y = row). Patch extraction maps them onto the image through ``image_scale`` (image pixels per
full-resolution pixel; 1 for the full-resolution JPEGs).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from PIL import Image

from stgen.data.hest_patches import Patches
from stgen.data.slide import SPATIAL_KEY, UNS_KEY, SlideError, make_slide
from stgen.errors import MissingInputError, reading, safe_name

#: centre-to-centre distance of adjacent spots on a legacy ST array
LEGACY_ST_STEP_UM = 200.0
#: HEST's patch convention: 224 px at 0.5 um/px
DEFAULT_PATCH_UM = 112.0
DEFAULT_PATCH_PX = 224
#: image pixels per full-resolution pixel for low-resolution-only images of known data sets
KNOWN_IMAGE_SCALES: dict[str, float] = {"A1_lowres.png": 2000.0 / 6954.0}
#: largest image PIL may open here (the her2st JPEGs are about 92 Mpx)
MAX_IMAGE_PIXELS = 1_000_000_000

_SELECTION_COLUMNS = ("x", "y", "pixel_x", "pixel_y")


def open_image(path: str | Path) -> Image.Image:
    """Open (and decode once) a large histology image as RGB, lifting PIL's decompression-bomb limit."""
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    with reading(path, "an image", "re-copy the image file (it may be truncated) or convert it to JPEG/PNG/TIFF"):
        img = Image.open(path)
        img.load()
        return img if img.mode == "RGB" else img.convert("RGB")


def find_section_image(root: str | Path, section: str) -> tuple[Path, float | None]:
    """The image of a section and its scale when known: ``images/<s>.jpg`` (scale 1), else a lowres image.

    Returns:
        ``(path, scale)``; ``scale`` is None for a low-resolution image of unknown scale.
    """
    images = Path(root) / "images"
    for ext in (".jpg", ".jpeg", ".tif", ".tiff", ".png"):
        p = images / f"{section}{ext}"
        if p.is_file():
            return p, 1.0
    for p in sorted(images.glob(f"{section}_lowres.*")):
        return p, KNOWN_IMAGE_SCALES.get(p.name)
    raise MissingInputError(
        f"section {section!r}: no image in {images} ({section}.jpg or {section}_lowres.png); put it there"
    )


def read_counts(path: str | Path) -> pd.DataFrame:
    """A legacy-ST counts table (spots x genes, first column the ``"{x}x{y}"`` spot id)."""
    with reading(path, "a tab-separated counts table", "re-copy it (it may be truncated) or fix its format"):
        df = pd.read_csv(path, sep="\t", index_col=0)
        df.index = df.index.astype(str)
        if df.empty:
            raise SlideError(f"counts table {path} has no spots or no genes; re-copy it")
        df = df.astype(np.float32)
    return df


def read_spot_table(path: str | Path) -> pd.DataFrame:
    """A ``*_selection.tsv`` spot table, indexed by the ``"{x}x{y}"`` array id."""
    with reading(path, "a tab-separated spot table", "re-copy it (it may be truncated) or fix its format"):
        df = pd.read_csv(path, sep="\t")
        missing = [c for c in _SELECTION_COLUMNS if c not in df.columns]
        if missing:
            raise SlideError(
                f"{path}: missing column(s) {missing}; expected x y new_x new_y pixel_x pixel_y selected"
            )
        df[["pixel_x", "pixel_y"]] = df[["pixel_x", "pixel_y"]].astype(np.float64)
        df.index = pd.Index([f"{int(x)}x{int(y)}" for x, y in zip(df["x"], df["y"], strict=True)])
    if not df.index.is_unique:
        df = df[~df.index.duplicated(keep="first")]
    return df


def um_per_px_from_grid(spots: pd.DataFrame, step_um: float = LEGACY_ST_STEP_UM) -> float:
    """Full-resolution micrometres per pixel from the spot grid.

    The median pixel distance between grid-adjacent spots (array ids differing by one in x or in y) is
    one array step, ``step_um`` micrometres.
    """
    xy = spots[["x", "y"]].to_numpy().astype(np.int64)
    px = spots[["pixel_x", "pixel_y"]].to_numpy(dtype=np.float64)
    where = {(int(a), int(b)): i for i, (a, b) in enumerate(xy)}
    dists = []
    for i, (a, b) in enumerate(xy):
        for da, db in ((1, 0), (0, 1)):
            j = where.get((int(a) + da, int(b) + db))
            if j is not None:
                dists.append(float(np.hypot(*(px[i] - px[j]))))
    if not dists:
        raise SlideError(
            "cannot derive the resolution: no two grid-adjacent spots; pass um_per_px explicitly"
        )
    step_px = float(np.median(dists))
    if step_px <= 0:
        raise SlideError("cannot derive the resolution: adjacent spots share a pixel position")
    return step_um / step_px


def read_legacy_st(
    root: str | Path,
    section: str,
    *,
    patient: str | None = None,
    image_path: str | Path | None = None,
    image_scale: float | None = None,
    um_per_px: float | None = None,
    step_um: float = LEGACY_ST_STEP_UM,
) -> ad.AnnData:
    """Read one legacy-ST section into a Slide AnnData (no image decoding).

    Counts and spot table are joined on the ``"{x}x{y}"`` array id; spots present in only one of the two
    are dropped with a warning (the count is in ``uns['stgen']['legacy_st']['dropped_spots']``).

    Args:
        root: the data set folder (``counts/``, ``spots/``, ``images/``).
        section: section name, e.g. ``"C2"``.
        patient: patient id for splits (default: the first letter of the section name, her2st's rule).
        image_path: the H&E image (default: ``images/<section>.jpg``, else ``images/<section>_lowres.*``).
        image_scale: image pixels per full-resolution pixel (default: 1 for a full-resolution image, the
            known scale of a low-resolution one, e.g. 2000 / 6954 for her2st A1).
        um_per_px: full-resolution micrometres per pixel (default: derived from the spot grid).
        step_um: array step of the spot grid, in micrometres (200 for legacy ST).

    Returns:
        Slide AnnData: ``X`` raw counts (CSR float32), ``obsm['spatial']`` full-resolution pixels,
        ``obs[['array_x', 'array_y']]``, ``uns['stgen']['legacy_st']`` with ``image_path``,
        ``image_scale``, ``um_per_px``, ``dropped_spots``.
    """
    root = Path(root)
    section = safe_name(section, "section", str(root))
    counts_path = root / "counts" / f"{section}.tsv.gz"
    if not counts_path.is_file():
        alt = root / "counts" / f"{section}.tsv"
        if not alt.is_file():
            raise MissingInputError(f"section {section!r}: counts file {counts_path} does not exist; check the "
                                    "section name (--sections) and the counts/ folder")
        counts_path = alt
    spots_path = root / "spots" / f"{section}_selection.tsv"
    if not spots_path.is_file():
        raise MissingInputError(f"section {section!r}: spot table {spots_path} does not exist; put it there")
    counts = read_counts(counts_path)
    spots = read_spot_table(spots_path)
    shared = counts.index[counts.index.isin(spots.index)]
    n_counts_only = int(len(counts) - len(shared))
    if len(shared) == 0:
        raise SlideError(
            f"section {section!r}: no spot id of {counts_path.name} (e.g. {list(counts.index[:2])}) is in "
            f"{spots_path.name} (e.g. {list(spots.index[:2])}); ids must be '{{x}}x{{y}}' array coordinates"
        )
    if n_counts_only:
        warnings.warn(
            f"section {section!r}: {n_counts_only} spot(s) with counts but no row in {spots_path.name} "
            "were dropped",
            UserWarning,
            stacklevel=2,
        )
    counts = counts.loc[shared]
    table = spots.loc[shared]
    if image_path is None:
        img_path, known_scale = find_section_image(root, section)
    else:
        img_path, known_scale = Path(image_path), None
    scale = image_scale if image_scale is not None else known_scale
    if scale is None:
        if "lowres" in img_path.stem:
            raise SlideError(
                f"section {section!r}: {img_path.name} is a low-resolution image of unknown scale; pass "
                "image_scale= (image pixels per full-resolution pixel)"
            )
        scale = 1.0
    um = float(um_per_px) if um_per_px is not None else um_per_px_from_grid(spots, step_um)
    X = sp.csr_matrix(counts.to_numpy(dtype=np.float32))
    coords = table[["pixel_x", "pixel_y"]].to_numpy(dtype=np.float64)
    slide = make_slide(
        X,
        coords,
        slide=section,
        genes=[str(g) for g in counts.columns],
        barcodes=list(shared),
        patient=patient if patient is not None else section[:1],
    )
    slide.obs["array_x"] = table["x"].to_numpy().astype(np.int64)
    slide.obs["array_y"] = table["y"].to_numpy().astype(np.int64)
    slide.uns[UNS_KEY]["legacy_st"] = {
        "image_path": str(img_path),
        "image_scale": float(scale),
        "um_per_px": um,
        "dropped_spots": n_counts_only,
    }
    return slide


@dataclass(frozen=True)
class PatchGeometry:
    """How a patch is cut: ``crop_px`` image pixels around each spot, resampled to ``out_px``."""

    crop_px: int
    out_px: int
    image_scale: float
    um_per_px: float

    @property
    def out_um_per_px(self) -> float:
        """Resolution of the resampled patch (micrometres per output pixel)."""
        return self.crop_px / self.image_scale * self.um_per_px / self.out_px


def patch_geometry(
    slide: ad.AnnData,
    *,
    patch_um: float = DEFAULT_PATCH_UM,
    out_px: int = DEFAULT_PATCH_PX,
    um_per_px: float | None = None,
    image_scale: float | None = None,
) -> PatchGeometry:
    """Crop size in image pixels for ``patch_um`` micrometres (from the slide's ``legacy_st`` metadata)."""
    meta = slide.uns.get(UNS_KEY, {}).get("legacy_st", {})
    um = float(um_per_px if um_per_px is not None else meta.get("um_per_px", 0.0))
    scale = float(image_scale if image_scale is not None else meta.get("image_scale", 1.0))
    if um <= 0:
        raise SlideError(
            f"slide {slide.uns.get(UNS_KEY, {}).get('slide_id')!r}: unknown resolution; pass um_per_px"
        )
    crop = max(1, int(round(patch_um / um * scale)))
    return PatchGeometry(crop_px=crop, out_px=int(out_px), image_scale=scale, um_per_px=um)


def crop_patches(
    image: Image.Image,
    centres: np.ndarray,
    crop_px: int,
    out_px: int,
    *,
    pad_value: int = 255,
) -> np.ndarray:
    """Square crops of ``crop_px`` image pixels centred on ``centres`` (x, y in image pixels), resized to
    ``out_px``; parts outside the image are filled with ``pad_value``. The same code path
    (:func:`stgen.wsi.patches.crop_patch`) cuts patches from whole-slide images at prediction.

    Shapes:
        centres ``[N, 2]`` -> ``[N, out_px, out_px, 3]`` uint8.
    """
    from stgen.wsi.patches import crop_patch
    from stgen.wsi.reader import PillowReader

    reader = PillowReader(image=image)
    out = np.empty((len(centres), out_px, out_px, 3), dtype=np.uint8)
    for i, c in enumerate(np.asarray(centres, dtype=np.float64)):
        out[i] = crop_patch(reader, 0, c, crop_px, out_px, pad_value=pad_value)
    return out


def extract_patches(
    slide: ad.AnnData,
    image: Image.Image | str | Path | None = None,
    *,
    patch_um: float = DEFAULT_PATCH_UM,
    out_px: int = DEFAULT_PATCH_PX,
    um_per_px: float | None = None,
    image_scale: float | None = None,
    indices: Sequence[int] | np.ndarray | None = None,
    pad_value: int = 255,
) -> Patches:
    """Cut one patch per spot: ``patch_um`` micrometres wide, resampled to ``out_px`` pixels (HEST's
    112 um / 224 px by default), clipped at the image border and padded with ``pad_value``.

    Args:
        slide: a slide from :func:`read_legacy_st` (its ``uns['stgen']['legacy_st']`` gives image path,
            scale and resolution unless overridden here).
        image: an opened image (reuse it across calls: decoding a full-resolution section takes seconds
            and ~0.4 GB), a path, or None for the slide's own image.
        patch_um: patch width in micrometres.
        out_px: output patch width in pixels.
        um_per_px: full-resolution micrometres per pixel (default: the slide's).
        image_scale: image pixels per full-resolution pixel (default: the slide's).
        indices: spots to cut (default: all).
        pad_value: fill value outside the image (255: white glass).

    Returns:
        :class:`~stgen.data.hest_patches.Patches` with coordinates in full-resolution pixels and the output
        resolution in ``um_per_px``.
    """
    geom = patch_geometry(
        slide, patch_um=patch_um, out_px=out_px, um_per_px=um_per_px, image_scale=image_scale
    )
    if image is None:
        path = slide.uns.get(UNS_KEY, {}).get("legacy_st", {}).get("image_path")
        if not path:
            raise SlideError("slide has no uns['stgen']['legacy_st']['image_path']; pass image=")
        image = path
    opened = open_image(image) if isinstance(image, (str, Path)) else image
    try:
        idx = np.arange(slide.n_obs) if indices is None else np.asarray(indices, dtype=np.int64)
        coords = np.asarray(slide.obsm[SPATIAL_KEY], dtype=np.float64)[idx]
        img = crop_patches(opened, coords * geom.image_scale, geom.crop_px, geom.out_px, pad_value=pad_value)
    finally:
        if opened is not image:
            opened.close()
    barcodes = [str(b) for b in slide.obs_names[idx]]
    return Patches(img=img, coords=coords, barcodes=barcodes, um_per_px=geom.out_um_per_px)
