"""Whole-slide scale: one training step and one whole-slide prediction, each in a fresh process.

Every case runs in its own interpreter (one torch thread; ``--threads`` to change) and prints one JSON line with its time and
its peak resident set size (``VmHWM``: the whole process, interpreter, torch and the slide included;
``rise_gib`` is the part above the resident size just before the measured call). Cases:

- ``train``: one training step (forward in train mode, MSE, backward, Adam step) of an encoder on one
  random slide of N spots (uniform spots, kNN graph k = 8 built beforehand, not timed), at the paper's
  configuration by default (F = 1024, G = 50, fa_local d = d_e = 128, 4 layers, 4 heads);
- ``infer``: one fa_local inference call (eval, no gradients, ``prepare`` included) on such a slide;
- ``predict``: :func:`stgen.predict.predict_slide` (fa_local + flow + ZINB, 5 grid points = 4 network
  calls, one sample) on an in-memory AnnData of N spots stored in random order, with the time split into
  graph (squidpy kNN), plan (spatial chunks, subgraphs, frames), sampling and output assembly;
  ``--half-features`` stores the features as float16 (built block by block, never a float32 copy of
  the whole slide); ``--half-diff`` also predicts from the float32 features and reports the largest
  absolute difference. A thread samples the resident size every 0.2 s to tell in which phase the peak
  was reached (``peak_phase``); ``cpu_seconds`` is the CPU time of the measured part (user and system,
  all threads), a figure that moves less with the load of a shared machine than ``seconds``.

``compare`` runs cases for several source trees (``--trees before=/tmp/old .``), interleaved: for
each N, tree after tree, so that machine load hits them alike. Examples::

    python benchmarks/scale.py train --n 10000
    python benchmarks/scale.py predict --n 100000 --features 64 --memory-budget 3G
    python benchmarks/scale.py compare train --n 10000 20000 --trees before=/tmp/old after=. \\
        --case-args "--features 1024" --json out.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

GENES = 50
K = 8
SPACING_PX = 100.0


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _peak() -> dict[str, float]:
    return {"peak_rss_gib": round(_status_kb("VmHWM") / 2**20, 3)}


def _random_positions(n: int, seed: int, layout: str = "uniform"):
    """``n`` spot positions and the generator that drew them: uniform in a square (``uniform``), or a
    square grid of spacing ``SPACING_PX`` with +-25 % jitter, in random order (``grid``: the closest
    spots stay resolvable at a million spots, where uniform draws put some spots 0.04 px apart)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    if layout == "uniform":
        return torch.rand(n, 2, generator=gen) * (n**0.5 * SPACING_PX), gen
    side = int(n**0.5) + 1
    cells = torch.randperm(side * side, generator=gen)[:n]
    grid = torch.stack([cells // side, cells % side], dim=1).float()
    return (grid + (torch.rand(n, 2, generator=gen) - 0.5) * 0.5) * SPACING_PX, gen


def build_encoder(name: str, in_dim: int, recompute: bool | None):
    import torch

    from stgen.registry import ENCODERS

    torch.manual_seed(0)
    kwargs = {}
    if recompute is not None and name == "fa_local":
        kwargs["recompute"] = recompute
    try:
        return ENCODERS.get(name)(in_dim=in_dim, out_dim=GENES, **kwargs)
    except TypeError:  # a tree without the option
        return ENCODERS.get(name)(in_dim=in_dim, out_dim=GENES)


def case_train(n: int, encoder: str, features: int, recompute: bool | None, bf16: bool = False) -> dict:
    import contextlib

    import torch
    from torch.nn import functional as F
    from torch_geometric.data import Batch, Data

    from stgen.data.graph import knn_edges

    pos, gen = _random_positions(n, 0)
    data = Data(x=torch.randn(n, features, generator=gen), pos=pos,
                y=torch.log1p(torch.rand(n, GENES, generator=gen) * 10), edge_index=knn_edges(pos, K))
    batch = Batch.from_data_list([data])
    enc = build_encoder(encoder, features, recompute).train()
    opt = torch.optim.Adam(enc.parameters(), lr=1e-4)
    y_t = torch.randn(n, GENES, generator=gen)
    t = torch.tensor([0.5])
    base = _status_kb("VmRSS")
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with autocast:
        pred = enc(batch, y_t, t)
    loss = F.mse_loss(pred.float(), batch.y)
    loss.backward()
    opt.step()
    secs = time.perf_counter() - t0
    row = {"case": "train" + ("-bf16" if bf16 else ""), "encoder": encoder, "n_spots": n, "features": features,
           "seconds": round(secs, 3),
           "loss": round(float(loss.detach()), 6), **_peak()}
    row["rise_gib"] = round(row["peak_rss_gib"] - base / 2**20, 3)
    return row


def case_infer(n: int, features: int) -> dict:
    """One inference call of fa_local (eval, no gradients, ``prepare`` included) on a random slide."""
    import torch
    from torch_geometric.data import Batch, Data

    from stgen.data.graph import knn_edges

    pos, gen = _random_positions(n, 0)
    batch = Batch.from_data_list([Data(x=torch.randn(n, features, generator=gen), pos=pos,
                                       edge_index=knn_edges(pos, K))])
    enc = build_encoder("fa_local", features, None).eval()
    y = torch.randn(n, GENES, generator=gen)
    base = _status_kb("VmRSS")
    t0 = time.perf_counter()
    with torch.no_grad():
        out = enc(batch, y, torch.tensor([0.5]))
    row = {"case": "infer", "encoder": "fa_local", "n_spots": n, "features": features,
           "seconds": round(time.perf_counter() - t0, 3), "finite": bool(torch.isfinite(out).all()), **_peak()}
    row["rise_gib"] = round(row["peak_rss_gib"] - base / 2**20, 3)
    return row


class _Module:
    """The parts of a trained LightningModule that :func:`stgen.predict.predict_slide` reads."""

    def __init__(self, model, in_dim: int, genes: list[str]) -> None:
        from types import SimpleNamespace

        self.model = model
        self.genes = genes
        self.hparams = SimpleNamespace(in_dim=in_dim, model_spec={})


def _cpu_seconds() -> float:
    """User plus system CPU seconds of this process so far (all its threads)."""
    import resource

    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def _rss_sampler(every: float = 0.2):
    """A daemon thread recording the largest ``VmRSS`` and when it was seen; returns (record, stop)."""
    import threading

    record = {"rss_kb": 0, "at": 0.0}
    stop = threading.Event()
    t0 = time.perf_counter()

    def run() -> None:
        while not stop.is_set():
            kb = _status_kb("VmRSS")
            if kb > record["rss_kb"]:
                record.update(rss_kb=kb, at=time.perf_counter() - t0)
            stop.wait(every)

    threading.Thread(target=run, daemon=True).start()
    return record, stop, t0


def _features(n: int, features: int, gen, half: bool):
    """Random features ``[n, features]`` (float32, or float16 filled block by block)."""
    import numpy as np
    import torch

    if not half:
        return torch.randn(n, features, generator=gen).numpy()
    out = np.empty((n, features), dtype=np.float16)
    rows = max(1, (1 << 24) // features)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        out[start:stop] = torch.randn(stop - start, features, generator=gen).numpy()
    return out


def case_predict(n: int, features: int, memory_budget: str | None, n_samples: int, sort: bool,
                 half: bool = False, half_diff: bool = False, layout: str = "uniform") -> dict:
    import anndata as ad
    import numpy as np
    import torch

    from stgen.generators.flow import FlowGenerator
    from stgen.model import STGenModel
    from stgen.predict import predict_slide, to_anndata
    from stgen.priors.zinb import ZINBPrior

    pos, gen = _random_positions(n, 0, layout)
    if sort:  # spatially ordered file (rows by x)
        pos = pos[pos[:, 0].argsort()]
    x = _features(n, features, gen, half)
    genes = [f"g{i}" for i in range(GENES)]
    adata = ad.AnnData(obs={"spot": np.arange(n).astype(str)}, var={"g": genes})
    adata.obs_names = adata.obs["spot"].to_numpy()
    adata.var_names = genes
    adata.obsm["spatial"] = pos.numpy()
    adata.obsm["features"] = x
    adata.uns["stgen"] = {"slide_id": "bench"}
    del x
    enc = build_encoder("fa_local", features, None).eval()
    model = STGenModel(enc, FlowGenerator(steps=5), ZINBPrior(GENES)).eval()
    module = _Module(model, features, genes)
    base = _status_kb("VmRSS")
    timings: dict[str, float] = {}
    record, stop, t_start = _rss_sampler()
    cpu0 = _cpu_seconds()
    t0 = time.perf_counter()
    kwargs = {"memory_budget": memory_budget} if memory_budget else {}
    try:
        pred = predict_slide(module, adata, n_samples=n_samples, timings=timings, **kwargs)
    except TypeError:  # a tree without timings / memory budgets
        pred = predict_slide(module, adata, n_samples=n_samples)
    t1 = time.perf_counter()
    out = to_anndata(adata, pred, {"bench": True})
    t2 = time.perf_counter()
    cpu = _cpu_seconds() - cpu0
    stop.set()
    phase, at = "assemble", record["at"] - (t0 - t_start)
    for name in ("graph", "plan", "sampling"):
        at -= timings.get(name, 0.0)
        if at <= 0:
            phase = name
            break
    row = {"case": "predict", "encoder": "fa_local", "n_spots": n, "features": features,
           "features_dtype": "float16" if half else "float32", "threads": torch.get_num_threads(),
           "layout": layout, "cpu_seconds": round(cpu, 1),
           "peak_phase": phase,
           "n_samples": n_samples, "memory_budget": memory_budget, "spatially_sorted_file": sort,
           "seconds": round(t2 - t0, 3), "assemble_seconds": round(t2 - t1, 3),
           **{(k if k in ("chunks", "chunk_size", "halo_spots") else f"{k}_seconds"): round(v, 3)
              for k, v in timings.items()}, **_peak(),
           "finite": bool(np.isfinite(out.layers["stgen_mean"]).all())}
    row["rise_gib"] = round(row["peak_rss_gib"] - base / 2**20, 3)
    if half_diff:  # the same prediction from float32 features (after the measurement: memory not bounded)
        adata.obsm["features"] = np.asarray(adata.obsm["features"], dtype=np.float32)
        ref = predict_slide(module, adata, n_samples=n_samples, **kwargs)
        row["max_abs_diff_vs_float32"] = float(np.abs(ref.mean - pred.mean).max())
        row["mean_abs_diff_vs_float32"] = float(np.abs(ref.mean - pred.mean).mean())
    return row


def run_case(argv: list[str], tree: str | None = None, timeout: float = 3600) -> dict:
    """Run ``scale.py <argv>`` in a fresh interpreter (``tree`` first on ``PYTHONPATH``); its JSON row."""
    threads = argv[argv.index("--threads") + 1] if "--threads" in argv else "1"
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PYTHONWARNINGS": "ignore"}
    if tree is not None:
        env["PYTHONPATH"] = str(Path(tree).resolve())
    res = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True, env=env,
                         timeout=timeout)
    if res.returncode != 0:
        return {"error": res.stderr.strip().splitlines()[-1][:300] if res.stderr.strip() else f"exit {res.returncode}",
                "returncode": res.returncode, "argv": argv}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("train", "predict", "infer"):
        c = sub.add_parser(name)
        c.add_argument("--n", type=int, required=True)
        c.add_argument("--features", type=int, default=1024)
        c.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
        if name == "infer":
            continue
        if name == "train":
            c.add_argument("--encoder", default="fa_local")
            c.add_argument("--recompute", choices=["on", "off"], default=None)
            c.add_argument("--bf16", action="store_true", help="bf16 autocast (as trainer.precision=bf16-mixed)")
        else:
            c.add_argument("--memory-budget", default=None)
            c.add_argument("--n-samples", type=int, default=1)
            c.add_argument("--sorted", action="store_true", help="store spots sorted by x (default: random order)")
            c.add_argument("--half-features", action="store_true", help="store the features as float16")
            c.add_argument("--layout", choices=["uniform", "grid"], default="uniform",
                           help="uniform random spots, or a jittered grid (in random order)")
            c.add_argument("--half-diff", action="store_true",
                           help="with --half-features: also predict from float32 features, report the difference")
    c = sub.add_parser("compare")
    c.add_argument("case", choices=["train", "predict", "infer"])
    c.add_argument("--n", type=int, nargs="+", required=True)
    c.add_argument("--trees", nargs="+", required=True, help="label=path (or path) of each source tree")
    c.add_argument("--json", default=None, help="append rows to this JSON-lines file")
    c.add_argument("--case-args", default="", help="options passed to every case, e.g. '--features 64'")
    args = p.parse_args(argv)
    if args.cmd in ("train", "predict", "infer"):
        import torch

        torch.set_num_threads(args.threads)
        if args.cmd == "infer":
            row = case_infer(args.n, args.features)
        elif args.cmd == "train":
            rec = None if args.recompute is None else args.recompute == "on"
            row = case_train(args.n, args.encoder, args.features, rec, args.bf16)
        else:
            row = case_predict(args.n, args.features, args.memory_budget, args.n_samples, args.sorted,
                               args.half_features, args.half_diff, args.layout)
        print(json.dumps(row), flush=True)
        return 0
    extra = shlex.split(args.case_args)
    for n in args.n:
        for spec in args.trees:
            label, _, path = spec.rpartition("=")
            row = run_case([args.case, "--n", str(n), *extra], tree=path)
            row.update({"tree": label or path, "load": round(os.getloadavg()[0], 2)})
            print(json.dumps(row), flush=True)
            if args.json:
                with open(args.json, "a") as fh:
                    fh.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
