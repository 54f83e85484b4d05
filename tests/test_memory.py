"""No N x N: the kNN graph and fa_local's forward pass stay far below dense N x N memory on 200k spots.

Peak RSS is read from ``VmHWM`` in ``/proc/self/status`` of a fresh interpreter. ``getrusage``'s
``ru_maxrss`` is not used: on Linux a child keeps the parent's peak RSS across ``exec``, so in a subprocess
of a large pytest process it reports the parent's peak and would hide the child's own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

N_SPOTS = 200_000
DENSE_GB = N_SPOTS * N_SPOTS * 4 / 1e9  # one float32 N x N matrix: 160 GB
BOUND_GB = 4.0

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    from torch_geometric.data import Batch, Data
    from stgen.data.graph import knn_edges
    from stgen.encoders.fa_local import FALocalEncoder

    torch.set_num_threads(1)

    def peak_bytes():
        with open("/proc/self/status") as fh:
            line = next(row for row in fh if row.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024

    n = int(sys.argv[1])
    baseline = peak_bytes()
    gen = torch.Generator().manual_seed(0)
    pos = torch.rand(n, 2, generator=gen) * 100_000.0
    x = torch.randn(n, 4, generator=gen)
    edge_index = knn_edges(pos, 8)
    after_graph = peak_bytes()
    torch.manual_seed(0)
    enc = FALocalEncoder(4, 3, k=8, hidden_dim=8, edge_dim=8, num_layers=1, heads=2).eval()
    batch = Batch.from_data_list([Data(x=x, pos=pos, edge_index=edge_index)])
    with torch.no_grad():
        out = enc(batch, torch.zeros(n, 3), torch.zeros(1))
    print(json.dumps({
        "baseline": baseline,
        "after_graph": after_graph,
        "after_forward": peak_bytes(),
        "edges": edge_index.size(1),
        "out_shape": list(out.shape),
        "finite": bool(torch.isfinite(out).all()),
    }))
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak RSS read from /proc/self/status")
def test_knn_graph_and_fa_local_forward_use_no_dense_matrix() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    res = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(N_SPOTS)], capture_output=True, text=True, env=env, timeout=600
    )
    assert res.returncode == 0, res.stderr[-3000:]
    stats = json.loads(res.stdout.strip().splitlines()[-1])
    graph_gb = (stats["after_graph"] - stats["baseline"]) / 1e9
    total_gb = (stats["after_forward"] - stats["baseline"]) / 1e9
    print(
        f"N={N_SPOTS}: peak RSS over baseline {graph_gb:.2f} GB after kNN graph, {total_gb:.2f} GB after "
        f"fa_local forward (dense N x N float32 would need {DENSE_GB:.0f} GB)"
    )
    assert N_SPOTS * 8 <= stats["edges"] <= N_SPOTS * 8 * 1.01  # k per spot, plus the rare ties with the k-th
    assert stats["out_shape"] == [N_SPOTS, 3] and stats["finite"]
    assert BOUND_GB <= DENSE_GB / 40
    assert graph_gb < BOUND_GB, f"kNN graph on {N_SPOTS} spots took {graph_gb:.2f} GB"
    assert total_gb < BOUND_GB, f"kNN graph + fa_local forward on {N_SPOTS} spots took {total_gb:.2f} GB"


TRAIN_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    from torch.nn import functional as F
    from torch_geometric.data import Batch, Data
    from stgen.data.graph import knn_edges
    from stgen.encoders.fa_local import FALocalEncoder

    torch.set_num_threads(1)

    def status_kb(key):
        with open("/proc/self/status") as fh:
            return int(next(row for row in fh if row.startswith(key + ":")).split()[1])

    n, recompute = int(sys.argv[1]), sys.argv[2] == "on"
    gen = torch.Generator().manual_seed(0)
    pos = torch.rand(n, 2, generator=gen) * (n ** 0.5 * 100.0)
    batch = Batch.from_data_list([Data(x=torch.randn(n, 32, generator=gen), pos=pos, edge_index=knn_edges(pos, 8))])
    torch.manual_seed(0)
    enc = FALocalEncoder(32, 50, recompute=recompute).train()
    y = torch.randn(n, 50, generator=gen)
    base = status_kb("VmRSS")
    torch.manual_seed(1)
    loss = F.mse_loss(enc(batch, y, torch.tensor([0.5])), y)
    loss.backward()
    print(json.dumps({"rise_kb": status_kb("VmHWM") - base, "loss": float(loss.detach())}))
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak RSS read from /proc/self/status")
def test_fa_local_training_memory_with_recomputation() -> None:
    """A training step at default widths stores far less per spot when the edge MLPs are recomputed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    rows = {}
    for mode in ("off", "on"):
        res = subprocess.run([sys.executable, "-c", TRAIN_SCRIPT, "3000", mode], capture_output=True, text=True,
                             env=env, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
        rows[mode] = json.loads(res.stdout.strip().splitlines()[-1])
    off, on = rows["off"]["rise_kb"], rows["on"]["rise_kb"]
    print(f"training step, 3000 spots: peak RSS rise {off / 1024:.0f} MB stored, {on / 1024:.0f} MB recomputed "
          f"({off / 3000:.0f} vs {on / 3000:.0f} KiB per spot)")
    assert rows["on"]["loss"] == pytest.approx(rows["off"]["loss"], rel=1e-6)  # same dropout draws, same loss
    assert on < 0.4 * off
