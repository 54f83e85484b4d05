"""Cohort prediction over two CPU processes (Lightning DDP, gloo): each slide written once; reruns skip."""

from __future__ import annotations

import subprocess
import sys

import anndata as ad
import numpy as np
import pytest

from stgen.cli import main
from stgen.cohort import assign_slides, collect_inputs, predict_cohort


def test_assign_slides_balances_and_covers_each_slide_once():
    sizes = [50, 10, 40, 30, 20, 5]
    shares = assign_slides(sizes, 2)
    assert sorted(i for share in shares for i in share) == list(range(6))
    loads = [sum(sizes[i] for i in share) for share in shares]
    assert abs(loads[0] - loads[1]) <= 5
    assert assign_slides(sizes, 2) == shares  # the same on every process
    assert assign_slides(sizes, 8)[7] == [] and assign_slides([], 3) == [[], [], []]
    with pytest.raises(ValueError, match="world size"):
        assign_slides(sizes, 0)


def test_collect_inputs_expands_folders_and_rejects_clashes(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for p in ("a/s1.h5ad", "a/s2.h5ad", "b/s1.h5ad"):
        (tmp_path / p).write_bytes(b"")
    assert [p.name for p in collect_inputs([tmp_path / "a"])] == ["s1.h5ad", "s2.h5ad"]
    with pytest.raises(ValueError, match="s1.h5ad"):
        collect_inputs([tmp_path / "a", tmp_path / "b"])
    with pytest.raises(FileNotFoundError, match="nope"):
        collect_inputs([tmp_path / "nope.h5ad"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no .h5ad"):
        collect_inputs([tmp_path / "empty"])


def _cohort(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stgen", "predict-cohort", *args], capture_output=True, text=True,
                          timeout=600)


def test_cohort_over_two_processes_writes_each_slide_once_and_reruns_skip(tmp_path):
    run = tmp_path / "run"
    assert main(["run", "encoder=gnn", "generator=flow", "prior=zinb", "data.n_slides=4", "data.n_patients=4",
                 "data.n_spots=60", "data.n_genes=6", "data.feature_dim=8", "trainer.max_epochs=1",
                 "train.crops_per_slide=1", "trainer.enable_progress_bar=false", f"output_dir={run}"]) == 0
    ckpt = run / "checkpoints" / "best.ckpt"
    slides = tmp_path / "slides"
    slides.mkdir()
    template = ad.read_h5ad(next((run / "predictions").glob("*.h5ad")))
    del template.layers["stgen_mean"]
    for i in range(5):
        s = template[: 20 + 8 * i].copy()
        s.uns["stgen"] = {"slide_id": f"s{i}"}
        s.write_h5ad(slides / f"s{i}.h5ad")
    out = tmp_path / "pred"
    args = [str(ckpt), str(slides), "-o", str(out), "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp",
            "--n-samples", "2"]
    res = _cohort(*args)  # Lightning's launcher starts the second process
    assert res.returncode == 0, res.stderr[-3000:]
    log = res.stdout + res.stderr
    written = [line for line in log.splitlines() if "] written " in line]
    assert len(written) == 5 and {line.split("]")[0] for line in written} == {"[rank 0", "[rank 1"}
    assert sorted(p.name for p in out.iterdir()) == [f"s{i}.h5ad" for i in range(5)]  # no partial files
    for i in range(5):
        pred = ad.read_h5ad(out / f"s{i}.h5ad")
        assert pred.n_obs == 20 + 8 * i and pred.layers["stgen_mean"].shape == (pred.n_obs, 6)
        assert np.isfinite(pred.layers["stgen_mean"]).all() and (pred.layers["stgen_std"] >= 0).all()
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    (out / "s3.h5ad").unlink()  # an interrupted cohort: the rerun does only what is missing
    records = predict_cohort(ckpt, [slides], out, accelerator="cpu", devices=1, n_samples=2)
    assert sorted((r.slide, r.status) for r in records) == [
        (f"s{i}.h5ad", "written" if i == 3 else "skipped") for i in range(5)]
    assert all(p.stat().st_mtime_ns == stamps[p.name] for p in out.iterdir() if p.name != "s3.h5ad")
    assert ad.read_h5ad(out / "s3.h5ad").n_obs == 44
    bad = _cohort(str(ckpt), str(tmp_path / "missing.h5ad"), "-o", str(tmp_path / "x"), "--accelerator", "cpu")
    assert bad.returncode == 2 and "missing.h5ad" in bad.stderr and not (tmp_path / "x").exists()
