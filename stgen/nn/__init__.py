"""Shared network blocks: gated MLP, time embedding, frame averaging."""

from stgen.nn.dropout import FastDropout
from stgen.nn.mlp import GatedMLP
from stgen.nn.time import TimeEmbedding, sinusoidal_embedding

__all__ = ["FastDropout", "GatedMLP", "TimeEmbedding", "sinusoidal_embedding"]
