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


REGISTERED: list[Callable[[Any], None]] = [_predict_parser]
