from __future__ import annotations

import csv

import numpy as np

from stgen.ablate import merge_overrides, paired
from stgen.cli import main

TINY = ["data.n_slides=4", "data.n_patients=4", "data.n_spots=120", "data.n_genes=6", "data.feature_dim=8",
        "train.crops_per_slide=2", "trainer.max_epochs=1", "encoder.hidden_dim=16", "encoder.num_layers=1",
        "eval.ridge=true"]


def test_ablation_command_on_a_tiny_grid(tmp_path, capsys):
    out = tmp_path / "abl"
    rc = main(["ablate", *TINY, "-o", str(out), "--variants", "regression", "steps_1", "stflow_samples8",
               "--seeds", "0", "1"])
    assert rc == 0, capsys.readouterr().err
    rows = list(csv.DictReader((out / "rows.csv").open()))
    by = {}
    for r in rows:
        by.setdefault(r["variant"], []).append(r)
    # stflow is added as the reference; one row per fold (1) x seed (2); ridge paired with stflow's seeds
    assert {k: len(v) for k, v in by.items()} == {"stflow": 2, "regression": 2, "steps_1": 2,
                                                  "stflow_samples8": 2, "ridge": 2, "stflow_ensemble2": 1,
                                                  "regression_ensemble2": 1, "stflow_ensemble2_count_noise": 1,
                                                  "regression_ensemble2_count_noise": 1}
    assert all(np.isfinite(float(r["pearson"])) for r in rows)
    # 8 samples give a spread, hence calibration figures; one sample does not
    assert all(np.isfinite(float(r["cov80"])) for r in by["stflow_samples8"])
    assert all(r["cov80"] in ("", "nan") for r in by["stflow"])
    # NB count noise widens the ensemble's intervals
    assert float(by["stflow_ensemble2_count_noise"][0]["cov80"]) > float(by["stflow_ensemble2"][0]["cov80"])
    report = (out / "report.md").read_text()
    assert "| regression |" in report and "p (Wilcoxon)" in report and "stgen ablate" in report
    assert (out / "ablation.png").stat().st_size > 1000
    summary = {r["variant"]: r for r in csv.DictReader((out / "summary.csv").open())}
    assert summary["regression"]["n_pairs"] == "2"
    # the re-evaluated S = 1 differs from the S = 5 STFlow it comes from (same checkpoints)
    assert any(a["pearson"] != b["pearson"] for a, b in zip(by["steps_1"], by["stflow"], strict=True))
    # never overwrite; --resume reuses the runs and rewrites the report
    assert main(["ablate", *TINY, "-o", str(out), "--variants", "regression", "--seeds", "0", "1"]) == 2
    assert main(["ablate", *TINY, "-o", str(out), "--variants", "regression", "--seeds", "0", "1",
                 "--resume"]) == 0
    assert not any(p.name.endswith(".incomplete") for p in (out / "runs").iterdir())


def test_unknown_variant_is_a_clear_error(tmp_path, capsys):
    assert main(["ablate", *TINY, "-o", str(tmp_path / "x"), "--variants", "nope"]) == 2
    assert "unknown variant" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_paired_statistics_and_override_merge():
    rows = [{"variant": v, "fold": f, "seed": s, "pearson": base + (0.1 if v == "b" else 0.0) + 0.01 * s}
            for v in ("stflow", "b") for f, base in (("f0", 0.3), ("f1", 0.5)) for s in range(3)]
    p = paired(rows, "b")
    assert p["n_pairs"] == 6 and p["wins"] == 6 and abs(p["diff_mean"] - 0.1) < 1e-12
    assert merge_overrides(["encoder=gnn", "seed=1"], ["encoder=mlp"]) == ["seed=1", "encoder=mlp"]
