"""Embedding cache of whole-slide predictions, keyed by slide content, feature backend and lattice.

A second prediction on the same slide with the same backend, patch geometry and spots reads the
embeddings instead of cutting and embedding every patch again. Entries are float32 (the values the model
saw the first time, so a cached prediction equals a fresh one exactly) and written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from stgen.errors import ConfigInputError
from stgen.io import atomic_write

CACHE_ENV = "STGEN_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$STGEN_CACHE_DIR``, else ``$XDG_CACHE_HOME/stgen``, else ``~/.cache/stgen``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "stgen"


def cache_key(slide_fingerprint: str, features: dict[str, Any], patch: dict[str, Any], coords: np.ndarray) -> str:
    """SHA-256 over the slide fingerprint, the backend spec, the patch geometry and the spot centres."""
    h = hashlib.sha256()
    h.update(slide_fingerprint.encode())
    h.update(json.dumps({"features": features, "patch": patch}, sort_keys=True, default=str).encode())
    h.update(np.ascontiguousarray(np.asarray(coords, dtype=np.float64)).tobytes())
    return h.hexdigest()


class EmbeddingCache:
    """A folder of ``<key>.npz`` files holding the embeddings of one slide's spots.

    Args:
        root: the cache folder (created on first write).
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def path(self, key: str) -> Path:
        return self.root / "wsi-embeddings" / f"{key}.npz"

    def get(self, key: str, n: int) -> np.ndarray | None:
        """Cached embeddings ``[n, F]`` float32, or None (absent, unreadable or of another length)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path) as f:
                emb = np.asarray(f["embeddings"], dtype=np.float32)
        except (OSError, KeyError, ValueError):
            return None
        return emb if emb.ndim == 2 and emb.shape[0] == n and np.isfinite(emb).all() else None

    def put(self, key: str, embeddings: np.ndarray, meta: dict[str, Any]) -> Path:
        """Store embeddings (float32) with JSON metadata, atomically."""
        path = self.path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigInputError(f"cannot create the embedding cache folder {path.parent} ({exc}); pass --cache-dir") from exc
        return atomic_write(path, lambda tmp: np.savez(
            tmp, embeddings=np.asarray(embeddings, dtype=np.float32),
            meta=np.array(json.dumps(meta, sort_keys=True, default=str))))
