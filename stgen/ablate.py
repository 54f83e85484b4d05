"""``stgen ablate``: the STFlow paper's ablation grid on any data, over all folds and several seeds.

Every *trained* variant is one ``stgen run`` per seed (all folds of the data); *inference* variants
re-evaluate the trained STFlow (or another variant's) checkpoints with other sampling settings, as
the paper's sampling-step ablation does (the number of steps does not change training). The report
pairs every variant with STFlow on the same (fold, seed) and tests the paired differences.

Outputs (``-o OUT``, never overwritten; ``--resume`` reuses finished runs):
``runs/<variant>-s<seed>/`` (each a normal run folder), ``rows.csv`` (one row per variant, fold and
seed), ``summary.csv``, ``report.md`` (tables and the commands) and ``ablation.png`` (bar chart).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REFERENCE = "stflow"


@dataclass(frozen=True)
class Variant:
    """One row of the ablation grid.

    Args:
        name: row label.
        overrides: Hydra overrides on top of the base (trained variants).
        description: what it removes or changes.
        reuse: for an inference variant, the trained variant whose checkpoints it re-evaluates.
        steps: sampling steps at re-evaluation (inference variants).
        n_samples: samples averaged at re-evaluation (inference variants).
        mc_dropout: keep dropout active at re-evaluation (each sample a different dropout mask).
    """

    name: str
    overrides: tuple[str, ...] = ()
    description: str = ""
    reuse: str | None = None
    steps: int | None = None
    n_samples: int = 1
    mc_dropout: bool = False

    @property
    def trained(self) -> bool:
        return self.reuse is None


STFLOW = ("encoder=fa_local", "generator=flow", "prior=zinb")
VARIANTS: dict[str, Variant] = {v.name: v for v in [
    Variant("stflow", STFLOW, "STFlow: fa_local + flow matching + ZINB prior"),
    Variant("regression", ("encoder=fa_local", "generator=regression", "prior=zinb"),
            "w/o flow matching (one-shot regression, same network)"),
    Variant("no_frame_averaging", (*STFLOW, "encoder.frame_averaging=false"), "w/o frame averaging"),
    Variant("steps_1", reuse="stflow", steps=1, description="sampling steps S = 1 (STFlow checkpoints)"),
    Variant("steps_2", reuse="stflow", steps=2, description="sampling steps S = 2 (STFlow checkpoints)"),
    Variant("steps_5", reuse="stflow", steps=5, description="sampling steps S = 5 (STFlow checkpoints)"),
    Variant("prior_gaussian", ("encoder=fa_local", "generator=flow", "prior=gaussian"), "Gaussian prior"),
    Variant("prior_zero", ("encoder=fa_local", "generator=flow", "prior=zero"), "zero prior"),
    Variant("encoder_gnn", ("encoder=gnn", "generator=flow", "prior=zinb"), "GraphSAGE encoder + flow"),
    Variant("encoder_mlp", ("encoder=mlp", "generator=flow", "prior=zinb"), "per-spot MLP encoder + flow"),
    Variant("encoder_global_attention", ("encoder=global_attention", "generator=flow", "prior=zinb"),
            "global attention encoder + flow"),
    Variant("gnn_regression", ("encoder=gnn", "generator=regression", "prior=zinb"), "GraphSAGE + regression"),
    Variant("mlp_regression", ("encoder=mlp", "generator=regression", "prior=zinb"), "per-spot MLP + regression"),
    Variant("regression_gaussian", ("encoder=fa_local", "generator=regression", "generator.likelihood=gaussian",
                                    "prior=zinb"),
            "fa_local + regression with a Gaussian head (mean and log-variance, beta-NLL)"),
    Variant("gnn_regression_gaussian", ("encoder=gnn", "generator=regression", "generator.likelihood=gaussian",
                                        "prior=zinb"),
            "GraphSAGE + regression with a Gaussian head (mean and log-variance, beta-NLL)"),
    Variant("mlp_regression_gaussian", ("encoder=mlp", "generator=regression", "generator.likelihood=gaussian",
                                        "prior=zinb"),
            "per-spot MLP + regression with a Gaussian head (mean and log-variance, beta-NLL)"),
    Variant("gnn_regression_gaussian_nll", ("encoder=gnn", "generator=regression",
                                            "generator.likelihood=gaussian", "generator.beta=0", "prior=zinb"),
            "GraphSAGE + regression with a Gaussian head, plain NLL (beta = 0)"),
    Variant("stflow_samples8", reuse="stflow", n_samples=8,
            description="STFlow, mean and spread of 8 samples (test-time sampling)"),
    Variant("regression_mc_dropout", reuse="regression", n_samples=8, mc_dropout=True,
            description="fa_local + regression, 8 MC-dropout passes"),
    Variant("gnn_regression_mc_dropout", reuse="gnn_regression", n_samples=8, mc_dropout=True,
            description="GraphSAGE + regression, 8 MC-dropout passes"),
    Variant("mlp_regression_mc_dropout", reuse="mlp_regression", n_samples=8, mc_dropout=True,
            description="MLP + regression, 8 MC-dropout passes"),
    Variant("gnn_regression_gaussian_mc_dropout", reuse="gnn_regression_gaussian", n_samples=8, mc_dropout=True,
            description="GraphSAGE + Gaussian head, 8 MC-dropout passes (predicted + dropout variance)"),
    Variant("mlp_regression_gaussian_mc_dropout", reuse="mlp_regression_gaussian", n_samples=8, mc_dropout=True,
            description="MLP + Gaussian head, 8 MC-dropout passes (predicted + dropout variance)"),
]}
#: the paper's grid (plus the two cheap GNN/MLP regressions the paper never compared against)
PAPER_GRID = ["stflow", "regression", "no_frame_averaging", "steps_1", "steps_2", "steps_5", "prior_gaussian",
              "prior_zero", "encoder_gnn", "encoder_mlp", "encoder_global_attention", "gnn_regression",
              "mlp_regression"]
METRICS = ("pearson", "pearson_slide_mean", "mse", "cal_spearman", "cal_spearman_partial", "cov50", "cov80",
           "cov95", "cov50_uncal", "cov80_uncal", "cov95_uncal", "fit_seconds")


def merge_overrides(base: Sequence[str], extra: Sequence[str]) -> list[str]:
    """``base`` with every key that ``extra`` sets replaced by ``extra``'s value (extra wins)."""
    keys = {o.split("=", 1)[0].lstrip("+~") for o in extra}
    return [o for o in base if o.split("=", 1)[0].lstrip("+~") not in keys] + list(extra)


def _run_dir(out: Path, variant: str, seed: int) -> Path:
    return out / "runs" / f"{variant}-s{seed}"


def _fold_dirs(run_dir: Path) -> dict[str, Path]:
    data = json.loads((run_dir / "metrics.json").read_text())
    folds = [str(r["fold"]) for r in data["folds"]]
    return {f: (run_dir if len(folds) == 1 else run_dir / f) for f in folds}


# -- training ---------------------------------------------------------------------------------------
def _train(overrides: list[str], run_dir: Path, log: Path, in_process: bool) -> None:
    if (run_dir / "metrics.json").is_file():
        return  # finished earlier (--resume)
    args = [*overrides, f"output_dir={run_dir}", "trainer.enable_progress_bar=false"]
    if in_process:
        from stgen.config import compose_run
        from stgen.run import run

        run(compose_run(args), args, out_dir=run_dir)
        return
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONUNBUFFERED": "1"}
    env.pop("STGEN_RUN_DIR", None)
    with log.open("w") as fh:
        rc = subprocess.call([sys.executable, "-m", "stgen", "run", *args], stdout=fh, stderr=subprocess.STDOUT,
                             env=env)
    if rc != 0:
        tail = log.read_text()[-2000:]
        raise RuntimeError(f"run {run_dir.name} failed (exit {rc}); log {log}:\n{tail}")


# -- re-evaluation (inference variants, ensembles) ----------------------------------------------------
def reevaluate(run_dir: Path, variant: Variant, bundle: Any, cfg: Any) -> list[dict[str, Any]]:
    """Evaluate the best checkpoint of every fold of ``run_dir`` with ``variant``'s sampling settings.

    When the variant has a spread and the run selected on validation slides, the per-gene spread scale
    (:class:`~stgen.recalibrate.SpreadScale`) is refitted on the fold's validation slides with the same
    settings and applied to the test slides (``eval.recalibrate``); ``cov*_uncal`` give the coverage
    before it.
    """
    from torch import nn

    from stgen.build import preprocess_spec
    from stgen.metrics import calibration, evaluate
    from stgen.predict import load_module

    target, seed = preprocess_spec(cfg).target, int(cfg.eval.seed)
    meta = {str(r["fold"]): r for r in json.loads((run_dir / "metrics.json").read_text())["folds"]}
    rows = []
    for fold, fdir in _fold_dirs(run_dir).items():
        module = load_module(fdir / "checkpoints" / "best.ckpt")
        if variant.mc_dropout:
            for m in module.modules():
                if isinstance(m, nn.Dropout):
                    m.train()
        scale = module.model.spread_scale
        scale.fitted.fill_(False)  # the stored scale belongs to the trained variant's own spread

        info = meta.get(fold, {})
        val_ids = list(info.get("val_slides") or next((f.val for f in bundle.folds if f.name == fold), []))
        recal = None
        if cfg.eval.get("recalibrate", True) and info.get("selection", "val") == "val" and val_ids:
            vm, vs, vt = _infer(module, val_ids, bundle, target, variant, seed)
            if all(s is not None for s in vs) and any(float(np.max(s, initial=0)) > 0 for s in vs):
                scale.fit(np.concatenate(vm), np.concatenate(vs), np.concatenate(vt))  # type: ignore[arg-type]
                recal = scale.scale.numpy().astype(np.float64)
        ids = sorted(p.stem for p in (fdir / "predictions").glob("*.h5ad"))
        means, stds, trues = _infer(module, ids, bundle, target, variant, seed)
        ev = evaluate(means, trues, ids, bundle.genes)
        row: dict[str, Any] = {"fold": fold, **ev.summary()}
        if all(s is not None for s in stds):
            m, sd, t = np.concatenate(means), np.concatenate(stds), np.concatenate(trues)  # type: ignore[arg-type]
            row.update(calibration(m, sd, t).summary())
            if recal is not None:
                before = calibration(m, sd / recal, t).summary()
                row.update({f"{k}_uncal": before[k] for k in ("cov50", "cov80", "cov95")})
        rows.append(row)
    return rows


def _infer(module: Any, ids: Sequence[str], bundle: Any, target: str, variant: Variant,
           seed: int) -> tuple[list[np.ndarray], list[np.ndarray | None], list[np.ndarray]]:
    """Means, spreads (None without one) and targets of the slides ``ids`` under ``variant``'s settings."""
    import torch
    from torch_geometric.data import Batch

    from stgen.data.graph import slide_to_data
    from stgen.preprocess import target_matrix

    means, stds, trues = [], [], []
    for sid in ids:
        a = bundle.slides[sid]
        data = slide_to_data(a, genes=bundle.genes, k=module.model.encoder.graph_k, feature_key=bundle.feature_key)
        data.y = torch.from_numpy(target_matrix(a, bundle.genes, target))
        batch = Batch.from_data_list([data])
        torch.manual_seed(seed)
        with torch.no_grad():
            out = module.model.predict(batch, steps=variant.steps, seed=seed, n_samples=variant.n_samples)
        means.append(out.mean.float().numpy())
        stds.append(None if out.std is None else out.std.float().numpy())
        trues.append(data.y.numpy())
    return means, stds, trues


def _train_theta(bundle: Any, fold: str) -> np.ndarray:
    """Per-gene NB inverse dispersion of the fold's training counts (ML ZINB fit)."""
    import torch

    from stgen.distributions import fit_zinb
    from stgen.preprocess import _dense

    match = [f for f in bundle.folds if f.name == fold] or bundle.folds[:1]
    counts = np.concatenate([_dense(bundle.slides[s][:, bundle.genes].X) for s in match[0].train])
    return fit_zinb(torch.as_tensor(np.round(counts), dtype=torch.float64)).theta.numpy()


def ensemble_rows(out: Path, variant: str, seeds: Sequence[int], bundle: Any, target: str,
                  count_noise: bool = False) -> list[dict[str, Any]]:
    """A deep ensemble over seeds: mean and spread of the seeds' stored test predictions, per fold.

    When every member stored its own spread (``layers['stgen_std']``, e.g. a Gaussian head), the spread is
    that of the equal mixture (Lakshminarayanan et al. 2017): ``sqrt(var over seeds + mean of the members'
    variances)``.

    With ``count_noise`` (log1p targets only) the spread also holds the NB sampling noise of the counts
    around the ensemble mean (:func:`~stgen.metrics.count_noise_spread`, theta fitted to the training
    counts of the fold): ``sqrt(spread_ensemble^2 + spread_counts^2)``; not for members with their own
    spread (no rows).
    """
    import anndata as ad

    from stgen.data.slide import MEAN_LAYER, STD_LAYER
    from stgen.metrics import calibration, count_noise_spread, evaluate
    from stgen.preprocess import target_matrix

    dirs = [_run_dir(out, variant, s) for s in seeds]
    if len(dirs) < 2 or not all((d / "metrics.json").is_file() for d in dirs):
        return []
    if count_noise and target != "log1p":
        return []
    rows = []
    for fold, fdir0 in _fold_dirs(dirs[0]).items():
        ids = sorted(p.stem for p in (fdir0 / "predictions").glob("*.h5ad"))
        means, stds, trues = [], [], []
        for sid in ids:
            preds = [ad.read_h5ad(_fold_dirs(d)[fold] / "predictions" / f"{sid}.h5ad") for d in dirs]
            stack = np.stack([np.asarray(p.layers[MEAN_LAYER]) for p in preds])
            means.append(stack.mean(0))
            var = stack.var(0, ddof=1)
            if all(STD_LAYER in p.layers for p in preds):  # members with their own spread: mixture variance
                if count_noise:
                    return []  # their spread already models the measurement noise: adding NB noise counts it twice
                var = var + np.mean([np.asarray(p.layers[STD_LAYER], dtype=np.float64) ** 2 for p in preds], 0)
            stds.append(np.sqrt(var))
            trues.append(target_matrix(bundle.slides[sid], bundle.genes, target))
        if count_noise:
            theta = _train_theta(bundle, fold)
            stds = [np.sqrt(s**2 + count_noise_spread(m, theta) ** 2) for s, m in zip(stds, means, strict=True)]
        ev = evaluate(means, trues, ids, bundle.genes)
        rows.append({"fold": fold, **ev.summary(),
                     **calibration(np.concatenate(means), np.concatenate(stds), np.concatenate(trues)).summary()})
    return rows


# -- report -----------------------------------------------------------------------------------------
def paired(rows: Sequence[dict[str, Any]], variant: str, reference: str = REFERENCE,
           key: str = "pearson") -> dict[str, Any]:
    """Paired differences ``variant - reference`` over (fold, seed), with Wilcoxon and paired t tests."""
    from scipy import stats

    ref = {(r["fold"], r["seed"]): _num(r.get(key)) for r in rows if r["variant"] == reference}
    diffs = [_num(r.get(key)) - ref[(r["fold"], r["seed"])] for r in rows
             if r["variant"] == variant and (r["fold"], r["seed"]) in ref]
    d = np.array([x for x in diffs if np.isfinite(x)])
    out: dict[str, Any] = {"n_pairs": len(d), "diff_mean": float(d.mean()) if len(d) else np.nan,
                           "diff_std": float(d.std(ddof=1)) if len(d) > 1 else np.nan,
                           "wins": int((d > 0).sum()), "p_wilcoxon": np.nan, "p_ttest": np.nan}
    if len(d) >= 2 and np.any(d != 0):
        out["p_wilcoxon"] = float(stats.wilcoxon(d).pvalue)
        out["p_ttest"] = float(stats.ttest_1samp(d, 0.0).pvalue)
    return out


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def summarise(rows: Sequence[dict[str, Any]], order: Sequence[str]) -> list[dict[str, Any]]:
    out = []
    for v in order:
        mine = [r for r in rows if r["variant"] == v]
        if not mine:
            continue
        s: dict[str, Any] = {"variant": v, "n": len(mine)}
        for key in METRICS:
            vals = np.array([_num(r.get(key)) for r in mine])
            ok = np.isfinite(vals)
            s[key] = float(vals[ok].mean()) if ok.any() else np.nan
            s[f"{key}_std"] = float(vals[ok].std(ddof=1)) if ok.sum() > 1 else np.nan
        if v != REFERENCE:
            s.update(paired(rows, v))
        out.append(s)
    return out


def _fmt(m: float, s: float | None = None, digits: int = 3) -> str:
    if m is None or not np.isfinite(m):
        return "-"
    return f"{m:.{digits}f}" if s is None or not np.isfinite(s) else f"{m:.{digits}f} +- {s:.{digits}f}"


def _p(p: float) -> str:
    return "-" if not np.isfinite(p) else (f"{p:.3f}" if p >= 0.001 else f"{p:.1e}")


def write_report(out: Path, rows: list[dict[str, Any]], order: Sequence[str], command: str,
                 info: dict[str, Any]) -> list[dict[str, Any]]:
    from stgen.run import _write_csv

    summary = summarise(rows, order)
    _write_csv(out / "rows.csv", rows)
    _write_csv(out / "summary.csv", summary)
    lines = [f"# Ablation report: {info.get('data', '')}", "", "```", command, "```", "",
             f"Folds: {info.get('folds')}; seeds: {info.get('seeds')}; {info.get('note', '')}".rstrip(), "",
             "Pooled Pearson (HEST protocol) on the test slides of each fold; mean +- std over folds x seeds. "
             f"Difference = variant - {REFERENCE} on the same fold and seed; p values of a two-sided Wilcoxon "
             "signed-rank and a paired t test over those pairs; wins = pairs where the variant is higher.", "",
             "| variant | what | pearson | diff vs stflow | wins | p (Wilcoxon) | p (t) | fit s / run |",
             "|---|---|---|---|---|---|---|---|"]
    for s in summary:
        v = s["variant"]
        desc = VARIANTS[v].description if v in VARIANTS else info.get("descriptions", {}).get(v, "")
        diff = "" if v == REFERENCE else _fmt(s.get("diff_mean"), s.get("diff_std"))
        wins = "" if v == REFERENCE else f"{s.get('wins')}/{s.get('n_pairs')}"
        lines.append(f"| {v} | {desc} | {_fmt(s['pearson'], s['pearson_std'])} | {diff} | {wins} | "
                     f"{'' if v == REFERENCE else _p(s.get('p_wilcoxon', np.nan))} | "
                     f"{'' if v == REFERENCE else _p(s.get('p_ttest', np.nan))} | {_fmt(s['fit_seconds'], digits=0)} |")
    cal = [s for s in summary if np.isfinite(s.get("cal_spearman", np.nan))]
    if cal:
        lines += ["", "Calibration of the per-spot spread (where a variant has one): Spearman of spread vs |error| "
                  "per gene (mean over genes), raw and with the predicted mean partialled out; empirical coverage of "
                  "the central Gaussian 50/80/95 % intervals (ideal 0.50/0.80/0.95), after the per-gene scale fitted on "
                  "the validation slides (`eval.recalibrate`, trained variants with a spread) and before it.", "",
                  "| variant | spearman | partial | cov50 | cov80 | cov95 | before recalibration: cov50 / 80 / 95 |",
                  "|---|---|---|---|---|---|---|"]
        for s in cal:
            uncal = ("-" if not np.isfinite(s.get("cov80_uncal", np.nan)) else
                     " / ".join(_fmt(s[f"cov{q}_uncal"]) for q in (50, 80, 95)))
            lines.append(f"| {s['variant']} | {_fmt(s['cal_spearman'], s['cal_spearman_std'])} | "
                         f"{_fmt(s['cal_spearman_partial'], s['cal_spearman_partial_std'])} | "
                         f"{_fmt(s['cov50'])} | {_fmt(s['cov80'])} | {_fmt(s['cov95'])} | {uncal} |")
    lines += ["", "![ablation](ablation.png)", ""]
    (out / "report.md").write_text("\n".join(lines))
    bar_chart(summary, out / "ablation.png", title=str(info.get("data", "")))
    return summary


def bar_chart(summary: Sequence[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Two panels: mean pooled Pearson per variant (std error bars, STFlow's mean dashed), and the paired
    difference to STFlow over the same folds and seeds (mean +- std; the view that removes the spread between
    folds), with the p value of the Wilcoxon test over the pairs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = [s for s in summary if not s["variant"].endswith("_count_noise")]  # same means as without noise
    names = [s["variant"] for s in summary]
    means = np.array([s["pearson"] for s in summary], dtype=float)
    stds = np.nan_to_num(np.array([s["pearson_std"] for s in summary], dtype=float))
    fig, (ax, dax) = plt.subplots(2, 1, figsize=(max(6.0, 0.6 * len(names) + 2), 7.6), sharex=True)
    colours = ["tab:red" if n == REFERENCE else "tab:blue" for n in names]
    ax.bar(range(len(names)), means, yerr=stds, color=colours, capsize=3)
    ref = [s["pearson"] for s in summary if s["variant"] == REFERENCE]
    if ref:
        ax.axhline(ref[0], color="tab:red", ls="--", lw=1)
    ax.set_ylabel("pooled Pearson\n(mean +- std, folds x seeds)")
    ax.set_title(title)
    diffs = np.array([_num(s.get("diff_mean")) for s in summary])
    dstd = np.nan_to_num(np.array([_num(s.get("diff_std")) for s in summary]))
    shown = np.isfinite(diffs)
    dax.bar(np.flatnonzero(shown), diffs[shown], yerr=dstd[shown], capsize=3,
            color=["tab:green" if d > 0 else "tab:gray" for d in diffs[shown]])
    dax.axhline(0.0, color="tab:red", ls="--", lw=1)
    for i in np.flatnonzero(shown):
        p = _num(summary[i].get("p_wilcoxon"))
        if np.isfinite(p):
            top = diffs[i] + dstd[i] if diffs[i] >= 0 else diffs[i] - dstd[i]
            dax.annotate(f"p={p:.2g}", (i, top), ha="center", va="bottom" if diffs[i] >= 0 else "top",
                         fontsize=7)
    dax.set_ylabel(f"difference to {REFERENCE}\n(paired over folds x seeds)")
    dax.set_xticks(range(len(names)))
    dax.set_xticklabels(names, rotation=40, ha="right")
    fig.tight_layout()
    from stgen.io import atomic_write

    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110))
    finally:
        plt.close(fig)
    return path


# -- the command ------------------------------------------------------------------------------------
@dataclass
class AblationResult:
    """Outcome of ``stgen ablate``.

    Args:
        out: output folder.
        rows: one row per variant, fold and seed.
        summary: one row per variant (means, stds, paired statistics).
    """

    out: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: list[dict[str, Any]] = field(default_factory=list)


def ablate(overrides: Sequence[str], variants: Sequence[str], seeds: Sequence[int], out: Path, jobs: int = 1,
           resume: bool = False, ensembles: bool = True, command: str = "",
           report_only: bool = False) -> AblationResult:
    """Run the grid (trained variants first, in parallel when ``jobs > 1``), then write the report.

    ``report_only`` trains nothing: the report covers the runs already finished in ``out`` and lists the
    missing ones (for a grid cut short by a time limit).
    """
    from stgen.build import build_data, preprocess_spec
    from stgen.config import compose_run

    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {', '.join(unknown)}; valid: {', '.join(VARIANTS)}")
    if not seeds:
        raise ValueError("give at least one seed (--seeds 0 1 2)")
    if report_only and not (out / "runs").is_dir():
        raise FileNotFoundError(f"{out} holds no runs to report on (runs/ is missing)")
    if out.exists() and any(out.iterdir()) and not (resume or report_only):
        raise FileExistsError(f"{out} exists and is not empty; choose another -o or pass --resume to reuse its runs")
    trained = list(dict.fromkeys([v for v in variants if VARIANTS[v].trained]
                                 + [VARIANTS[v].reuse for v in variants if not VARIANTS[v].trained]))
    cfgs = {v: compose_run(merge_overrides(overrides, VARIANTS[v].overrides)) for v in trained}  # validate all first
    base_cfg = cfgs[trained[0]]
    bundle = build_data(base_cfg)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    jobs_list = [(v, s) for s in seeds for v in trained]
    in_process = jobs <= 1

    def job(item: tuple[str, int]) -> None:
        v, s = item
        ov = [*merge_overrides(overrides, VARIANTS[v].overrides), f"seed={s}"]
        _train(ov, _run_dir(out, v, s), out / "logs" / f"{v}-s{s}.log", in_process)

    if report_only:
        pass
    elif in_process:
        for item in jobs_list:
            job(item)
    else:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(job, jobs_list))
    rows: list[dict[str, Any]] = []
    missing: list[str] = []
    for v in variants:
        var = VARIANTS[v]
        for s in seeds:
            run_dir = _run_dir(out, var.reuse or v, s)
            if not (run_dir / "metrics.json").is_file():
                missing.append(f"{v} seed {s}")
                continue
            if var.trained:
                data = json.loads((run_dir / "metrics.json").read_text())
                fold_rows = data["folds"]
            else:
                fold_rows = reevaluate(run_dir, var, bundle, cfgs[var.reuse].copy())  # type: ignore[index]
            rows += [{"variant": v, "seed": s, **{k: r.get(k) for k in ("fold", *METRICS, "ridge_pearson")}}
                     for r in fold_rows]
    order = list(variants)
    if REFERENCE in variants:  # the ridge probe on the same folds, paired with STFlow's seeds
        rows += [{"variant": "ridge", "seed": r["seed"], "fold": r["fold"], "pearson": r["ridge_pearson"]}
                 for r in rows if r["variant"] == REFERENCE and r.get("ridge_pearson") is not None]
        order.append("ridge")
    descriptions = {"ridge": "HEST ridge probe (standardise, PCA 256, ridge)"}
    if ensembles and len(seeds) > 1:
        target = preprocess_spec(base_cfg).target
        for v in trained:
            done = [s for s in seeds if (_run_dir(out, v, s) / "metrics.json").is_file()]
            for noise in (False, True):
                ens = ensemble_rows(out, v, done, bundle, target, count_noise=noise)
                if not ens:
                    continue
                name = f"{v}_ensemble{len(done)}" + ("_count_noise" if noise else "")
                rows += [{"variant": name, "seed": -1, **{k: r.get(k) for k in ("fold", *METRICS)}} for r in ens]
                order.append(name)
                descriptions[name] = (f"{v}: mean and spread over the {len(done)} seeds (deep ensemble)"
                                      + (" + NB count noise around the mean" if noise else ""))
    info = {"data": f"data={base_cfg.data.name}", "folds": ", ".join(f.name for f in bundle.folds),
            "seeds": ", ".join(map(str, seeds)), "descriptions": descriptions,
            "note": "ensemble rows have one value per fold (seed column -1) and are not paired."
                    + (f" NOT RUN (cut): {', '.join(missing)}." if missing else "")}
    summary = write_report(out, rows, order, command or "stgen ablate " + shlex.join(list(overrides)), info)
    return AblationResult(out=out, rows=rows, summary=summary)


def _ablate_parser(sub: Any) -> None:
    p = sub.add_parser("ablate", help="the STFlow paper's ablation grid over all folds and seeds, with one report")
    p.add_argument("overrides", nargs="*", help="Hydra overrides for every run, e.g. data=hest data.root=DIR "
                   "features=efficientnet_lite0 trainer.max_epochs=10")
    p.add_argument("-o", "--out", required=True, help="output folder (must not exist or be empty unless --resume)")
    p.add_argument("--variants", nargs="+", default=["paper"],
                   help=f"variants or 'paper' (the paper's grid): {', '.join(VARIANTS)}")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds (default 0 1 2)")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel (each its own process when > 1)")
    p.add_argument("--resume", action="store_true", help="reuse finished runs in OUT and rewrite the report")
    p.add_argument("--no-ensembles", action="store_true", help="skip the deep-ensemble rows (mean over seeds)")
    p.add_argument("--no-reference", action="store_true",
                   help=f"do not add {REFERENCE!r} (the reference of the paired differences) to the variants")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: report on the runs already finished in OUT (lists the missing ones)")
    p.set_defaults(func=cmd_ablate)


def cmd_ablate(args: argparse.Namespace) -> int:
    from stgen.cli import UserError, format_table
    from stgen.config import ConfigError
    from stgen.registry import RegistryError

    variants: list[str] = []
    for v in args.variants:
        variants += PAPER_GRID if v == "paper" else [v]
    if REFERENCE not in variants and not args.no_reference:
        variants.insert(0, REFERENCE)
    variants = list(dict.fromkeys(variants))
    if args.jobs < 1:
        raise UserError("--jobs must be >= 1")
    command = "stgen ablate " + shlex.join([*args.overrides, "-o", args.out, "--variants", *args.variants,
                                            "--seeds", *map(str, args.seeds)])
    try:
        res = ablate(args.overrides, variants, args.seeds, Path(args.out), jobs=args.jobs, resume=args.resume,
                     ensembles=not args.no_ensembles, command=command, report_only=args.report_only)
    except (ConfigError, RegistryError, FileExistsError, FileNotFoundError, ValueError, RuntimeError) as exc:
        raise UserError(str(exc)) from None
    print(format_table(res.summary, ["variant", "n", "pearson", "pearson_std", "diff_mean", "p_wilcoxon",
                                     "cal_spearman", "cal_spearman_partial", "cov80"]))
    print(f"\nReport: {res.out / 'report.md'} (chart {res.out / 'ablation.png'}; rows.csv, summary.csv)")
    return 0
