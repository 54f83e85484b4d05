"""Full self-attention over every spot of a slide (HisToGene / STPath family)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch_geometric.data import Batch
from torch_geometric.utils import scatter

from stgen.encoders.base import Encoder, node_time
from stgen.encoders.mlp import StateInput
from stgen.registry import ENCODERS

#: Fourier frequencies per coordinate axis of the positional encoding
NUM_FREQUENCIES = 16
#: longest wavelength of the positional encoding, in units of ``pos_scale`` (the shortest is 1)
MAX_WAVELENGTH = 1000.0


def fourier_positions(
    pos: Tensor, num_frequencies: int = NUM_FREQUENCIES, max_wavelength: float = MAX_WAVELENGTH
) -> Tensor:
    """Sinusoidal features of 2-D positions at geometrically spaced wavelengths ``1 ... max_wavelength``.

    Shapes:
        pos ``[N, 2]`` (already centred and scaled) -> ``[N, 4 * num_frequencies]`` (``[sin, cos]`` of x,
        then of y).
    """
    exponent = torch.arange(num_frequencies, dtype=pos.dtype, device=pos.device) / max(num_frequencies - 1, 1)
    angular = 2.0 * math.pi / max_wavelength**exponent
    args = pos[:, :, None] * angular
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1).flatten(1)


def attention_matrix_gb(n_spots: int, heads: int, bytes_per_value: int = 4) -> float:
    """Size in GB (1e9 bytes) of the ``n x n`` attention weights of all heads of one layer."""
    return n_spots * n_spots * heads * bytes_per_value / 1e9


@dataclass(frozen=True)
class GlobalAttentionContext:
    """Per-batch inputs that do not depend on ``y`` or ``t``.

    Args:
        bounds: ``(start, end)`` node range of every slide of the batch.
        pos_features: Fourier features of the slide-centred, scaled coordinates.

    Shapes:
        pos_features ``[N, 4 * NUM_FREQUENCIES]``.
    """

    bounds: tuple[tuple[int, int], ...]
    pos_features: Tensor


class TransformerBlock(nn.Module):
    """Pre-norm transformer block over the spots of one slide.

    ``h <- h + Dropout(MHA(LayerNorm(h)))``; ``h <- h + Dropout(FFN(LayerNorm(h)))`` with
    ``FFN = Linear(d, 4d) -> GELU -> Dropout -> Linear(4d, d)``; attention by
    :func:`torch.nn.functional.scaled_dot_product_attention`.

    Args:
        hidden_dim: token width ``d`` (divisible by ``heads``).
        heads: attention heads.
        dropout: dropout of the attention weights, the FFN and both residual branches.

    Shapes:
        h ``[n, d]`` (the spots of one slide) -> ``[n, d]``.
    """

    def __init__(self, hidden_dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(hidden_dim)
        self.qkv = nn.Linear(hidden_dim, 3 * hidden_dim)
        self.proj = nn.Linear(hidden_dim, hidden_dim)
        self.norm2 = nn.LayerNorm(hidden_dim)
        self.ffn = nn.Sequential(
            nn.Linear(hidden_dim, 4 * hidden_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(4 * hidden_dim, hidden_dim),
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, h: Tensor) -> Tensor:
        n, d = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(n, 3, self.heads, d // self.heads).permute(1, 2, 0, 3)
        p = self.dropout if self.training else 0.0
        ctx = F.scaled_dot_product_attention(q[None], k[None], v[None], dropout_p=p)[0]
        h = h + self.drop(self.proj(ctx.transpose(0, 1).reshape(n, d)))
        return h + self.drop(self.ffn(self.norm2(h)))


@ENCODERS.register("global_attention")
class GlobalAttentionEncoder(Encoder):
    """Transformer with full softmax self-attention over all spots of each slide.

    Each spot's token is ``StateInput(x, y, t)`` (patch embedding, expression state and time) plus a
    linear projection of Fourier features of its slide-centred coordinates divided by ``pos_scale``
    (wavelengths from ``pos_scale`` to ``1000 * pos_scale`` pixels). ``num_layers`` pre-norm transformer
    blocks let every spot attend to every other spot of the same slide; slides of a batch are processed
    one at a time (``batch.ptr``), so they never attend to each other. A ``LayerNorm -> Linear(d, G)``
    head gives the expression. No kNN graph is used; the output is invariant to translations of a slide
    but not to rotations or reflections.

    Cost per layer and slide of ``N`` spots: time O(N^2 d) and memory O(N^2) per head, the ``N x N``
    attention weights (materialised and stored for backward in training, where attention dropout rules
    out PyTorch's fused kernels; a fused kernel may avoid storing them in inference, but time stays
    quadratic). This is the family of HisToGene / STPath, the reference point that ``fa_local`` (O(N k))
    avoids. Slides with more than ``max_spots`` spots are refused before any work starts.

    Args:
        in_dim: patch-embedding width F (data-derived).
        out_dim: gene-panel size G (data-derived).
        hidden_dim: token width ``d`` (divisible by ``heads``).
        num_layers: transformer blocks.
        heads: attention heads.
        dropout: dropout of the attention weights, the feed-forward layers and the residual branches.
        max_spots: largest slide accepted; the ``N x N`` attention of a bigger slide raises ``ValueError``.
        pos_scale: coordinate units (full-resolution pixels) per unit of the positional encoding; the
            shortest wavelength of the Fourier features.

    Shapes:
        batch: PyG ``Batch`` with ``x [N, F]``, ``pos [N, 2]``, ``ptr [B + 1]`` (``edge_index`` unused);
        y: ``[N, G]``; t: ``[B]``; output: ``[N, G]``. Memory O(N_slide^2) per slide.
    """

    #: every spot sees its whole slide, so chunked inference must not cut a slide
    receptive_field = None

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: int = 128,
        num_layers: int = 2,
        heads: int = 4,
        dropout: float = 0.1,
        max_spots: int = 20000,
        pos_scale: float = 100.0,
    ) -> None:
        super().__init__(in_dim, out_dim)
        if num_layers < 1 or heads < 1 or max_spots < 1:
            raise ValueError(
                f"global_attention: num_layers, heads and max_spots must be >= 1, got {num_layers}, {heads}, "
                f"{max_spots}"
            )
        if hidden_dim % heads:
            raise ValueError(
                f"global_attention: hidden_dim ({hidden_dim}) must be divisible by heads ({heads})"
            )
        if not pos_scale > 0:
            raise ValueError(f"global_attention: pos_scale must be positive, got {pos_scale}")
        self.heads = heads
        self.max_spots = max_spots
        self.pos_scale = float(pos_scale)
        self.inp = StateInput(in_dim, out_dim, hidden_dim)
        self.pos_proj = nn.Linear(4 * NUM_FREQUENCIES, hidden_dim)
        self.blocks = nn.ModuleList(TransformerBlock(hidden_dim, heads, dropout) for _ in range(num_layers))
        self.head = nn.Sequential(nn.LayerNorm(hidden_dim), nn.Linear(hidden_dim, out_dim))

    def _bounds(self, batch: Batch) -> tuple[tuple[int, int], ...]:
        ptr = getattr(batch, "ptr", None)
        cuts = [0, batch.num_nodes] if ptr is None else ptr.tolist()
        bounds = tuple(zip(cuts[:-1], cuts[1:], strict=True))
        for i, (start, end) in enumerate(bounds):
            n = end - start
            if n > self.max_spots:
                elem = self.pos_proj.weight.element_size()
                raise ValueError(
                    f"global_attention: slide {i} has {n} spots, more than max_spots={self.max_spots}. Full "
                    f"attention builds a {n} x {n} attention matrix per head: "
                    f"{attention_matrix_gb(n, 1, elem):.3g} GB per head, "
                    f"{attention_matrix_gb(n, self.heads, elem):.3g} GB for {self.heads} heads per layer. "
                    "Use encoder=fa_local (local kNN attention, memory O(N k)) or raise max_spots."
                )
        return bounds

    def prepare(self, batch: Batch) -> GlobalAttentionContext:
        """Slide bounds (refusing slides above ``max_spots``) and positional features of centred coordinates."""
        bounds = self._bounds(batch)
        pos = batch.pos.double()
        slide = getattr(batch, "batch", None)
        if slide is None:
            slide = torch.zeros(pos.size(0), dtype=torch.long, device=pos.device)
        centred = (pos - scatter(pos, slide, dim=0, reduce="mean")[slide]) / self.pos_scale
        feats = fourier_positions(centred).to(self.pos_proj.weight.dtype)
        return GlobalAttentionContext(bounds, feats)

    def denoise(self, batch: Batch, y: Tensor, t: Tensor, context: GlobalAttentionContext) -> Tensor:
        h = self.inp(batch.x, y, node_time(batch, t)) + self.pos_proj(context.pos_features)
        outs = []
        for start, end in context.bounds:
            hs = h[start:end]
            for block in self.blocks:
                hs = block(hs)
            outs.append(hs)
        return self.head(torch.cat(outs, dim=0))
