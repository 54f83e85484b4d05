"""Benchmark workloads (random slides, encoders, one forward pass or training step) and peak-memory runs.

Peak memory is the rise of the resident set size (peak RSS over the RSS just before the call) of a
separate interpreter that runs nothing else. ``python benchmarks/workloads.py '<json list>'`` measures a
list of workloads in one process, resetting the peak between them through ``/proc/self/clear_refs``
(Linux), and prints ``{label: MB}`` as JSON; :func:`peak_memory_mb` drives it from the benchmarks.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import torch
from torch.nn import functional as F
from torch_geometric.data import Batch, Data

from stgen.data.graph import knn_edges
from stgen.registry import ENCODERS

IN_DIM = 256
N_GENES = 50
K = 8
SPACING_PX = 100.0


@dataclass(frozen=True)
class Workload:
    """One timed or measured call: an encoder with its default widths on one slide of ``n_spots``.

    Args:
        encoder: registry name.
        n_spots: spots of the slide.
        mode: ``"forward"`` (eval, no_grad) or ``"train"`` (forward, MSE, backward, Adam step).
        split_attention: fa_local only; False switches every block to the concatenated logits.
    """

    encoder: str
    n_spots: int
    mode: str
    split_attention: bool = True

    @property
    def label(self) -> str:
        variant = "" if self.split_attention else "-naive"
        return f"{self.encoder}{variant}-{self.mode}-{self.n_spots // 1000}k"


def make_batch(n_spots: int, seed: int = 0) -> Batch:
    """One random slide: uniform spots at ``SPACING_PX`` mean spacing, ``IN_DIM`` features, kNN graph."""
    gen = torch.Generator().manual_seed(seed)
    side = n_spots**0.5 * SPACING_PX
    pos = torch.rand(n_spots, 2, generator=gen) * side
    data = Data(
        x=torch.randn(n_spots, IN_DIM, generator=gen),
        pos=pos,
        y=torch.log1p(torch.rand(n_spots, N_GENES, generator=gen) * 10),
        edge_index=knn_edges(pos, K),
    )
    return Batch.from_data_list([data])


def build_encoder(name: str, split_attention: bool = True) -> torch.nn.Module:
    torch.manual_seed(0)
    enc = ENCODERS.get(name)(in_dim=IN_DIM, out_dim=N_GENES)
    for block in getattr(enc, "blocks", []):
        if hasattr(block, "split_attention"):
            block.split_attention = split_attention
    return enc


def make_step(work: Workload) -> Callable[[], object]:
    """A zero-argument callable running ``work`` once (data and model are built here, not in the call)."""
    batch = make_batch(work.n_spots)
    enc = build_encoder(work.encoder, work.split_attention)
    gen = torch.Generator().manual_seed(1)
    y = torch.randn(work.n_spots, N_GENES, generator=gen)
    t = torch.tensor([0.5])
    if work.mode == "forward":
        enc.eval()

        def forward() -> torch.Tensor:
            with torch.no_grad():
                return enc(batch, y, t)

        return forward
    if work.mode != "train":
        raise ValueError(f"unknown mode {work.mode!r}")
    enc.train()
    opt = torch.optim.Adam(enc.parameters(), lr=1e-4)

    def train() -> float:
        opt.zero_grad(set_to_none=True)
        loss = F.mse_loss(enc(batch, y, t), batch.y)
        loss.backward()
        opt.step()
        return loss.item()

    return train


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def measure_in_process(works: Iterable[Workload]) -> dict[str, float | None]:
    """Peak RSS rise (MB) of each workload; None where the peak could not be reset between workloads.

    Each encoder and mode first runs once on a small slide, unmeasured, so one-time initialisation
    (kernel selection, thread pools, lazy buffers) is not charged to the first measured workload.
    """
    works = list(works)
    for enc_mode in dict.fromkeys((w.encoder, w.mode, w.split_attention) for w in works):
        make_step(Workload(enc_mode[0], 200, enc_mode[1], enc_mode[2]))()
    gc.collect()
    out: dict[str, float | None] = {}
    for i, work in enumerate(works):
        step = make_step(work)
        gc.collect()
        base = _status_kb("VmRSS")
        if not _reset_peak() and i > 0:
            out[work.label] = None
            continue
        step()
        out[work.label] = (_status_kb("VmHWM") - base) / 1024
        del step
        gc.collect()
    return out


def peak_memory_mb(works: Iterable[Workload], timeout: float = 900.0) -> dict[str, float | None]:
    """Run :func:`measure_in_process` in a fresh single-threaded interpreter (one per workload if needed)."""
    works = list(works)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONWARNINGS": "ignore",
        # big tensors are mmapped and unmapped on free, so a freed workload does not stay resident
        "MALLOC_MMAP_THRESHOLD_": "65536",
        "MALLOC_TRIM_THRESHOLD_": "0",
    }

    def run(batch: list[Workload]) -> dict[str, float | None]:
        res = subprocess.run(
            [sys.executable, __file__, json.dumps([asdict(w) for w in batch])],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
        if res.returncode != 0:
            raise RuntimeError(f"peak-memory run failed:\n{res.stderr[-3000:]}")
        return json.loads(res.stdout.strip().splitlines()[-1])

    result = run(works)
    for work in works:
        if result.get(work.label) is None:
            result.update(run([work]))
    return result


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    works = [Workload(**w) for w in json.loads(argv[0])]
    print(json.dumps(measure_in_process(works)))


if __name__ == "__main__":
    main(sys.argv[1:])
