"""Arithmetic work and time of one training step per encoder, as ratios to the mlp encoder.

For each encoder, one training step (forward in train mode, MSE, backward) on one random slide of N
spots at the paper configuration (F = 1024, G = 50, defaults of every encoder; fa_local with and
without recomputation) is run once under :class:`torch.utils.flop_counter.FlopCounterMode`, which
counts the floating-point operations of matrix products (``mm``, ``addmm``, ``bmm``, ...; elementwise
work, gathers and scatters are not counted), and then timed (best of ``--repeats``, one thread). The
ratio of counted work to the mlp's is a floor for the ratio of times at equal efficiency: per-edge
work on ``E x frames`` and ``E x heads`` rows also adds elementwise operations that the count leaves
out. Prints one JSON line per encoder and a table. Example::

    OMP_NUM_THREADS=1 python benchmarks/train_flops.py --n 5000 --json flops.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: (encoder, recompute) pairs measured; recompute None means the encoder has no such option
CASES: tuple[tuple[str, bool | None], ...] = (
    ("mlp", None), ("gnn", None), ("fa_local", True), ("fa_local", False), ("global_attention", None),
)


def measure(n: int, features: int, repeats: int, encoders: list[str]) -> list[dict]:
    import torch
    from scale import GENES, K, _random_positions, build_encoder
    from torch.nn import functional as F
    from torch.utils.flop_counter import FlopCounterMode
    from torch_geometric.data import Batch, Data

    from stgen.data.graph import knn_edges

    pos, gen = _random_positions(n, 0)
    batch = Batch.from_data_list([Data(x=torch.randn(n, features, generator=gen), pos=pos,
                                       y=torch.rand(n, GENES, generator=gen), edge_index=knn_edges(pos, K))])
    y_t = torch.randn(n, GENES, generator=gen)
    t = torch.tensor([0.5])
    rows = []
    for name, recompute in CASES:
        if name not in encoders:
            continue
        enc = build_encoder(name, features, recompute).train()

        def step(enc=enc) -> None:
            enc.zero_grad(set_to_none=True)
            F.mse_loss(enc(batch, y_t, t), batch.y).backward()

        counter = FlopCounterMode(display=False)
        with counter:
            step()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        rows.append({"case": "train-flops", "encoder": name, "recompute": recompute, "n_spots": n,
                     "features": features, "gflop": round(counter.get_total_flops() / 1e9, 3),
                     "seconds": round(min(times), 4), "threads": torch.get_num_threads(),
                     "load": round(os.getloadavg()[0], 2)})
    return rows


def table(rows: list[dict]) -> str:
    base = next((r for r in rows if r["encoder"] == "mlp"), None)
    lines = ["| encoder | matmul GFLOP | s per step | GFLOP ratio to mlp | time ratio to mlp |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        name = r["encoder"] + ("" if r["recompute"] is None else f" (recompute {'on' if r['recompute'] else 'off'})")
        fr = f"{r['gflop'] / base['gflop']:.1f}" if base else ""
        tr = f"{r['seconds'] / base['seconds']:.1f}" if base else ""
        lines.append(f"| {name} | {r['gflop']:.2f} | {r['seconds']:.3f} | {fr} | {tr} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=5000, help="spots on the slide")
    p.add_argument("--features", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=3, help="timed steps per encoder (the best is kept)")
    p.add_argument("--encoders", nargs="+", default=sorted({c[0] for c in CASES}))
    p.add_argument("--json", default=None, help="append rows to this JSON-lines file")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    rows = measure(args.n, args.features, args.repeats, args.encoders)
    for r in rows:
        print(json.dumps(r), flush=True)
        if args.json:
            with open(args.json, "a") as fh:
                fh.write(json.dumps(r) + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
