"""STFlow's slide encoder: frame-averaged local MLP attention over a kNN spot graph."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch
from torch_geometric.utils import scatter, softmax

from stgen.data.graph import graph_with_k
from stgen.encoders.base import Encoder, node_time
from stgen.nn.frames import frame_inputs, geometry_dtype
from stgen.nn.mlp import GatedMLP
from stgen.nn.time import TimeEmbedding
from stgen.registry import ENCODERS


@dataclass
class FALocalContext:
    """Per-batch geometry shared by all layers and all refinement steps.

    Args:
        edge_index: kNN graph, ``edge_index[1]`` the spot, ``edge_index[0]`` its neighbour.
        edge_inputs: frame inputs of every edge (see :func:`stgen.nn.frames.frame_inputs`).
        edge_features: per-layer frame-averaged edge features, filled by the first eval-mode call and
            reused by later sampling steps (they depend on geometry only; in training mode dropout makes
            each call differ, so nothing is cached).

    Shapes:
        edge_index ``[2, E]``; edge_inputs ``[E, n_frames, 3]`` (``n_frames`` 4, or 1 without frame
        averaging).
    """

    edge_index: Tensor
    edge_inputs: Tensor
    edge_features: dict[int, Tensor] = field(default_factory=dict)


def attention_logits_reference(
    attn_mlp: GatedMLP, q: Tensor, k: Tensor, e: Tensor, y: Tensor, edge_index: Tensor
) -> Tensor:
    """``AttnMLP([q_i^h, k_j^h, e_ij^h, y_j - y_i])`` by explicit per-edge concatenation (reference).

    Shapes:
        q, k ``[N, H, d/H]``; e ``[E, H, d_e/H]``; y ``[N, G]``; edge_index ``[2, E]`` -> logits ``[E, H]``.
    """
    src, dst = edge_index
    heads = q.size(1)
    dy = (y[src] - y[dst])[:, None, :].expand(-1, heads, -1)
    return attn_mlp(torch.cat([q[dst], k[src], e, dy], dim=-1)).squeeze(-1)


def attention_logits(
    attn_mlp: GatedMLP, q: Tensor, k: Tensor, e: Tensor, y: Tensor, edge_index: Tensor
) -> Tensor:
    """Same as :func:`attention_logits_reference`, with ``fc1`` split over the concatenation.

    ``W [q_i, k_j, e_ij, y_j - y_i] + b = (W_q q_i - W_y y_i + b) + (W_k k_j + W_y y_j) + W_e e_ij``: the
    node terms are computed once per spot and gathered per edge; only ``W_e e_ij`` is computed per edge.

    Shapes:
        q, k ``[N, H, d/H]``; e ``[E, H, d_e/H]``; y ``[N, G]``; edge_index ``[2, E]`` -> logits ``[E, H]``.
    """
    src, dst = edge_index
    w = attn_mlp.fc1.weight
    w_q, w_k, w_e, w_y = w.split([q.size(-1), k.size(-1), e.size(-1), y.size(-1)], dim=1)
    wy = (y @ w_y.T)[:, None, :]
    node_i = q @ w_q.T - wy + attn_mlp.fc1.bias
    node_j = k @ w_k.T + wy
    pre = node_i[dst] + node_j[src] + e @ w_e.T
    return attn_mlp.gate(pre).squeeze(-1)


class FALocalBlock(nn.Module):
    """One STFlow layer: frame-averaged edge features, MLP attention, output MLP and feed-forward.

    Args:
        hidden_dim: token width ``d``.
        edge_dim: edge feature width ``d_e``.
        out_dim: gene-panel size ``G`` (the expression state enters the attention logits).
        heads: attention heads ``H`` (``d`` and ``d_e`` must be divisible by it).
        dropout: dropout of every gated MLP.
        attn_dropout: dropout of the attention weights.

    Set ``split_attention = False`` to compute the logits by explicit concatenation
    (:func:`attention_logits_reference`, same result, more per-edge work).

    Shapes:
        h ``[N, d]``, y ``[N, G]``, edge_index ``[2, E]``, edge_inputs ``[E, n_frames, 3]`` -> ``[N, d]``.
    """

    def __init__(
        self, hidden_dim: int, edge_dim: int, out_dim: int, heads: int, dropout: float, attn_dropout: float
    ) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(hidden_dim)
        self.qkv = nn.Linear(hidden_dim, 3 * hidden_dim)
        self.edge_mlp = GatedMLP(3, edge_dim, edge_dim, dropout)
        attn_in = 2 * hidden_dim // heads + edge_dim // heads + out_dim
        self.attn_mlp = GatedMLP(attn_in, hidden_dim, 1, dropout)
        self.attn_drop = nn.Dropout(attn_dropout)
        self.out_mlp = GatedMLP(hidden_dim + edge_dim, hidden_dim, hidden_dim, dropout)
        self.ffn = GatedMLP(hidden_dim, 4 * hidden_dim, hidden_dim, dropout)
        self.split_attention = True

    def edge_features(self, edge_inputs: Tensor) -> Tensor:
        """Frame-averaged edge features ``[E, H, d_e/H]``: EdgeMLP on each frame, mean over frames."""
        return self.edge_mlp(edge_inputs).mean(dim=1).view(edge_inputs.size(0), self.heads, -1)

    def forward(self, h: Tensor, y: Tensor, edge_index: Tensor, edge_inputs: Tensor,
                e: Tensor | None = None) -> Tensor:
        n, heads = h.size(0), self.heads
        src, dst = edge_index
        q, k, v = self.qkv(self.norm(h)).view(n, 3, heads, -1).unbind(1)
        if e is None:
            e = self.edge_features(edge_inputs)
        logits_fn = attention_logits if self.split_attention else attention_logits_reference
        a = softmax(logits_fn(self.attn_mlp, q, k, e, y, edge_index), dst, num_nodes=n)
        a = self.attn_drop(a)[..., None]
        ctx_v = scatter(a * v[src], dst, dim=0, dim_size=n, reduce="sum").reshape(n, -1)
        ctx_e = scatter(a * e, dst, dim=0, dim_size=n, reduce="sum").reshape(n, -1)
        h = h + self.out_mlp(torch.cat([ctx_v, ctx_e], dim=-1))
        return h + self.ffn(h)


@ENCODERS.register("fa_local")
class FALocalEncoder(Encoder):
    """STFlow's denoiser: local MLP attention with frame-averaged geometry and iterative gene heads.

    Each spot's token ``Linear(F -> d)(x) + TimeEmbedding(t)`` attends to its ``k`` nearest spots (same
    slide only) in ``num_layers`` blocks. Attention logits see the queries, keys, E(2)-invariant edge
    features and the expression difference ``y_j - y_i``; the expression never enters the values. Every
    block has a gene head; block 1 attends with the given state ``y``, block ``l > 1`` with block
    ``l - 1``'s prediction, and the output is the mean of the heads' predictions. The kNN graph and frame
    inputs are built once per batch by :meth:`prepare` (O(N k), no N x N matrix).

    Args:
        in_dim: patch-embedding width F (data-derived).
        out_dim: gene-panel size G (data-derived).
        k: neighbours per spot.
        hidden_dim: token width ``d``.
        edge_dim: edge feature width ``d_e``.
        num_layers: attention blocks ``L``.
        heads: attention heads (``hidden_dim`` and ``edge_dim`` must be divisible by it).
        dropout: dropout of the gated MLPs and the gene heads.
        attn_dropout: dropout of the attention weights.
        frame_averaging: 4-frame averaged (E(2)-invariant) edge inputs; False feeds the raw relative
            vector ``[r_ij, ||r_ij||]`` (not rotation invariant).
        relu_head: end every gene head with a ReLU.

    Shapes:
        batch: PyG ``Batch`` with ``x [N, F]``, ``pos [N, 2]``, ``batch [N]`` and optionally
        ``edge_index [2, N k]``; y: ``[N, G]``; t: ``[B]``; output: ``[N, G]``.
    """

    invariant_to_rigid_motion = True

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        k: int = 8,
        hidden_dim: int = 128,
        edge_dim: int = 128,
        num_layers: int = 4,
        heads: int = 4,
        dropout: float = 0.2,
        attn_dropout: float = 0.2,
        frame_averaging: bool = True,
        relu_head: bool = False,
    ) -> None:
        super().__init__(in_dim, out_dim)
        if k < 1 or num_layers < 1 or heads < 1:
            raise ValueError(
                f"fa_local: k, num_layers and heads must be >= 1, got {k}, {num_layers}, {heads}"
            )
        if hidden_dim % heads or edge_dim % heads:
            raise ValueError(
                f"fa_local: hidden_dim ({hidden_dim}) and edge_dim ({edge_dim}) must be divisible by heads ({heads})"
            )
        if hidden_dim % 2 or edge_dim % 2:
            raise ValueError(f"fa_local: hidden_dim ({hidden_dim}) and edge_dim ({edge_dim}) must be even")
        self.k = k
        self.receptive_field = num_layers
        self.frame_averaging = frame_averaging
        self.invariant_to_rigid_motion = frame_averaging
        self.input_proj = nn.Linear(in_dim, hidden_dim)
        self.time_embed = TimeEmbedding(hidden_dim)
        self.blocks = nn.ModuleList(
            FALocalBlock(hidden_dim, edge_dim, out_dim, heads, dropout, attn_dropout)
            for _ in range(num_layers)
        )
        self.gene_heads = nn.ModuleList(
            self._gene_head(hidden_dim, out_dim, dropout, relu_head) for _ in range(num_layers)
        )

    @staticmethod
    def _gene_head(hidden_dim: int, out_dim: int, dropout: float, relu: bool) -> nn.Sequential:
        layers: list[nn.Module] = [
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
            nn.LayerNorm(hidden_dim),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, out_dim),
            nn.Dropout(dropout),
        ]
        if relu:
            layers.append(nn.ReLU())
        return nn.Sequential(*layers)

    def prepare(self, batch: Batch) -> FALocalContext:
        """kNN graph (reused when ``batch.edge_index`` has ``k`` neighbours per spot) and frame inputs."""
        edge_index = graph_with_k(batch, self.k)
        pos = batch.pos.to(geometry_dtype(batch.pos))
        slide = getattr(batch, "batch", None)
        if slide is None:
            slide = torch.zeros(pos.size(0), dtype=torch.long, device=pos.device)
        pos = pos - scatter(pos, slide, dim=0, reduce="mean")[slide]
        inputs = frame_inputs(pos, edge_index, self.frame_averaging)
        return FALocalContext(edge_index, inputs.to(self.input_proj.weight.dtype))

    def predict(self, batch: Batch, y: Tensor, t: Tensor, context: FALocalContext) -> Tensor:
        h = self.input_proj(batch.x) + self.time_embed(node_time(batch, t))
        state, preds = y, []
        for i, (block, head) in enumerate(zip(self.blocks, self.gene_heads, strict=True)):
            e = None
            if not self.training:
                e = context.edge_features.get(i)
                if e is None:
                    e = context.edge_features[i] = block.edge_features(context.edge_inputs)
            h = block(h, state, context.edge_index, context.edge_inputs, e)
            state = head(h)
            preds.append(state)
        return torch.stack(preds).mean(dim=0)
