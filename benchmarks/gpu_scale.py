"""GPU scale check: fa_local training steps at 50k and 100k spots and whole-slide prediction at 1M spots.

Run from the repository root on a CUDA machine: ``python benchmarks/gpu_scale.py --out DIR``; prints one
JSON line per measurement and writes them to ``DIR/gpu_scale.jsonl``. ``--dry-run`` runs the same code
at tiny sizes on the CPU (to test the script before spending GPU time).

Paper configuration: F = 1024, G = 50, d = d_e = 128, 4 layers, 4 heads, k = 8. Spots are uniform in a
square, stored in random order. The kNN graph is built on the host with SciPy's cKDTree (not timed with
the network). Training: one step (forward in train mode, MSE, backward, Adam step) after one warm-up step
at 5,000 spots; ``peak_gpu_gib`` is ``torch.cuda.max_memory_allocated``. Prediction: flow sampler with
5 grid points (4 network calls), one sample, through :class:`stgen.predict.ChunkedEncoder` with its
default memory budget (half the free GPU memory).

Only tensors are used, so an image without AnnData can run it: if ``anndata`` is missing, an empty
stand-in module is registered so that ``stgen`` imports (nothing here reads or writes AnnData).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

ROWS: list[dict] = []


def report(**row: object) -> None:
    ROWS.append(row)
    print(json.dumps(row), flush=True)


def _import_shims() -> None:
    for name in ("anndata", "squidpy"):
        try:
            __import__(name)
        except ImportError:
            mod = types.ModuleType(name)
            mod.AnnData = object  # type: ignore[attr-defined]
            sys.modules[name] = mod
            report(check="note", text=f"{name} not installed: empty stand-in module (not used by this script)")


def knn_host(pos: np.ndarray, k: int) -> torch.Tensor:
    """Exact kNN edges (PyG source-to-target) from SciPy's cKDTree on the host."""
    from scipy.spatial import cKDTree

    _, idx = cKDTree(pos).query(pos, k=k + 1, workers=-1)
    dst = np.repeat(np.arange(len(pos)), k)
    src = idx[:, 1:].reshape(-1)
    return torch.from_numpy(np.stack([src, dst]).astype(np.int64))


def slide(n: int, features: int, genes: int, device: torch.device, seed: int = 0):
    from torch_geometric.data import Batch

    rng = np.random.default_rng(seed)
    pos = (rng.random((n, 2)) * (n**0.5 * 100.0)).astype(np.float32)
    t0 = time.perf_counter()
    edge_index = knn_host(pos, 8)
    knn_s = time.perf_counter() - t0
    g = torch.Generator(device=device).manual_seed(seed)
    batch = Batch(x=torch.randn(n, features, device=device, generator=g), pos=torch.from_numpy(pos).to(device),
                  edge_index=edge_index.to(device), y=torch.rand(n, genes, device=device, generator=g) * 3,
                  batch=torch.zeros(n, dtype=torch.long, device=device), ptr=torch.tensor([0, n], device=device))
    return batch, knn_s


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_gib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None


def train_step(n: int, device: torch.device, recompute: bool = True, bf16: bool = False, features: int = 1024,
               genes: int = 50) -> None:
    from torch.nn import functional as F

    from stgen.encoders.fa_local import FALocalEncoder

    torch.manual_seed(0)
    enc = FALocalEncoder(features, genes, recompute=recompute).to(device).train()
    opt = torch.optim.Adam(enc.parameters(), lr=5e-4)
    batch, knn_s = slide(n, features, genes, device)
    y_t = torch.randn(n, genes, device=device)
    t = torch.tensor([0.5], device=device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    sync(device)
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    with autocast:
        pred = enc(batch, y_t, t)
    loss = F.mse_loss(pred.float(), batch.y)
    loss.backward()
    opt.step()
    sync(device)
    report(check="fa_local training step", spots=n, recompute=recompute, bf16=bf16,
           seconds=round(time.perf_counter() - t0, 3), peak_gpu_gib=peak_gib(device), knn_host_seconds=round(knn_s, 2),
           loss=round(float(loss.detach()), 5))
    del enc, opt, batch, pred, loss


def predict(n: int, device: torch.device, features: int = 1024, genes: int = 50) -> None:
    from stgen.encoders.fa_local import FALocalEncoder
    from stgen.generators.flow import FlowGenerator
    from stgen.predict import ChunkedEncoder
    from stgen.priors.zinb import ZINBPrior

    torch.manual_seed(0)
    enc = FALocalEncoder(features, genes).to(device).eval()
    batch, knn_s = slide(n, features, genes, device)
    del batch.y
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    chunked = ChunkedEncoder(enc)
    with torch.no_grad():
        sync(device)
        t0 = time.perf_counter()
        chunked.prepare(batch)
        sync(device)
        plan_s = time.perf_counter() - t0
        out = FlowGenerator(steps=5).predict(chunked, batch, ZINBPrior(genes), seed=0, n_samples=1)
        sync(device)
        total = time.perf_counter() - t0
    plan = chunked.last_plan
    report(check="whole-slide prediction (4 network calls, 1 sample)", spots=n, features=features,
           seconds=round(total, 2), plan_seconds=round(plan_s, 2), knn_host_seconds=round(knn_s, 2),
           chunks=max(len(plan.chunks), 1) if plan else None, chunk_size=plan.chunk_size if plan else None,
           peak_gpu_gib=peak_gib(device), finite=bool(torch.isfinite(out.mean).all()))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="gpu_scale_out")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _import_shims()
    device = torch.device("cpu" if args.dry_run or not torch.cuda.is_available() else "cuda")
    report(check="environment", torch=torch.__version__, cuda=torch.version.cuda, device=str(device),
           gpu=torch.cuda.get_device_name(0) if device.type == "cuda" else "none")
    sizes = {"warm": 300, "train": (1000, 2000), "predict": 5000} if args.dry_run else {
        "warm": 5000, "train": (50_000, 100_000), "predict": 1_000_000}
    steps = [lambda: train_step(sizes["warm"], device)]
    steps += [lambda n=n: train_step(n, device) for n in sizes["train"]]
    steps += [lambda: train_step(sizes["train"][0], device, recompute=False),
              lambda: train_step(sizes["train"][1], device, bf16=True),
              lambda: predict(sizes["predict"], device, features=64),
              lambda: predict(sizes["predict"], device, features=1024)]
    for step in steps:
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - report and go on with the next measurement
            report(check="error", error=f"{type(exc).__name__}: {exc}"[:400])
        if device.type == "cuda":
            torch.cuda.empty_cache()
        (out / "gpu_scale.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
