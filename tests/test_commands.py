"""`stgen convert` and `stgen extract` on real her2st sections, as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import pytest

from stgen.cli import main

HER2ST = Path(__file__).resolve().parents[2] / "shared" / "data" / "her2st"


@pytest.mark.skipif(not (HER2ST / "counts" / "A1.tsv.gz").is_file(), reason="her2st data not available")
def test_convert_then_extract_her2st(tmp_path, capsys):
    out = tmp_path / "her2st_hest"
    rc = main(["convert", "legacy-st", str(HER2ST), "-o", str(out), "--sections", "A1", "C2",
               "--split-by", "section", "--n-genes", "20", "--include-genes", "ERBB2"])
    assert rc == 0
    genes = json.loads(next(out.glob("var_*genes.json")).read_text())["genes"]
    assert "ERBB2" in genes and len(genes) == 20
    printed = capsys.readouterr().out
    # every fold trains on one section, so the printed command selects on the test fold and says so
    assert "fold0: test section A1 (A1); validation none; train C2" in printed
    assert "NOTE: fold0, fold1 leave(s) no slide for validation" in printed
    assert printed.strip().endswith("features=efficientnet_lite0 eval.select_on=test")
    assert sorted(p.name for p in (out / "splits").iterdir()) == ["test_0.csv", "test_1.csv", "train_0.csv",
                                                                   "train_1.csv"]
    with h5py.File(out / "patches" / "C2.h5") as f:
        assert f["img"].shape[1:] == (224, 224, 3) and f["img"].shape[0] == f["coords"].shape[0] == 187
    assert main(["convert", "legacy-st", str(HER2ST), "-o", str(out), "--sections", "A1"]) == 2  # no overwrite
    assert main(["extract", str(out), "features=handcrafted"]) == 0
    printed = capsys.readouterr().out
    assert "C2: 187 spots" in printed
    cached = list((out / "embeddings").glob("handcrafted-*/C2.h5"))
    assert len(cached) == 1
    with h5py.File(cached[0]) as f:
        assert f["embeddings"].shape == (187, 47)
    assert main(["extract", str(tmp_path / "nope"), "features=handcrafted"]) == 2
    assert main(["extract", str(out), "features=handcraftd"]) == 2
