"""``stgen run``: one training + evaluation run, or a multirun sweep with one combined table."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from stgen.cli.common import UserError, format_table


def add_parser(sub: Any) -> None:
    """``stgen run``: train and evaluate one config, or a sweep with ``-m``."""
    p = sub.add_parser("run", help="train and evaluate (Hydra overrides: encoder=gnn trainer.max_epochs=3 ...)")
    p.add_argument("-m", "--multirun", action="store_true", help="run every combination of comma-separated values")
    p.add_argument("--cfg", choices=["job"], default=None,
                   help="print the composed config (YAML) and exit without running (as Hydra's --cfg job)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. encoder=fa_local generator=flow prior=zinb")
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from stgen.config import ConfigError, compose_run, expand_sweep
    from stgen.registry import RegistryError
    from stgen.run import run, run_label

    overrides = list(args.overrides)
    if args.cfg == "job":
        return _print_config(overrides, args.multirun)
    combos = expand_sweep(overrides) if args.multirun else [overrides]
    if not args.multirun and len(expand_sweep(overrides)) > 1:
        raise UserError("an override lists several values (a sweep); add -m to run every combination")
    try:
        cfgs = [compose_run(c) for c in combos]  # every combination is validated before any work
    except (ConfigError, RegistryError) as exc:
        raise UserError(str(exc)) from None
    if args.multirun and any("ddp" in str(c.trainer.strategy) for c in cfgs):
        raise UserError("DDP runs are launched one at a time: run each combination without -m")
    results = []
    sweep_dir = None
    if args.multirun:
        sweep_dir = Path("outputs") / "multirun" / datetime.now().strftime("%Y-%m-%d/%H-%M-%S")
    for i, (cfg, combo) in enumerate(zip(cfgs, combos, strict=True)):
        out_dir = None
        if sweep_dir is not None and not cfg.output_dir:
            out_dir = sweep_dir / f"{i}-{run_label([o for o in combo if '=' in o])}"
        try:
            res = run(cfg, combo, out_dir=out_dir)
        except (ConfigError, RegistryError) as exc:  # other errors about the input are UserInputErrors
            raise UserError(str(exc)) from exc
        if not res.primary:  # a DDP worker process: rank 0 reports
            continue
        results.append(res)
        _print_run(res, res.config or cfg)
    if args.multirun and results:
        from stgen.run import _write_csv

        rows = [{"run": r.label, **r.summary, "output_dir": str(r.output_dir)} for r in results]
        sweep_dir.mkdir(parents=True, exist_ok=True)
        _write_csv(sweep_dir / "results.csv", rows)
        print("\nAll runs (pooled Pearson over the gene panel on the test slides):")
        print(format_table(rows, ["run", "pearson", "pearson_std", "pearson_slide_mean", "mse", "ridge_pearson",
                                  "fit_seconds"]))
        seeds = _over_seeds(results)
        if seeds:
            _write_csv(sweep_dir / "results_over_seeds.csv", seeds)
            print("\nMean +- std over seeds:")
            print(format_table(seeds, ["run", "seeds", "pearson", "pearson_std", "ridge_pearson"]))
        print(f"\nCombined table: {sweep_dir / 'results.csv'}")
    return 0


def _print_config(overrides: Sequence[str], multirun: bool) -> int:
    """``stgen run --cfg job``: the composed config of every run, nothing run or written."""
    from omegaconf import OmegaConf

    from stgen.config import ConfigError, compose_run, expand_sweep
    from stgen.registry import RegistryError

    combos = expand_sweep(overrides)
    if len(combos) > 1 and not multirun:
        raise UserError("an override lists several values (a sweep); add -m to print every combination")
    for combo in combos:
        try:
            cfg = compose_run(combo)
        except (ConfigError, RegistryError) as exc:
            raise UserError(str(exc)) from None
        if len(combos) > 1:
            print(f"# {' '.join(combo)}")
        print(OmegaConf.to_yaml(cfg, resolve=True), end="")
    return 0


def _over_seeds(results: Sequence[Any]) -> list[dict[str, Any]]:
    """Runs that differ only in ``seed``, grouped: mean and std of their pooled Pearson."""
    import re

    import numpy as np

    groups: dict[str, list[Any]] = {}
    for r in results:
        key = re.sub(r"(^|_)seed-\d+", "", r.label).strip("_") or "default"
        groups.setdefault(key, []).append(r)
    rows = []
    for key, runs in groups.items():
        if len(runs) < 2:
            continue
        vals = np.array([r.summary.get("pearson", np.nan) for r in runs], dtype=float)
        ridge = np.array([r.summary.get("ridge_pearson", np.nan) for r in runs], dtype=float)
        rows.append({"run": key, "seeds": len(runs), "pearson": float(np.nanmean(vals)),
                     "pearson_std": float(np.nanstd(vals)), "ridge_pearson": float(np.nanmean(ridge))})
    return rows


def _model_line(cfg: Any) -> str:
    """``encoder=.. generator=.. prior=..``; the prior is left out when the generator ignores it."""
    from stgen.registry import GENERATORS

    uses_prior = getattr(GENERATORS.get(cfg.generator.name), "uses_prior", True)
    spec = f"encoder={cfg.encoder.name} generator={cfg.generator.name}"
    return spec + (f" prior={cfg.prior.name}" if uses_prior else " (no prior: the generator does not use one)")


def _print_run(res: Any, cfg: Any) -> None:
    print(f"\nResults: {_model_line(cfg)} data={cfg.data.name} ({res.label})")
    if cfg.eval.select_on == "test":
        print("NOTE: model selected on the TEST fold (eval.select_on=test, as the released STFlow code): optimistic")
    cols = ["fold", "pearson", "pearson_slide_mean", "mse", "ridge_pearson", "oracle_pearson", "genes_dropped",
            "best_epoch", "epochs", "fit_seconds"]
    print(format_table(res.rows, cols))
    if len(res.rows) > 1:
        s = res.summary
        line = f"mean +- std over {s['folds']} folds: pearson {s['pearson']:.4f} +- {s['pearson_std']:.4f}"
        if "ridge_pearson" in s and s["ridge_pearson"] == s["ridge_pearson"]:
            line += f"; ridge probe {s['ridge_pearson']:.4f} +- {s['ridge_pearson_std']:.4f}"
        print(line)
    for row in res.rows:
        per_slide = row.get("per_slide") or {}
        test = ", ".join(f"{k} {v:.4f}" for k, v in per_slide.items()) or ", ".join(row.get("test_slides", []))
        val = ", ".join(row.get("val_slides", [])) or "none"
        selected = " (selected on the TEST fold)" if row.get("selection") == "test" else ""
        print(f"{row['fold']}: per-slide test Pearson {test}; validation slides {val}{selected}")
    print(_outputs_line(res))


def _outputs_line(res: Any) -> str:
    """What the run folder actually holds (per fold folder when there are several)."""
    out = Path(res.output_dir)

    def listing(folder: Path, skip: set[str]) -> str:
        if not folder.is_dir():
            return ""
        names = [p.name + ("/" if p.is_dir() else "") for p in sorted(folder.iterdir()) if p.name not in skip]
        return ", ".join(names)

    folds = [str(r["fold"]) for r in res.rows]
    line = f"Outputs: {out} ({listing(out, set(folds))})"
    if len(folds) > 1:
        line += f"; in each fold folder ({', '.join(folds)}): {listing(out / folds[0], set())}"
    return line
