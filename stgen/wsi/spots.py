"""Given spot positions (``--spots``): a CSV of pixel positions, or the spots of an AnnData."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stgen.errors import DataInputError, MissingInputError

#: accepted (x, y) column pairs of a spots CSV, in order of preference (pixel columns first: a legacy-ST
#: ``*_selection.tsv`` also has ``x, y``, which are array indices there)
XY_COLUMNS = (("pixel_x", "pixel_y"), ("pxl_col_in_fullres", "pxl_row_in_fullres"), ("x", "y"))
ID_COLUMNS = ("barcode", "spot", "id", "name")


@dataclass
class Spots:
    """Spot centres in level-0 (full-resolution) pixels.

    Args:
        coords: ``[N, 2]`` float64 (x = column, y = row).
        names: ``N`` spot names (barcodes).
        source: the file they came from.
    """

    coords: np.ndarray
    names: list[str]
    source: str


def read_spots(path: str | Path) -> Spots:
    """Spots from a ``.csv``/``.tsv`` (columns ``pixel_x,pixel_y``, Space Ranger's
    ``pxl_col_in_fullres,pxl_row_in_fullres``, or ``x,y``; optional ``barcode``) or an ``.h5ad``
    (``obsm['spatial']``). Rows with ``selected == 0`` (legacy-ST spot tables) are dropped.

    Raises:
        ValueError: unknown format, missing columns, or non-finite positions (the message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"--spots file {str(path)!r} does not exist")
    if path.suffix == ".h5ad":
        import anndata as ad

        a = ad.read_h5ad(path, backed="r")
        if "spatial" not in a.obsm:
            raise DataInputError(f"--spots {path}: the AnnData has no obsm['spatial'] (spot centres in full-resolution pixels)")
        coords = np.asarray(a.obsm["spatial"], dtype=np.float64)
        names = [str(n) for n in a.obs_names]
        a.file.close()
    elif path.suffix in (".csv", ".tsv", ".txt"):
        import pandas as pd

        df = pd.read_csv(path, sep=None, engine="python")
        pair = next((p for p in XY_COLUMNS if all(c in df.columns for c in p)), None)
        if pair is None:
            raise DataInputError(f"--spots {path}: no pixel-position columns; expected one of "
                             f"{', '.join('/'.join(p) for p in XY_COLUMNS)}, found {list(df.columns)}")
        if "selected" in df.columns:
            df = df[df["selected"].astype(int) != 0]
        coords = df[list(pair)].to_numpy(dtype=np.float64)
        idc = next((c for c in ID_COLUMNS if c in df.columns), None)
        if idc:
            names = [str(v) for v in df[idc]]
        elif pair[0] == "pixel_x" and {"x", "y"} <= set(df.columns):  # legacy ST: the "{x}x{y}" array id
            names = [f"{int(a)}x{int(b)}" for a, b in zip(df["x"], df["y"], strict=True)]
        else:
            names = [f"spot{i}" for i in range(len(df))]
    else:
        raise DataInputError(f"--spots {path}: unsupported file type {path.suffix!r}; give a .csv/.tsv or an .h5ad")
    if coords.ndim != 2 or coords.shape[1] != 2 or not len(coords):
        raise DataInputError(f"--spots {path}: expected (N, 2) positions, got shape {coords.shape}")
    if not np.isfinite(coords).all():
        raise DataInputError(f"--spots {path}: {int((~np.isfinite(coords)).any(axis=1).sum())} spot(s) have non-finite positions")
    if len(set(names)) != len(names):
        raise DataInputError(f"--spots {path}: spot names are not unique")
    return Spots(coords=coords, names=names, source=str(path))
