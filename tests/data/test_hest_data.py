from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from stgen.cli import main
from stgen.data.hest_data import HestData, carve_validation


def _make_hest_folder():
    spec = importlib.util.spec_from_file_location("hest_fixture", Path(__file__).with_name("test_hest.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.make_hest_folder


def test_carve_validation_holds_out_patients_or_one_slide():
    groups = {"a1": "A", "a2": "A", "b1": "B", "c1": "C", "c2": "C"}
    fit, val = carve_validation(list(groups), groups, 1)
    assert set(val) == {"c1", "c2"} and set(fit) == {"a1", "a2", "b1"}
    two = {"a1": "A", "a2": "A", "b1": "B"}
    fit, val = carve_validation(list(two), two, 1)
    assert val == ["a2"] and fit == ["a1", "b1"]
    assert carve_validation(["x"], {"x": "X"}, 1) == (["x"], [])


def test_hest_source_reads_folds_and_features(tmp_path):
    _make_hest_folder()(tmp_path / "IDC")
    bundle = HestData(root=str(tmp_path), task="IDC", default_features="handcrafted").load()
    assert len(bundle.folds) == 2
    for fold in bundle.folds:
        assert fold.val and not set(fold.val) & set(fold.test) and not set(fold.train) & set(fold.test)
    bundle.validate()
    assert bundle.genes and next(iter(bundle.slides.values())).obsm["features"].shape[1] == 47


def test_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a HEST-Bench task folder"):
        HestData(root=str(tmp_path)).load()


def test_run_on_hest_folder_reports_folds_and_ridge(tmp_path, capsys):
    root = _make_hest_folder()(tmp_path / "bench")
    out = tmp_path / "run"
    rc = main(["run", "data=hest", f"data.root={root}", "features=handcrafted", "encoder=mlp",
               "generator=regression", "prior=zero", "trainer.max_epochs=1", "train.crops_per_slide=2",
               "trainer.enable_progress_bar=false", f"output_dir={out}"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["summary"]["folds"] == 2
    assert all("ridge_pearson" in row for row in metrics["folds"])
    assert (out / "fold0" / "per_gene.csv").exists() and (out / "fold1" / "checkpoints" / "best.ckpt").exists()
    assert "mean +- std over 2 folds" in capsys.readouterr().out
