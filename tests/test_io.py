"""Atomic AnnData writes and reads that name the file."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

from stgen.errors import DataInputError, MissingInputError
from stgen.io import read_h5ad, write_h5ad


class Unwritable:
    """Not an h5ad element: anndata fails part-way through writing it."""


def test_a_failed_write_leaves_neither_the_file_nor_a_temporary(tmp_path):
    a = ad.AnnData(X=np.ones((4, 3), np.float32))
    a.uns["bad"] = Unwritable()
    with pytest.raises(Exception):  # noqa: B017 - whatever anndata raises, nothing may be left
        write_h5ad(a, tmp_path / "x.h5ad")
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_write_leaves_nothing(tmp_path):
    class Interrupting(ad.AnnData):
        def write_h5ad(self, filename, **kwargs):  # Ctrl-C once the file exists on disk
            super().write_h5ad(filename, **kwargs)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_h5ad(Interrupting(X=np.ones((4, 3), np.float32)), tmp_path / "x.h5ad")
    assert list(tmp_path.iterdir()) == []


def test_write_then_read_and_errors_name_the_file(tmp_path):
    write_h5ad(ad.AnnData(X=np.ones((4, 3), np.float32)), tmp_path / "ok.h5ad")
    assert [p.name for p in tmp_path.iterdir()] == ["ok.h5ad"]
    assert read_h5ad(tmp_path / "ok.h5ad").shape == (4, 3)
    with pytest.raises(MissingInputError, match="nope.h5ad"):
        read_h5ad(tmp_path / "nope.h5ad")
    (tmp_path / "bad.h5ad").write_text("text")
    with pytest.raises(DataInputError, match="bad.h5ad"):
        read_h5ad(tmp_path / "bad.h5ad")
