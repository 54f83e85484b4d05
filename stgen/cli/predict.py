"""``stgen predict``: expression for new slides (.h5ad or H&E images) from a checkpoint."""

from __future__ import annotations

import argparse
from typing import Any

from stgen.cli.common import UserError, add_sampling_args, check_sampling_args


def add_parser(sub: Any) -> None:
    p = sub.add_parser("predict", help="predict expression maps for new slides (.h5ad, or H&E images) from a checkpoint")
    p.add_argument("checkpoint", help="a trained model: <run>/checkpoints/best.ckpt")
    p.add_argument("inputs", nargs="+",
                   help="slides: .h5ad (spots + embeddings) or images (.svs .tif .tiff .ome.tif .ndpi, or .jpg/.png "
                        "with --mpp); quoted globs such as 'slides/*.svs' are expanded")
    p.add_argument("-o", "--out", required=True, help="output folder (one .h5ad per input; never overwritten)")
    add_sampling_args(p)
    p.add_argument("--feature-key", default="features", help="obsm key of the patch embeddings (.h5ad inputs)")
    p.add_argument("--chunk-size", type=int, default=None, help="spots per inference chunk (default: from --memory-budget)")
    p.add_argument("--memory-budget", default=None,
                   help="memory the whole process may hold, e.g. 4G; sets the chunk size "
                        "(default: what it holds plus half of what is available)")
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
    from stgen.predict import predict_files
    from stgen.registry import RegistryError

    check_sampling_args(args)
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
