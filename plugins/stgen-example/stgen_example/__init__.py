"""Example stgen plugin: the ``gatv2`` encoder and the ``nb_fitted`` prior, registered as entry points."""

from __future__ import annotations

from stgen_example.gatv2 import GATv2Encoder
from stgen_example.nb_prior import FittedNBPrior

__all__ = ["FittedNBPrior", "GATv2Encoder"]
__version__ = "0.1.0"
