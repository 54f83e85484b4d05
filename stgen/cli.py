"""The ``stgen`` command: run | list | describe | predict | extract | convert."""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from stgen.errors import UserInputError, one_line

EXIT_USER_ERROR = 2
#: set STGEN_DEBUG=1 to see the traceback of a user error too
DEBUG_ENV = "STGEN_DEBUG"


class UserError(UserInputError):
    """An error caused by the user's input: printed as one message, exit code 2."""


def _quiet_third_party_warnings(lightning: bool = True) -> None:
    """Silence third-party chatter; ``lightning=False`` leaves Lightning unimported (fast commands)."""
    import logging

    if lightning:
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
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()
    sep = "  ".join("-" * w for w in widths)
    body = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join([line, sep, *body])


# -- run ------------------------------------------------------------------------------------------
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


# -- list / describe ------------------------------------------------------------------------------
def plain(text: str) -> str:
    """Docstring text without reST markup: ``:class:`x```, ``x``, `x` and *x* become x."""
    import re

    text = re.sub(r":[a-z]+:`~?([^`]+)`", lambda m: m.group(1).rsplit(".", 1)[-1] if "~" in m.group(0) else m.group(1),
                  text)
    text = re.sub(r"``([^`]+)``", r"\1", text)
    text = re.sub(r"`([^`]+)`", r"\1", text)
    return re.sub(r"(?<!\w)\*{1,2}([^*\s][^*]*?)\*{1,2}(?!\w)", r"\1", text)


def _summary(obj: Any) -> str:
    import inspect

    doc = (inspect.getdoc(obj) or "").split("\n\n")[0]
    return plain(" ".join(doc.split()))


def cmd_list(args: argparse.Namespace) -> int:
    from stgen.registry import REGISTRIES

    rows = []
    for kind, reg in REGISTRIES.items():
        for e in reg.entries():
            rows.append({"kind": kind, "name": e.name, "package": e.source, "summary": _summary(e.obj)})
    print(format_table(rows, ["kind", "name", "package", "summary"]))
    for kind, reg in REGISTRIES.items():
        for name, err in reg.load_errors.items():
            print(f"(could not load {kind} {name!r}: {err})", file=sys.stderr)
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    import inspect

    from stgen.registry import REGISTRIES, RegistryError, resolve_kind

    try:
        kind = resolve_kind(args.kind)
        entry = REGISTRIES[kind].entry(args.name)
    except RegistryError as exc:
        raise UserError(str(exc)) from None
    cls = entry.obj
    print(f"{kind} {entry.name}  (package {entry.source}; {entry.origin})")
    doc = inspect.getdoc(cls) or ""
    if doc:
        print("\n" + plain(doc.split("\n\n")[0]))
    data_args = getattr(cls, "data_args", ())
    if data_args:
        print(f"\nset from the data: {', '.join(data_args)}")
    rows = []
    for p in cls.params():
        ann = p.annotation
        typ = getattr(ann, "__name__", None) or str(ann).replace("typing.", "")
        rows.append({"parameter": f"{kind}.{p.name}", "type": typ, "default": repr(p.default),
                     "description": plain(p.doc)})
    print()
    print(format_table(rows, ["parameter", "type", "default", "description"]) if rows else "(no parameters)")
    return 0


# -- main -----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The argument parser; building it imports nothing beyond the standard library."""
    from stgen import __version__

    parser = argparse.ArgumentParser(
        prog="stgen", description="Generate spatial transcriptomics from histology (STFlow and ablations)."
    )
    parser.add_argument("--version", action="version", version=f"stgen {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="train and evaluate (Hydra overrides: encoder=gnn trainer.max_epochs=3 ...)")
    p.add_argument("-m", "--multirun", action="store_true", help="run every combination of comma-separated values")
    p.add_argument("--cfg", choices=["job"], default=None,
                   help="print the composed config (YAML) and exit without running (as Hydra's --cfg job)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. encoder=fa_local generator=flow prior=zinb")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("list", help="list every registered component with the package it comes from")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("describe", help="parameters, defaults and meaning of one component, e.g. `describe encoder gnn`")
    p.add_argument("kind", help="encoder | generator | prior | features | data")
    p.add_argument("name")
    p.set_defaults(func=cmd_describe)
    for extra in _extra_commands():
        extra(sub)
    return parser


def _extra_commands() -> list[Any]:
    from stgen import commands

    return commands.REGISTERED


#: commands that never import Lightning (nothing to quieten)
LIGHT_COMMANDS = frozenset({"list", "describe"})


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_third_party_warnings(lightning=args.command not in LIGHT_COMMANDS and not getattr(args, "cfg", None))
    try:
        return int(args.func(args) or 0)
    except UserInputError as exc:  # only errors about the user's input; anything else keeps its traceback
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"stgen {args.command}: error: {one_line(exc, 2000)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
