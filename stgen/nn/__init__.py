"""Shared network blocks: gated MLP, time embedding, frame averaging."""

from stgen.nn.mlp import GatedMLP
from stgen.nn.time import TimeEmbedding, sinusoidal_embedding

__all__ = ["GatedMLP", "TimeEmbedding", "sinusoidal_embedding"]
