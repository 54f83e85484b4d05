"""Interrupted runs: SIGKILL after the first checkpoint, `resume=` ends where the uninterrupted run ends;
run folders are claimed atomically."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from omegaconf import OmegaConf

from stgen.errors import OutputExistsError
from stgen.run import claim_output_dir

ARGS = ["encoder=fa_local", "generator=flow", "prior=gaussian", "data.n_slides=4", "data.n_patients=4",
        "data.n_spots=150", "data.n_genes=8", "data.feature_dim=16", "train.crops_per_slide=6",
        "trainer.max_epochs=6", "trainer.patience=2", "trainer.enable_progress_bar=false", "encoder.hidden_dim=16",
        "encoder.edge_dim=16", "encoder.num_layers=2", "eval.ridge=false", "generator.steps=2"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def stgen(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stgen", *args], capture_output=True, text=True, cwd=cwd, env=ENV,
                          timeout=600)


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    full = stgen("run", *ARGS, "output_dir=full", cwd=tmp_path)
    assert full.returncode == 0, full.stderr[-2000:]

    proc = subprocess.Popen([sys.executable, "-m", "stgen", "run", *ARGS, "output_dir=killed"], cwd=tmp_path, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = tmp_path / "killed.incomplete" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 500
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (tmp_path / "killed").exists() and last.exists()

    resumed = stgen("run", "resume=killed.incomplete", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert not (tmp_path / "killed.incomplete").exists()
    a = json.loads((tmp_path / "full" / "metrics.json").read_text())["folds"][0]
    b = json.loads((tmp_path / "killed" / "metrics.json").read_text())["folds"][0]
    for key in ("best_epoch", "epochs", "val_pearson", "pearson", "pearson_slide_mean", "mse"):
        assert a[key] == b[key], (key, a[key], b[key])  # bitwise on the CPU
    assert a["run"] == b["run"]  # the resumed run keeps its label
    for pred in sorted((tmp_path / "full" / "predictions").glob("*.h5ad")):
        other = ad.read_h5ad(tmp_path / "killed" / "predictions" / pred.name)
        assert np.array_equal(ad.read_h5ad(pred).layers["stgen_mean"], other.layers["stgen_mean"])
    logs = tmp_path / "killed" / "logs"
    assert (logs / "metrics.csv").is_file() and (logs / "resume-1" / "metrics.csv").is_file()  # no log lost


def test_two_runs_started_together_get_separate_folders(tmp_path):
    tiny = ["encoder=mlp", "generator=regression", "prior=zero", "data.n_slides=4", "data.n_patients=4",
            "data.n_spots=60", "data.n_genes=5", "data.feature_dim=8", "train.crops_per_slide=2",
            "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "eval.ridge=false"]
    procs = [subprocess.Popen([sys.executable, "-m", "stgen", "run", *tiny], cwd=tmp_path, env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [r[1][-1500:] for r in results]
    runs = sorted(p.parent for p in (tmp_path / "outputs").rglob("metrics.json"))
    assert len(runs) == 2 and len(set(runs)) == 2
    assert not list((tmp_path / "outputs").rglob("*.incomplete"))


def test_claims_are_exclusive_and_never_delete_another_runs_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = OmegaConf.create({"output_dir": None})
    out1, part1 = claim_output_dir(cfg, "label")
    (part1 / "marker").write_text("first run")
    out2, part2 = claim_output_dir(cfg, "label")
    assert part1 != part2 and (part1 / "marker").read_text() == "first run"
    explicit = OmegaConf.create({"output_dir": str(tmp_path / "mine")})
    claim_output_dir(explicit, "x")
    with pytest.raises(OutputExistsError, match="unfinished run"):
        claim_output_dir(explicit, "x")


def test_resume_refuses_a_finished_or_missing_run(tmp_path, capsys):
    from stgen.cli import main

    assert main(["run", f"resume={tmp_path / 'nothing'}"]) == 2
    assert "no unfinished run folder" in capsys.readouterr().err


def test_resume_keeps_finished_folds_and_redoes_the_interrupted_one(tmp_path, monkeypatch, capsys):
    import importlib.util

    import stgen.run

    spec = importlib.util.spec_from_file_location("cli_error_cases", Path(__file__).with_name("test_cli_errors.py"))
    cases = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = cases  # its dataclasses look their module up
    spec.loader.exec_module(cases)
    make_hest = cases.make_hest
    from stgen.cli import main

    root = make_hest(tmp_path / "hest")
    args = ["run", "data=hest", f"data.root={root}", "features=handcrafted", "encoder=gnn", "generator=regression",
            "prior=zero", "trainer.max_epochs=2", "trainer.enable_progress_bar=false", "eval.ridge=false"]
    monkeypatch.chdir(tmp_path)
    assert main([*args, "output_dir=full"]) == 0
    real = stgen.run.train_fold
    calls = []

    def interrupted(cfg, bundle, fold, fold_dir):
        calls.append(fold.name)
        if fold.name == "fold1":
            raise KeyboardInterrupt  # Ctrl-C (or a pre-emption) while the second fold trains
        return real(cfg, bundle, fold, fold_dir)

    monkeypatch.setattr(stgen.run, "train_fold", interrupted)
    assert main([*args, "output_dir=cut"]) == 130
    assert (tmp_path / "cut.incomplete" / "fold0" / "fold_result.json").is_file()
    monkeypatch.setattr(stgen.run, "train_fold", lambda *a: calls.append(a[2].name) or real(*a))
    assert main(["run", "resume=cut.incomplete"]) == 0
    assert calls == ["fold0", "fold1", "fold1"]  # the finished fold was not trained again
    full = json.loads((tmp_path / "full" / "metrics.json").read_text())
    cut = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    for a, b in zip(full["folds"], cut["folds"], strict=True):
        for key in ("fold", "best_epoch", "pearson", "mse"):
            assert a[key] == b[key], (key, a[key], b[key])
    assert sorted(p.name for p in (tmp_path / "cut").iterdir()) == sorted(p.name for p in (tmp_path / "full").iterdir())
