"""Forward pass (eval, no_grad) and training step of every built-in encoder at default widths.

F = 256 features, G = 50 genes, one random slide of 1k, 5k or 20k spots (global attention: 1k and 5k
only). fa_local's 20k training step (minutes and ~10 GB on one CPU thread) runs with
``STGEN_BENCH_FULL=1``.
"""

from __future__ import annotations

import os

import pytest
from workloads import Workload

SIZES = {
    "fa_local": (1000, 5000, 20000),
    "global_attention": (1000, 5000),
    "gnn": (1000, 5000, 20000),
    "mlp": (1000, 5000, 20000),
}
FULL = os.environ.get("STGEN_BENCH_FULL") == "1"


def _workloads() -> list[Workload]:
    out = []
    for encoder, sizes in SIZES.items():
        for n in sizes:
            for mode in ("forward", "train"):
                if encoder == "fa_local" and n > 5000 and mode == "train" and not FULL:
                    continue
                out.append(Workload(encoder, n, mode))
    return out


@pytest.mark.parametrize("work", _workloads(), ids=lambda w: w.label)
def test_encoder(benchmark, measure, work: Workload) -> None:
    measure(benchmark, work, group=f"{work.mode}-{work.n_spots // 1000}k")
