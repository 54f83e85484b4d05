"""Encoders: one per file; importing this package registers the built-ins."""

from stgen.encoders import fa_local, global_attention, gnn, mlp  # noqa: F401
from stgen.encoders.base import Encoder

__all__ = ["Encoder"]
