"""Whole-slide prediction for new slides: chunked, exact, with uncertainty, AnnData in and out.

Each network call of the sampler is computed in node chunks: a chunk plus its receptive field (the
``receptive_field`` hops of the encoder, found on the slide's kNN graph with PyG's
``k_hop_subgraph``) is run through the encoder and only the chunk's rows are kept. The sampler's state
lives on the whole slide, so the result equals the unchunked computation while peak activation memory
is bounded by the chunk and its halo.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data
from torch_geometric.utils import k_hop_subgraph

from stgen.data.graph import graph_with_k, slide_to_data
from stgen.data.slide import FEATURE_KEY, slide_id
from stgen.encoders.base import Encoder
from stgen.io import h5ad_safe


class ChunkedEncoder(Encoder):
    """Wraps an encoder so each call runs over node chunks with their receptive-field halo.

    Args:
        inner: the trained encoder (``receptive_field`` hops: ``None`` means the whole slide).
        chunk_size: spots per chunk.

    Shapes:
        same as ``inner``: ``[N, G]``.
    """

    def __init__(self, inner: Encoder, chunk_size: int = 50_000) -> None:
        super().__init__(inner.in_dim, inner.out_dim)
        self.inner = inner
        self.chunk_size = chunk_size
        self.uses_state = inner.uses_state  # type: ignore[misc]

    def prepare(self, batch: Batch) -> Any:
        hops = getattr(self.inner, "receptive_field", None)
        n = batch.num_nodes
        if hops is None or n <= self.chunk_size:
            return ("whole", self.inner.prepare(batch))
        k = self.inner.graph_k
        edge_index = graph_with_k(batch, k) if k is not None else batch.edge_index
        chunks = []
        for start in range(0, n, self.chunk_size):
            core = torch.arange(start, min(start + self.chunk_size, n), device=batch.pos.device)
            subset, sub_edges, mapping, _ = k_hop_subgraph(core, int(hops), edge_index, relabel_nodes=True,
                                                           num_nodes=n, flow="source_to_target")
            chunks.append((core, subset, sub_edges, mapping))
        return ("chunks", chunks)

    def predict(self, batch: Batch, y: Tensor, t: Tensor, context: Any) -> Tensor:
        mode, payload = context
        if mode == "whole":
            return self.inner(batch, y, t, payload)
        out = y.new_empty(y.shape)
        node_t = t[batch.batch]
        for core, subset, sub_edges, mapping in payload:
            sub = Data(x=batch.x[subset], pos=batch.pos[subset], edge_index=sub_edges)
            sub.graph_k = self.inner.graph_k
            sub_batch = Batch.from_data_list([sub])
            sub_t = node_t[subset][:1]
            out[core] = self.inner(sub_batch, y[subset], sub_t)[mapping]
        return out


@dataclass
class Prediction:
    """Prediction of one slide.

    Args:
        mean: ``[N, G]`` mean over samples (log1p expression).
        std: ``[N, G]`` spread over samples, or None for one sample.
        genes: gene panel.
        n_samples: samples behind ``mean``.
    """

    mean: np.ndarray
    std: np.ndarray | None
    genes: list[str]
    n_samples: int = 1


def load_module(checkpoint: str | Path, map_location: str = "cpu"):
    """Load a trained LightningModule (see :func:`stgen.checkpoint.load_module`).

    A missing file, a truncated or foreign file, a pickle the safe loader refuses or a missing plugin
    package each give one error naming the checkpoint and the fix.
    """
    from stgen.checkpoint import load_module as load

    return load(checkpoint, map_location=map_location)


def _check_input(module: Any, adata: ad.AnnData, path: Path, feature_key: str) -> None:
    """Refuse an input slide before anything is written: the Slide contract and the model's feature width."""
    from stgen.data.slide import validate_slide
    from stgen.errors import DataInputError

    validate_slide(adata, feature_key=feature_key, require_counts=False, name=f"{path}")
    width = np.asarray(adata.obsm[feature_key]).shape[1]
    if width != module.hparams.in_dim:
        raise DataInputError(
            f"slide {path}: obsm['{feature_key}'] has {width} features but the model was trained on "
            f"{module.hparams.in_dim}; extract features with the same backend as the training data"
        )


@torch.no_grad()
def predict_slide(module: Any, adata: ad.AnnData, *, feature_key: str = FEATURE_KEY,
                  n_samples: int | None = None, steps: int | None = None, seed: int = 0,
                  chunk_size: int = 50_000) -> Prediction:
    """Predict the gene panel of one slide (with or without measured expression).

    The slide graph is the one the checkpoint's encoder reads (``encoder.k``); ``n_samples`` and ``steps``
    default to the checkpoint's generator settings.
    """
    model = module.model
    genes = list(module.genes)
    expected = module.hparams.in_dim
    feats = adata.obsm.get(feature_key)
    if feats is not None and np.asarray(feats).shape[1] != expected:
        raise ValueError(
            f"slide {slide_id(adata)!r}: obsm['{feature_key}'] has {np.asarray(feats).shape[1]} features but the "
            f"model was trained on {expected}; extract features with the same backend as the training data"
        )
    data = slide_to_data(adata, genes=None, k=model.encoder.graph_k, feature_key=feature_key,
                         with_expression=False)
    data.y = torch.zeros(data.num_nodes, len(genes))
    batch = Batch.from_data_list([data])
    encoder: nn.Module = ChunkedEncoder(model.encoder, chunk_size=chunk_size)
    out = model.generator.predict(encoder, batch, model.prior, steps=steps, seed=seed, n_samples=n_samples)
    std = None if out.std is None else out.std.float().numpy()
    return Prediction(mean=out.mean.float().numpy(), std=std, genes=genes, n_samples=out.n_samples)


def to_anndata(adata: ad.AnnData, pred: Prediction, info: dict[str, Any]) -> ad.AnnData:
    """The input slide with ``layers['stgen_mean']``/``['stgen_std']`` over the gene panel.

    Genes of the panel missing from the input become new (zero-count) variables, so the output has
    exactly the panel's genes; the input's ``X`` for those that exist is kept.
    """
    genes = pred.genes
    X = np.zeros((adata.n_obs, len(genes)), dtype=np.float32)
    present = [g for g in genes if g in adata.var_names]
    if present:
        sub = adata[:, present].X
        sub = sub.toarray() if hasattr(sub, "toarray") else np.asarray(sub)
        idx = [genes.index(g) for g in present]
        X[:, idx] = sub
    out = ad.AnnData(X=X, obs=adata.obs.copy(), var=adata.var.reindex(genes).copy() if present else None)
    out.var_names = genes
    out.obsm = {k: v for k, v in adata.obsm.items()}
    out.layers["stgen_mean"] = pred.mean.astype(np.float32)
    if pred.std is not None:
        out.layers["stgen_std"] = pred.std.astype(np.float32)
    out.uns["stgen"] = {**h5ad_safe(dict(adata.uns.get("stgen", {}))), **h5ad_safe(info), "genes": genes,
                        "target": "log1p counts"}
    return out


IMAGE_OPTIONS = ("mpp", "spots", "spacing_um", "layout", "features", "feature_params", "patch_um", "cache_dir",
                 "use_cache", "num_workers", "batch_size", "device", "keep_features", "progress")


def predict_files(checkpoint: str | Path, inputs: Sequence[str | Path], out_dir: str | Path, **kwargs: Any) -> list[Path]:
    """Predict every input and write ``<out_dir>/<name>.h5ad`` atomically; never overwrites.

    Inputs are slide ``.h5ad`` files (spots and embeddings) or images (whole-slide ``.svs``/``.tif``/
    ``.ndpi``/OME-TIFF, or ``.jpg``/``.png`` with ``mpp``), predicted with :func:`stgen.wsi.predict_image`
    (which also writes ``<name>_tissue.png``). Every input, the checkpoint and the feature backend are
    checked before the output folder is created. Image options (``IMAGE_OPTIONS``) go to the image path;
    the others (``n_samples``, ``steps``, ``seed``, ``k``, ...) to :func:`predict_slide`.
    """
    from stgen import __version__
    from stgen.errors import DataInputError, MissingInputError, OutputExistsError
    from stgen.io import read_h5ad, write_h5ad
    from stgen.wsi.pipeline import (
        build_extractor,
        image_settings,
        library_id_of,
        predict_image,
        prepare_image,
    )

    image_opts = {k: kwargs.pop(k) for k in IMAGE_OPTIONS if k in kwargs}
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputExistsError(f"--out {out_dir} exists and is not a folder; choose another --out folder")
    missing = [str(p) for p in inputs if not Path(p).is_file()]
    if missing:
        raise MissingInputError(f"input {', '.join(missing)} does not exist; give existing .h5ad slide files or "
                                "slide images")
    images = [Path(p) for p in inputs if Path(p).suffix.lower() != ".h5ad"]
    names = [library_id_of(p) if p in images else Path(p).stem for p in map(Path, inputs)]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataInputError(f"several inputs would write {', '.join(n + '.h5ad' for n in dup)}; rename one or "
                             "predict them into different --out folders")
    targets = [out_dir / f"{n}.h5ad" for n in names]
    masks = {p: out_dir / f"{library_id_of(p)}_tissue.png" for p in images}
    clash = [str(t) for t in [*targets, *masks.values()] if t.exists()]
    if clash:
        raise OutputExistsError(f"output file(s) exist: {', '.join(clash)}; choose another --out folder")
    if image_opts.get("spots") is not None and len(images) != 1:
        raise DataInputError(f"--spots gives the positions of one slide, but {len(images)} images were given")
    module = load_module(checkpoint)
    feature_key = kwargs.get("feature_key", FEATURE_KEY)
    for p in inputs:  # every input is checked before the output folder is created
        if Path(p) in images:
            continue
        lazy = read_h5ad(p, backed="r")
        try:
            _check_input(module, lazy, Path(p), feature_key)
        finally:
            lazy.file.close()
    jobs: dict[Path, Any] = {}
    extractor = None
    if images:
        settings = image_settings(module, f"checkpoint {checkpoint}", features=image_opts.get("features"),
                                  feature_params=image_opts.get("feature_params"), patch_um=image_opts.get("patch_um"),
                                  spacing_um=image_opts.get("spacing_um"), layout=image_opts.get("layout"))
        for p in images:
            jobs[p] = prepare_image(p, mpp=image_opts.get("mpp"), spots=image_opts.get("spots"), settings=settings)
        extractor = build_extractor(module, settings, device=image_opts.get("device", "auto"),
                                    batch_size=image_opts.get("batch_size", 64))
    written: list[Path] = []
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        for src, dst in zip(map(Path, inputs), targets, strict=True):
            if src in jobs:
                opts = {k: v for k, v in image_opts.items() if k not in ("mpp", "spots")}
                adata = predict_image(module, src, job=jobs[src], extractor=extractor, mask_path=masks[src],
                                      **opts, **kwargs)
                adata.uns["stgen"]["checkpoint"] = str(checkpoint)
                write_h5ad(adata, dst)
                written.append(dst)
                continue
            adata = read_h5ad(src)
            if "slide_id" not in adata.uns.get("stgen", {}):
                adata.uns.setdefault("stgen", {})["slide_id"] = Path(src).stem
            pred = predict_slide(module, adata, **kwargs)
            info = {"checkpoint": str(checkpoint), "model_version": __version__,
                    "model_spec": module.hparams.model_spec, "n_samples": pred.n_samples,
                    "seed": kwargs.get("seed", 0)}
            write_h5ad(to_anndata(adata, pred, info), dst)
            written.append(dst)
    except BaseException:
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise
    return written
