"""Slide graphs: squidpy kNN for whole slides, torch_cluster kNN for crops, PyG batching."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch import Tensor
from torch_geometric.data import Data

from stgen.data.slide import FEATURE_KEY, SPATIAL_KEY, slide_id, validate_slide

CONNECTIVITIES_KEY = "spatial_connectivities"


#: neighbours at most this much (relatively) farther than the k-th are ties, and all of them are kept
TIE_RTOL = 1e-4


def knn_edges(pos: Tensor, k: int, batch: Tensor | None = None, rtol: float = TIE_RTOL) -> Tensor:
    """Tie-inclusive kNN graph of ``pos`` (self excluded, never across ``batch``), PyG source-to-target edges.

    ``edge_index[1]`` is the spot, ``edge_index[0]`` its neighbours: the ``k`` nearest spots **and every
    spot tied with the k-th** (distance within ``rtol`` relative of the k-th distance). On a perfect hex
    (Visium) or square (legacy ST) grid most spots have such ties; keeping them all makes the graph the
    same in every frame (translation, rotation, mirroring), where picking ``k`` of them would depend on
    the coordinates' floating-point noise. Spots therefore have ``k`` or more neighbours.

    Candidates come from ``torch_cluster.knn`` (``k`` plus a margin, widened only for spots whose margin
    is all tied; no N x N matrix), or from :func:`knn_edges_blockwise` without torch-cluster. Distances
    are compared in float64. A graph with fewer than ``k + 1`` spots gets all its other spots. Edges are
    sorted by (spot, neighbour), so the edge order is frame-independent too.

    Shapes:
        pos ``[N, D]`` -> edge_index ``[2, E]`` with ``E >= N * min(k, n_slide - 1)``.
    """
    return _tie_knn(pos, k, batch, rtol, _candidates)


def _tie_knn(pos: Tensor, k: int, batch: Tensor | None, rtol: float, candidates: Any) -> Tensor:
    """Tie-inclusive kNN from a candidate finder ``candidates(pos, batch, query, q)``; O(N k) for sane layouts."""
    n = pos.size(0)
    if batch is None:
        batch = torch.zeros(n, dtype=torch.long, device=pos.device)
    if n == 0 or k < 1:
        return torch.empty(2, 0, dtype=torch.long, device=pos.device)
    others = torch.bincount(batch)[batch] - 1  # other spots in each spot's slide
    coarse = _centred(pos, batch).float()  # the precision of the candidate search
    query = torch.arange(n, device=pos.device)
    extra = max(k, 4)
    kept: list[Tensor] = []
    while query.numel():
        q = k + extra
        src, dst = candidates(pos, batch, query, q)
        keep = src != dst
        edges, saturated = _keep_ties(pos, src[keep], dst[keep], k, rtol, n, coarse)
        # a spot without a candidate clearly beyond its tie threshold may have more tied spots: ask again
        redo = saturated & (others > q)
        kept.append(edges[:, ~redo[edges[1]]])
        query = torch.nonzero(redo, as_tuple=False).flatten()
        extra *= 2
    out = torch.cat(kept, dim=1)
    return out[:, torch.argsort(out[1] * n + out[0])]


def _candidates(pos: Tensor, batch: Tensor, query: Tensor, q: int) -> tuple[Tensor, Tensor]:
    """Up to ``q`` nearest other spots of every ``query`` spot (same slide), as (neighbour, spot) pairs."""
    try:
        from torch_cluster import knn

        pf = _centred(pos, batch).float()
        row, col = knn(pf, pf[query], k=q + 1, batch_x=batch, batch_y=batch[query])  # row: query, col: x
        return col, query[row]
    except (ImportError, RuntimeError):
        return _candidates_blockwise(pos, batch, query, q)


def _centred(pos: Tensor, batch: Tensor) -> Tensor:
    """``pos`` minus its slide's mean, in float64 (large offsets then survive the float32 candidate search)."""
    from torch_geometric.utils import scatter

    p64 = pos.to(torch.float64) if pos.device.type != "mps" else pos
    return p64 - scatter(p64, batch, dim=0, reduce="mean")[batch]


def _candidates_blockwise(pos: Tensor, batch: Tensor, query: Tensor, q: int,
                          max_block: int | None = None) -> tuple[Tensor, Tensor]:
    if max_block is None:
        max_block = 1 << 28 if pos.is_cuda else 1 << 24
    srcs, dsts = [], []
    pf = _centred(pos, batch)  # float64: exact distances, so ties are found as ties
    for b in torch.unique(batch[query]).tolist():
        members = torch.nonzero(batch == b, as_tuple=False).flatten()
        qs = query[batch[query] == b]
        ref = pf[members]
        kk = min(q + 1, members.numel())
        step = max(1, max_block // max(1, members.numel()))
        for q0 in range(0, qs.numel(), step):
            qi = qs[q0:q0 + step]
            dist = torch.cdist(pf[qi], ref, compute_mode="donot_use_mm_for_euclid_dist")
            nbr = dist.topk(kk, largest=False).indices
            srcs.append(members[nbr].reshape(-1))
            dsts.append(qi.repeat_interleave(kk))
    if not srcs:
        empty = torch.empty(0, dtype=torch.long, device=pos.device)
        return empty, empty
    return torch.cat(srcs), torch.cat(dsts)


def _keep_ties(pos: Tensor, src: Tensor, dst: Tensor, k: int, rtol: float, n: int,
               coarse: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The candidate edges within ``(1 + rtol)`` of each spot's k-th distance, and which spots may lack some.

    Args:
        coarse: positions at the precision the candidates were searched with (float32, centred); a spot
            is complete only when some candidate lies beyond its threshold at that precision too.

    Returns:
        ``(edge_index [2, E'], saturated [N] bool)``: ``saturated[i]`` when no candidate of spot ``i`` is
        clearly beyond its threshold (more tied spots may lie beyond the candidates).
    """
    if dst.numel() > 1 and not bool((dst[1:] >= dst[:-1]).all()):  # the searches return them grouped already
        order = torch.argsort(dst, stable=True)
        src, dst = src[order], dst[order]
    p64 = pos.to(torch.float64)
    d = (p64[src] - p64[dst]).norm(dim=-1)
    counts = torch.bincount(dst, minlength=n)
    starts = torch.cumsum(counts, 0) - counts
    has = counts > 0
    # candidate distances of each spot as one padded row, sorted: the k-th is a column of it
    row = torch.cumsum(has.long(), 0) - 1
    width = int(counts.max()) if dst.numel() else 0
    table = torch.full((int(has.sum()), width), float("inf"), dtype=d.dtype, device=d.device)
    table[row[dst], torch.arange(dst.numel(), device=dst.device) - starts[dst]] = d
    table = table.sort(dim=1).values
    kth = torch.zeros(n, dtype=d.dtype, device=d.device)
    kth[has] = table[torch.arange(table.size(0), device=d.device), counts[has].clamp(max=k) - 1]
    thr = kth * (1.0 + rtol)
    keep = d <= thr[dst]  # the k nearest (at or below the k-th distance) and their ties
    if coarse is None:
        beyond = ~keep
    else:
        d_coarse = (coarse[src] - coarse[dst]).norm(dim=-1).double()
        # rounding of the coarse positions: a few float32 ulps of the coordinates' magnitude
        err = 8 * torch.finfo(coarse.dtype).eps * (coarse[src].abs().amax(-1) + coarse[dst].abs().amax(-1)).double()
        beyond = d_coarse > thr[dst] + err
    complete = torch.zeros(n, dtype=torch.bool, device=dst.device)
    complete[dst[beyond]] = True
    saturated = ~complete & (counts > 0)
    return torch.stack([src[keep], dst[keep]]), saturated


def knn_edges_blockwise(pos: Tensor, k: int, batch: Tensor | None = None, max_block: int | None = None,
                        rtol: float = TIE_RTOL) -> Tensor:
    """:func:`knn_edges` with plain torch (``cdist`` over blocks of query spots, then ``topk``).

    Memory is bounded by ``max_block`` distances at a time (default 2^24 on the CPU, 2^28 on a GPU;
    never N x N); time is quadratic per slide, so it is the fallback, not the default.
    """
    def candidates(p: Tensor, b: Tensor, query: Tensor, q: int) -> tuple[Tensor, Tensor]:
        return _candidates_blockwise(p, b, query, q, max_block)

    return _tie_knn(pos, k, batch, rtol, candidates)


def graph_with_k(batch: Data, k: int) -> Tensor:
    """``batch.edge_index`` when it was built as the tie-inclusive ``k``-NN graph, else a fresh one.

    Graphs from :func:`slide_to_data`, :func:`random_crop` and chunked inference record their ``k`` in
    ``graph_k`` (one value per slide in a batch); when every slide's value is ``k`` the graph is reused as
    it is (spots may have more than ``k`` neighbours: ties). Otherwise it is rebuilt with
    :func:`knn_edges` (never across slides).
    """
    ei = getattr(batch, "edge_index", None)
    fixed = getattr(batch, "graph_k", None)
    if ei is not None and fixed is not None and bool((torch.as_tensor(fixed).flatten() == k).all()):
        return ei
    return knn_edges(batch.pos, k, getattr(batch, "batch", None))


def squidpy_knn(adata: ad.AnnData, k: int, rtol: float = TIE_RTOL) -> Tensor:
    """Tie-inclusive kNN edges of a whole slide, from squidpy's generic kNN graph.

    squidpy builds the kNN graph with a margin (``k`` plus extra neighbours) on a private AnnData holding
    only the coordinates, so the caller's ``obsp`` and ``uns`` are never modified; every spot keeps its
    ``k`` nearest and all spots tied with the k-th (as :func:`knn_edges`). squidpy's adjacency row ``i``
    lists the neighbours of spot ``i``; PyG's source-to-target edges put the neighbour first.
    """
    import logging

    import squidpy as sq

    logging.getLogger("spatialdata._logging").setLevel(logging.WARNING)  # squidpy logs every graph at INFO
    coords = np.asarray(adata.obsm[SPATIAL_KEY], dtype=np.float64)
    n = coords.shape[0]
    pos = torch.from_numpy(coords)
    extra = max(k, 4)
    while True:
        n_neighs = min(k + extra, n - 1)
        private = ad.AnnData(obs=pd.DataFrame(index=pd.RangeIndex(n).astype(str)))
        private.obsm[SPATIAL_KEY] = coords
        if hasattr(sq.gr, "spatial_neighbors_knn"):  # squidpy >= 1.8
            sq.gr.spatial_neighbors_knn(private, n_neighs=n_neighs, spatial_key=SPATIAL_KEY)
        else:
            sq.gr.spatial_neighbors(private, coord_type="generic", n_neighs=n_neighs, spatial_key=SPATIAL_KEY)
        adj = sp.coo_matrix(private.obsp[CONNECTIVITIES_KEY])
        keep = adj.row != adj.col
        src = torch.from_numpy(adj.col[keep].astype(np.int64))
        dst = torch.from_numpy(adj.row[keep].astype(np.int64))
        edges, saturated = _keep_ties(pos, src, dst, k, rtol, n)
        if not bool(saturated.any()) or n_neighs >= n - 1:
            break
        extra *= 2
    return edges[:, torch.argsort(edges[1] * n + edges[0])]


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
    k: int | None,
    feature_key: str = FEATURE_KEY,
    with_expression: bool = True,
    keep_half: bool = False,
) -> Data:
    """Convert one Slide AnnData to a PyG ``Data`` (x, pos, y, edge_index).

    Shapes:
        x ``[N, F]`` float32 (float16 when stored so and ``keep_half``), pos ``[N, 2]`` float32 (full-resolution pixels, centred on the slide's mean), y ``[N, G]`` log1p counts
        (zeros when ``with_expression`` is False), edge_index ``[2, E]`` (``k`` or more neighbours per spot:
        ties with the k-th are kept, see :func:`knn_edges`); ``graph_k = k``.
    """
    validate_slide(adata, feature_key=feature_key, genes=genes if with_expression else None,
                   require_counts=with_expression)
    feats = np.asarray(adata.obsm[feature_key])
    half = keep_half and feats.dtype == np.float16  # prediction keeps float16 features as they are
    x = torch.as_tensor(feats, dtype=torch.float16 if half else torch.float32)
    coords = np.asarray(adata.obsm[SPATIAL_KEY], dtype=np.float64)
    pos = torch.as_tensor(coords - coords.mean(axis=0), dtype=torch.float32)  # centred first: no precision lost
    n_genes = len(genes) if genes is not None else adata.n_vars
    if with_expression:
        y = torch.from_numpy(log1p_panel(adata, genes))
    else:
        y = torch.zeros(adata.n_obs, n_genes)
    edges = squidpy_knn(adata, k) if k is not None else torch.empty(2, 0, dtype=torch.long)  # None: no graph
    data = Data(x=x, pos=pos, y=y, edge_index=edges)
    data.graph_k = k
    data.slide_id = slide_id(adata)
    return data


def random_crop(data: Data, k: int | None, fraction: float, centre: int) -> Data:
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
    crop.edge_index = knn_edges(crop.pos, k) if k is not None else torch.empty(2, 0, dtype=torch.long)
    crop.graph_k = k
    crop.slide_id = getattr(data, "slide_id", "crop")
    return crop
