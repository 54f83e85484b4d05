"""Priors: one per file; importing this package registers the built-ins."""

from stgen.priors import gaussian, zero, zinb  # noqa: F401
from stgen.priors.base import Prior

__all__ = ["Prior"]
