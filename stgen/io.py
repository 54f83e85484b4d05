"""Writing AnnData safely."""

from __future__ import annotations

import os
from pathlib import Path

import anndata as ad


def write_h5ad(adata: ad.AnnData, path: Path) -> None:
    """Write atomically (temporary file + rename); pandas' string arrays (default in pandas 3) are allowed."""
    tmp = path.with_name(path.name + ".tmp")
    if hasattr(ad.settings, "allow_write_nullable_strings"):
        with ad.settings.override(allow_write_nullable_strings=True):
            adata.write_h5ad(tmp)
    else:
        adata.write_h5ad(tmp)
    os.replace(tmp, path)
