"""Patch-embedding backends: one per file; importing this package registers the built-ins."""

from stgen.features import efficientnet, handcrafted, timm_backend  # noqa: F401
from stgen.features.base import FeatureExtractor, extract_embeddings

__all__ = ["FeatureExtractor", "extract_embeddings"]
