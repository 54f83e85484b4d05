"""The ``stgen`` command: run | list | describe | predict | extract | convert."""

from __future__ import annotations

import argparse
import inspect
import math
import sys
import warnings
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

EXIT_USER_ERROR = 2


class UserError(Exception):
    """An error caused by the user's input: printed as one message, exit code 2."""


def _quiet_third_party_warnings() -> None:
    import logging

    import pytorch_lightning  # noqa: F401 - configures its loggers on import; quiet them afterwards

    for name in ("squidpy", "pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=SyntaxWarning)
    for mod in ("torch_geometric", "squidpy", "anndata", "dask", "numba", "spatialdata", "xarray_schema"):
        warnings.filterwarnings("ignore", module=mod)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
    warnings.filterwarnings("ignore", message=".*`isinstance` treats .*")


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Plain-text table of ``rows`` (floats with 4 decimals)."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return "nan" if math.isnan(v) else f"{v:.4f}"
        return "" if v is None else str(v)

    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
    sep = "  ".join("-" * w for w in widths)
    body = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join([line, sep, *body])


# -- run ------------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from stgen.config import ConfigError, compose_run, expand_sweep
    from stgen.registry import RegistryError
    from stgen.run import run, run_label

    overrides = list(args.overrides)
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
        except (ConfigError, RegistryError, FileExistsError, FileNotFoundError, ValueError) as exc:
            raise UserError(str(exc)) from None
        if not res.primary:  # a DDP worker process: rank 0 reports
            continue
        results.append(res)
        _print_run(res, cfg)
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


def _print_run(res: Any, cfg: Any) -> None:
    spec = " ".join(f"{k}={cfg[k].name}" for k in ("encoder", "generator", "prior"))
    print(f"\nResults: {spec} data={cfg.data.name} ({res.label})")
    if cfg.eval.select_on == "test":
        print("NOTE: model selected on the TEST fold (eval.select_on=test, as the released STFlow code): optimistic")
    cols = ["fold", "pearson", "pearson_slide_mean", "mse", "ridge_pearson", "oracle_pearson", "genes_dropped",
            "best_epoch", "fit_seconds"]
    print(format_table(res.rows, cols))
    if len(res.rows) > 1:
        s = res.summary
        line = f"mean +- std over {s['folds']} folds: pearson {s['pearson']:.4f} +- {s['pearson_std']:.4f}"
        if "ridge_pearson" in s and s["ridge_pearson"] == s["ridge_pearson"]:
            line += f"; ridge probe {s['ridge_pearson']:.4f} +- {s['ridge_pearson_std']:.4f}"
        print(line)
    for row in res.rows[:1]:
        per_slide = _per_slide(res.output_dir, row, len(res.rows))
        if per_slide:
            print("per-slide Pearson: " + ", ".join(f"{k} {v:.4f}" for k, v in per_slide.items()))
    print(f"Outputs: {res.output_dir} (config.yaml, metrics.json/.csv, per_gene.csv, checkpoints/, predictions/)")


def _per_slide(out: Path, row: dict, n_folds: int) -> dict[str, float]:
    import json

    path = (out / "metrics.json") if n_folds == 1 else (out / str(row["fold"]) / "metrics.json")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data.get("per_slide") or (data.get("folds", [{}])[0].get("per_slide", {}))


# -- list / describe ------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    from stgen.data.source import DATASETS
    from stgen.registry import REGISTRIES

    regs = {**REGISTRIES, "data": DATASETS}
    rows = []
    for kind, reg in regs.items():
        for e in reg.entries():
            doc = (inspect.getdoc(e.obj) or "").splitlines()
            rows.append({"kind": kind, "name": e.name, "package": e.source, "summary": doc[0] if doc else ""})
    print(format_table(rows, ["kind", "name", "package", "summary"]))
    for kind, reg in regs.items():
        for name, err in reg.load_errors.items():
            print(f"(could not load {kind} {name!r}: {err})", file=sys.stderr)
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    from stgen.data.source import DATASETS
    from stgen.registry import REGISTRIES, RegistryError

    regs = {**REGISTRIES, "data": DATASETS}
    kind = {"encoders": "encoder", "generators": "generator", "priors": "prior", "feature": "features",
            "dataset": "data"}.get(args.kind, args.kind)
    if kind not in regs:
        raise UserError(f"unknown component kind {args.kind!r}; valid: {', '.join(regs)}")
    try:
        entry = regs[kind].entry(args.name)
    except RegistryError as exc:
        raise UserError(str(exc)) from None
    cls = entry.obj
    print(f"{kind} {entry.name}  (package {entry.source}; {entry.origin})")
    doc = inspect.getdoc(cls) or ""
    if doc:
        print("\n" + doc.split("\n\n")[0])
    data_args = getattr(cls, "data_args", ())
    if data_args:
        print(f"\nset from the data: {', '.join(data_args)}")
    rows = []
    for p in cls.params():
        ann = p.annotation
        typ = getattr(ann, "__name__", None) or str(ann).replace("typing.", "")
        rows.append({"parameter": f"{kind}.{p.name}", "type": typ, "default": repr(p.default)})
    print()
    print(format_table(rows, ["parameter", "type", "default"]) if rows else "(no parameters)")
    return 0


# -- main -----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stgen", description="Generate spatial transcriptomics from histology (STFlow and ablations)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="train and evaluate (Hydra overrides: encoder=gnn trainer.max_epochs=3 ...)")
    p.add_argument("-m", "--multirun", action="store_true", help="run every combination of comma-separated values")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. encoder=fa_local generator=flow prior=zinb")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("list", help="list every registered component with the package it comes from")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("describe", help="parameters and defaults of one component, e.g. `describe encoder gnn`")
    p.add_argument("kind", help="encoder | generator | prior | features | data")
    p.add_argument("name")
    p.set_defaults(func=cmd_describe)
    for extra in _extra_commands():
        extra(sub)
    return parser


def _extra_commands() -> list[Any]:
    from stgen import commands

    return commands.REGISTERED


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_third_party_warnings()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"stgen {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
