from __future__ import annotations

import json
import subprocess
import sys

import anndata as ad
import numpy as np
import pytest

from stgen.cli import main

TINY = ["data.n_slides=4", "data.n_patients=4", "data.n_spots=200", "data.n_genes=10", "data.feature_dim=16",
        "train.crops_per_slide=10", "trainer.max_epochs=6", "optim.lr=0.003", "trainer.enable_progress_bar=false",
        "encoder.hidden_dim=32"]


def stgen(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stgen", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_end_to_end_run_writes_outputs_and_beats_a_constant(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["run", "encoder=gnn", "generator=regression", "prior=zero", *TINY, f"output_dir={out}"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "pearson" in printed and str(out) in printed
    for name in ("config.yaml", "metrics.json", "metrics.csv", "per_gene.csv", "checkpoints/best.ckpt"):
        assert (out / name).exists(), name
    preds = sorted((out / "predictions").glob("*.h5ad"))
    assert preds
    metrics = json.loads((out / "metrics.json").read_text())
    fold = metrics["folds"][0]
    pred = ad.read_h5ad(preds[0])
    truth = np.log1p(np.asarray(pred.X))
    mean = pred.layers["stgen_mean"]
    assert mean.shape == truth.shape and np.isfinite(mean).all()
    # a constant predictor (each gene's mean) has no correlation and a larger error than the model
    const_mse = float(((truth - truth.mean(0)) ** 2).mean())
    assert fold["pearson"] > 0.05
    assert float(((mean - truth) ** 2).mean()) < const_mse * 1.5
    assert not list(tmp_path.glob("*.incomplete"))


def test_checkpoint_reloads_the_model(tmp_path):
    from stgen.lit import STGenLightning

    out = tmp_path / "run"
    assert main(["run", "encoder=mlp", "generator=flow", "prior=gaussian", *TINY, "trainer.max_epochs=1",
                 f"output_dir={out}"]) == 0
    module = STGenLightning.load_from_checkpoint(out / "checkpoints" / "best.ckpt", map_location="cpu")
    assert type(module.model.encoder).__name__ == "MLPEncoder"
    assert module.hparams.sources["encoder"]["source"] == "stgen"
    assert len(module.genes) == 10


def test_unknown_component_exits_nonzero_and_writes_nothing(tmp_path):
    res = stgen("run", "encoder=nope", cwd=tmp_path)
    assert res.returncode != 0
    assert "Valid encoders:" in res.stderr and "gnn" in res.stderr
    assert res.stderr.count("error") == 1
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("override", ["encoder.hidden_dimm=3", "trainer.max_epochs=abc"])
def test_bad_keys_and_values_exit_nonzero_before_work(tmp_path, override):
    rc = main(["run", "encoder=gnn", override, f"output_dir={tmp_path / 'x'}"])
    assert rc == 2
    assert not (tmp_path / "x").exists()


def test_existing_output_dir_is_never_overwritten(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "precious.txt").write_text("keep")
    rc = main(["run", "encoder=gnn", "generator=regression", *TINY, f"output_dir={out}"])
    assert rc == 2 and (out / "precious.txt").read_text() == "keep"


def test_list_and_describe():
    res = stgen("list")
    assert res.returncode == 0
    for name in ("gnn", "mlp", "flow", "regression", "zero", "gaussian", "simulated"):
        assert name in res.stdout
    res = stgen("describe", "encoder", "gnn")
    assert res.returncode == 0 and "encoder.hidden_dim" in res.stdout and "128" in res.stdout
    res = stgen("describe", "encoder", "gnm")
    assert res.returncode == 2 and "Did you mean 'gnn'" in res.stderr


def test_multirun_writes_one_combined_table(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc = main(["run", "-m", "encoder=gnn,mlp", "generator=regression", "prior=zero", *TINY,
               "trainer.max_epochs=1"])
    assert rc == 0
    tables = list(tmp_path.glob("outputs/multirun/*/*/results.csv"))
    assert len(tables) == 1
    lines = tables[0].read_text().strip().splitlines()
    assert len(lines) == 3 and "encoder-gnn" in lines[1] and "encoder-mlp" in lines[2]
    assert "All runs" in capsys.readouterr().out


def test_seed_sweep_is_summarised_over_seeds(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc = main(["run", "-m", "encoder=mlp", "generator=regression", "prior=zero", *TINY, "trainer.max_epochs=1",
               "seed=0,1"])
    assert rc == 0
    table = next(tmp_path.glob("outputs/multirun/*/*/results_over_seeds.csv")).read_text().strip().splitlines()
    assert len(table) == 2 and table[1].startswith("encoder-mlp") and ",2," in table[1]
    assert "Mean +- std over seeds" in capsys.readouterr().out


def test_resume_from_last_checkpoint(tmp_path):
    first = tmp_path / "first"
    assert main(["run", "encoder=mlp", "generator=regression", "prior=zero", *TINY, "trainer.max_epochs=1",
                 f"output_dir={first}"]) == 0
    resumed = tmp_path / "resumed"
    ckpt = first / "checkpoints" / "last.ckpt"
    assert main(["run", "encoder=mlp", "generator=regression", "prior=zero", *TINY, "trainer.max_epochs=2",
                 f"ckpt_path={ckpt}", f"output_dir={resumed}"]) == 0
    metrics = json.loads((resumed / "metrics.json").read_text())
    assert metrics["folds"][0]["epochs"] == 2
    assert main(["run", "encoder=mlp", *TINY, f"ckpt_path={tmp_path / 'missing.ckpt'}",
                 f"output_dir={tmp_path / 'x'}"]) == 2
    assert not (tmp_path / "x").exists()


def test_ddp_on_two_cpu_processes_writes_one_folder(tmp_path):
    """Lightning's DDP launcher re-runs the command for rank 1; only rank 0 writes and reports."""
    out = tmp_path / "ddp"
    res = stgen("run", "encoder=mlp", "generator=regression", "prior=zero", "trainer.strategy=ddp",
                "trainer.devices=2", "trainer.max_epochs=1", "data.n_spots=100", "data.n_genes=8",
                "trainer.enable_progress_bar=false", f"output_dir={out}", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.count("Results:") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp"]
    metrics = json.loads((out / "metrics.json").read_text())
    preds = sorted((out / "predictions").glob("*.h5ad"))
    assert len(preds) == 2  # both test slides, though each rank evaluated one
    assert metrics["folds"][0]["n_spots"] == sum(ad.read_h5ad(p).n_obs for p in preds)
