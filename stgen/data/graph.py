"""Slide graphs: squidpy kNN for whole slides, torch_cluster kNN for crops, PyG batching."""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor
from torch_geometric.data import Data

from stgen.data.slide import FEATURE_KEY, SPATIAL_KEY, slide_id, validate_slide

CONNECTIVITIES_KEY = "spatial_connectivities"


def knn_edges(pos: Tensor, k: int, batch: Tensor | None = None) -> Tensor:
    """kNN graph of ``pos`` (self excluded, never across ``batch``), PyG source-to-target edges.

    ``edge_index[1]`` is the spot, ``edge_index[0]`` its neighbours. Uses ``torch_cluster.knn_graph``
    (no N x N matrix); without torch-cluster (or without its CUDA kernels) it falls back to
    :func:`knn_edges_blockwise`. A graph with fewer than ``k + 1`` spots gets all its other spots.

    Shapes:
        pos ``[N, D]`` -> edge_index ``[2, E]`` with ``E = N * min(k, n_slide - 1)`` per slide.
    """
    try:
        from torch_cluster import knn_graph

        return knn_graph(pos.float(), k=k, batch=batch, loop=False, flow="source_to_target")
    except (ImportError, RuntimeError):
        return knn_edges_blockwise(pos, k, batch)


def knn_edges_blockwise(pos: Tensor, k: int, batch: Tensor | None = None, max_block: int | None = None) -> Tensor:
    """Exact kNN with plain torch: distances from blocks of query spots to their slide, then ``topk``.

    Memory is bounded by ``max_block`` distances at a time (default 2^24 on the CPU, 2^28 on a GPU;
    never N x N); time is quadratic per slide, so it is the fallback, not the default.
    """
    if max_block is None:
        max_block = 1 << 28 if pos.is_cuda else 1 << 24
    pos = pos.float()
    n = pos.size(0)
    if batch is None:
        batch = torch.zeros(n, dtype=torch.long, device=pos.device)
    counts = torch.bincount(batch)
    starts = torch.cumsum(counts, 0) - counts
    srcs, dsts = [], []
    for start, count in zip(starts.tolist(), counts.tolist(), strict=True):
        if count < 2:
            continue
        kk = min(k, count - 1)
        ref = pos[start:start + count]
        step = max(1, max_block // count)
        for q0 in range(0, count, step):
            q = ref[q0:q0 + step]
            d = torch.cdist(q, ref)
            rows = torch.arange(q.size(0), device=pos.device)
            d[rows, rows + q0] = float("inf")
            nbr = d.topk(kk, largest=False).indices
            dsts.append((rows + q0 + start).repeat_interleave(kk))
            srcs.append(nbr.reshape(-1) + start)
    if not srcs:
        return torch.empty(2, 0, dtype=torch.long, device=pos.device)
    return torch.stack([torch.cat(srcs), torch.cat(dsts)])


def graph_with_k(batch: Data, k: int) -> Tensor:
    """``batch.edge_index`` when every spot has exactly ``k`` neighbours in it, else a fresh kNN graph.

    Lets an encoder with its own ``k`` reuse the data's graph when the two agree (the common case) and
    rebuild it with :func:`knn_edges` otherwise (never across slides).
    """
    ei = getattr(batch, "edge_index", None)
    n = batch.num_nodes
    fixed = getattr(batch, "graph_k", None)
    if ei is not None and fixed is not None and int(torch.as_tensor(fixed).flatten()[0]) == k:
        return ei  # a subgraph cut from a k-NN graph (chunked inference): keep it as it is
    if ei is not None and ei.size(1) == n * k:
        if bool((ei[1].bincount(minlength=n) == k).all()):
            return ei
    return knn_edges(batch.pos, k, getattr(batch, "batch", None))


def squidpy_knn(adata: ad.AnnData, k: int) -> Tensor:
    """kNN edges of a whole slide from squidpy's generic kNN graph (cached in ``obsp``).

    squidpy's adjacency row ``i`` lists the neighbours of spot ``i``; PyG's source-to-target edges put
    the neighbour first, so the (row, col) pairs are flipped.
    """
    import logging

    import squidpy as sq

    logging.getLogger("spatialdata._logging").setLevel(logging.WARNING)  # squidpy logs every graph at INFO
    cached = adata.uns.get("stgen_graph", {})
    if CONNECTIVITIES_KEY not in adata.obsp or cached.get("k") != k:
        n_neighs = min(k, adata.n_obs - 1)
        if hasattr(sq.gr, "spatial_neighbors_knn"):  # squidpy >= 1.8
            sq.gr.spatial_neighbors_knn(adata, n_neighs=n_neighs, spatial_key=SPATIAL_KEY)
        else:
            sq.gr.spatial_neighbors(adata, coord_type="generic", n_neighs=n_neighs, spatial_key=SPATIAL_KEY)
        adata.uns["stgen_graph"] = {"k": k}
    adj = sp.coo_matrix(adata.obsp[CONNECTIVITIES_KEY])
    keep = adj.row != adj.col
    row, col = adj.row[keep], adj.col[keep]
    order = np.lexsort((col, row))
    return torch.from_numpy(np.stack([col[order], row[order]]).astype(np.int64))


def log1p_panel(adata: ad.AnnData, genes: Sequence[str] | None, target: str = "log1p") -> np.ndarray:
    """The target of ``genes`` (all genes when None), dense float32 ``[N, G]``.

    ``target="log1p"``: log1p of the raw counts; ``"log1p_cp10k"``: log1p counts per 10k (see
    :mod:`stgen.preprocess`).
    """
    from stgen.preprocess import target_matrix

    return target_matrix(adata, genes, target)


def slide_to_data(
    adata: ad.AnnData,
    *,
    genes: Sequence[str] | None,
    k: int,
    feature_key: str = FEATURE_KEY,
    with_expression: bool = True,
) -> Data:
    """Convert one Slide AnnData to a PyG ``Data`` (x, pos, y, edge_index).

    Shapes:
        x ``[N, F]`` float32, pos ``[N, 2]`` float32 (full-resolution pixels), y ``[N, G]`` log1p counts
        (zeros when ``with_expression`` is False), edge_index ``[2, N * k]``.
    """
    validate_slide(adata, feature_key=feature_key, genes=genes if with_expression else None,
                   require_counts=with_expression)
    x = torch.as_tensor(np.asarray(adata.obsm[feature_key]), dtype=torch.float32)
    pos = torch.as_tensor(np.asarray(adata.obsm[SPATIAL_KEY]), dtype=torch.float32)
    n_genes = len(genes) if genes is not None else adata.n_vars
    if with_expression:
        y = torch.from_numpy(log1p_panel(adata, genes))
    else:
        y = torch.zeros(adata.n_obs, n_genes)
    data = Data(x=x, pos=pos, y=y, edge_index=squidpy_knn(adata, k))
    data.slide_id = slide_id(adata)
    return data


def random_crop(data: Data, k: int, fraction: float, centre: int) -> Data:
    """The ``n = max(2, floor(fraction * N))`` spots nearest to spot ``centre``, with a fresh kNN graph.

    Shapes:
        returns a ``Data`` with ``n`` spots and ``edge_index`` rebuilt by :func:`knn_edges`.
    """
    n_total = data.num_nodes
    n = max(2, int(fraction * n_total))
    n = min(n, n_total)
    d = (data.pos - data.pos[centre]).pow(2).sum(-1)
    idx = torch.topk(d, n, largest=False).indices.sort().values
    crop = Data(x=data.x[idx], pos=data.pos[idx], y=data.y[idx])
    crop.edge_index = knn_edges(crop.pos, k)
    crop.slide_id = getattr(data, "slide_id", "crop")
    return crop
