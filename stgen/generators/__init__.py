"""Generators: one per file; importing this package registers the built-ins."""

from stgen.generators import diffusion, flow, regression  # noqa: F401
from stgen.generators.base import Generator, LossOutput, SampleOutput

__all__ = ["Generator", "LossOutput", "SampleOutput"]
