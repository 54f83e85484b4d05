"""Scale of whole-slide prediction: a synthetic pyramidal WSI written tile by tile, predicted end to end.

    OMP_NUM_THREADS=1 python benchmarks/wsi_scale.py --size 60000 --out /tmp/wsi_bench
    OMP_NUM_THREADS=1 python benchmarks/wsi_scale.py --size 20000 --out /tmp/wsi_bench_small

Writes ``synthetic_<size>.tif`` (JPEG tiles, levels 1/4/16/64, 0.5 um/px; never whole in memory: each
tile is rendered from an analytic tissue pattern at its level), then predicts it with the default lattice
of a Visium-like checkpoint (100 um hexagonal, 112 um patches, ``handcrafted`` backend), one thread, no
DataLoader workers. Prints the number of spots, wall time per stage (tissue detection / patch extraction
split into reading and embedding / prediction), patches per second for ``handcrafted`` and, on a sample,
``efficientnet_lite0`` (extrapolated to every spot), and the peak RSS of the process. Comparing two
``--size`` runs shows whether memory grows with the slide.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np

MPP = 0.5
TILE = 512
FACTORS = (1, 4, 16, 64)


def render(x0: int, y0: int, w: int, h: int, ds: int, size: int) -> np.ndarray:
    """Pixels ``[h, w, 3]`` of level ``ds`` at level-pixel ``(x0, y0)``: three tissue blobs (one with a
    hole) with H&E-like colour and texture on white glass."""
    ys = (np.arange(y0, y0 + h) * ds + ds / 2)[:, None] / size
    xs = (np.arange(x0, x0 + w) * ds + ds / 2)[None, :] / size
    tissue = np.zeros((h, w), dtype=bool)
    for cx, cy, rx, ry in ((0.3, 0.35, 0.22, 0.25), (0.7, 0.45, 0.2, 0.3), (0.45, 0.78, 0.28, 0.15)):
        tissue |= ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 < 1
    tissue &= ((xs - 0.3) / 0.06) ** 2 + ((ys - 0.35) / 0.06) ** 2 > 1  # a hole
    wave = np.sin(xs * size / 37.0) * np.cos(ys * size / 23.0)
    img = np.full((h, w, 3), 240, dtype=np.uint8)
    col = np.stack([200 - 40 * wave, 120 - 30 * wave, 175 - 10 * wave], axis=-1)
    img[tissue] = col[tissue].astype(np.uint8)
    return img


def write_slide(path: Path, size: int) -> float:
    """Write the pyramid tile by tile; returns seconds."""
    import tifffile

    t0 = time.perf_counter()

    def tiles(ds: int):
        n = size // ds
        for ty in range(0, n, TILE):
            for tx in range(0, n, TILE):
                yield render(tx, ty, TILE, TILE, ds, size)

    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        for i, ds in enumerate(FACTORS):
            n = size // ds
            kw = {"subifds": len(FACTORS) - 1, "resolution": (1e4 / MPP, 1e4 / MPP), "resolutionunit": "CENTIMETER"} \
                if i == 0 else {"subfiletype": 1}
            tw.write(tiles(ds), shape=(n, n, 3), dtype=np.uint8, tile=(TILE, TILE), photometric="rgb",
                     compression="jpeg", **kw)
    return time.perf_counter() - t0


def sampled_run(module, slide: Path, args):
    """Tissue and lattice on the whole slide; extraction timed on ``args.sample`` spots and scaled to all;
    prediction on every spot with the sample's embeddings repeated (its time depends on N only)."""
    from types import SimpleNamespace

    from stgen.data.slide import make_slide
    from stgen.features.handcrafted import HandcraftedFeatures
    from stgen.predict import predict_slide
    from stgen.wsi.lattice import tissue_lattice
    from stgen.wsi.pipeline import OVERVIEW_PX, embed_spots, image_settings, prepare_image
    from stgen.wsi.tissue import detect_tissue

    settings = image_settings(module)
    job = prepare_image(slide, settings=settings)
    t0 = time.perf_counter()
    ov, ds = job.reader.overview(OVERVIEW_PX)
    mask = detect_tissue(ov, ds, job.reader.mpp)
    mask.save_png(args.out / f"synthetic_{args.size}_tissue.png")
    coords = tissue_lattice(mask, *job.reader.dimensions, settings.spacing_um / job.reader.mpp, settings.layout)
    tissue_s = time.perf_counter() - t0
    pick = np.random.default_rng(0).choice(len(coords), size=min(args.sample, len(coords)), replace=False)
    t0 = time.perf_counter()
    emb, info = embed_spots(job, coords[np.sort(pick)], settings, HandcraftedFeatures(device="cpu"), use_cache=False,
                            progress=False)
    scale = len(coords) / len(pick)
    extraction_s = (time.perf_counter() - t0) * scale
    t0 = time.perf_counter()
    feats = np.resize(emb, (len(coords), emb.shape[1]))
    pred = predict_slide(module, make_slide(None, coords, slide="bench", features=feats), n_samples=1)
    timings = {"tissue": tissue_s, "extraction": extraction_s, "patch_read": info["read_s"] * scale,
               "patch_embed": info["embed_s"] * scale, "prediction": time.perf_counter() - t0}
    adata = SimpleNamespace(n_obs=len(coords), obsm={"spatial": coords[np.sort(pick)]}, pred=pred)
    return SimpleNamespace(adata=adata, timings=timings, mask=mask)


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=60000, help="slide side in pixels (0.5 um/px)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--effnet-sample", type=int, default=256, help="patches timed with efficientnet_lite0")
    ap.add_argument("--sample", type=int, default=0,
                    help="time extraction on this many spots only and extrapolate (0: every spot)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from stgen.data.spec import DataSpec
    from stgen.features.handcrafted import HandcraftedFeatures
    from stgen.lit import STGenLightning
    from stgen.wsi.pipeline import predict_image

    args.out.mkdir(parents=True, exist_ok=True)
    slide = args.out / f"synthetic_{args.size}.tif"
    write_s = write_slide(slide, args.size) if not slide.exists() else 0.0
    rss_after_write = peak_rss_gib()
    spec = DataSpec(features=HandcraftedFeatures(device="cpu").feature_spec(), patch_um=112.0, patch_px=224,
                    spot_spacing_um=100.0, layout="hex")
    torch.manual_seed(0)
    module = STGenLightning({"encoder": {"name": "gnn", "hidden_dim": 64, "num_layers": 2},
                             "generator": {"name": "regression"}, "prior": {"name": "zero"}},
                            in_dim=47, genes=[f"gene{i}" for i in range(50)], data_spec=spec.to_dict()).eval()
    t0 = time.perf_counter()
    if args.sample:
        res = sampled_run(module, slide, args)
    else:
        res = predict_image(module, slide, cache_dir=args.out / "cache", use_cache=False, num_workers=0,
                            device="cpu", mask_path=args.out / f"synthetic_{args.size}_tissue.png", progress=False,
                            return_result=True)
    total = time.perf_counter() - t0
    n = res.adata.n_obs
    t = res.timings
    report = {
        "size_px": args.size, "gpx": args.size**2 / 1e9, "file_gib": slide.stat().st_size / 2**30,
        "write_s": round(write_s, 1), "spots": n, "total_s": round(total, 1),
        "tissue_s": round(t["tissue"], 1), "extraction_s": round(t["extraction"], 1),
        "patch_read_s": round(t["patch_read"], 1), "patch_embed_s": round(t["patch_embed"], 1),
        "prediction_s": round(t["prediction"], 1),
        "handcrafted_patches_per_s_embed_only": round(n / t["patch_embed"], 1),
        "patches_per_s_read_plus_handcrafted": round(n / t["extraction"], 1),
        "peak_rss_gib_after_write": round(rss_after_write, 3), "peak_rss_gib": round(peak_rss_gib(), 3),
        "tissue_fraction": round(res.mask.fraction, 3),
    }
    try:
        from stgen.features.efficientnet import EfficientNetLite0
        from stgen.wsi.patches import cut_patches, plan_patches
        from stgen.wsi.reader import open_slide

        eff = EfficientNetLite0(device="cpu", batch_size=32)
        reader = open_slide(slide)
        sample = cut_patches(reader, plan_patches(reader, 112.0, 224), res.adata.obsm["spatial"][: args.effnet_sample])
        eff(sample[:8])  # warm-up
        t1 = time.perf_counter()
        eff(sample)
        rate = len(sample) / (time.perf_counter() - t1)
        report["efficientnet_lite0_patches_per_s"] = round(rate, 2)
        report["efficientnet_lite0_extrapolated_embed_h"] = round(n / rate / 3600, 2)
    except ImportError as exc:
        report["efficientnet_lite0"] = f"not installed: {exc}"
    report["sampled_extraction"] = args.sample or "no (every spot)"
    print(json.dumps(report, indent=1))
    (args.out / f"report_{args.size}.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
