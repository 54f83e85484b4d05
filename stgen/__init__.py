"""stgen: generate spatial transcriptomics from histology (STFlow and a modular framework around it)."""

from __future__ import annotations

__version__ = "0.1.0"


def __getattr__(name: str):  # lazy: `import stgen` stays light
    if name == "predict_slide":
        from stgen.wsi.pipeline import predict_image

        return predict_image
    raise AttributeError(f"module 'stgen' has no attribute {name!r}")
