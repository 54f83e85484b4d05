"""Sub-commands beyond run/list/describe (predict, extract, convert); each adds its own parser."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _predict_parser(sub: Any) -> None:
    p = sub.add_parser("predict", help="predict expression maps for new slides (.h5ad, or H&E images) from a checkpoint")
    p.add_argument("checkpoint", help="a trained model: <run>/checkpoints/best.ckpt")
    p.add_argument("inputs", nargs="+",
                   help="slides: .h5ad (spots + embeddings) or images (.svs .tif .tiff .ome.tif .ndpi, or .jpg/.png "
                        "with --mpp); quoted globs such as 'slides/*.svs' are expanded")
    p.add_argument("-o", "--out", required=True, help="output folder (one .h5ad per input; never overwritten)")
    p.add_argument("--n-samples", type=int, default=None,
                   help="samples per slide: mean and std (default: the checkpoint's generator.n_samples)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the checkpoint's generator.steps)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--k", type=int, default=None, help=argparse.SUPPRESS)  # removed: an error that says why
    p.add_argument("--feature-key", default="features", help="obsm key of the patch embeddings (.h5ad inputs)")
    p.add_argument("--chunk-size", type=int, default=None, help="spots per inference chunk (default: from --memory-budget)")
    p.add_argument("--memory-budget", default=None,
                   help="memory the prediction may use, e.g. 4G; sets the chunk size (default: half of what is available)")
    img = p.add_argument_group("images (whole-slide or plain H&E)")
    img.add_argument("--mpp", type=float, default=None,
                     help="microns per full-resolution pixel (required when the file does not record it, e.g. .jpg)")
    img.add_argument("--spacing-um", type=float, default=None, help="spot spacing of the virtual lattice "
                     "(default: the training data's, from the checkpoint)")
    img.add_argument("--layout", choices=["hex", "square"], default=None, help="virtual lattice (default: the training data's)")
    img.add_argument("--spots", default=None, help="predict at these positions instead of a lattice: a CSV with x,y "
                     "(or pixel_x,pixel_y) full-resolution pixels, or an .h5ad with obsm['spatial']")
    img.add_argument("--features", default=None, help="feature backend, only for checkpoints that do not record one "
                     "(e.g. efficientnet_lite0)")
    img.add_argument("--feature-param", action="append", default=[], metavar="KEY=VALUE",
                     help="a non-default parameter of --features (repeatable), e.g. normalization=imagenet")
    img.add_argument("--patch-um", type=float, default=None, help="patch side in um, only for checkpoints that do not "
                     "record it (default 112)")
    img.add_argument("--cache-dir", default=None, help="embedding cache (default $STGEN_CACHE_DIR or ~/.cache/stgen)")
    img.add_argument("--no-cache", action="store_true", help="neither read nor write the embedding cache")
    img.add_argument("--num-workers", type=int, default=2, help="processes cutting patches (default 2)")
    img.add_argument("--batch-size", type=int, default=64, help="patches per batch (default 64)")
    img.add_argument("--device", default="auto", help="device of the feature backend (auto, cpu, cuda)")
    img.add_argument("--keep-features", action="store_true", help="keep the patch embeddings in obsm['features']")
    p.set_defaults(func=cmd_predict)


def _expand_inputs(inputs: list[str]) -> list[str]:
    import glob

    from stgen.errors import MissingInputError

    out: list[str] = []
    for item in inputs:
        if any(c in item for c in "*?["):
            found = sorted(glob.glob(item))
            if not found:
                raise MissingInputError(f"no file matches {item!r}; check the pattern (quote it so the shell "
                                        "does not expand it)")
            out += found
        else:
            out.append(item)
    return out


def _feature_params(items: list[str]) -> dict[str, Any] | None:
    import yaml

    from stgen.errors import ConfigInputError

    params: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigInputError(f"--feature-param {item!r}: expected KEY=VALUE, e.g. normalization=imagenet")
        params[key] = yaml.safe_load(value)
    return params or None


def cmd_predict(args: argparse.Namespace) -> int:
    from stgen.cli import UserError
    from stgen.predict import predict_files
    from stgen.registry import RegistryError

    if args.k is not None:
        raise UserError("--k is not an option: k is set with encoder.k when training and read from the checkpoint "
                        "(prediction builds the graph the trained encoder reads)")
    for flag, value in (("--n-samples", args.n_samples), ("--steps", args.steps)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be >= 1")
    if args.num_workers < 0 or args.batch_size < 1:
        raise UserError("--num-workers must be >= 0 and --batch-size >= 1")
    try:
        inputs = _expand_inputs(args.inputs)
        written = predict_files(
            args.checkpoint, inputs, args.out, feature_key=args.feature_key, n_samples=args.n_samples,
            steps=args.steps, seed=args.seed, chunk_size=args.chunk_size,
            memory_budget=args.memory_budget, mpp=args.mpp, spots=args.spots,
            spacing_um=args.spacing_um, layout=args.layout, features=args.features,
            feature_params=_feature_params(args.feature_param), patch_um=args.patch_um, cache_dir=args.cache_dir,
            use_cache=not args.no_cache, num_workers=args.num_workers, batch_size=args.batch_size,
            device=args.device, keep_features=args.keep_features)
    except (RegistryError, PermissionError, ImportError) as exc:  # UserInputErrors (bad files, options) pass through
        raise UserError(str(exc)) from exc
    for path in written:
        print(f"wrote {path}")
    return 0


def _convert_parser(sub: Any) -> None:
    p = sub.add_parser("convert", help="write a dataset as a HEST-Bench-style folder (st/, patches/, splits/, genes)")
    p.add_argument("format", choices=sorted(READERS), help="input layout")
    p.add_argument("root", help="input folder")
    p.add_argument("-o", "--out", required=True, help="output folder (must not exist or be empty)")
    p.add_argument("--sections", nargs="*", default=None, help="sections to read (default: all)")
    p.add_argument("--split-by", choices=["patient", "section"], default="patient",
                   help="leave-one-patient-out or leave-one-section-out folds")
    p.add_argument("--n-genes", type=int, default=50, help="size of the highly-variable gene panel")
    p.add_argument("--include-genes", nargs="*", default=[], help="genes always kept in the panel, e.g. ERBB2")
    p.add_argument("--patch-um", type=float, default=112.0, help="patch side in micrometres (resampled to 224 px)")
    p.set_defaults(func=cmd_convert)


def _read_legacy_st(args: argparse.Namespace) -> Any:
    from stgen.data.convert import read_her2st

    return read_her2st(args.root, sections=args.sections, patch_um=args.patch_um, progress=True)


READERS: dict[str, Callable[[argparse.Namespace], Any]] = {"legacy-st": _read_legacy_st}


def cmd_convert(args: argparse.Namespace) -> int:
    from stgen.cli import UserError
    from stgen.data.convert import _check_output, convert_to_hest

    if args.n_genes < 1:
        raise UserError(f"--n-genes must be >= 1, got {args.n_genes}")
    if not args.patch_um > 0:
        raise UserError(f"--patch-um must be > 0 micrometres, got {args.patch_um}")
    _check_output(Path(args.out))  # before reading anything (reading sections takes minutes)
    try:
        pairs = READERS[args.format](args)
        out = convert_to_hest(pairs, args.out, split_by=args.split_by, n_genes=args.n_genes,
                              include_genes=args.include_genes)
    except PermissionError as exc:  # UserInputErrors (bad files, options) pass through
        raise UserError(f"{exc}; choose a folder you can write to") from exc
    n_spots = sum(a.n_obs for a, _ in pairs)
    print(f"wrote {out}: {len(pairs)} slides, {n_spots} spots, split by {args.split_by}")
    command = f"stgen run data=hest data.root={out} features=efficientnet_lite0"
    lacking = []
    for fold in fold_plan(pairs, args.split_by):
        print(f"  {fold['name']}: test {fold['test_groups']} ({', '.join(fold['test'])}); "
              f"validation {', '.join(fold['val']) or 'none'}; train {', '.join(fold['train'])}")
        if not fold["val"]:
            lacking.append(fold["name"])
    if lacking:
        print(f"NOTE: {', '.join(lacking)} leave(s) no slide for validation (one training slide), so model "
              "selection must use the test fold (eval.select_on=test, labelled optimistic in every output); "
              "convert with --split-by section or add slides to avoid it")
        command += " eval.select_on=test"
    print(f"train on it with: {command}")
    return 0


def fold_plan(pairs: Any, split_by: str) -> list[dict[str, Any]]:
    """The folds ``stgen run data=hest`` makes of converted slides: names, test groups, validation slides."""
    from stgen.data.convert import _folds
    from stgen.data.hest_data import carve_validation
    from stgen.data.slide import patient_id, slide_id

    ids = [slide_id(a) for a, _ in pairs]
    groups = ids if split_by == "section" else [patient_id(a) or slide_id(a) for a, _ in pairs]
    patients = {slide_id(a): patient_id(a) or slide_id(a) for a, _ in pairs}
    plan = []
    for i, (train, test) in enumerate(_folds(ids, groups)):
        fit, val = carve_validation(train, {sid: patients[sid] for sid in train}, 1)
        test_groups = sorted({g for sid, g in zip(ids, groups, strict=True) if sid in test})
        label = ("patient " if split_by == "patient" else "section ") + ", ".join(test_groups)
        plan.append({"name": f"fold{i}", "test_groups": label, "test": test, "val": val, "train": fit})
    return plan


def _extract_parser(sub: Any) -> None:
    p = sub.add_parser("extract", help="compute and cache patch embeddings of a HEST-style folder")
    p.add_argument("root", help="HEST-Bench task folder (splits/, patches/, st/)")
    p.add_argument("overrides", nargs="*", default=["features=efficientnet_lite0"],
                   help="features=<backend> and its parameters, e.g. features=timm features.model=uni "
                        "features.weights=/path/uni.bin")
    p.add_argument("--cache-dir", default=None, help="cache folder (default: <root>/embeddings)")
    p.set_defaults(func=cmd_extract)


def cmd_extract(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from stgen.cli import UserError
    from stgen.config import ConfigError, compose_run
    from stgen.data.hest import read_hest
    from stgen.registry import RegistryError

    overrides = list(args.overrides)
    if not any(o.startswith("features=") for o in overrides):
        overrides.insert(0, "features=efficientnet_lite0")
    try:
        spec = OmegaConf.to_container(compose_run(overrides).features, resolve=True)
        name = spec.pop("name")
        ds = read_hest(args.root, feature_backend=name, backend_params=spec, cache_dir=args.cache_dir)
    except (ConfigError, RegistryError, PermissionError, ImportError) as exc:  # UserInputErrors pass through
        raise UserError(str(exc)) from exc
    for sid, path in sorted(ds.embedding_paths.items()):
        print(f"{sid}: {ds.slides[sid].n_obs} spots -> {path}")
    return 0


def _plot_parser(sub: Any) -> None:
    p = sub.add_parser("plot", help="figures of a predicted slide: spatial maps, per-gene Pearson, scatter")
    p.add_argument("prediction", help="a predicted slide (.h5ad from `stgen predict` or a run's predictions/)")
    p.add_argument("--genes", nargs="+", default=[], help="genes to map or scatter, e.g. ERBB2 GATA3")
    p.add_argument("--kind", choices=["maps", "pearson", "scatter"], default="maps",
                   help="maps: measured / predicted / spread per gene (on the H&E image when the slide has one); "
                        "pearson: per-gene Pearson bars; scatter: predicted vs measured per gene")
    p.add_argument("--scale", choices=["robust", "shared"], default="robust",
                   help="colour scales of the maps: robust = each map its own 1st-99th percentile range; shared = "
                        "measured and predicted of a gene share one")
    p.add_argument("--key", default="stgen", help="key the predictions are stored under (layers/obsm <key>_mean)")
    p.add_argument("-o", "--out", required=True, help="figure file (.png or .pdf); never overwritten")
    p.set_defaults(func=cmd_plot)


def cmd_plot(args: argparse.Namespace) -> int:
    from stgen import plot
    from stgen.cli import UserError
    from stgen.io import read_h5ad

    out = Path(args.out)
    if out.exists():
        raise UserError(f"{out} exists; choose another --out")
    if args.kind != "pearson" and not args.genes:
        raise UserError(f"--kind {args.kind} needs --genes, e.g. --genes ERBB2 GATA3")
    if out.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise UserError(f"--out {out}: the figure must end in .png, .pdf or .svg")
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: folder {out.parent} does not exist; create it first")
    adata = read_h5ad(args.prediction, what="prediction")
    if "spatial" not in adata.obsm and args.kind == "maps":
        raise UserError(f"{args.prediction}: no obsm['spatial'] (spot coordinates); plot a file written by "
                        "`stgen predict` or a run's predictions/")
    try:
        if args.kind == "maps":
            path = plot.spatial_maps(adata, args.genes, out, key=args.key, scale=args.scale)
        elif args.kind == "pearson":
            path = plot.pearson_bars(adata, out, key=args.key)
        else:
            path = plot.predicted_vs_measured(adata, args.genes, out, key=args.key)
    except ValueError as exc:  # the plot functions raise ValueError only for genes/layers the file lacks
        raise UserError(f"{args.prediction}: {exc}") from exc
    print(f"wrote {path}")
    return 0


def _predict_cohort_parser(sub: Any) -> None:
    from stgen.cohort import add_parser

    add_parser(sub)


def _ablate_parser(sub: Any) -> None:
    from stgen.ablate import _ablate_parser as add

    add(sub)


REGISTERED: list[Callable[[Any], None]] = [_predict_parser, _predict_cohort_parser, _convert_parser, _extract_parser,
                                           _plot_parser, _ablate_parser]
