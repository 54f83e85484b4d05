"""One training + evaluation run from a resolved config, and multiruns over sweeps."""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from stgen.config import compose_run
from stgen.data.source import DATASETS, DataBundle, Fold
from stgen.io import h5ad_safe, write_h5ad

SELECTION_LABELS = {"val": "validation split of the training slides",
                    "test": "TEST FOLD (as the released STFlow code; optimistic)"}


@dataclass
class RunResult:
    """Outcome of one run (one config, possibly several folds).

    Args:
        output_dir: where everything was written.
        label: short description (the non-default overrides).
        rows: one metrics row per fold.
        summary: mean (and std over folds) of the main metrics.
        primary: False in a DDP worker process (rank > 0), which writes and reports nothing.
    """

    output_dir: Path
    label: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    primary: bool = True


def model_spec(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    return {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("encoder", "generator", "prior")}


def preprocess_spec(cfg: DictConfig) -> Any:
    """The run's :class:`~stgen.preprocess.PreprocessSpec` (standardisation and target)."""
    from stgen.preprocess import PreprocessSpec

    pp = cfg.get("preprocess")
    return PreprocessSpec() if pp is None else PreprocessSpec(standardize=bool(pp.standardize), target=str(pp.target))


def build_data(cfg: DictConfig) -> DataBundle:
    """The one place a data config becomes a :class:`DataBundle`."""
    params = OmegaConf.to_container(cfg.data, resolve=True)
    name = params.pop("name")
    source = DATASETS.get(name)(**params)
    if cfg.get("features") is not None and hasattr(source, "features_spec"):
        source.features_spec = OmegaConf.to_container(cfg.features, resolve=True)
    bundle = source.load()
    bundle.validate()
    return bundle


def new_output_dir(cfg: DictConfig, label: str) -> Path:
    if cfg.output_dir:
        out = Path(cfg.output_dir)
    else:
        stamp = datetime.now().strftime("%Y-%m-%d/%H-%M-%S")
        out = Path("outputs") / f"{stamp}-{label}"
        i = 1
        while out.exists():
            out = Path(f"{out}-{i}")
            i += 1
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"output directory {out} exists and is not empty; choose another output_dir")
    return out


def run_label(overrides: Sequence[str]) -> str:
    keep = [o for o in overrides if not o.startswith(("output_dir", "trainer.enable_progress_bar"))]
    label = "_".join(o.replace("=", "-").replace("/", "-").replace(".", "-") for o in keep) or "default"
    return label[:120]


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=float))
    os.replace(tmp, path)


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def train_fold(cfg: DictConfig, bundle: DataBundle, fold: Fold, fold_dir: Path) -> dict[str, Any]:
    """Fit on ``fold.train``, select on ``fold.val`` (or the test fold when asked), test on ``fold.test``."""
    import pytorch_lightning as pl
    import torch
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger

    from stgen.data.datamodule import SlideDataModule
    from stgen.lit import STGenLightning
    from stgen.preprocess import apply_target, fit_scaler

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    select_on = cfg.eval.select_on
    if select_on not in SELECTION_LABELS:
        raise ValueError(f"eval.select_on must be one of {list(SELECTION_LABELS)}, got {select_on!r}")
    val_ids = fold.val if select_on == "val" else fold.test  # run() checked that every fold has some
    s = bundle.slides
    dm = SlideDataModule(
        [s[i] for i in fold.train], [s[i] for i in val_ids], [s[i] for i in fold.test], bundle.genes,
        k=cfg.data.k, feature_key=bundle.feature_key, crops_per_slide=cfg.train.crops_per_slide,
        batch_size=cfg.train.batch_size, crop_min=cfg.train.crop_min, num_workers=cfg.train.num_workers,
    )
    pp = preprocess_spec(cfg)
    if pp.target != "log1p":
        for split, ids in (("train", fold.train), ("val", val_ids), ("test", fold.test)):
            apply_target(dm.graphs[split], [s[i] for i in ids], bundle.genes, pp.target)
    module = STGenLightning(model_spec(cfg), in_dim=dm.in_dim, genes=bundle.genes, lr=cfg.optim.lr,
                            weight_decay=cfg.optim.weight_decay, eval_steps=cfg.eval.steps,
                            eval_n_samples=cfg.eval.n_samples, eval_seed=cfg.eval.seed,
                            preprocess=pp.to_dict())
    if pp.standardize:
        fit_scaler(module.model.scaler, dm.graphs["train"])  # training slides only, never val/test
    counts = torch.from_numpy(np.expm1(np.concatenate([g.y.numpy() for g in dm.graphs["train"]])))
    module.model.prior.fit(counts.round())
    ckpt_cb = ModelCheckpoint(dirpath=fold_dir / "checkpoints", filename="best", monitor="val/pearson",
                              mode="max", save_top_k=1, save_last=True)
    tcfg = cfg.trainer
    trainer = pl.Trainer(
        max_epochs=tcfg.max_epochs, accelerator=tcfg.accelerator, devices=tcfg.devices, strategy=tcfg.strategy,
        num_nodes=tcfg.num_nodes, precision=tcfg.precision, gradient_clip_val=tcfg.gradient_clip_val,
        log_every_n_steps=tcfg.log_every_n_steps, enable_progress_bar=tcfg.enable_progress_bar,
        check_val_every_n_epoch=tcfg.check_val_every_n_epoch, deterministic=tcfg.deterministic,
        callbacks=[ckpt_cb, EarlyStopping(monitor="val/pearson", mode="max", patience=tcfg.patience)],
        logger=CSVLogger(fold_dir, name="logs", version=""), default_root_dir=fold_dir,
        enable_model_summary=False,
    )
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*Trying to infer the `batch_size`.*")
        trainer.fit(module, datamodule=dm, ckpt_path=cfg.ckpt_path)
        fit_s = time.perf_counter() - t0
        best = ckpt_cb.best_model_path or None
        trainer.test(module, datamodule=dm, ckpt_path=best, verbose=False)
    ev = module.results["test"]
    if not trainer.is_global_zero:
        return {"fold": fold.name, **ev.summary()}
    row: dict[str, Any] = {
        "fold": fold.name, **ev.summary(), "best_epoch": _best_epoch(ckpt_cb), "epochs": trainer.current_epoch,
        "fit_seconds": round(fit_s, 1), "selection": select_on,
        "val_pearson": float(ckpt_cb.best_model_score) if ckpt_cb.best_model_score is not None else float("nan"),
    }
    from stgen.metrics import calibration_of_predictions

    row.update(calibration_of_predictions(module.predictions.get("test", [])).summary())
    if cfg.eval.ridge:
        from stgen.baselines import ridge_fold_pearson

        ridge_r, ridge_genes = ridge_fold_pearson(bundle, fold, target=pp.target)
        row["ridge_pearson"] = ridge_r
    if pp.target == "log1p":
        from stgen.baselines import oracle_fold_pearson

        oracle = oracle_fold_pearson(bundle, fold)
        if oracle == oracle:
            row["oracle_pearson"] = oracle
    _write_json(fold_dir / "metrics.json", {**row, "per_slide": ev.per_slide,
                                             "selection_label": SELECTION_LABELS[select_on]})
    per_gene = [{"gene": g, "pearson": float(r)} for g, r in zip(ev.genes, ev.per_gene, strict=True)]
    if cfg.eval.ridge:
        for item, r in zip(per_gene, ridge_genes, strict=True):
            item["ridge_pearson"] = float(r)
    _write_csv(fold_dir / "per_gene.csv", per_gene)
    _write_predictions(cfg, bundle, module, fold_dir / "predictions")
    return row


def _best_epoch(cb: Any) -> int | None:
    path = getattr(cb, "best_model_path", "")
    if not path:
        return None
    import torch

    return int(torch.load(path, map_location="cpu", weights_only=False).get("epoch", -1))


def _write_predictions(cfg: DictConfig, bundle: DataBundle, module: Any, out: Path) -> None:
    from stgen.preprocess import TARGET_DESCRIPTIONS

    out.mkdir(parents=True, exist_ok=True)
    for pred in module.predictions.get("test", []):
        src = bundle.slides[pred.slide_id]
        a = src[:, bundle.genes].copy()
        a.layers["stgen_mean"] = pred.mean.astype(np.float32)
        if pred.std is not None:
            a.layers["stgen_std"] = pred.std.astype(np.float32)
        a.uns["stgen"] = {**dict(src.uns.get("stgen", {})), "config": OmegaConf.to_container(cfg, resolve=True),
                          "genes": list(bundle.genes), "target": preprocess_spec(cfg).target,
                          "target_description": TARGET_DESCRIPTIONS[preprocess_spec(cfg).target]}
        a.uns["stgen"] = h5ad_safe(dict(a.uns["stgen"]))
        write_h5ad(a, out / f"{pred.slide_id}.h5ad")


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"folds": len(rows)}
    for key in ("pearson", "pearson_slide_mean", "mse", "ridge_pearson"):
        vals = np.array([r.get(key, np.nan) for r in rows], dtype=float)
        out[key] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
        out[f"{key}_std"] = float(np.nanstd(vals)) if len(vals) > 1 else 0.0
    out["fit_seconds"] = float(sum(r.get("fit_seconds", 0.0) for r in rows))
    return out


RUN_DIR_ENV = "STGEN_RUN_DIR"


def launched_rank() -> int:
    """Rank of this process when a distributed launcher started it (0 for a plain or the first process).

    Lightning's DDP launcher re-runs the command for ranks > 0 with ``LOCAL_RANK``/``NODE_RANK`` set;
    cluster launchers set ``RANK`` (torchrun) or ``SLURM_PROCID``.
    """
    for var in ("RANK", "SLURM_PROCID"):
        if os.environ.get(var, "").isdigit() and int(os.environ[var]) > 0:
            return int(os.environ[var])
    local, node = os.environ.get("LOCAL_RANK", "0"), os.environ.get("NODE_RANK", "0")
    return int(local) + int(node) if local.isdigit() and node.isdigit() else 0


def _run_worker(cfg: DictConfig, bundle: DataBundle, label: str, out: Path) -> RunResult:
    """A rank > 0 process of a distributed run: trains in step with rank 0, writes nothing of its own."""
    partial = Path(os.environ.get(RUN_DIR_ENV) or out.with_name(out.name + ".incomplete"))
    for fold in bundle.folds:
        fold_dir = partial if len(bundle.folds) == 1 else partial / fold.name
        train_fold(cfg, bundle, fold, fold_dir)
    return RunResult(output_dir=out, label=label, primary=False)


def run(cfg: DictConfig, overrides: Sequence[str] = (), out_dir: Path | None = None) -> RunResult:
    """Train and evaluate every fold of the configured dataset; write all outputs to ``out_dir``.

    Under DDP only rank 0 creates, writes and renames the output folder; the other ranks train in step.
    """
    label = run_label(overrides)
    if launched_rank() > 0:
        out = Path(os.environ[RUN_DIR_ENV]).with_suffix("") if os.environ.get(RUN_DIR_ENV) else Path(".")
        return _run_worker(cfg, build_data(cfg), label, out)
    out = out_dir or new_output_dir(cfg, label)
    bundle = build_data(cfg)  # data errors surface before any output is written
    if cfg.ckpt_path and len(bundle.folds) > 1:
        raise ValueError(f"ckpt_path resumes one fold, but the data has {len(bundle.folds)} folds; choose the fold of "
                         "the checkpoint (e.g. data.fold=<i> for data=hest)")
    if cfg.ckpt_path and not Path(cfg.ckpt_path).is_file():
        raise FileNotFoundError(f"ckpt_path {cfg.ckpt_path} does not exist")
    if cfg.eval.select_on == "val":
        lacking = [f.name for f in bundle.folds if not f.val]
        if lacking:
            raise ValueError(
                f"fold(s) {', '.join(lacking)} have no validation slides to select the model on (too few training "
                "slides or patients); use leave-one-section-out folds, add slides, or set eval.select_on=test "
                "(selection on the test fold, labelled as such)"
            )
    from stgen.model import build_model

    build_model(model_spec(cfg), in_dim=next(iter(bundle.slides.values())).obsm[bundle.feature_key].shape[1],
                n_genes=len(bundle.genes))  # component errors surface before any output is written
    partial = out.with_name(out.name + ".incomplete")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    os.environ[RUN_DIR_ENV] = str(partial.resolve())  # inherited by DDP worker processes
    started = False
    try:
        (partial / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        rows = []
        for fold in bundle.folds:
            fold_dir = partial if len(bundle.folds) == 1 else partial / fold.name
            fold_dir.mkdir(parents=True, exist_ok=True)
            started = True
            rows.append({"run": label, **train_fold(cfg, bundle, fold, fold_dir)})
        summary = summarise(rows)
        _write_json(partial / "metrics.json", {"run": label, "summary": summary, "folds": rows,
                                               "data": bundle.info})
        _write_csv(partial / "metrics.csv", rows)
    except BaseException:
        if not started:
            shutil.rmtree(partial, ignore_errors=True)
        raise
    if out.exists():
        out.rmdir()
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(partial, out)
    return RunResult(output_dir=out, label=label, rows=rows, summary=summary)


def run_overrides(overrides: Sequence[str]) -> RunResult:
    return run(compose_run(overrides), overrides)
