"""Sinusoidal time embedding (DiT/GLIDE style) and the time MLP."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoidal_embedding(t: Tensor, dim: int = 256, max_period: float = 10000.0) -> Tensor:
    """DiT/GLIDE sinusoidal features of ``t`` (used as is, not scaled by 1000).

    Shapes:
        t ``[N]`` -> ``[N, dim]`` (``[cos, sin]`` halves).
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimeEmbedding(nn.Module):
    """``Linear(freq_dim -> d) -> SiLU -> Linear(d -> d)`` over sinusoidal features.

    Args:
        hidden_dim: output width ``d``.
        freq_dim: sinusoid width (256 in STFlow).

    Shapes:
        t ``[N]`` -> ``[N, hidden_dim]``.
    """

    def __init__(self, hidden_dim: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, hidden_dim))

    def forward(self, t: Tensor) -> Tensor:
        emb = sinusoidal_embedding(t, self.freq_dim)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))
