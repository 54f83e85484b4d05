"""One training + evaluation run from a resolved config, and multiruns over sweeps."""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from stgen.build import build_data, build_trainer, model_spec, preprocess_spec
from stgen.data.slide import patient_id
from stgen.data.source import DataBundle, Fold
from stgen.errors import (
    ConfigInputError,
    DataInputError,
    MissingInputError,
    OutputExistsError,
    one_line,
    safe_name,
)
from stgen.io import atomic_write, write_h5ad

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
        config: the config the run used (the saved one for a resumed run).
    """

    output_dir: Path
    label: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    primary: bool = True
    config: DictConfig | None = None


def validate_run_config(cfg: DictConfig) -> None:
    """Check the training options before any data is read or any folder is created.

    Raises:
        ConfigInputError: naming the option, the value and the valid range.
    """

    checks = [
        ("trainer.max_epochs", cfg.trainer.max_epochs, lambda v: v >= 1, ">= 1"),
        ("trainer.patience", cfg.trainer.patience, lambda v: v >= 0, ">= 0"),
        ("trainer.check_val_every_n_epoch", cfg.trainer.check_val_every_n_epoch, lambda v: v >= 1, ">= 1"),
        ("trainer.log_every_n_steps", cfg.trainer.log_every_n_steps, lambda v: v >= 1, ">= 1"),
        ("trainer.gradient_clip_val", cfg.trainer.gradient_clip_val, lambda v: v is None or v >= 0, ">= 0 or null"),
        ("train.batch_size", cfg.train.batch_size, lambda v: v >= 1, ">= 1"),
        ("train.crops_per_slide", cfg.train.crops_per_slide, lambda v: v >= 0, ">= 0 (0: whole slides)"),
        ("train.crop_min", cfg.train.crop_min, lambda v: 0 <= v < 1, "in [0, 1)"),
        ("train.num_workers", cfg.train.num_workers, lambda v: v >= 0, ">= 0"),
        ("optim.lr", cfg.optim.lr, lambda v: v > 0 and v == v, "> 0"),
        ("optim.weight_decay", cfg.optim.weight_decay, lambda v: v >= 0, ">= 0"),
    ]
    for key, value, ok, valid in checks:
        if not ok(value):
            raise ConfigInputError(f"{key}={value} is invalid; it must be {valid}")
    if cfg.eval.select_on not in SELECTION_LABELS:
        raise ConfigInputError(f"eval.select_on={cfg.eval.select_on!r} is invalid; choose one of {list(SELECTION_LABELS)}")
    t = cfg.trainer
    try:  # Lightning checks accelerator, devices, precision and strategy when a Trainer is built
        build_trainer(t, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False)
    except Exception as exc:  # noqa: BLE001 - any refusal of these options is about the options
        raise ConfigInputError(
            f"trainer options accelerator={t.accelerator} devices={t.devices} strategy={t.strategy} "
            f"precision={t.precision} are refused by Lightning ({one_line(exc, 200)}); fix the trainer.* overrides"
        ) from exc


INCOMPLETE = ".incomplete"
#: written into a fold folder when the fold finished (a resumed run skips it)
FOLD_DONE = "fold_result.json"
#: label, overrides, process id and start time of a run, written when its folder is claimed
RUN_INFO = "run.json"


def partial_dir(out: Path) -> Path:
    """The folder a run writes into until it finishes: ``<out>.incomplete``."""
    return out.with_name(out.name + INCOMPLETE)


def check_output_dir(cfg: DictConfig) -> None:
    """Refuse an ``output_dir`` that holds a finished or an unfinished run (before any work is done)."""
    if not cfg.output_dir:
        return
    out = Path(cfg.output_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputExistsError(f"output directory {out} exists and is not empty; choose another output_dir")
    if partial_dir(out).exists():
        raise OutputExistsError(
            f"{partial_dir(out)} holds an unfinished run (running now, or killed); continue it with "
            f"`stgen run resume={partial_dir(out)}`, or remove it, or choose another output_dir"
        )


def claim_output_dir(cfg: DictConfig, label: str, out: Path | None = None) -> tuple[Path, Path]:
    """Atomically claim a run folder: ``(final path, the .incomplete folder now owned by this run)``.

    The ``.incomplete`` folder is created with an exclusive ``mkdir``, so two runs started at the same
    moment never share (or delete) a folder: with an automatic name the loser takes the next free
    suffix (``-1``, ``-2``...); with an explicit ``output_dir`` it stops with an error.
    """
    explicit = out is not None or bool(cfg.output_dir)
    base = out if out is not None else (
        Path(cfg.output_dir) if cfg.output_dir
        else Path("outputs") / f"{datetime.now().strftime('%Y-%m-%d/%H-%M-%S')}-{label}")
    for i in range(10_000):
        cand = base if i == 0 else Path(f"{base}-{i}")
        partial = partial_dir(cand)
        if not (cand.exists() and (not cand.is_dir() or any(cand.iterdir()))):
            partial.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.mkdir(partial)
            except FileExistsError:
                pass
            else:
                if not (cand.exists() and any(cand.iterdir())):  # finished by another run in between
                    return cand, partial
                partial.rmdir()
        if explicit:
            check_output_dir(OmegaConf.create({"output_dir": str(cand)}))
            raise OutputExistsError(f"output directory {cand} is taken; choose another output_dir")
    raise OutputExistsError(f"no free run folder next to {base}; clean up outputs/")


def new_output_dir(cfg: DictConfig, label: str) -> Path:
    """The folder a new run would write to (checked, not claimed; :func:`claim_output_dir` claims it)."""
    if cfg.output_dir:
        check_output_dir(cfg)
        return Path(cfg.output_dir)
    stamp = datetime.now().strftime("%Y-%m-%d/%H-%M-%S")
    out = Path("outputs") / f"{stamp}-{label}"
    i = 1
    while out.exists() or partial_dir(out).exists():
        out = Path(f"{out}-{i}")
        i += 1
    return out


def run_label(overrides: Sequence[str]) -> str:
    keep = [o for o in overrides if not o.startswith(("output_dir", "trainer.enable_progress_bar"))]
    label = "_".join(o.replace("=", "-").replace("/", "-").replace(".", "-") for o in keep) or "default"
    return label[:120]


def _write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2, default=float)))


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)

    atomic_write(path, write)


def train_fold(cfg: DictConfig, bundle: DataBundle, fold: Fold, fold_dir: Path) -> dict[str, Any]:
    """Fit on ``fold.train``, select on ``fold.val`` (or the test fold when asked), test on ``fold.test``."""
    import pytorch_lightning as pl
    import torch
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger

    from stgen.build import graph_k
    from stgen.callbacks import RngState
    from stgen.data.datamodule import SlideDataModule
    from stgen.lit import SlidePrediction, STGenLightning
    from stgen.preprocess import apply_target, fit_scaler

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    select_on = cfg.eval.select_on
    if select_on not in SELECTION_LABELS:
        raise ValueError(f"eval.select_on must be one of {list(SELECTION_LABELS)}, got {select_on!r}")
    val_ids = fold.val if select_on == "val" else fold.test  # run() checked that every fold has some
    s = bundle.slides
    spec = model_spec(cfg)
    dm = SlideDataModule(
        [s[i] for i in fold.train], [s[i] for i in val_ids], [s[i] for i in fold.test], bundle.genes,
        graph_k=graph_k(spec), feature_key=bundle.feature_key, crops_per_slide=cfg.train.crops_per_slide,
        batch_size=cfg.train.batch_size, crop_min=cfg.train.crop_min, num_workers=cfg.train.num_workers,
    )
    pp = preprocess_spec(cfg)
    if pp.target != "log1p":
        for split, ids in (("train", fold.train), ("val", val_ids), ("test", fold.test)):
            apply_target(dm.graphs[split], [s[i] for i in ids], bundle.genes, pp.target)
    module = STGenLightning(spec, in_dim=dm.in_dim, genes=bundle.genes, lr=cfg.optim.lr,
                            weight_decay=cfg.optim.weight_decay, eval_seed=cfg.eval.seed,
                            data_spec=bundle.spec.to_dict(), preprocess=pp.to_dict())
    if pp.standardize:
        fit_scaler(module.model.scaler, dm.graphs["train"])  # training slides only, never val/test
    counts = torch.from_numpy(np.expm1(np.concatenate([g.y.numpy() for g in dm.graphs["train"]])))
    module.model.prior.fit(counts.round())
    ckpt_cb = ModelCheckpoint(dirpath=fold_dir / "checkpoints", filename="best", monitor="val/pearson",
                              mode="max", save_top_k=1, save_last=True)
    resume_from = fold_checkpoint(cfg, fold_dir)
    tcfg = cfg.trainer
    trainer = build_trainer(
        tcfg,
        callbacks=[ckpt_cb, EarlyStopping(monitor="val/pearson", mode="max", patience=tcfg.patience), RngState()],
        logger=CSVLogger(fold_dir, name="logs", version=log_version(fold_dir, resume_from)), default_root_dir=fold_dir,
        enable_model_summary=False, num_sanity_val_steps=0 if resume_from else 2,
    )
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*Trying to infer the `batch_size`.*")
        trainer.fit(module, datamodule=dm, ckpt_path=resume_from, weights_only=True)
        fit_s = time.perf_counter() - t0
        best = ckpt_cb.best_model_path or None
        recal = recalibrate_spread(trainer, module, dm, best) if cfg.eval.recalibrate and select_on == "val" else None
        trainer.test(module, datamodule=dm, ckpt_path=None if recal is not None else best, verbose=False)
    ev = module.results["test"]
    if not trainer.is_global_zero:
        return {"fold": fold.name, **ev.summary()}
    row: dict[str, Any] = {
        "fold": fold.name, **ev.summary(), "best_epoch": _best_epoch(ckpt_cb), "epochs": trainer.current_epoch,
        "fit_seconds": round(fit_s, 1), "selection": select_on,
        "val_pearson": float(ckpt_cb.best_model_score) if ckpt_cb.best_model_score is not None else float("nan"),
        "train_slides": list(fold.train), "val_slides": list(val_ids), "test_slides": list(fold.test),
        "test_patients": sorted({patient_id(s[i]) or i for i in fold.test}),
    }
    from stgen.metrics import calibration_of_predictions

    test_items = module.predictions.get("test", [])
    row.update(calibration_of_predictions(test_items).summary())
    if recal is not None:  # coverage before the validation-fitted scale (the Spearman figures do not change)
        before = calibration_of_predictions([SlidePrediction(it.slide_id, it.mean, it.std / recal, it.true)
                                             for it in test_items if it.std is not None]).summary()
        row.update({f"{k}_uncal": before[k] for k in ("cov50", "cov80", "cov95")})
        row["spread_scale_median"] = float(np.median(recal))
    if cfg.eval.ridge:
        from stgen.baselines import ridge_fold_pearson

        ridge_r, ridge_genes = ridge_fold_pearson(bundle, fold, target=pp.target)
        row["ridge_pearson"] = ridge_r
    if pp.target == "log1p":
        from stgen.baselines import oracle_fold_pearson

        oracle = oracle_fold_pearson(bundle, fold)
        if oracle == oracle:
            row["oracle_pearson"] = oracle
    row["per_slide"] = dict(ev.per_slide)
    _write_json(fold_dir / "metrics.json", {**row, "selection_label": SELECTION_LABELS[select_on]})
    per_gene = [{"gene": g, "pearson": float(r)} for g, r in zip(ev.genes, ev.per_gene, strict=True)]
    if cfg.eval.ridge:
        for item, r in zip(per_gene, ridge_genes, strict=True):
            item["ridge_pearson"] = float(r)
    if recal is not None:
        for item, sc in zip(per_gene, recal, strict=True):
            item["spread_scale"] = float(sc)
    _write_csv(fold_dir / "per_gene.csv", per_gene)
    _write_predictions(cfg, bundle, module, fold_dir / "predictions")
    return row


def recalibrate_spread(trainer: Any, module: Any, dm: Any, best: str | None) -> np.ndarray | None:
    """Fit the per-gene spread scale of the selected model on the validation slides; None when it has no spread.

    Loads the best weights (``trainer.validate``), fits :class:`~stgen.recalibrate.SpreadScale` on the
    validation predictions and writes it into ``best`` (so ``stgen predict`` applies it). The module then
    holds the best weights and the fitted scale, ready for ``trainer.test`` without a checkpoint.
    """
    def spread(items: list[Any]) -> list[Any]:
        return [it for it in items if it.std is not None and float(np.abs(it.std).max(initial=0)) > 0]

    if best is None or not spread(module.predictions.get("val", [])):  # the last validation had no spread
        return None
    trainer.validate(module, datamodule=dm, ckpt_path=best, verbose=False)
    items = spread(module.predictions.get("val", []))
    if not items:
        return None
    scale = module.model.spread_scale
    # a checkpoint recalibrated before (a resumed fold) already scaled these spreads: undo it
    before = scale.scale.detach().cpu().numpy().astype(np.float64) if bool(scale.fitted) else 1.0
    scale.fit(np.concatenate([it.mean for it in items]), np.concatenate([it.std for it in items]) / before,
              np.concatenate([it.true for it in items]))
    if trainer.is_global_zero:
        store_spread_scale(Path(best), scale.state_dict(prefix="model.spread_scale."))
    return scale.scale.detach().cpu().numpy().astype(np.float64)


def store_spread_scale(path: Path, state: dict[str, Any]) -> None:
    """Write the fitted spread-scale buffers into the checkpoint ``path`` (atomically)."""
    import torch

    from stgen.checkpoint import read_checkpoint

    ckpt = read_checkpoint(path)
    ckpt["state_dict"].update({k: v.detach().cpu().clone() for k, v in state.items()})
    atomic_write(path, lambda tmp: torch.save(ckpt, tmp))


def _best_epoch(cb: Any) -> int | None:
    path = getattr(cb, "best_model_path", "")
    if not path:
        return None
    from stgen.checkpoint import read_checkpoint

    # Lightning counts epochs from 0; outputs count them from 1 (``epochs`` is the number trained)
    return int(read_checkpoint(path).get("epoch", -1)) + 1


def fold_checkpoint(cfg: DictConfig, fold_dir: Path) -> str | None:
    """The checkpoint a fold continues from: its own ``last.ckpt`` when resuming, else ``ckpt_path``."""
    if cfg.get("resume"):
        last = fold_dir / "checkpoints" / "last.ckpt"
        return str(last) if last.is_file() else None
    return cfg.ckpt_path or None


def log_version(fold_dir: Path, resume_from: str | None) -> str:
    """CSV log folder: ``logs/`` for a new fold; ``logs/resume-<i>/`` for each continuation (nothing lost)."""
    if not resume_from or not (fold_dir / "logs").exists():
        return ""
    i = 1
    while (fold_dir / "logs" / f"resume-{i}").exists():
        i += 1
    return f"resume-{i}"


def _write_predictions(cfg: DictConfig, bundle: DataBundle, module: Any, out: Path) -> None:
    """Each test slide with its predicted layers (one writer for runs and ``stgen predict``)."""
    from stgen.predict import Prediction, target_info, to_anndata

    out.mkdir(parents=True, exist_ok=True)
    info = {"config": OmegaConf.to_container(cfg, resolve=True), **target_info(module)}
    n_samples = int(module.model.generator.n_samples)
    for pred in module.predictions.get("test", []):
        result = Prediction(mean=pred.mean, std=pred.std, genes=list(bundle.genes), n_samples=n_samples)
        write_h5ad(to_anndata(bundle.slides[pred.slide_id], result, info),
                   out / f"{safe_name(pred.slide_id, 'slide id', 'predictions')}.h5ad")


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    """A metrics row for CSV: slide lists joined with ';' (per-slide Pearson stays in metrics.json)."""
    out = {}
    for key, value in row.items():
        if key == "per_slide":
            continue
        if isinstance(value, (list, tuple)):
            out[key] = ";".join(str(v) for v in value)
        else:
            out[key] = value
    return out


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
        if (fold_dir / FOLD_DONE).is_file():  # finished before an interruption: rank 0 skips it too
            continue
        train_fold(cfg, bundle, fold, fold_dir)
    return RunResult(output_dir=out, label=label, primary=False)


#: overrides that may accompany ``resume=`` (they change no result)
RESUME_ALLOWED = ("resume=", "trainer.enable_progress_bar=")


def resume_config(cfg: DictConfig, overrides: Sequence[str] = ()) -> DictConfig:
    """The saved config of the run named by ``cfg.resume``, with ``resume`` set to its ``.incomplete`` folder.

    ``resume`` may name the ``.incomplete`` folder or the run folder it will become.

    Raises:
        ConfigInputError: other overrides given with ``resume=`` (a resumed run keeps its config).
        MissingInputError: no unfinished run there.
    """
    extra = [o for o in overrides if not o.startswith(RESUME_ALLOWED)]
    if extra:
        raise ConfigInputError(
            f"resume= continues a run with the config it was started with; drop the other overrides {extra}"
        )
    given = Path(str(cfg.resume))
    partial = given if given.name.endswith(INCOMPLETE) else partial_dir(given)
    if not partial.is_dir():
        done = given.with_name(given.name[: -len(INCOMPLETE)]) if given.name.endswith(INCOMPLETE) else given
        if (done / "metrics.json").is_file():
            raise MissingInputError(f"resume={given}: the run {done} has finished; there is nothing to resume")
        raise MissingInputError(
            f"resume={given}: no unfinished run folder {partial}; give the <run>.incomplete folder of a run that "
            "was interrupted"
        )
    saved = partial / "config.yaml"
    if not saved.is_file():
        raise MissingInputError(f"resume={given}: {saved} is missing, so the run cannot be continued; start it anew")
    try:
        old = OmegaConf.load(saved)
        if not isinstance(old, DictConfig) or not all(k in old for k in ("encoder", "data", "trainer")):
            raise ValueError("not a stgen run config")
    except Exception as exc:  # noqa: BLE001 - an unreadable saved config is a damaged run folder
        raise DataInputError(f"resume={given}: {saved} cannot be read ({one_line(exc, 160)}); start the run anew") from exc
    old.resume = str(partial)
    old.ckpt_path = None  # an interrupted run continues from its own checkpoints
    for o in overrides:
        if o.startswith("trainer.enable_progress_bar="):
            old.trainer.enable_progress_bar = OmegaConf.from_dotlist([o]).trainer.enable_progress_bar
    return old


def run(cfg: DictConfig, overrides: Sequence[str] = (), out_dir: Path | None = None) -> RunResult:
    """Train and evaluate every fold of the configured dataset; write all outputs to ``out_dir``.

    Everything the user gave is checked first (options, data, model components); only then is the run
    folder claimed (``<out>.incomplete``, atomically) and training starts; the folder is renamed to
    ``<out>`` when every fold has finished. ``resume=<run>.incomplete`` continues an interrupted run in its
    own folder: finished folds are kept, the interrupted fold continues from its ``last.ckpt`` with the
    checkpoint and early-stopping state (best score, best checkpoint, patience) and random streams restored.

    Under DDP only rank 0 creates, writes and renames the output folder; the other ranks train in step.
    """
    label = run_label(overrides)
    if cfg.get("resume"):
        cfg = resume_config(cfg, overrides)
        try:
            label = json.loads((Path(cfg.resume) / RUN_INFO).read_text())["label"]
        except (OSError, ValueError, KeyError):
            label = partial_dir_target(Path(cfg.resume)).name
    if launched_rank() > 0:
        out = Path(os.environ[RUN_DIR_ENV]).with_suffix("") if os.environ.get(RUN_DIR_ENV) else Path(".")
        return _run_worker(cfg, build_data(cfg), label, out)
    validate_run_config(cfg)
    if not cfg.get("resume") and out_dir is None:
        check_output_dir(cfg)
    if cfg.ckpt_path and cfg.get("resume"):
        raise ConfigInputError("give either resume=<run folder> or ckpt_path=<checkpoint>, not both")
    if cfg.ckpt_path:
        from stgen.checkpoint import read_checkpoint

        read_checkpoint(cfg.ckpt_path)  # a missing, truncated or foreign file is refused before any work
    bundle = build_data(cfg)  # data errors surface before any output is written
    if cfg.ckpt_path and len(bundle.folds) > 1:
        raise ConfigInputError(
            f"ckpt_path resumes one fold, but the data has {len(bundle.folds)} folds; choose the fold of the "
            "checkpoint (e.g. data.fold=<i> for data=hest), or continue a whole run with resume=<run folder>")
    if cfg.eval.select_on == "val":
        lacking = [f.name for f in bundle.folds if not f.val]
        if lacking:
            raise DataInputError(
                f"fold(s) {', '.join(lacking)} have no validation slides to select the model on (too few training "
                "slides or patients); use leave-one-section-out folds, add slides, or set eval.select_on=test "
                "(selection on the test fold, labelled as such)"
            )
    from stgen.build import build_model

    try:  # component errors surface before any output is written
        build_model(model_spec(cfg), in_dim=next(iter(bundle.slides.values())).obsm[bundle.feature_key].shape[1],
                    n_genes=len(bundle.genes))
    except ValueError as exc:
        raise ConfigInputError(f"model components: {exc}") from exc
    if cfg.get("resume"):
        partial = Path(cfg.resume)
        out = partial_dir_target(partial)
        _take_over(partial)
        print(f"resuming {partial}", file=sys.stderr)
    else:
        out, partial = claim_output_dir(cfg, label, out_dir)
        (partial / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        _write_json(partial / RUN_INFO, {"label": label, "overrides": list(overrides), **_owner()})
        print(f"run folder: {partial} (renamed to {out.name} when finished; if interrupted, continue it with "
              f"`stgen run resume={partial}`)", file=sys.stderr)
    os.environ[RUN_DIR_ENV] = str(partial.resolve())  # inherited by DDP worker processes
    started = bool(cfg.get("resume"))
    try:
        rows = []
        for fold in bundle.folds:
            fold_dir = partial if len(bundle.folds) == 1 else partial / fold.name
            done = fold_dir / FOLD_DONE
            if done.is_file():  # finished before the interruption
                rows.append(json.loads(done.read_text()))
                continue
            fold_dir.mkdir(parents=True, exist_ok=True)
            started = True
            rows.append({"run": label, **train_fold(cfg, bundle, fold, fold_dir)})
            _write_json(done, rows[-1])
        summary = summarise(rows)
        # the run-level file keeps every fold's full record (per-slide Pearson, train/val/test slides): with
        # one fold it takes the fold's place, so it must lose nothing
        _write_json(partial / "metrics.json", {"run": label, "summary": summary, "folds": rows,
                                               "selection_label": SELECTION_LABELS[cfg.eval.select_on],
                                               "data": bundle.info})
        _write_csv(partial / "metrics.csv", [_flat(r) for r in rows])
    except BaseException:
        if not started:
            shutil.rmtree(partial, ignore_errors=True)
        raise
    if out.exists():
        out.rmdir()  # an empty folder (claimed names are checked); a non-empty one makes os.replace fail
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(partial, out)
    return RunResult(output_dir=out, label=label, rows=rows, summary=summary, config=cfg)


def _owner() -> dict[str, Any]:
    import socket

    return {"pid": os.getpid(), "host": socket.gethostname(), "started": datetime.now().isoformat(timespec="seconds")}


def _take_over(partial: Path) -> None:
    """Record this process as the owner of an interrupted run; refuse while its owner is still running here."""
    import socket

    info_path = partial / RUN_INFO
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError):
        info = {}
    pid, host = info.get("pid"), info.get("host")
    if isinstance(pid, int) and host == socket.gethostname() and pid != os.getpid():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            pass
        except PermissionError:  # alive, another user's
            raise OutputExistsError(f"{partial} is still being written by process {pid}; wait for it to end") from None
        else:
            raise OutputExistsError(
                f"{partial} is still being written by process {pid} on this machine; wait for it to end (or stop it) "
                "before resuming"
            )
    _write_json(info_path, {**info, **_owner(), "resumed": int(info.get("resumed", 0)) + 1})


def partial_dir_target(partial: Path) -> Path:
    """The folder an ``<out>.incomplete`` folder becomes when its run finishes."""
    return partial.with_name(partial.name[: -len(INCOMPLETE)])

