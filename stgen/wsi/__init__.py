"""Whole-slide images in, expression maps out (see docs/wsi.md).

One module per job: :mod:`~stgen.wsi.reader` (slides and their resolution), :mod:`~stgen.wsi.tissue`
(tissue mask), :mod:`~stgen.wsi.lattice` (virtual spots), :mod:`~stgen.wsi.spots` (given spots),
:mod:`~stgen.wsi.patches` (the one patch-extraction path), :mod:`~stgen.wsi.cache` (embedding cache),
:mod:`~stgen.wsi.settings` (what the checkpoint says) and :mod:`~stgen.wsi.pipeline` (the whole chain).
"""

from __future__ import annotations

from typing import Any

_LAZY = {"predict_image": "stgen.wsi.pipeline", "open_slide": "stgen.wsi.reader", "read_spots": "stgen.wsi.spots",
         "detect_tissue": "stgen.wsi.tissue", "MissingBackendError": "stgen.wsi.settings"}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'stgen.wsi' has no attribute {name!r}")
