"""Cache of patch embeddings next to the data: ``<root>/embeddings/<backend>-<hash>/<sample>.h5``."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from stgen.errors import MissingInputError, safe_name
from stgen.io import atomic_write

if TYPE_CHECKING:
    from stgen.features.base import FeatureExtractor
from stgen.data.hest_layout import PATCHES_DIR
from stgen.data.hest_patches import decode_strings, read_patch_index

EMBEDDINGS_DIR = "embeddings"
#: backend parameters that do not change the embeddings and are left out of the cache key
NON_SEMANTIC_PARAMS = frozenset({"device", "batch_size"})


# -- embeddings cache ----------------------------------------------------------------------------
@dataclass
class CachedEmbeddings:
    """Embeddings of every patch of one sample, in patch-file order.

    Args:
        embeddings: ``[N, F]`` float32.
        barcodes: ``N`` patch barcodes.
        coords: ``[N, 2]`` patch coordinates.
        path: the cache file.
        computed: True when this call computed them, False when they were read from the cache.
    """

    embeddings: np.ndarray
    barcodes: list[str]
    coords: np.ndarray
    path: Path
    computed: bool


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def canonical_backend_params(backend_name: str, backend_params: Mapping[str, Any] | None) -> dict[str, Any]:
    """The parameters that define a backend's output (registered defaults filled in, device and batch
    size removed)."""
    params = dict(backend_params or {})
    from stgen.registry import FEATURES

    try:
        cls = FEATURES.get(backend_name)
    except KeyError:
        cls = None
    if cls is not None and hasattr(cls, "params"):
        params = {**{p.name: p.default for p in cls.params()}, **params}
    return {k: _jsonable(v) for k, v in sorted(params.items()) if k not in NON_SEMANTIC_PARAMS}


def backend_key(backend_name: str, backend_params: Mapping[str, Any] | None) -> str:
    """Folder name of a backend's cache: ``<name>-<12 hex digits of the canonical parameters' hash>``."""
    blob = json.dumps(
        {"backend": backend_name, "params": canonical_backend_params(backend_name, backend_params)},
        sort_keys=True,
    )
    return f"{backend_name}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def embedding_cache_path(
    root: str | Path,
    sample_id: str,
    backend_name: str,
    backend_params: Mapping[str, Any] | None = None,
    cache_dir: str | Path | None = None,
) -> Path:
    """``<cache_dir or root/embeddings>/<backend>-<hash>/<sample_id>.h5``."""
    base = Path(cache_dir) if cache_dir is not None else Path(root) / EMBEDDINGS_DIR
    name = safe_name(sample_id, "sample_id", "embedding cache")
    return base / backend_key(backend_name, backend_params) / f"{name}.h5"


def _source_signature(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"path": str(path.resolve()), "size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


def _read_cache(path: Path, expected: dict[str, Any], barcodes: list[str]) -> CachedEmbeddings | None:
    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: f.attrs.get(k) for k in ("backend", "params", "source")}
            if attrs["backend"] != expected["backend"] or attrs["params"] != expected["params"]:
                return None
            if attrs["source"] != expected["source"]:
                return None
            cached_barcodes = decode_strings(f["barcodes"][:])
            if cached_barcodes != barcodes:
                return None
            emb = np.asarray(f["embeddings"][:], dtype=np.float32)
            coords = np.asarray(f["coords"][:], dtype=np.float64)
    except (OSError, KeyError):
        return None
    if emb.shape[0] != len(barcodes) or not np.isfinite(emb).all():
        return None
    return CachedEmbeddings(emb, cached_barcodes, coords, path, computed=False)


def ensure_embeddings(
    root: str | Path,
    sample_id: str,
    extractor: FeatureExtractor | Callable[[], FeatureExtractor],
    backend_name: str,
    backend_params: Mapping[str, Any] | None = None,
    *,
    patches_path: str | Path | None = None,
    cache_dir: str | Path | None = None,
    batch_size: int | None = None,
    progress: bool = True,
) -> CachedEmbeddings:
    """Embeddings of every patch of one sample, computed once and cached on disk.

    The cache file is :func:`embedding_cache_path` (``root/embeddings/<backend>-<hash>/<sample>.h5``,
    datasets ``embeddings`` (N, F) float32, ``coords`` (N, 2), ``barcodes`` (N, 1) bytes; attributes
    ``backend``, ``params`` (canonical JSON), ``source`` (patches file path, size and mtime) and ``dim``).
    It is reused while backend name, parameters (device and batch size excluded) and patches file are
    unchanged; otherwise the embeddings are recomputed. Files are written atomically (temporary file,
    then ``os.replace``), so an interrupted run never leaves a truncated cache.

    Args:
        root: the HEST folder.
        sample_id: the sample (its patches are ``patches_path`` or ``root/patches/<sample_id>.h5``).
        extractor: the backend, or a zero-argument factory called only when computing is needed.
        backend_name: registry name of the backend (part of the cache key).
        backend_params: its constructor parameters (part of the cache key).
        patches_path: the patches file, when not at the default location.
        cache_dir: folder to hold the cache instead of ``root/embeddings`` (e.g. for a read-only root).
        batch_size: patches per step when computing.
        progress: show a progress bar when computing.
    """
    root = Path(root)
    ppath = Path(patches_path) if patches_path is not None else root / PATCHES_DIR / f"{sample_id}.h5"
    if not ppath.is_file():
        raise MissingInputError(f"sample {sample_id!r}: patches file {str(ppath)!r} does not exist; put it there")
    barcodes, coords = read_patch_index(ppath)
    path = embedding_cache_path(root, sample_id, backend_name, backend_params, cache_dir)
    expected = {
        "backend": backend_name,
        "params": json.dumps(canonical_backend_params(backend_name, backend_params), sort_keys=True),
        "source": json.dumps(_source_signature(ppath), sort_keys=True),
    }
    cached = _read_cache(path, expected, barcodes)
    if cached is not None:
        return cached

    from stgen.features.base import FeatureExtractor, extract_embeddings

    ext = extractor if isinstance(extractor, FeatureExtractor) else extractor()
    emb = extract_embeddings(
        ext, ppath, batch_size=batch_size, progress=progress, desc=f"{backend_name} {sample_id}"
    )
    if emb.shape[0] != len(barcodes):
        raise RuntimeError(
            f"{backend_name}: {emb.shape[0]} embeddings for {len(barcodes)} patches of {sample_id}"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(
            f"cannot create the embedding cache folder {str(path.parent)!r} ({exc}); pass cache_dir= a "
            "writable folder"
        ) from exc
    manifest = path.parent / "backend.json"
    if not manifest.is_file():
        atomic_write(
            manifest,
            lambda tmp: tmp.write_text(
                json.dumps({"backend": backend_name, "params": json.loads(expected["params"])}, indent=2)
            ),
        )

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("embeddings", data=emb.astype(np.float32))
            f.create_dataset("coords", data=coords)
            f.create_dataset("barcodes", data=np.array([[b.encode("utf-8")] for b in barcodes], dtype="S"))
            f.attrs["backend"] = expected["backend"]
            f.attrs["params"] = expected["params"]
            f.attrs["source"] = expected["source"]
            f.attrs["dim"] = int(emb.shape[1])

    atomic_write(path, write)
    return CachedEmbeddings(emb.astype(np.float32, copy=False), barcodes, coords, path, computed=True)


def resolve_backend(
    feature_backend: str | FeatureExtractor, backend_params: Mapping[str, Any] | None
) -> tuple[str, dict[str, Any], Callable[[], FeatureExtractor]]:
    from stgen.features.base import FeatureExtractor
    from stgen.registry import FEATURES

    if isinstance(feature_backend, FeatureExtractor):
        inst = feature_backend
        name = next((e.name for e in FEATURES.entries() if e.obj is type(inst)), type(inst).__name__)
        return name, inst.get_params(), lambda: inst
    if not isinstance(feature_backend, str):
        raise TypeError(
            f"feature_backend must be a registered name or a FeatureExtractor, got {feature_backend!r}"
        )
    cls = FEATURES.get(feature_backend)
    params = dict(backend_params or {})
    built: list[FeatureExtractor] = []

    def factory() -> FeatureExtractor:
        if not built:
            built.append(cls(**params))
        return built[0]

    return feature_backend, params, factory
