"""``stgen extract``: compute and cache the patch embeddings of a HEST-style folder."""

from __future__ import annotations

import argparse
from typing import Any

from stgen.cli.common import UserError


def add_parser(sub: Any) -> None:
    p = sub.add_parser("extract", help="compute and cache patch embeddings of a HEST-style folder")
    p.add_argument("root", help="HEST-Bench task folder (splits/, patches/, st/)")
    p.add_argument("overrides", nargs="*", default=["features=efficientnet_lite0"],
                   help="features=<backend> and its parameters, e.g. features=timm features.model=uni "
                        "features.weights=/path/uni.bin")
    p.add_argument("--cache-dir", default=None, help="cache folder (default: <root>/embeddings)")
    p.set_defaults(func=cmd_extract)


def cmd_extract(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

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
