"""STFlow's slide encoder: frame-averaged local MLP attention over a kNN spot graph."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from torch_geometric.data import Batch
from torch_geometric.utils import scatter, softmax

from stgen.data.graph import graph_with_k
from stgen.encoders.base import Encoder, node_time
from stgen.nn.dropout import FastDropout
from stgen.nn.frames import compact_frame_inputs, expand_frame_inputs, geometry_dtype
from stgen.nn.mlp import GatedMLP
from stgen.nn.time import TimeEmbedding
from stgen.registry import ENCODERS

#: edges per slice of the per-edge MLPs: bounds their activations (E x frames x d_e and E x heads x d
#: rows) whatever the slide size, in inference and, with recomputation, in training. Small slices keep
#: each MLP's intermediate tensors (4 MiB at 2048 edges) in the CPU cache: a training step at 4,000
#: spots took 7 to 8 s with 2048 against 14 s with 32768 edges per slice (one thread, same process).
EDGE_CHUNK = 1 << 11
#: edges per slice on accelerators, where large kernels pay and per-call overhead dominates small ones
EDGE_CHUNK_ACCELERATOR = 1 << 18


def edge_slices(n_edges: int, size: int | None = None, device: torch.device | None = None) -> list[slice]:
    """Consecutive slices of at most ``size`` edges covering ``range(n_edges)`` (one empty slice for 0).

    The default size is :data:`EDGE_CHUNK` on the CPU and :data:`EDGE_CHUNK_ACCELERATOR` elsewhere.
    """
    if size is None:
        size = EDGE_CHUNK if device is None or device.type == "cpu" else EDGE_CHUNK_ACCELERATOR
    if n_edges <= size:
        return [slice(0, n_edges)]
    return [slice(start, min(start + size, n_edges)) for start in range(0, n_edges, size)]


@dataclass
class FALocalContext:
    """Per-batch geometry shared by all layers and all refinement steps.

    Args:
        edge_index: kNN graph, ``edge_index[1]`` the spot, ``edge_index[0]`` its neighbour (int64, or
            int32 to halve what a kept chunk plan holds; converted per call).
        edge_inputs: compact frame inputs of every edge (:func:`stgen.nn.frames.compact_frame_inputs`),
            expanded to one row per frame slice by slice where the edge MLP reads them.
        frame_averaging: whether ``edge_inputs`` expand to the 4 frames (or to the single raw row).
        edge_features: per-layer frame-averaged edge features, filled by the first eval-mode call and
            reused by later sampling steps (they depend on geometry only; in training mode dropout makes
            each call differ, so nothing is cached).
        cache_edge_features: set False to recompute the edge features at every call instead of keeping
            them (chunked whole-slide inference does so when they would not fit its memory budget).

    Shapes:
        edge_index ``[2, E]``; edge_inputs ``[E, 3]``.
    """

    edge_index: Tensor
    edge_inputs: Tensor
    frame_averaging: bool = True
    edge_features: dict[int, Tensor] = field(default_factory=dict)
    cache_edge_features: bool = True

    def compact_(self) -> None:
        """Keep ``edge_index`` as int32 when the indices fit (for contexts held across many calls)."""
        if self.edge_index.dtype == torch.int64 and self.edge_index.numel() and \
                int(self.edge_index.max()) < 2**31 - 1:
            self.edge_index = self.edge_index.to(torch.int32)


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


def split_attention_weight(attn_mlp: GatedMLP, q: Tensor, k: Tensor, e: Tensor, y: Tensor) -> list[Tensor]:
    """``fc1``'s weight split over the concatenation ``[q_i, k_j, e_ij, y_j - y_i]``: ``W_q, W_k, W_e, W_y``."""
    return list(attn_mlp.fc1.weight.split([q.size(-1), k.size(-1), e.size(-1), y.size(-1)], dim=1))


def attention_node_terms(attn_mlp: GatedMLP, w_q: Tensor, w_k: Tensor, w_y: Tensor, q: Tensor, k: Tensor,
                         y: Tensor) -> tuple[Tensor, Tensor]:
    """The per-spot parts of the split ``fc1``: ``W_q q_i - W_y y_i + b`` and ``W_k k_j + W_y y_j``.

    Shapes:
        q, k ``[N, H, d/H]``; y ``[N, G]`` -> two ``[N, H, hidden]``.
    """
    wy = (y @ w_y.T)[:, None, :]
    return q @ w_q.T - wy + attn_mlp.fc1.bias, k @ w_k.T + wy


def attention_edge_logits(attn_mlp: GatedMLP, w_e: Tensor, node_i: Tensor, node_j: Tensor, e: Tensor,
                          edge_index: Tensor) -> Tensor:
    """Logits of the edges ``edge_index`` from the node terms: ``gate(node_i[i] + node_j[j] + W_e e_ij)``.

    Shapes:
        node_i, node_j ``[N, H, hidden]``; e ``[E, H, d_e/H]``; edge_index ``[2, E]`` -> ``[E, H]``.
    """
    src, dst = edge_index
    pre = (e @ w_e.T).add_(node_i.index_select(0, dst)).add_(node_j.index_select(0, src))
    return attn_mlp.gate(pre).squeeze(-1)


class SlicedAttentionLogits(torch.autograd.Function):
    """Attention logits over edge slices that keep nothing per edge for the backward pass.

    Forward computes :func:`attention_edge_logits` slice by slice without recording a graph and saves
    only the node terms, the edge features and the edge index. Backward restores the RNG state of the
    forward pass (so dropout draws the same masks), recomputes each slice with gradients and
    accumulates the node-term gradients with ``index_add_``: memory and time stay linear in the edges
    (a checkpoint per slice would allocate a full ``[N, H, hidden]`` gradient for every slice).
    Autocast settings of the forward pass are restored for the recomputation.

    Shapes:
        node_i, node_j ``[N, H, hidden]``; e ``[E, H, d_e/H]``; w_e ``[hidden, d_e/H]``; edge_index
        ``[2, E]`` -> ``[E, H]``.
    """

    @staticmethod
    def forward(ctx, attn_mlp: GatedMLP, edge_index: Tensor, node_i: Tensor, node_j: Tensor, e: Tensor,
                w_e: Tensor, *params: Tensor) -> Tensor:  # type: ignore[override]
        device = e.device
        ctx.attn_mlp = attn_mlp
        ctx.device_type = device.type
        ctx.autocast = (torch.is_autocast_enabled(device.type), torch.get_autocast_dtype(device.type))
        ctx.cpu_rng = torch.get_rng_state()
        ctx.dev_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        with torch.no_grad():
            parts = [attention_edge_logits(attn_mlp, w_e, node_i, node_j, e[sl], edge_index[:, sl])
                     for sl in edge_slices(edge_index.size(1), device=device)]
        ctx.save_for_backward(edge_index, node_i, node_j, e, w_e, *params)
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        edge_index, node_i, node_j, e, w_e, *params = ctx.saved_tensors
        g_i, g_j = torch.zeros_like(node_i), torch.zeros_like(node_j)
        g_e = torch.empty_like(e)
        g_w = torch.zeros_like(w_e)
        g_params = [torch.zeros_like(p) for p in params]
        devices = [e.device] if ctx.dev_rng is not None else []
        enabled, dtype = ctx.autocast
        with torch.random.fork_rng(devices=devices, device_type=ctx.device_type), torch.enable_grad(), \
                torch.autocast(ctx.device_type, dtype=dtype, enabled=enabled):
            torch.set_rng_state(ctx.cpu_rng)
            if ctx.dev_rng is not None:
                torch.cuda.set_rng_state(ctx.dev_rng, e.device)
            w = w_e.detach().requires_grad_(True)
            for sl in edge_slices(edge_index.size(1), device=e.device):
                src, dst = edge_index[:, sl]
                ni = node_i.detach().index_select(0, dst).requires_grad_(True)
                nj = node_j.detach().index_select(0, src).requires_grad_(True)
                es = e.detach()[sl].requires_grad_(True)
                out = ctx.attn_mlp.gate((es @ w.T) + ni + nj).squeeze(-1)
                grads = torch.autograd.grad(out, [ni, nj, es, w, *params], grad[sl])
                g_i.index_add_(0, dst, grads[0].to(g_i.dtype))
                g_j.index_add_(0, src, grads[1].to(g_j.dtype))
                g_e[sl] = grads[2]
                g_w += grads[3]
                for acc, g in zip(g_params, grads[4:], strict=True):
                    acc += g
        return (None, None, g_i, g_j, g_e, g_w, *g_params)


class WeightedNeighbourSum(torch.autograd.Function):
    """``out[i] = sum_{e: dst(e) = i} a[e] * v[src(e)]`` per head, keeping only ``a`` and ``v`` for backward.

    ``scatter(a * v[src], dst)`` would keep the gathered ``v[src]`` (``[E, H, D]``) for the backward
    pass; here the gathers are redone slice by slice in backward.

    Shapes:
        a ``[E, H]``; v ``[N, H, D]``; edge_index ``[2, E]`` -> ``[N, H, D]``.
    """

    @staticmethod
    def forward(ctx, a: Tensor, v: Tensor, edge_index: Tensor) -> Tensor:  # type: ignore[override]
        out = torch.zeros_like(v)
        for sl in edge_slices(edge_index.size(1), device=v.device):
            src, dst = edge_index[:, sl]
            out.index_add_(0, dst, (a[sl, :, None] * v.index_select(0, src)).to(out.dtype))
        ctx.save_for_backward(a, v, edge_index)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        a, v, edge_index = ctx.saved_tensors
        g_a = torch.empty_like(a) if ctx.needs_input_grad[0] else None
        g_v = torch.zeros_like(v) if ctx.needs_input_grad[1] else None
        for sl in edge_slices(edge_index.size(1), device=v.device):
            src, dst = edge_index[:, sl]
            g = grad.index_select(0, dst)
            if g_a is not None:
                g_a[sl] = (g * v.index_select(0, src)).sum(-1)
            if g_v is not None:
                g_v.index_add_(0, src, (a[sl, :, None] * g).to(g_v.dtype))
        return g_a, g_v, None


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


def _maybe_recomputed(module: nn.Module, x: Tensor, recompute: bool) -> Tensor:
    """``module(x)``; with ``recompute`` only ``x`` is kept for backward (activation checkpointing)."""
    return checkpoint(module, x, use_reentrant=False) if recompute else module(x)


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
    (:func:`attention_logits_reference`, same result, more per-edge work). The per-edge MLPs run in
    slices of :data:`EDGE_CHUNK` edges; ``recompute=True`` in :meth:`forward` keeps only their outputs
    for the backward pass and recomputes their activations there (activation checkpointing).

    Shapes:
        h ``[N, d]``, y ``[N, G]``, edge_index ``[2, E]``, edge_inputs ``[E, 3]`` (compact) or
        ``[E, n_frames, 3]`` -> ``[N, d]``.
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
        self.attn_drop = FastDropout(attn_dropout)
        self.out_mlp = GatedMLP(hidden_dim + edge_dim, hidden_dim, hidden_dim, dropout)
        self.ffn = GatedMLP(hidden_dim, 4 * hidden_dim, hidden_dim, dropout)
        self.split_attention = True

    def _edge_slice(self, edge_inputs: Tensor, frame_averaging: bool = True) -> Tensor:
        if edge_inputs.dim() == 2:  # compact inputs: one row per frame, built for this slice only
            edge_inputs = expand_frame_inputs(edge_inputs, frame_averaging)
        return self.edge_mlp.frame_mean(edge_inputs, dim=1)

    def edge_features(self, edge_inputs: Tensor, recompute: bool = False, frame_averaging: bool = True) -> Tensor:
        """Frame-averaged edge features ``[E, H, d_e/H]``: EdgeMLP on each frame, mean over frames.

        ``edge_inputs`` are compact (``[E, 3]``, expanded per slice with ``frame_averaging``) or already
        one row per frame (``[E, n_frames, 3]``). Computed in slices of :data:`EDGE_CHUNK` edges; with
        ``recompute`` each slice's activations are not kept for the backward pass but recomputed there
        (same values: the RNG state is restored).
        """
        slices = edge_slices(edge_inputs.size(0), device=edge_inputs.device)
        if not torch.is_grad_enabled() and len(slices) > 1:  # inference: slices written in place, no cat
            out = edge_inputs.new_empty(edge_inputs.size(0), self.edge_mlp.fc2.out_features)
            for sl in slices:
                out[sl] = self._edge_slice(edge_inputs[sl], frame_averaging)
            return out.view(edge_inputs.size(0), self.heads, -1)
        parts = [
            checkpoint(self._edge_slice, edge_inputs[sl], frame_averaging, use_reentrant=False) if recompute
            else self._edge_slice(edge_inputs[sl], frame_averaging)
            for sl in slices
        ]
        out = parts[0] if len(parts) == 1 else torch.cat(parts)
        return out.view(edge_inputs.size(0), self.heads, -1)

    def attention(self, q: Tensor, k: Tensor, e: Tensor, y: Tensor, edge_index: Tensor,
                  recompute: bool = False) -> Tensor:
        """Attention logits ``[E, H]`` (split form), in edge slices, optionally recomputed in backward."""
        if not self.split_attention:
            return attention_logits_reference(self.attn_mlp, q, k, e, y, edge_index)
        w_q, w_k, w_e, w_y = split_attention_weight(self.attn_mlp, q, k, e, y)
        node_i, node_j = attention_node_terms(self.attn_mlp, w_q, w_k, w_y, q, k, y)
        if recompute:
            mlp = self.attn_mlp
            params = (mlp.norm.weight, mlp.norm.bias, mlp.fc2.weight, mlp.fc2.bias)
            return SlicedAttentionLogits.apply(mlp, edge_index, node_i, node_j, e, w_e, *params)
        parts = [attention_edge_logits(self.attn_mlp, w_e, node_i, node_j, e[sl], edge_index[:, sl])
                 for sl in edge_slices(edge_index.size(1), device=e.device)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def forward(self, h: Tensor, y: Tensor, edge_index: Tensor, edge_inputs: Tensor,
                e: Tensor | None = None, recompute: bool = False, frame_averaging: bool = True) -> Tensor:
        n = h.size(0)
        src, dst = edge_index
        q, k, v = self.qkv(self.norm(h)).view(n, 3, self.heads, -1).unbind(1)
        if e is None:
            e = self.edge_features(edge_inputs, recompute, frame_averaging)
        a = softmax(self.attention(q, k, e, y, edge_index, recompute), dst, num_nodes=n)
        a = self.attn_drop(a)[..., None]
        ctx_v = WeightedNeighbourSum.apply(a.squeeze(-1), v, edge_index).reshape(n, -1)
        if torch.is_grad_enabled():
            ctx_e = scatter(a * e, dst, dim=0, dim_size=n, reduce="sum").reshape(n, -1)
        else:  # inference: summed slice by slice, without an [E, H, d_e/H] product
            ctx_e = e.new_zeros(n, *e.shape[1:])
            for sl in edge_slices(e.size(0), device=e.device):
                ctx_e.index_add_(0, dst[sl], a[sl] * e[sl])
            ctx_e = ctx_e.reshape(n, -1)
        h = h + _maybe_recomputed(self.out_mlp, torch.cat([ctx_v, ctx_e], dim=-1), recompute)
        return h + _maybe_recomputed(self.ffn, h, recompute)


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
        recompute: in training, keep only the outputs of the per-edge MLPs (edge features ``[E, d_e]``
            and attention logits ``[E, H]``) and the inputs of the per-spot MLPs (output MLP,
            feed-forward, gene heads) for the backward pass and recompute their activations there
            (edge paths slice by slice): the same loss and gradients at about a quarter of the
            training memory. No effect in eval mode or without gradients.

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
        recompute: bool = True,
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
        self.recompute = recompute
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
        """kNN graph (reused when ``batch.edge_index`` has ``k`` neighbours per spot, in its own integer
        dtype) and compact frame inputs."""
        edge_index = graph_with_k(batch, self.k)
        pos = batch.pos.to(geometry_dtype(batch.pos))
        slide = getattr(batch, "batch", None)
        if slide is None:
            slide = torch.zeros(pos.size(0), dtype=torch.long, device=pos.device)
        pos = pos - scatter(pos, slide, dim=0, reduce="mean")[slide]
        inputs = compact_frame_inputs(pos, edge_index, self.frame_averaging)
        return FALocalContext(edge_index, inputs.to(self.input_proj.weight.dtype), self.frame_averaging)

    def inference_bytes_per_spot(self) -> tuple[int, int, int, int]:
        """Rough inference memory in bytes (eval, no gradients), for chunked whole-slide prediction:
        activations per spot, kept context per spot (subgraph and frame inputs), kept edge features per
        spot, and the constant working set of the per-edge MLP slices. Assumes ``k`` edges per spot."""
        d, de, heads, k = self.input_proj.out_features, self.blocks[0].edge_mlp.fc1.out_features, self.blocks[0].heads, self.k
        genes, frames = self.out_dim, 4 if self.frame_averaging else 1
        node = self.in_dim + 16 * d + 2 * heads * self.blocks[0].attn_mlp.fc1.out_features + 4 * genes
        edge = 3 * de + 2 * d + 4 * heads
        context = 16 + k * (8 + 12)  # int32 subgraph edges, compact frame inputs
        edges = len(self.blocks) * k * de * 4
        rows = EDGE_CHUNK if self.input_proj.weight.device.type == "cpu" else EDGE_CHUNK_ACCELERATOR
        constant = rows * 4 * (frames * 3 * de + heads * 3 * self.blocks[0].attn_mlp.fc1.out_features)
        return 4 * (node + k * edge), context, edges, constant

    def denoise(self, batch: Batch, y: Tensor, t: Tensor, context: FALocalContext) -> Tensor:
        x = batch.x
        h = self.input_proj(x.to(self.input_proj.weight.dtype)) + self.time_embed(node_time(batch, t))
        recompute = self.recompute and self.training and torch.is_grad_enabled()
        edge_index, fa = context.edge_index.long(), context.frame_averaging
        state, preds = y, []
        for i, (block, head) in enumerate(zip(self.blocks, self.gene_heads, strict=True)):
            e = None
            if not self.training:
                e = context.edge_features.get(i)
                if e is None:
                    e = block.edge_features(context.edge_inputs, frame_averaging=fa)
                    if context.cache_edge_features:
                        context.edge_features[i] = e
            h = block(h, state, edge_index, context.edge_inputs, e, recompute, fa)
            state = _maybe_recomputed(head, h, recompute)
            preds.append(state)
        return torch.stack(preds).mean(dim=0)
