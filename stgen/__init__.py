"""stgen: generate spatial transcriptomics from histology (STFlow and a modular framework around it).

The Python API is imported on first use, so ``import stgen`` stays light (no torch, no Lightning)::

    import stgen

    model = stgen.load("outputs/run/checkpoints/best.ckpt")   # a trained model and its gene panel
    stgen.tl.predict(adata, model, key_added="stgen")          # writes adata.obsm["stgen_mean"], ...
    stgen.pl.expression(adata, genes=["ERBB2"])                # measured vs predicted maps

    stgen.list_components("encoder")                           # registered names (timm-style)
    net = stgen.create_model("gnn", in_dim=64, n_genes=50)     # an untrained model from registry names
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> module that defines it (imported on first access)
_LAZY: dict[str, tuple[str, str]] = {
    "load": ("stgen.api", "load"),
    "list_components": ("stgen.api", "list_components"),
    "create_model": ("stgen.api", "create_model"),
    "predict_slide": ("stgen.wsi.pipeline", "predict_image"),
}
_SUBMODULES = ("tl", "pl")

__all__ = ["__version__", *_LAZY, *_SUBMODULES]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"stgen.{name}")
    else:
        raise AttributeError(f"module 'stgen' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
