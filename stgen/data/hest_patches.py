"""HEST patches files (``patches/<sample>.h5``): ``img`` (N, H, W, 3) uint8, ``coords`` (N, 2), ``barcode``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np

from stgen.data.slide import SlideError
from stgen.errors import DataInputError, MissingInputError, reading
from stgen.io import atomic_write

if TYPE_CHECKING:
    pass

#: smallest patch side (pixels) that shows any tissue structure to a backend; HEST patches are 224 x 224
MIN_PATCH_PX = 16


# -- patches files -------------------------------------------------------------------------------
@dataclass
class Patches:
    """Image patches of one slide, in HEST's layout.

    Args:
        img: ``[N, H, W, 3]`` uint8 RGB patches.
        coords: ``[N, 2]`` patch coordinates (x = column, y = row) in full-resolution pixels.
        barcodes: ``N`` spot barcodes (the keys to the expression).
        um_per_px: resolution of ``img`` in micrometres per pixel, when known.
    """

    img: np.ndarray
    coords: np.ndarray
    barcodes: list[str]
    um_per_px: float | None = None

    def __post_init__(self) -> None:
        self.img = np.asarray(self.img)
        self.coords = np.asarray(self.coords, dtype=np.float64)
        self.barcodes = [str(b) for b in self.barcodes]
        n = len(self.barcodes)
        if self.img.dtype != np.uint8 or self.img.ndim != 4 or self.img.shape[-1] != 3:
            raise DataInputError(
                f"patches: img must be uint8 [N, H, W, 3], got {self.img.dtype} {self.img.shape}"
            )
        if self.img.shape[0] != n or self.coords.shape != (n, 2):
            raise DataInputError(
                f"patches: {n} barcodes but img has {self.img.shape[0]} patches and coords shape "
                f"{self.coords.shape}"
            )
        if len(set(self.barcodes)) != n:
            raise DataInputError("patches: barcodes are not unique; give every patch its spot's barcode")
        if n and min(self.img.shape[1:3]) < MIN_PATCH_PX:
            raise DataInputError(
                f"patches: {self.img.shape[1]}x{self.img.shape[2]}-pixel patches are too small to embed (at least "
                f"{MIN_PATCH_PX}x{MIN_PATCH_PX}; HEST uses 224x224 at 0.5 um/px); extract larger patches"
            )

    def __len__(self) -> int:
        return len(self.barcodes)


def decode_strings(values: np.ndarray) -> list[str]:
    """Strings of an HDF5 string/bytes dataset (one per row; bytes decoded as UTF-8)."""
    flat = np.asarray(values).reshape(len(values), -1)[:, 0] if len(values) else np.asarray([])
    return [v.decode("utf-8") if isinstance(v, (bytes, np.bytes_)) else str(v) for v in flat]


def write_patches_h5(path: str | Path, patches: Patches) -> Path:
    """Write ``patches`` as a HEST patches file (``img``, ``coords``, ``barcode`` (N, 1) bytes) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            f.create_dataset(
                "img", data=patches.img, chunks=(1, *patches.img.shape[1:]) if len(patches) else None
            )
            f.create_dataset("coords", data=patches.coords)
            f.create_dataset(
                "barcode", data=np.array([[b.encode("utf-8")] for b in patches.barcodes], dtype="S")
            )
            if patches.um_per_px is not None:
                f.attrs["um_per_px"] = float(patches.um_per_px)

    atomic_write(path, write)
    return path


def read_patch_index(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Barcodes and coordinates of a HEST patches file, without reading the images.

    The file is checked: datasets present, ``img`` uint8 ``[N, H, W, 3]`` with patches of at least
    :data:`MIN_PATCH_PX` pixels, as many coordinates and barcodes as patches, unique barcodes.
    """
    path = Path(path)
    layout = ("a HEST patches file holds img (N, H, W, 3) uint8, coords (N, 2) and barcode (N, 1) bytes")
    if not path.is_file():
        raise MissingInputError(f"patches file {str(path)!r} does not exist; {layout}")
    with reading(path, "an HDF5 patches file", f"re-create it ({layout})"):
        with h5py.File(path, "r") as f:
            missing = [k for k in ("img", "coords", "barcode") if k not in f]
            if missing:
                raise SlideError(f"patches file {str(path)!r}: missing dataset(s) {missing}; {layout}")
            barcodes = decode_strings(f["barcode"][:])
            coords = np.asarray(f["coords"][:], dtype=np.float64)
            img = f["img"]
            n_img, img_shape, img_dtype = img.shape[0], img.shape, img.dtype
    if img_dtype != np.uint8 or len(img_shape) != 4 or img_shape[-1] != 3:
        raise SlideError(
            f"patches file {str(path)!r}: img is {img_dtype} {tuple(img_shape)}, but patches must be uint8 RGB "
            "(N, H, W, 3) with values 0-255; convert them, e.g. (img * 255).round().astype('uint8') for floats in [0, 1]"
        )
    if min(img_shape[1:3]) < MIN_PATCH_PX:
        raise SlideError(
            f"patches file {str(path)!r}: {img_shape[1]}x{img_shape[2]}-pixel patches are too small to embed (at "
            f"least {MIN_PATCH_PX}x{MIN_PATCH_PX}; HEST uses 224x224 at 0.5 um/px); re-extract larger patches"
        )
    if coords.ndim != 2 or coords.shape[1] != 2 or len(coords) != len(barcodes) or n_img != len(barcodes):
        raise SlideError(
            f"patches file {str(path)!r}: img has {n_img} patches, coords shape {coords.shape}, "
            f"{len(barcodes)} barcodes; they must agree"
        )
    if len(set(barcodes)) != len(barcodes):
        raise SlideError(f"patches file {str(path)!r}: barcodes are not unique; re-create the patches")
    return barcodes, coords


def read_patches_h5(path: str | Path) -> Patches:
    """A whole HEST patches file in memory (images included)."""
    barcodes, coords = read_patch_index(path)
    with reading(path, "an HDF5 patches file", "re-create it"), h5py.File(path, "r") as f:
        img = f["img"][:]
        um = f.attrs.get("um_per_px")
    return Patches(img=img, coords=coords, barcodes=barcodes, um_per_px=None if um is None else float(um))
