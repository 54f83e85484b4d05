"""GPU check: the default STFlow run on CUDA, and whole-slide scale of fa_local.

Run on a CUDA machine from the repository root: ``python benchmarks/gpu_check.py [--out DIR]``.
Prints one JSON line per measurement (and writes them to ``DIR/gpu_check.jsonl``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

RESULTS: list[dict] = []


def report(**row: object) -> None:
    RESULTS.append(row)
    print(json.dumps(row), flush=True)


def _graphs_without_squidpy() -> None:
    import stgen.data.graph as graph

    try:
        import squidpy  # noqa: F401
    except ImportError:  # a GPU image without squidpy: same kNN graph from knn_edges
        def knn_from_coords(adata, k):
            return graph.knn_edges(torch.as_tensor(adata.obsm["spatial"], dtype=torch.float32), k)

        graph.squidpy_knn = knn_from_coords
        report(check="note", text="squidpy not installed here: slide graphs built with knn_edges")


def default_run(epochs: int, out: Path) -> None:
    from stgen.config import compose_run
    from stgen.run import run

    _graphs_without_squidpy()

    cfg = compose_run(["trainer.accelerator=gpu", f"trainer.max_epochs={epochs}", "trainer.enable_progress_bar=false",
                       f"output_dir={out / 'run'}"])
    t0 = time.perf_counter()
    res = run(cfg, ["gpu"], out_dir=out / "run")
    report(check="default stgen run (fa_local+flow+zinb, simulated) on GPU", epochs=epochs,
           wall_s=round(time.perf_counter() - t0, 1), **{k: res.rows[0].get(k) for k in
                                                          ("pearson", "ridge_pearson", "best_epoch", "fit_seconds")})


def scale(n: int, train: bool, feature_dim: int = 1024, genes: int = 50, chunk: int | None = None) -> None:
    from torch_geometric.data import Batch, Data

    from stgen.data.graph import knn_edges
    from stgen.encoders.fa_local import FALocalEncoder
    from stgen.generators.flow import FlowGenerator
    from stgen.priors.zinb import ZINBPrior

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    g = torch.Generator(device=dev).manual_seed(0)
    side = (n ** 0.5) * 100.0
    pos = torch.rand(n, 2, device=dev, generator=g) * side
    t0 = time.perf_counter()
    edge_index = knn_edges(pos, 8)
    torch.cuda.synchronize()
    t_graph = time.perf_counter() - t0
    batch = Batch.from_data_list([Data(x=torch.randn(n, feature_dim, device=dev, generator=g), pos=pos,
                                       y=torch.rand(n, genes, device=dev, generator=g) * 3, edge_index=edge_index)])
    enc = FALocalEncoder(feature_dim, genes).to(dev)
    if chunk is not None:
        from stgen.predict import ChunkedEncoder

        enc = ChunkedEncoder(enc, chunk_size=chunk)
    prior = ZINBPrior(genes)
    if train:
        opt = torch.optim.Adam(enc.parameters(), lr=5e-4)
        gen = FlowGenerator()
        for _ in range(2):  # warm-up + timed
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = gen.loss(enc, batch, prior)
            opt.zero_grad()
            out.loss.backward()
            opt.step()
            torch.cuda.synchronize()
        mode, secs = "train step", time.perf_counter() - t0
    else:
        enc.eval()
        gen = FlowGenerator(steps=5)
        with torch.no_grad():
            for _ in range(2):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                gen.sample(enc, batch, prior, seed=0)
                torch.cuda.synchronize()
        mode = "sample (4 network calls)" + (f", chunks of {chunk}" if chunk else "")
        secs = time.perf_counter() - t0
    report(check="fa_local scale", spots=n, mode=mode, seconds=round(secs, 3), knn_seconds=round(t_graph, 3),
           peak_gpu_gb=round(torch.cuda.max_memory_allocated() / 2**30, 2) if dev.type == "cuda" else None,
           dense_nxn_float32_gb=round(n * n * 4 / 2**30, 1))
    del batch, enc
    torch.cuda.empty_cache()


SWEEP = (
    ["encoder=fa_local", "generator=flow", "prior=zinb"],
    ["encoder=fa_local", "generator=regression", "prior=zinb"],
    ["encoder=gnn", "generator=regression", "prior=zinb"],
    ["encoder=mlp", "generator=regression", "prior=zinb"],
)


def sweep(epochs: int, out: Path, first: int = len(SWEEP)) -> None:
    """The paper's recipe (preset=stflow) with ``epochs`` epochs on the default simulator, GPU."""
    from stgen.config import compose_run
    from stgen.run import run

    _graphs_without_squidpy()
    for i, combo in enumerate(SWEEP[:first]):
        overrides = ["preset=stflow", *combo, "trainer.accelerator=gpu", f"trainer.max_epochs={epochs}",
                     "trainer.enable_progress_bar=false"]
        res = run(compose_run(overrides), overrides, out_dir=out / f"sweep{i}")
        report(check="recipe sweep on GPU", run=" ".join(combo), max_epochs=epochs,
               **{k: res.rows[0].get(k) for k in ("pearson", "ridge_pearson", "best_epoch", "epochs",
                                                  "fit_seconds", "val_pearson")})


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="gpu_check_out")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU, no training run")
    parser.add_argument("--sweep", action="store_true", help="only the recipe sweep (see SWEEP)")
    parser.add_argument("--sweep-first", type=int, default=len(SWEEP), help="run the first N sweep entries")
    args = parser.parse_args()
    if args.dry_run:
        torch.cuda.synchronize = lambda *a: None  # type: ignore[assignment]
        torch.cuda.empty_cache = lambda *a: None  # type: ignore[assignment]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        import torch_cluster  # noqa: F401

        knn = "torch_cluster"
    except ImportError:
        knn = "blockwise torch fallback"
    if args.sweep:
        sweep(args.epochs, out, args.sweep_first)
        (out / "gpu_check.jsonl").write_text("\n".join(json.dumps(r) for r in RESULTS) + "\n")
        return 0
    report(check="environment", torch=torch.__version__, cuda=torch.version.cuda,
           gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none", knn=knn,
           python=sys.version.split()[0])
    sizes = ((500, True, None), (800, False, None), (1500, False, 400)) if args.dry_run else (
        (50_000, True, None), (100_000, False, None), (1_000_000, False, 250_000))
    for n, train, chunk in sizes:
        try:
            scale(n, train, chunk=chunk)
        except Exception as exc:  # noqa: BLE001 - report and continue with the next size
            report(check="fa_local scale", spots=n, error=f"{type(exc).__name__}: {exc}"[:300])
            torch.cuda.empty_cache()
    try:
        if not args.dry_run:
            default_run(args.epochs, out)
    except Exception as exc:  # noqa: BLE001
        report(check="default run", error=f"{type(exc).__name__}: {exc}"[:500])
    (out / "gpu_check.jsonl").write_text("\n".join(json.dumps(r) for r in RESULTS) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
