"""``global_attention``: full attention within each slide, refused above ``max_spots``."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Batch, Data

from stgen.data.graph import knn_edges
from stgen.encoders.fa_local import FALocalEncoder
from stgen.encoders.global_attention import GlobalAttentionEncoder, attention_matrix_gb
from stgen.registry import ENCODERS
from stgen.testing import check_encoder

F_IN, G = 6, 4


def _chain(n: int, seed: int = 0) -> Data:
    """Spots on a line, 100 px apart: spot 0 and spot n - 1 are n - 1 kNN hops apart."""
    gen = torch.Generator().manual_seed(seed)
    pos = torch.stack([torch.arange(n, dtype=torch.float32) * 100.0, torch.zeros(n)], dim=-1)
    pos[:, 1] = torch.rand(n, generator=gen)  # general position: no exact kNN ties
    return Data(
        x=torch.randn(n, F_IN, generator=gen),
        pos=pos,
        y=torch.randn(n, G, generator=gen),
        edge_index=knn_edges(pos, 4),
    )


def _run(enc, data: Data) -> torch.Tensor:
    batch = Batch.from_data_list([data])
    with torch.no_grad():
        return enc(batch, batch.y, torch.tensor([0.5]))


def test_registered_and_contract() -> None:
    assert ENCODERS.get("global_attention") is GlobalAttentionEncoder
    check_encoder(GlobalAttentionEncoder, hidden_dim=16, num_layers=2, heads=4)


def test_refuses_slide_above_max_spots_with_memory_estimate() -> None:
    enc = GlobalAttentionEncoder(F_IN, G, hidden_dim=8, num_layers=1, heads=4, max_spots=30_000)
    n = 50_000
    big = Batch.from_data_list([Data(x=torch.zeros(n, F_IN), pos=torch.rand(n, 2))])
    with pytest.raises(ValueError) as info:
        enc(big, torch.zeros(n, G), torch.zeros(1))
    msg = str(info.value)
    assert f"{n} spots" in msg and "max_spots=30000" in msg
    assert f"{n} x {n}" in msg and "10 GB per head" in msg and "40 GB for 4 heads" in msg
    assert "fa_local" in msg and "raise max_spots" in msg
    assert attention_matrix_gb(n, 4) == pytest.approx(40.0)


def test_max_spots_applies_per_slide() -> None:
    enc = GlobalAttentionEncoder(F_IN, G, hidden_dim=8, num_layers=1, heads=2, max_spots=40).eval()
    two = Batch.from_data_list([_chain(30), _chain(25, seed=1)])
    with torch.no_grad():
        out = enc(two, two.y, torch.tensor([0.1, 0.2]))
    assert out.shape == (55, G)
    with pytest.raises(ValueError, match="slide 1 has 41 spots"):
        enc(Batch.from_data_list([_chain(30), _chain(41)]), torch.zeros(71, G), torch.zeros(2))


def test_attention_is_global_unlike_local_knn() -> None:
    n = 60
    data = _chain(n)
    far = data.clone()
    far.x[-1] += 5.0  # change only the spot at the far end of the chain

    torch.manual_seed(0)
    glob = GlobalAttentionEncoder(F_IN, G, hidden_dim=16, num_layers=1, heads=2).eval()
    assert (_run(glob, data)[0] - _run(glob, far)[0]).abs().max() > 1e-4

    torch.manual_seed(0)
    local = FALocalEncoder(F_IN, G, k=4, hidden_dim=16, edge_dim=16, num_layers=2, heads=2).eval()
    assert torch.equal(_run(local, data)[0], _run(local, far)[0])


def test_translation_invariant_but_position_aware() -> None:
    torch.manual_seed(0)
    enc = GlobalAttentionEncoder(F_IN, G, hidden_dim=16, num_layers=2, heads=2).eval()
    data = _chain(40)
    shifted = data.clone()
    shifted.pos = data.pos + torch.tensor([12_345.0, -6_789.0])
    assert torch.allclose(_run(enc, data), _run(enc, shifted), atol=1e-4)
    stretched = data.clone()
    stretched.pos = data.pos * 3.0
    assert (_run(enc, data) - _run(enc, stretched)).abs().max() > 1e-3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"hidden_dim": 10, "heads": 4}, "divisible by heads"),
        ({"max_spots": 0}, "max_spots"),
        ({"pos_scale": 0.0}, "pos_scale"),
    ],
)
def test_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GlobalAttentionEncoder(F_IN, G, **kwargs)
