"""Slides (AnnData), graphs, data sources and the datamodule; importing registers built-in datasets."""

from stgen.data import hest_data, simulated  # noqa: F401
