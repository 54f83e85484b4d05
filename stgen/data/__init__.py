"""Slides (AnnData), graphs, data sources and the datamodule; importing registers built-in datasets."""

from stgen.data import simulated  # noqa: F401
