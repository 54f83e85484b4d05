"""How much storing a slide's features as float16 changes a trained model's whole-slide prediction.

Predicts each slide twice with :func:`stgen.predict.predict_slide` (same seed): from its features as
stored (float32) and from the same features rounded to float16 (which prediction keeps in float16 and
converts per chunk), and prints one JSON line per slide with the largest and the mean absolute
difference of ``stgen_mean``. Slides are ``.h5ad`` files, or ``--simulate N`` slides of the simulator
with the data settings of the run's ``config.yaml`` (for a checkpoint trained on simulated data). Example::

    python benchmarks/half_features.py runs/x/checkpoints/best.ckpt --simulate 8 --config runs/x/config.yaml
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("slides", nargs="*", help=".h5ad slide files")
    p.add_argument("--simulate", type=int, default=0, help="also predict this many simulated slides")
    p.add_argument("--config", default=None, help="the run's config.yaml (its data section, for --simulate)")
    p.add_argument("--feature-key", default="features")
    args = p.parse_args(argv)

    import numpy as np
    import torch

    from stgen.io import read_h5ad
    from stgen.predict import load_module, predict_slide

    torch.set_num_threads(1)
    module = load_module(args.checkpoint)
    slides = [(Path(s).stem, read_h5ad(s)) for s in args.slides]
    if args.simulate:
        import dataclasses

        from omegaconf import OmegaConf

        from stgen.data.simulate import SimulationConfig, simulate

        data = {}
        if args.config:
            data = dict(OmegaConf.to_container(OmegaConf.load(args.config)).get("data") or {})
        fields = {f.name for f in dataclasses.fields(SimulationConfig)}
        kwargs = {k: v for k, v in data.items() if k in fields}
        if "sim_seed" in data:
            kwargs["seed"] = data["sim_seed"]
        kwargs["n_slides"] = args.simulate
        slides += [(f"simulated{i}", a) for i, a in enumerate(simulate(SimulationConfig(**kwargs)))]
    if not slides:
        p.error("give .h5ad slides or --simulate N")
    for name, adata in slides:
        full = predict_slide(module, adata, feature_key=args.feature_key, seed=0)
        half = adata.copy()
        half.obsm[args.feature_key] = np.asarray(adata.obsm[args.feature_key], dtype=np.float16)
        low = predict_slide(module, half, feature_key=args.feature_key, seed=0)
        diff = np.abs(full.mean - low.mean)
        print(json.dumps({"slide": name, "n_spots": int(adata.n_obs), "genes": len(full.genes),
                          "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
                          "prediction_std": float(full.mean.std())}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
