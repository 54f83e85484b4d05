"""Per-spot MLP encoder: no spatial context."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torch_geometric.data import Batch

from stgen.encoders.base import Encoder, node_time
from stgen.nn.time import TimeEmbedding
from stgen.registry import ENCODERS


class StateInput(nn.Module):
    """Token of a spot: projection of its patch embedding + projection of the state y + time embedding.

    Iterative generators pass the current expression state and time; this is how the per-spot and
    message-passing encoders see them (STFlow's fa_local instead feeds y into its attention logits).

    Args:
        in_dim: patch-embedding width F.
        out_dim: gene-panel size G.
        hidden_dim: token width d.

    Shapes:
        x ``[N, F]``, y ``[N, G]``, t ``[N]`` -> ``[N, d]``.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.x_proj = nn.Linear(in_dim, hidden_dim)
        self.y_proj = nn.Linear(out_dim, hidden_dim)
        self.time = TimeEmbedding(hidden_dim)

    def forward(self, x: Tensor, y: Tensor, t: Tensor) -> Tensor:
        return self.x_proj(x) + self.y_proj(y) + self.time(t)


@ENCODERS.register("mlp")
class MLPEncoder(Encoder):
    """Per-spot residual MLP: each spot's prediction sees only its own patch embedding (and y, t).

    Args:
        in_dim: patch-embedding width F (data-derived).
        out_dim: gene-panel size G (data-derived).
        hidden_dim: width d.
        num_layers: residual blocks (LayerNorm -> Linear(d, 2d) -> GELU -> Dropout -> Linear(2d, d)).
        dropout: dropout inside blocks.

    Shapes:
        x ``[N, F]``, y ``[N, G]``, t ``[B]`` -> ``[N, G]``.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 128, num_layers: int = 2,
                 dropout: float = 0.1) -> None:
        super().__init__(in_dim, out_dim)
        self.receptive_field = 0
        self.inp = StateInput(in_dim, out_dim, hidden_dim)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(hidden_dim), nn.Linear(hidden_dim, 2 * hidden_dim), nn.GELU(),
                          nn.Dropout(dropout), nn.Linear(2 * hidden_dim, hidden_dim))
            for _ in range(num_layers)
        )
        self.head = nn.Sequential(nn.LayerNorm(hidden_dim), nn.Linear(hidden_dim, out_dim))

    def denoise(self, batch: Batch, y: Tensor, t: Tensor, context: Any) -> Tensor:
        h = self.inp(batch.x, y, node_time(batch, t))
        for block in self.blocks:
            h = h + block(h)
        return self.head(h)
