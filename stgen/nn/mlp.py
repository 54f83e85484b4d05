"""Gated MLP (SwiGLU, packed), the MLP used throughout STFlow."""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from stgen.nn.dropout import FastDropout


class GatedMLP(nn.Module):
    """SwiGLU MLP with a packed first layer.

    ``fc1: in -> hid``; split into halves ``a, b``; ``SiLU(a) * b``; dropout; ``LayerNorm(hid/2)``;
    ``fc2: hid/2 -> out``; dropout (:class:`~stgen.nn.dropout.FastDropout`).

    Args:
        in_dim: input width.
        hidden_dim: packed hidden width (must be even; the gated width is ``hidden_dim // 2``).
        out_dim: output width.
        dropout: dropout after the gate and after ``fc2``.

    Shapes:
        input ``[..., in_dim]`` -> output ``[..., out_dim]``.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        if hidden_dim % 2:
            raise ValueError(f"GatedMLP hidden_dim must be even, got {hidden_dim}")
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.norm = nn.LayerNorm(hidden_dim // 2)
        self.fc2 = nn.Linear(hidden_dim // 2, out_dim)
        self.drop = FastDropout(dropout)

    def gate(self, pre: Tensor) -> Tensor:
        """Everything after ``fc1``: useful when ``fc1``'s output is assembled from split terms."""
        a, b = pre.chunk(2, dim=-1)
        h = self.norm(self.drop(F.silu(a) * b))
        return self.drop(self.fc2(h))

    def forward(self, x: Tensor) -> Tensor:
        return self.gate(self.fc1(x))

    def frame_mean(self, x: Tensor, dim: int) -> Tensor:
        """``self(x).mean(dim)``; without active dropout ``fc2`` is applied after the mean (it is linear)."""
        if self.training and self.drop.p > 0:
            return self(x).mean(dim=dim)
        a, b = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(self.norm(F.silu(a) * b).mean(dim=dim))


