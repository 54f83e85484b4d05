"""Sub-commands beyond run/list/describe (predict, extract, convert); each adds its own parser."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def _predict_parser(sub: Any) -> None:
    p = sub.add_parser("predict", help="predict expression (with uncertainty) for new slides from a checkpoint")
    p.add_argument("checkpoint", help="a trained model: <run>/checkpoints/best.ckpt")
    p.add_argument("inputs", nargs="+", help="slide .h5ad files (obsm['spatial'] and patch embeddings)")
    p.add_argument("-o", "--out", required=True, help="output folder (one .h5ad per input; never overwritten)")
    p.add_argument("--n-samples", type=int, default=8, help="samples per slide: mean and std (default 8)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the generator's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--k", type=int, default=8, help="neighbours per spot (as in training)")
    p.add_argument("--feature-key", default="features", help="obsm key of the patch embeddings")
    p.add_argument("--chunk-size", type=int, default=50_000, help="spots per inference chunk (bounds memory)")
    p.set_defaults(func=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> int:
    from stgen.cli import UserError
    from stgen.data.slide import SlideError
    from stgen.predict import predict_files
    from stgen.registry import RegistryError

    if args.n_samples < 1:
        raise UserError("--n-samples must be >= 1")
    try:
        written = predict_files(args.checkpoint, args.inputs, args.out, k=args.k, feature_key=args.feature_key,
                                n_samples=args.n_samples, steps=args.steps, seed=args.seed,
                                chunk_size=args.chunk_size)
    except (FileNotFoundError, FileExistsError, SlideError, RegistryError, ValueError, OSError) as exc:
        raise UserError(str(exc)) from None
    for path in written:
        print(f"wrote {path} (layers stgen_mean{', stgen_std' if args.n_samples > 1 else ''})")
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
    from stgen.data.convert import convert_to_hest
    from stgen.data.slide import SlideError

    try:
        pairs = READERS[args.format](args)
        out = convert_to_hest(pairs, args.out, split_by=args.split_by, n_genes=args.n_genes,
                              include_genes=args.include_genes)
    except (FileNotFoundError, FileExistsError, SlideError, ValueError, OSError) as exc:
        raise UserError(str(exc)) from None
    n_spots = sum(a.n_obs for a, _ in pairs)
    print(f"wrote {out}: {len(pairs)} slides, {n_spots} spots, split by {args.split_by}")
    print(f"train on it with: stgen run data=hest data.root={out} features=efficientnet_lite0")
    return 0


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
    from stgen.data.slide import SlideError
    from stgen.registry import RegistryError

    overrides = list(args.overrides)
    if not any(o.startswith("features=") for o in overrides):
        overrides.insert(0, "features=efficientnet_lite0")
    try:
        spec = OmegaConf.to_container(compose_run(overrides).features, resolve=True)
        name = spec.pop("name")
        ds = read_hest(args.root, feature_backend=name, backend_params=spec, cache_dir=args.cache_dir)
    except (ConfigError, RegistryError, FileNotFoundError, SlideError, ValueError, OSError, ImportError) as exc:
        raise UserError(str(exc)) from None
    for sid, path in sorted(ds.embedding_paths.items()):
        print(f"{sid}: {ds.slides[sid].n_obs} spots -> {path}")
    return 0


def _plot_parser(sub: Any) -> None:
    p = sub.add_parser("plot", help="spatial maps of measured vs predicted expression (and spread)")
    p.add_argument("prediction", help="a predicted slide (.h5ad from `stgen predict` or a run's predictions/)")
    p.add_argument("--genes", nargs="+", required=True, help="genes to map, e.g. ERBB2 GATA3")
    p.add_argument("-o", "--out", required=True, help="figure file (.png or .pdf); never overwritten")
    p.set_defaults(func=cmd_plot)


def cmd_plot(args: argparse.Namespace) -> int:
    from pathlib import Path

    import anndata as ad

    from stgen.cli import UserError
    from stgen.plot import spatial_maps

    out = Path(args.out)
    if out.exists():
        raise UserError(f"{out} exists; choose another --out")
    try:
        path = spatial_maps(ad.read_h5ad(args.prediction), args.genes, out)
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise UserError(str(exc)) from None
    print(f"wrote {path}")
    return 0


def _ablate_parser(sub: Any) -> None:
    from stgen.ablate import _ablate_parser as add

    add(sub)


REGISTERED: list[Callable[[Any], None]] = [_predict_parser, _convert_parser, _extract_parser, _plot_parser,
                                           _ablate_parser]
