"""Run outputs that tell the truth: spot centres on the HEST path, the fold plan printed by convert."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import anndata as ad
import numpy as np
import pytest

from stgen.data.slide import make_slide


def _hest_fixture():
    spec = importlib.util.spec_from_file_location("hest_fixture", Path(__file__).parent / "data" / "test_hest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_hest_slides_are_placed_at_spot_centres_not_patch_corners(tmp_path):
    from stgen.data.hest import read_hest
    from stgen.data.hest_patches import read_patch_index

    mod = _hest_fixture()
    root = mod.make_hest_folder(tmp_path / "bench")
    half = mod.PATCH / 2
    # HEST's patch coords are top-left corners; the expression file holds the spot centres
    for expr_path in sorted((root / "st").glob("*.h5ad")):
        expr = ad.read_h5ad(expr_path)
        barcodes, corners = read_patch_index(root / "patches" / f"{expr_path.stem}.h5")
        centre = {b: c + half for b, c in zip(barcodes, corners, strict=True)}
        expr.obsm["spatial"] = np.array([centre.get(b, (np.nan, np.nan)) for b in expr.obs_names])
        expr.write_h5ad(expr_path)
    with pytest.warns(UserWarning, match="dropped"):
        ds = read_hest(root)
    s1 = ds.slides["S1"]
    barcodes, corners = read_patch_index(root / "patches" / "S1.h5")
    np.testing.assert_allclose(s1.obsm["spatial"], corners[:-1] + half)
    assert s1.uns["stgen"]["hest"]["spatial_from"] == "expression obsm['spatial']"


def _pairs(patients: dict[str, str]):
    from stgen.data.hest_patches import Patches

    out = []
    for sid, patient in patients.items():
        xy = np.arange(8, dtype=float).reshape(4, 2)
        slide = make_slide(np.ones((4, 3)), xy, slide=sid, genes=["a", "b", "c"], barcodes=[f"{sid}{i}" for i in range(4)],
                           patient=patient)
        out.append((slide, Patches(np.zeros((4, 16, 16, 3), np.uint8), xy, list(slide.obs_names))))
    return out


def test_fold_plan_maps_folds_to_test_patients_and_flags_missing_validation():
    from stgen.cli.convert import fold_plan

    plan = fold_plan(_pairs({"A1": "A", "C2": "C", "C3": "C"}), "patient")
    assert [f["name"] for f in plan] == ["fold0", "fold1"]
    assert plan[0]["test_groups"] == "patient A" and plan[0]["test"] == ["A1"]
    assert plan[0]["val"] == ["C3"] and plan[0]["train"] == ["C2"]
    assert plan[1]["test_groups"] == "patient C" and plan[1]["val"] == []  # one training slide: no validation
    sections = fold_plan(_pairs({"A1": "A", "C2": "C", "C3": "C"}), "section")
    assert [f["test_groups"] for f in sections] == ["section A1", "section C2", "section C3"]
    # held-out sections leave C2+C3 (one patient: one section validates) or A1+C3 (two single-slide patients)
    assert [f["val"] for f in sections] == [["C3"], [], []]
