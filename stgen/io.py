"""Writing AnnData safely."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

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


def h5ad_safe(value: Any) -> Any:
    """``value`` with ``None`` replaced by the string ``"None"`` (recursively): h5ad cannot store None."""
    if value is None:
        return "None"
    if isinstance(value, dict):
        return {str(k): h5ad_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [h5ad_safe(v) for v in value]
    return value
