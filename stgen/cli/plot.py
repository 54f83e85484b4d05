"""``stgen plot``: spatial maps, per-gene Pearson bars and predicted-vs-measured scatter of a predicted slide."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from stgen.cli.common import UserError


def add_parser(sub: Any) -> None:
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
