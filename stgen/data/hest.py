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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anndata as ad

from stgen.data.hest_cache import ensure_embeddings, resolve_backend
from stgen.data.hest_layout import (
    AlignmentReport,
    HestSample,
    read_gene_panel,
    read_hest_sample,
    read_hest_splits,
)
from stgen.data.slide import FEATURE_KEY, UNS_KEY, validate_slide
from stgen.errors import ConfigInputError

if TYPE_CHECKING:
    from stgen.features.base import FeatureExtractor


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
        backend = resolve_backend(feature_backend, backend_params)

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
