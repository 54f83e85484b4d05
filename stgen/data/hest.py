"""HEST-Bench folders: patches and expression read into Slide AnnData, plus a cache of patch embeddings.

A HEST-Bench task folder holds::

    splits/train_{i}.csv, splits/test_{i}.csv   # columns sample_id, patches_path, expr_path [, patient]
    st/<sample>.h5ad  (or adata/<sample>.h5ad)  # raw counts, obs_names = spot barcodes
    patches/<sample>.h5                         # img (N, 224, 224, 3) uint8, coords (N, 2),
                                                # barcode (N, 1) bytes
    var_50genes.json                            # {"genes": [...]}

Expression and patches are aligned through the barcodes (patch order is kept). Embeddings computed by a
feature backend are cached next to the data in ``<root>/embeddings/<backend>-<hash>/<sample>.h5`` and
reused while the backend, its parameters and the patches file are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anndata as ad
import h5py
import numpy as np
import pandas as pd

from stgen.data.slide import FEATURE_KEY, SPATIAL_KEY, UNS_KEY, SlideError, make_slide, validate_slide
from stgen.errors import ConfigInputError, DataInputError, MissingInputError, reading, safe_name
from stgen.io import atomic_write, read_h5ad

if TYPE_CHECKING:
    from stgen.features.base import FeatureExtractor

EXPR_DIRS = ("st", "adata")
PATCHES_DIR = "patches"
SPLITS_DIR = "splits"
EMBEDDINGS_DIR = "embeddings"
DEFAULT_GENES_FILE = "var_50genes.json"
#: smallest patch side (pixels) that shows any tissue structure to a backend; HEST patches are 224 x 224
MIN_PATCH_PX = 16
#: backend parameters that do not change the embeddings and are left out of the cache key
NON_SEMANTIC_PARAMS = frozenset({"device", "batch_size"})


# -- patches files -------------------------------------------------------------------------------
@dataclass
class Patches:
    """Image patches of one slide, in HEST's layout.

    Args:
        img: ``[N, H, W, 3]`` uint8 RGB patches.
        coords: ``[N, 2]`` patch coordinates (x = column, y = row) in full-resolution pixels.
        barcodes: ``N`` spot barcodes (the keys to the expression).
        um_per_px: resolution of ``img`` in micrometres per pixel, when known.
    """

    img: np.ndarray
    coords: np.ndarray
    barcodes: list[str]
    um_per_px: float | None = None

    def __post_init__(self) -> None:
        self.img = np.asarray(self.img)
        self.coords = np.asarray(self.coords, dtype=np.float64)
        self.barcodes = [str(b) for b in self.barcodes]
        n = len(self.barcodes)
        if self.img.dtype != np.uint8 or self.img.ndim != 4 or self.img.shape[-1] != 3:
            raise DataInputError(
                f"patches: img must be uint8 [N, H, W, 3], got {self.img.dtype} {self.img.shape}"
            )
        if self.img.shape[0] != n or self.coords.shape != (n, 2):
            raise DataInputError(
                f"patches: {n} barcodes but img has {self.img.shape[0]} patches and coords shape "
                f"{self.coords.shape}"
            )
        if len(set(self.barcodes)) != n:
            raise DataInputError("patches: barcodes are not unique; give every patch its spot's barcode")
        if n and min(self.img.shape[1:3]) < MIN_PATCH_PX:
            raise DataInputError(
                f"patches: {self.img.shape[1]}x{self.img.shape[2]}-pixel patches are too small to embed (at least "
                f"{MIN_PATCH_PX}x{MIN_PATCH_PX}; HEST uses 224x224 at 0.5 um/px); extract larger patches"
            )

    def __len__(self) -> int:
        return len(self.barcodes)


def _decode(values: np.ndarray) -> list[str]:
    flat = np.asarray(values).reshape(len(values), -1)[:, 0] if len(values) else np.asarray([])
    return [v.decode("utf-8") if isinstance(v, (bytes, np.bytes_)) else str(v) for v in flat]


def write_patches_h5(path: str | Path, patches: Patches) -> Path:
    """Write ``patches`` as a HEST patches file (``img``, ``coords``, ``barcode`` (N, 1) bytes) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            f.create_dataset(
                "img", data=patches.img, chunks=(1, *patches.img.shape[1:]) if len(patches) else None
            )
            f.create_dataset("coords", data=patches.coords)
            f.create_dataset(
                "barcode", data=np.array([[b.encode("utf-8")] for b in patches.barcodes], dtype="S")
            )
            if patches.um_per_px is not None:
                f.attrs["um_per_px"] = float(patches.um_per_px)

    atomic_write(path, write)
    return path


def read_patch_index(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Barcodes and coordinates of a HEST patches file, without reading the images.

    The file is checked: datasets present, ``img`` uint8 ``[N, H, W, 3]`` with patches of at least
    :data:`MIN_PATCH_PX` pixels, as many coordinates and barcodes as patches, unique barcodes.
    """
    path = Path(path)
    layout = ("a HEST patches file holds img (N, H, W, 3) uint8, coords (N, 2) and barcode (N, 1) bytes")
    if not path.is_file():
        raise MissingInputError(f"patches file {str(path)!r} does not exist; {layout}")
    with reading(path, "an HDF5 patches file", f"re-create it ({layout})"):
        with h5py.File(path, "r") as f:
            missing = [k for k in ("img", "coords", "barcode") if k not in f]
            if missing:
                raise SlideError(f"patches file {str(path)!r}: missing dataset(s) {missing}; {layout}")
            barcodes = _decode(f["barcode"][:])
            coords = np.asarray(f["coords"][:], dtype=np.float64)
            img = f["img"]
            n_img, img_shape, img_dtype = img.shape[0], img.shape, img.dtype
    if img_dtype != np.uint8 or len(img_shape) != 4 or img_shape[-1] != 3:
        raise SlideError(
            f"patches file {str(path)!r}: img is {img_dtype} {tuple(img_shape)}, but patches must be uint8 RGB "
            "(N, H, W, 3) with values 0-255; convert them, e.g. (img * 255).round().astype('uint8') for floats in [0, 1]"
        )
    if min(img_shape[1:3]) < MIN_PATCH_PX:
        raise SlideError(
            f"patches file {str(path)!r}: {img_shape[1]}x{img_shape[2]}-pixel patches are too small to embed (at "
            f"least {MIN_PATCH_PX}x{MIN_PATCH_PX}; HEST uses 224x224 at 0.5 um/px); re-extract larger patches"
        )
    if coords.ndim != 2 or coords.shape[1] != 2 or len(coords) != len(barcodes) or n_img != len(barcodes):
        raise SlideError(
            f"patches file {str(path)!r}: img has {n_img} patches, coords shape {coords.shape}, "
            f"{len(barcodes)} barcodes; they must agree"
        )
    if len(set(barcodes)) != len(barcodes):
        raise SlideError(f"patches file {str(path)!r}: barcodes are not unique; re-create the patches")
    return barcodes, coords


def read_patches_h5(path: str | Path) -> Patches:
    """A whole HEST patches file in memory (images included)."""
    barcodes, coords = read_patch_index(path)
    with reading(path, "an HDF5 patches file", "re-create it"), h5py.File(path, "r") as f:
        img = f["img"][:]
        um = f.attrs.get("um_per_px")
    return Patches(img=img, coords=coords, barcodes=barcodes, um_per_px=None if um is None else float(um))


# -- folder layout -------------------------------------------------------------------------------
@dataclass(frozen=True)
class HestSample:
    """Where one sample of a HEST-Bench folder lives."""

    sample_id: str
    patient: str
    expr_path: Path
    patches_path: Path


@dataclass
class AlignmentReport:
    """Barcodes dropped while aligning expression to patches.

    Args:
        n_spots: spots kept (present on both sides).
        patches_without_expression: patch barcodes absent from the expression file.
        spots_without_patch: expression barcodes absent from the patches file.
        examples: a few dropped barcodes, for messages.
    """

    n_spots: int
    patches_without_expression: int = 0
    spots_without_patch: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def n_dropped(self) -> int:
        return self.patches_without_expression + self.spots_without_patch


@dataclass
class HestDataset:
    """A HEST-Bench folder read into the Slide contract.

    Args:
        root: the folder.
        slides: ``sample_id -> Slide AnnData`` (raw counts in ``X``, patch coordinates in
            ``obsm['spatial']``, ``obs['patch_index']`` = row in the patches file, embeddings in
            ``obsm[feature_key]`` when a backend was given).
        folds: ``[(train_ids, test_ids), ...]`` from ``splits/`` (one entry when a fold was chosen).
        genes: the gene panel of ``var_50genes.json`` (empty if the file is absent).
        samples: file locations per sample.
        alignment: barcodes dropped per sample.
        feature_key: ``obsm`` key of the embeddings, or None when none were attached.
        embedding_paths: cache file per sample, when embeddings were attached.
    """

    root: Path
    slides: dict[str, ad.AnnData]
    folds: list[tuple[list[str], list[str]]]
    genes: list[str]
    samples: dict[str, HestSample]
    alignment: dict[str, AlignmentReport]
    feature_key: str | None = None
    embedding_paths: dict[str, Path] = field(default_factory=dict)

    @property
    def dropped(self) -> dict[str, int]:
        """Number of barcodes dropped per sample (present on one side only)."""
        return {sid: rep.n_dropped for sid, rep in self.alignment.items()}


def _expr_candidates(root: Path, sample_id: str) -> list[Path]:
    return [root / d / f"{sample_id}.h5ad" for d in EXPR_DIRS]


def _resolve(root: Path, given: Any, fallbacks: list[Path], what: str, sample_id: str) -> Path:
    tried: list[Path] = []
    if isinstance(given, str) and given.strip():
        p = Path(given)
        cands = [p] if p.is_absolute() else [root / p]
        cands.append(root / (EXPR_DIRS[0] if what == "expression" else PATCHES_DIR) / p.name)
        if what == "expression":
            cands.append(root / EXPR_DIRS[1] / p.name)
        for c in cands:
            tried.append(c)
            if c.is_file():
                return c
    for c in fallbacks:
        tried.append(c)
        if c.is_file():
            return c
    raise SlideError(
        f"sample {sample_id!r}: {what} file not found "
        f"(tried {', '.join(str(t) for t in dict.fromkeys(tried))}); "
        "fix the path in the split csv or put the file there"
    )


def _split_files(root: Path) -> list[tuple[int, Path, Path]]:
    sdir = root / SPLITS_DIR
    if not sdir.is_dir():
        return []
    out = []
    for train in sdir.glob("train_*.csv"):
        idx = train.stem.split("_", 1)[1]
        if not idx.isdigit():
            continue
        test = sdir / f"test_{idx}.csv"
        if not test.is_file():
            raise SlideError(f"{train} has no matching {test.name}; every train_i.csv needs a test_i.csv")
        out.append((int(idx), train, test))
    return sorted(out)


def read_hest_splits(
    root: str | Path,
) -> tuple[dict[str, HestSample], list[tuple[int, list[str], list[str]]]]:
    """Samples and folds of a HEST-Bench folder.

    Returns:
        ``(samples, folds)``: ``samples`` maps sample ids to their files (patient from a ``patient``
        column when present, else the sample id); ``folds`` lists ``(i, train_ids, test_ids)``. Without a
        ``splits/`` folder every ``st/*.h5ad`` (or ``adata/*.h5ad``) is a sample and there are no folds.
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingInputError(f"HEST folder {str(root)!r} does not exist; give the folder holding splits/, st/, patches/")
    samples: dict[str, HestSample] = {}
    folds: list[tuple[int, list[str], list[str]]] = []

    def add_rows(csv: Path) -> list[str]:
        with reading(csv, "a split csv", "it needs a header with sample_id (and patches_path, expr_path)"):
            df = pd.read_csv(csv)
        if "sample_id" not in df.columns:
            raise SlideError(f"{csv}: no 'sample_id' column (found {list(df.columns)}); add a sample_id column")
        if df.empty:
            raise SlideError(f"{csv}: lists no sample; every split file needs at least one sample_id")
        ids = []
        for _, row in df.iterrows():
            sid = safe_name(row["sample_id"], "sample_id", str(csv))  # it names cache and prediction files
            ids.append(sid)
            if sid in samples:
                continue
            patient = row.get("patient")
            patient = (
                sid if patient is None or (isinstance(patient, float) and np.isnan(patient)) else str(patient)
            )
            expr = _resolve(root, row.get("expr_path"), _expr_candidates(root, sid), "expression", sid)
            patches = _resolve(
                root, row.get("patches_path"), [root / PATCHES_DIR / f"{sid}.h5"], "patches", sid
            )
            samples[sid] = HestSample(sid, patient, expr, patches)
        return ids

    for i, train, test in _split_files(root):
        folds.append((i, add_rows(train), add_rows(test)))
    if not folds:
        for d in EXPR_DIRS:
            for h5ad in sorted((root / d).glob("*.h5ad")):
                sid = safe_name(h5ad.stem, "sample name", str(h5ad))
                if sid not in samples:
                    patches = _resolve(root, None, [root / PATCHES_DIR / f"{sid}.h5"], "patches", sid)
                    samples[sid] = HestSample(sid, sid, h5ad, patches)
        if not samples:
            raise SlideError(
                f"HEST folder {str(root)!r}: no splits/train_*.csv and no st/*.h5ad or adata/*.h5ad"
            )
    return samples, folds


def read_gene_panel(root: str | Path, genes_file: str | None = None) -> list[str]:
    """The gene panel of a HEST folder (``var_50genes.json``, or the only ``var_*genes.json``); [] if none."""
    root = Path(root)
    if genes_file is not None:
        path = root / genes_file
        if not path.is_file():
            raise MissingInputError(f"gene panel file {str(path)!r} does not exist; create it as {{\"genes\": [...]}}")
    else:
        path = root / DEFAULT_GENES_FILE
        if not path.is_file():
            found = sorted(root.glob("var_*genes.json"))
            if len(found) != 1:
                return []
            path = found[0]
    with reading(path, "a JSON gene panel", 'write it as {"genes": ["GENE1", ...]}'), open(path) as f:
        data = json.load(f)
    genes = data.get("genes") if isinstance(data, dict) else data
    if not isinstance(genes, list) or not all(isinstance(g, str) for g in genes):
        raise SlideError(f'{path}: expected {{"genes": ["GENE1", ...]}}; fix the file')
    if not genes:
        raise SlideError(f'{path}: the gene panel is empty; list the genes to predict, {{"genes": ["GENE1", ...]}}')
    if len(set(genes)) != len(genes):
        raise SlideError(f"{path}: the gene panel lists a gene twice; list each gene once")
    return genes


def read_hest_sample(sample: HestSample, *, warn: bool = True) -> tuple[ad.AnnData, AlignmentReport]:
    """One sample as a Slide AnnData, expression aligned to the patches by barcode (patch order kept).

    Barcodes present on one side only are dropped (a warning gives the counts; the returned report and
    ``uns['stgen']['hest']`` keep them). ``obs['patch_index']`` is each spot's row in the patches file.

    Raises:
        SlideError: no barcode is shared by the expression and the patches file.
    """
    p_barcodes, coords = read_patch_index(sample.patches_path)
    expr = read_h5ad(sample.expr_path, what=f"expression file of sample {sample.sample_id!r}")
    if not expr.obs_names.is_unique:
        raise SlideError(
            f"expression file {str(sample.expr_path)!r}: spot barcodes (obs_names) are not unique; "
            "fix the file (adata.obs_names_make_unique() loses the link to the patches)"
        )
    row_of = pd.Index(expr.obs_names).get_indexer(p_barcodes)
    keep = np.flatnonzero(row_of >= 0)
    if len(keep) == 0:
        raise SlideError(
            f"sample {sample.sample_id!r}: no barcode of the patches file {str(sample.patches_path)!r} "
            f"is in the expression file {str(sample.expr_path)!r} (e.g. patches {p_barcodes[:2]} vs "
            f"expression {list(expr.obs_names[:2])}); the two files must describe the same spots"
        )
    rows = row_of[keep]
    no_expr = [p_barcodes[i] for i in np.flatnonzero(row_of < 0)]
    in_patches = set(p_barcodes)
    no_patch = [b for b in expr.obs_names if b not in in_patches]
    report = AlignmentReport(len(keep), len(no_expr), len(no_patch), (no_expr[:3] + no_patch[:3]))
    if report.n_dropped and warn:
        warnings.warn(
            f"sample {sample.sample_id!r}: dropped {report.patches_without_expression} patch barcode(s) "
            f"without expression and {report.spots_without_patch} expression spot(s) without a patch "
            f"(e.g. {report.examples}); {report.n_spots} spots kept",
            UserWarning,
            stacklevel=2,
        )
    X = expr.X[rows]
    # HEST patch coords are the patches' top-left corners; the spot centre is the expression file's
    # obsm['spatial'] (full-resolution pixels), used whenever the file has it
    centres = expr.obsm.get(SPATIAL_KEY)
    spatial_from = "expression obsm['spatial']" if centres is not None else "patch coords"
    xy = np.asarray(centres, dtype=np.float64)[rows] if centres is not None else coords[keep]
    slide = make_slide(
        X,
        xy,
        slide=sample.sample_id,
        genes=list(expr.var_names),
        barcodes=[p_barcodes[i] for i in keep],
        patient=sample.patient,
    )
    for col in expr.obs.columns:
        slide.obs[col] = expr.obs[col].to_numpy()[rows]
    slide.obs["patch_index"] = keep.astype(np.int64)
    slide.uns[UNS_KEY]["hest"] = {
        "expr_path": str(sample.expr_path),
        "patches_path": str(sample.patches_path),
        "patches_without_expression": report.patches_without_expression,
        "spots_without_patch": report.spots_without_patch,
        "spatial_from": spatial_from,
    }
    return slide, report


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
            cached_barcodes = _decode(f["barcodes"][:])
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


def _backend_of(
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


def read_hest(
    root: str | Path,
    task_fold: int | None = None,
    *,
    feature_backend: str | FeatureExtractor | None = None,
    backend_params: Mapping[str, Any] | None = None,
    feature_key: str = FEATURE_KEY,
    samples: Sequence[str] | None = None,
    cache_dir: str | Path | None = None,
    genes_file: str | None = None,
    batch_size: int | None = None,
    progress: bool = True,
) -> HestDataset:
    """Read a HEST-Bench folder into Slide AnnData objects, with folds, gene panel and optional embeddings.

    Args:
        root: the task folder (``splits/``, ``st/`` or ``adata/``, ``patches/``, ``var_50genes.json``).
        task_fold: read only the samples of fold ``i`` (``folds`` then has that one fold); None: all.
        feature_backend: registry name of a feature backend (built with ``backend_params`` only if some
            sample's embeddings are not cached) or a :class:`~stgen.features.base.FeatureExtractor`;
            None: no embeddings are attached.
        backend_params: constructor parameters of the backend named by ``feature_backend``.
        feature_key: ``obsm`` key for the embeddings.
        samples: read only these sample ids (after fold selection).
        cache_dir: embedding cache folder instead of ``root/embeddings``.
        genes_file: gene panel file name inside ``root`` (default ``var_50genes.json``).
        batch_size: patches per step when embedding.
        progress: progress bars while embedding.

    Returns:
        a :class:`HestDataset`; spots dropped during barcode alignment are reported in ``alignment`` and
        with a warning.
    """
    root = Path(root)
    all_samples, folds = read_hest_splits(root)
    if task_fold is not None:
        chosen = [f for f in folds if f[0] == task_fold]
        if not chosen:
            valid = [f[0] for f in folds]
            raise ConfigInputError(f"HEST folder {str(root)!r}: no fold {task_fold}; available folds: {valid}")
        folds = chosen
        wanted = list(dict.fromkeys(folds[0][1] + folds[0][2]))
    else:
        wanted = list(all_samples)
    if samples is not None:
        unknown = [s for s in samples if s not in all_samples]
        if unknown:
            raise ConfigInputError(
                f"HEST folder {str(root)!r}: unknown sample(s) {unknown}; known: {list(all_samples)}"
            )
        wanted = [s for s in wanted if s in set(samples)]
    genes = read_gene_panel(root, genes_file)

    backend: tuple[str, dict[str, Any], Callable[[], FeatureExtractor]] | None = None
    if feature_backend is not None:
        backend = _backend_of(feature_backend, backend_params)

    slides: dict[str, ad.AnnData] = {}
    alignment: dict[str, AlignmentReport] = {}
    emb_paths: dict[str, Path] = {}
    read = {}
    for sid in wanted:  # every sample is read and checked before any embedding is computed or cached
        read[sid] = read_hest_sample(all_samples[sid])
        validate_slide(read[sid][0], feature_key=None, require_counts=True, name=sid)
    for sid in wanted:
        sample = all_samples[sid]
        slide, report = read[sid]
        if backend is not None:
            name, params, factory = backend
            cached = ensure_embeddings(
                root,
                sid,
                factory,
                name,
                params,
                patches_path=sample.patches_path,
                cache_dir=cache_dir,
                batch_size=batch_size,
                progress=progress,
            )
            slide.obsm[feature_key] = cached.embeddings[slide.obs["patch_index"].to_numpy()]
            slide.uns[UNS_KEY]["features"] = {"backend": name, "cache": str(cached.path)}
            emb_paths[sid] = cached.path
        slides[sid] = slide
        alignment[sid] = report
    return HestDataset(
        root=root,
        slides=slides,
        folds=[(tr, te) for _, tr, te in folds],
        genes=genes,
        samples={s: all_samples[s] for s in wanted},
        alignment=alignment,
        feature_key=feature_key if backend is not None else None,
        embedding_paths=emb_paths,
    )
