"""GATv2 slide encoder: dynamic multi-head attention over the spatial kNN graph with distance features."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from stgen.data.graph import graph_with_k
from stgen.encoders.base import Encoder, node_time
from stgen.encoders.mlp import StateInput
from stgen.nn.frames import geometry_dtype
from torch import Tensor, nn
from torch_geometric.data import Batch
from torch_geometric.nn import GATv2Conv
from torch_geometric.utils import scatter


@dataclass(frozen=True)
class GATv2Context:
    """Per-batch graph and edge features, computed once by :meth:`GATv2Encoder.prepare`.

    Args:
        edge_index: kNN graph plus one self loop per spot (``edge_index[1]`` the spot, ``edge_index[0]``
            its neighbour).
        edge_attr: distance features of every edge (see :func:`distance_features`).

    Shapes:
        edge_index ``[2, E + N]``; edge_attr ``[E + N, num_rbf + 2]``.
    """

    edge_index: Tensor
    edge_attr: Tensor


def distance_features(pos: Tensor, edge_index: Tensor, batch: Tensor | None, num_rbf: int,
                      cutoff: float = 2.5) -> tuple[Tensor, Tensor]:
    """Self loops plus rotation-, reflection-, translation- and scale-invariant edge features.

    For the spot ``i`` and a neighbour ``j``, ``r_ij = ||C_j - C_i|| / s_i`` where ``s_i`` is the mean
    distance of ``i`` to its neighbours (so the features do not depend on the pixel scale of the slide).
    Every edge gets ``[rbf_1(r), ..., rbf_K(r), r, log(s_i / mean_slide(s))]``: ``K`` Gaussian radial
    basis functions with centres spread evenly over ``[0, cutoff]``, the ratio itself, and the spot's local
    density relative to its slide. Self loops ``(i, i)`` have ``r = 0``, which marks them apart from any
    neighbour. A spot whose neighbours all share its coordinates gets ``r = 0`` and density 0. Only
    distances enter, so the features are invariant to rigid motions of ``pos``.

    Args:
        pos: spot coordinates.
        edge_index: kNN edges, ``edge_index[1]`` the spot, ``edge_index[0]`` its neighbour.
        batch: slide index of every spot (None: one slide).
        num_rbf: number of radial basis functions ``K``.
        cutoff: largest RBF centre, in units of ``s_i``.

    Shapes:
        pos ``[N, 2]``, edge_index ``[2, E]``, batch ``[N]`` -> edge_index with self loops ``[2, E + N]``,
        edge_attr ``[E + N, K + 2]`` in ``pos``'s floating dtype.
    """
    out_dtype = pos.dtype if pos.is_floating_point() else torch.get_default_dtype()
    n = pos.size(0)
    p = pos.to(geometry_dtype(pos))
    src, dst = edge_index
    dist = (p[src] - p[dst]).norm(dim=-1)
    scale = scatter(dist, dst, dim=0, dim_size=n, reduce="mean")
    positive = scale > 0
    if batch is None:
        batch = torch.zeros(n, dtype=torch.long, device=pos.device)
    weight = positive.to(p.dtype)
    slide_total = scatter(scale * weight, batch, dim=0, reduce="sum")
    slide_scale = (slide_total / scatter(weight, batch, dim=0, reduce="sum").clamp_min(1.0))[batch]
    scale = torch.where(positive, scale, torch.ones_like(scale))
    density = torch.where(positive, torch.log(scale / slide_scale.clamp_min(1e-12)), torch.zeros_like(scale))

    loops = torch.arange(n, device=edge_index.device)
    full_index = torch.cat([edge_index, torch.stack([loops, loops])], dim=1)
    ratio = torch.cat([dist / scale[dst], torch.zeros(n, dtype=p.dtype, device=p.device)])
    centres = torch.linspace(0.0, cutoff, num_rbf, dtype=p.dtype, device=p.device)
    width = cutoff / max(num_rbf - 1, 1)
    rbf = torch.exp(-(((ratio[:, None] - centres) / width) ** 2))
    attr = torch.cat([rbf, ratio[:, None], density[full_index[1]][:, None]], dim=-1)
    return full_index, attr.to(out_dtype)


class GATv2Block(nn.Module):
    """Pre-norm graph-attention block: ``h <- h + Drop(GATv2(LN(h)))``, then ``h <- h + FFN(LN(h))``.

    Args:
        hidden_dim: token width ``d`` (divisible by ``heads``).
        edge_dim: edge feature width.
        heads: attention heads; their outputs (``d / heads`` each) are concatenated.
        dropout: dropout after the attention and inside the feed-forward network.
        attn_dropout: dropout of the attention coefficients.

    Shapes:
        h ``[N, d]``, edge_index ``[2, E]``, edge_attr ``[E, edge_dim]`` -> ``[N, d]``.
    """

    def __init__(self, hidden_dim: int, edge_dim: int, heads: int, dropout: float,
                 attn_dropout: float) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(hidden_dim)
        self.conv = GATv2Conv(hidden_dim, hidden_dim // heads, heads=heads, concat=True, dropout=attn_dropout,
                              add_self_loops=False, edge_dim=edge_dim)
        self.drop = nn.Dropout(dropout)
        self.ffn = nn.Sequential(
            nn.LayerNorm(hidden_dim), nn.Linear(hidden_dim, 2 * hidden_dim), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(2 * hidden_dim, hidden_dim),
        )

    def forward(self, h: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        h = h + self.drop(self.conv(self.attn_norm(h), edge_index, edge_attr))
        return h + self.ffn(h)


class GATv2Encoder(Encoder):
    """Residual GATv2 stack over the spatial kNN graph, with distance-based edge features.

    Each spot's token is :class:`~stgen.encoders.mlp.StateInput` (patch embedding + expression state
    ``y`` + time ``t``). Every block applies ``GATv2Conv`` (Brody et al., 2022): multi-head attention whose
    logits ``a^T LeakyReLU(W_s h_i + W_t h_j + W_e e_ij)`` are computed after the non-linearity, so the
    ranking of neighbours depends on the query spot ("dynamic" attention, unlike GAT and unlike GraphSAGE's
    fixed mean). The edge features ``e_ij`` are radial basis functions of the neighbour's distance
    relative to the spot's mean neighbour distance, plus the spot's local density
    (:func:`distance_features`); each spot also attends to itself through a self loop. Only distances
    enter, so the output is invariant to rotations, reflections and translations of the slide (and to its
    pixel scale). Graph and edge features are built once per batch in :meth:`prepare` (O(N k)).

    Args:
        in_dim: patch-embedding width F (data-derived).
        out_dim: gene-panel size G (data-derived).
        hidden_dim: token width ``d`` (divisible by ``heads``).
        num_layers: attention blocks (receptive field = ``num_layers`` hops).
        heads: attention heads per block.
        k: neighbours per spot (the data's graph is reused when it has exactly ``k`` per spot).
        num_rbf: radial basis functions of the relative distance (edge features).
        dropout: dropout after attention and inside the feed-forward networks.
        attn_dropout: dropout of the attention coefficients.

    Shapes:
        batch: PyG ``Batch`` with ``x [N, F]``, ``pos [N, 2]``, ``batch [N]`` and optionally
        ``edge_index [2, N k]``; y: ``[N, G]``; t: ``[B]``; output: ``[N, G]``.
    """

    invariant_to_rigid_motion = True

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 128, num_layers: int = 3, heads: int = 4,
                 k: int = 8, num_rbf: int = 16, dropout: float = 0.1, attn_dropout: float = 0.0) -> None:
        super().__init__(in_dim, out_dim)
        if k < 1 or num_layers < 1 or heads < 1 or num_rbf < 1:
            raise ValueError(
                "gatv2: k, num_layers, heads and num_rbf must be >= 1, "
                f"got {k}, {num_layers}, {heads}, {num_rbf}"
            )
        if hidden_dim % heads:
            raise ValueError(f"gatv2: hidden_dim ({hidden_dim}) must be divisible by heads ({heads})")
        self.k = k
        self.num_rbf = num_rbf
        self.inp = StateInput(in_dim, out_dim, hidden_dim)
        self.blocks = nn.ModuleList(
            GATv2Block(hidden_dim, num_rbf + 2, heads, dropout, attn_dropout) for _ in range(num_layers)
        )
        self.head = nn.Sequential(nn.LayerNorm(hidden_dim), nn.Linear(hidden_dim, out_dim))

    def prepare(self, batch: Batch) -> GATv2Context:
        edge_index = graph_with_k(batch, self.k)
        slide = getattr(batch, "batch", None)
        full_index, attr = distance_features(batch.pos, edge_index, slide, self.num_rbf)
        return GATv2Context(full_index, attr.to(batch.x.dtype))

    def denoise(self, batch: Batch, y: Tensor, t: Tensor, context: Any) -> Tensor:
        h = self.inp(batch.x, y, node_time(batch, t))
        for block in self.blocks:
            h = block(h, context.edge_index, context.edge_attr)
        return self.head(h)
