"""Reading and writing AnnData safely: one clear error for an unreadable file, no partial file on failure."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anndata as ad

from stgen.errors import MissingInputError, reading

H5AD_FIX = "check that it is a complete .h5ad written by anndata (re-copy or re-write it)"


def read_h5ad(path: str | Path, what: str = "slide", backed: str | None = None) -> ad.AnnData:
    """``anndata.read_h5ad`` that names the file in every failure (missing, not HDF5, truncated, corrupt).

    Args:
        path: the ``.h5ad`` file.
        what: what the file is, for messages (``"slide"``, ``"prediction"``).
        backed: passed to anndata (``"r"`` reads ``X`` lazily).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{what} {path} does not exist; give the path of an existing .h5ad file")
    with reading(path, f"an AnnData .h5ad {what}", H5AD_FIX):
        return ad.read_h5ad(path, backed=backed)


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Write ``path`` atomically: ``write(tmp)`` fills a temporary file in the same folder, then it is renamed.

    The temporary name is hidden, unique per process and keeps ``path``'s suffix (so writers that pick the
    format from the extension work). On any failure or interruption (Ctrl-C included) it is removed, so
    neither a partial ``path`` nor a temporary file is left.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_h5ad(adata: ad.AnnData, path: Path) -> None:
    """Write ``adata`` atomically (:func:`atomic_write`); pandas' string arrays (default in pandas 3) are allowed."""

    def write(tmp: Path) -> None:
        if hasattr(ad.settings, "allow_write_nullable_strings"):
            with ad.settings.override(allow_write_nullable_strings=True):
                adata.write_h5ad(tmp)
        else:
            adata.write_h5ad(tmp)

    atomic_write(path, write)


def h5ad_safe(value: Any) -> Any:
    """``value`` with ``None`` replaced by the string ``"None"`` (recursively): h5ad cannot store None."""
    if value is None:
        return "None"
    if isinstance(value, dict):
        return {str(k): h5ad_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [h5ad_safe(v) for v in value]
    return value
