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


def test_help_and_version_import_neither_torch_nor_lightning(run_python):
    code = ("import sys\nfrom stgen.cli import main\nfor argv in (['--help'], ['--version'], ['run', '--help']):\n"
            "    try:\n        main(argv)\n    except SystemExit as e:\n        assert e.code == 0, e.code\n"
            "print('HEAVY', [m for m in ('torch', 'pytorch_lightning', 'lightning', 'hydra') if m in sys.modules])")
    out = run_python(code)
    assert "HEAVY []" in out and "stgen 0.1.0" in out and "--cfg" in out


def test_list_is_plain_text_and_describe_shows_parameter_docs():
    res = stgen("list")
    assert res.returncode == 0
    assert "``" not in res.stdout and ":class:" not in res.stdout and ":mod:" not in res.stdout
    assert "stgen.data.simulate" in res.stdout  # was :mod:`stgen.data.simulate`
    assert "pytorch_lightning" not in res.stderr
    res = stgen("describe", "encoders", "gnn")  # kind aliases come from the registry table
    assert res.returncode == 0
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("encoder.k "))
    assert "neighbours per spot" in line
    res = stgen("describe", "encodr", "gnn")
    assert res.returncode == 2 and "Did you mean 'encoder'" in res.stderr


def test_cfg_job_prints_the_composed_config_and_runs_nothing(tmp_path, capsys):
    from omegaconf import OmegaConf

    assert main(["run", "--cfg", "job", "encoder=gnn", "encoder.k=12", f"output_dir={tmp_path / 'x'}"]) == 0
    cfg = OmegaConf.create(capsys.readouterr().out)
    assert cfg.encoder.name == "gnn" and cfg.encoder.k == 12 and "k" not in cfg.data
    assert not (tmp_path / "x").exists()
    assert main(["run", "--cfg", "job", "-m", "encoder=gnn,mlp"]) == 0
    assert capsys.readouterr().out.count("# encoder=") == 2
    assert main(["run", "--cfg", "job", "encoder=gnn,mlp"]) == 2  # a sweep without -m
    assert main(["run", "--cfg", "job", "data.k=5"]) == 2


def test_run_outputs_tell_the_truth_and_predict_uses_the_checkpoint_settings(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "encoder=gnn", "encoder.k=6", "generator=regression", "prior=zinb", *TINY,
                 "trainer.max_epochs=2", f"output_dir={out}"]) == 0
    printed = capsys.readouterr().out
    # a regression run does not claim a prior it ignores
    assert "prior=zinb" not in printed.split("\n", 2)[1] and "no prior" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    fold = metrics["folds"][0]
    # with one fold the run-level file keeps the fold's per-slide Pearson and names its slides
    assert set(fold["per_slide"]) == set(fold["test_slides"]) and fold["val_slides"]
    assert not set(fold["val_slides"]) & set(fold["test_slides"]) and fold["test_patients"]
    assert 1 <= fold["best_epoch"] <= fold["epochs"] == 2  # epochs are counted from 1
    per_slide_line = next(ln for ln in printed.splitlines() if ln.startswith(f"{fold['fold']}: per-slide"))
    assert all(s in per_slide_line for s in fold["test_slides"] + fold["val_slides"])
    listed = printed.split("Outputs: ")[1].split("(")[1].split(")")[0].split(", ")
    assert "per_gene.csv" in listed and all((out / name.rstrip("/")).exists() for name in listed)
    csv_header = (out / "metrics.csv").read_text().splitlines()[0]
    assert "val_slides" in csv_header and "per_slide" not in csv_header

    import stgen

    assert stgen.load(out / "checkpoints" / "best.ckpt").model.encoder.graph_k == 6
    src = next((out / "predictions").glob("*.h5ad"))
    assert main(["predict", str(out / "checkpoints" / "best.ckpt"), str(src), "-o", str(tmp_path / "p"),
                 "--k", "6"]) == 2
    assert not (tmp_path / "p").exists()
    assert main(["predict", str(out / "checkpoints" / "best.ckpt"), str(src), "-o", str(tmp_path / "p")]) == 0
    res = ad.read_h5ad(tmp_path / "p" / src.name)
    assert res.uns["stgen"]["n_samples"] == 1 and "stgen_std" not in res.layers  # the generator's default


def test_multi_fold_outputs_keep_each_folds_metrics(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("hest_fixture", Path(__file__).parent / "data" / "test_hest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    root = mod.make_hest_folder(tmp_path / "bench")
    out = tmp_path / "run"
    assert main(["run", "data=hest", f"data.root={root}", "features=handcrafted", "encoder=mlp",
                 "generator=regression", "trainer.max_epochs=1", "train.crops_per_slide=2", "eval.ridge=false",
                 "trainer.enable_progress_bar=false", f"output_dir={out}"]) == 0
    printed = capsys.readouterr().out
    top = json.loads((out / "metrics.json").read_text())
    for row in top["folds"]:
        own = json.loads((out / row["fold"] / "metrics.json").read_text())
        assert own["per_slide"] == row["per_slide"] and own["val_slides"] == row["val_slides"]
        assert f"{row['fold']}: per-slide test Pearson" in printed
    outputs = printed.split("Outputs: ")[1]
    assert "per_gene.csv" not in outputs.split(";")[0]  # not claimed at the top level
    assert "in each fold folder (fold0, fold1): " in outputs and "per_gene.csv" in outputs.split(";")[1]
    assert not (out / "per_gene.csv").exists() and (out / "fold0" / "per_gene.csv").exists()
