from __future__ import annotations

import numpy as np
import pytest

from stgen.data.slide import SlideError, make_slide, validate_slide


def good():
    rng = np.random.default_rng(0)
    return make_slide(rng.poisson(2, (10, 3)).astype(np.float32), rng.random((10, 2)) * 100, slide="s1",
                      genes=["a", "b", "c"], features=rng.random((10, 4)), patient="P1")


def test_valid_slide_passes():
    assert validate_slide(good(), genes=["a", "c"]) is None


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda a: a.obsm.pop("spatial"), "missing obsm['spatial']"),
        (lambda a: a.obsm.pop("features"), "run `stgen extract`"),
        (lambda a: a.obsm.__setitem__("spatial", np.full((10, 2), np.nan)), "NaN or infinite coordinates"),
        (lambda a: a.obsm.__setitem__("features", np.full((10, 4), np.inf)), "NaN or inf"),
        (lambda a: a.X.__setitem__((0, 0), -1.0), "non-negative counts"),
    ],
)
def test_invalid_slide_names_slide_field_and_fix(mutate, expected):
    a = good()
    mutate(a)
    with pytest.raises(SlideError) as err:
        validate_slide(a)
    assert "'s1'" in str(err.value) and expected in str(err.value)


def test_missing_panel_genes_and_duplicate_barcodes():
    with pytest.raises(SlideError, match="missing from var_names"):
        validate_slide(good(), genes=["a", "zzz"])
    a = good()
    a.obs_names = ["x"] * 10
    with pytest.raises(SlideError, match="not unique"):
        validate_slide(a)
