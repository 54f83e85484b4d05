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
        k = getattr(self.inner, "k", None)
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
            sub.graph_k = getattr(self.inner, "k", None)
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
    """

    mean: np.ndarray
    std: np.ndarray | None
    genes: list[str]


def load_module(checkpoint: str | Path, map_location: str = "cpu"):
    """Load a trained LightningModule; a missing plugin gives an error naming the package to install."""
    from stgen.lit import STGenLightning

    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    # a checkpoint naming a component whose package is missing fails in the constructor, naming the package
    module = STGenLightning.load_from_checkpoint(str(path), map_location=map_location)
    module.eval()
    return module


@torch.no_grad()
def predict_slide(module: Any, adata: ad.AnnData, *, k: int = 8, feature_key: str = FEATURE_KEY,
                  n_samples: int = 1, steps: int | None = None, seed: int = 0,
                  chunk_size: int = 50_000) -> Prediction:
    """Predict the gene panel of one slide (with or without measured expression)."""
    model = module.model
    genes = list(module.genes)
    expected = module.hparams.in_dim
    feats = adata.obsm.get(feature_key)
    if feats is not None and np.asarray(feats).shape[1] != expected:
        raise ValueError(
            f"slide {slide_id(adata)!r}: obsm['{feature_key}'] has {np.asarray(feats).shape[1]} features but the "
            f"model was trained on {expected}; extract features with the same backend as the training data"
        )
    data = slide_to_data(adata, genes=None, k=k, feature_key=feature_key, with_expression=False)
    data.y = torch.zeros(data.num_nodes, len(genes))
    batch = model.inputs(Batch.from_data_list([data]))  # the checkpoint's input standardisation
    encoder: nn.Module = ChunkedEncoder(model.encoder, chunk_size=chunk_size)
    out = model.generator.predict(encoder, batch, model.prior, steps=steps, seed=seed, n_samples=n_samples)
    std = None if out.std is None else out.std.float().numpy()
    return Prediction(mean=out.mean.float().numpy(), std=std, genes=genes)


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
    out.uns["stgen"] = {**h5ad_safe(dict(adata.uns.get("stgen", {}))), **h5ad_safe(info), "genes": genes}
    out.uns["stgen"].setdefault("target", "log1p")
    return out


def target_info(module: Any) -> dict[str, str]:
    """What ``stgen_mean`` holds: the checkpoint's target and its description."""
    from stgen.preprocess import TARGET_DESCRIPTIONS

    target = getattr(module, "preprocess", None)
    name = target.target if target is not None else "log1p"
    return {"target": name, "target_description": TARGET_DESCRIPTIONS[name]}


def predict_files(checkpoint: str | Path, inputs: Sequence[str | Path], out_dir: str | Path, **kwargs: Any) -> list[Path]:
    """Predict every input ``.h5ad`` and write ``<out_dir>/<name>.h5ad`` atomically; never overwrites."""
    from stgen import __version__
    from stgen.io import write_h5ad

    out_dir = Path(out_dir)
    targets = [out_dir / Path(p).name for p in inputs]
    clash = [str(t) for t in targets if t.exists()]
    if clash:
        raise FileExistsError(f"output file(s) exist: {', '.join(clash)}; choose another --out folder")
    for p in inputs:
        if not Path(p).is_file():
            raise FileNotFoundError(f"input {p} does not exist")
    module = load_module(checkpoint)
    written = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for src, dst in zip(inputs, targets, strict=True):
        adata = ad.read_h5ad(src)
        if "slide_id" not in adata.uns.get("stgen", {}):
            adata.uns.setdefault("stgen", {})["slide_id"] = Path(src).stem
        pred = predict_slide(module, adata, **kwargs)
        info = {"checkpoint": str(checkpoint), "model_version": __version__, "model_spec": module.hparams.model_spec,
                "n_samples": kwargs.get("n_samples", 1), "seed": kwargs.get("seed", 0),
                **target_info(module)}
        write_h5ad(to_anndata(adata, pred, info), dst)
        written.append(dst)
    return written
