"""stgen: generate spatial transcriptomics from histology (STFlow and a modular framework around it)."""

from __future__ import annotations

__version__ = "0.1.0"
