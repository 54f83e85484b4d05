"""fa_local's split attention logits (default) against the explicit per-edge concatenation.

Both compute the same logits (tests/encoders/test_fa_local.py); the split form applies the node parts of
the attention MLP's first layer once per spot instead of once per edge. Setting every block's
``split_attention = False`` switches to the concatenation. Default widths, F = 256, G = 50, 2k spots.
"""

from __future__ import annotations

import pytest
from workloads import Workload

N_SPOTS = 2000
WORKLOADS = [
    Workload("fa_local", N_SPOTS, mode, split_attention=split)
    for mode in ("forward", "train")
    for split in (True, False)
]


@pytest.mark.parametrize("work", WORKLOADS, ids=lambda w: w.label)
def test_split_attention(benchmark, measure, work: Workload) -> None:
    rounds = (1, 3) if work.mode == "forward" else (0, 3)
    measure(benchmark, work, group=f"split-attention-{work.mode}-{N_SPOTS // 1000}k", rounds=rounds)
