"""The slide graph and fa_local are invariant to rigid motions on perfect Visium (hex) and ST (square) grids."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch, Data

from stgen.data.graph import (
    graph_with_k,
    knn_edges,
    knn_edges_blockwise,
    random_crop,
    slide_to_data,
    squidpy_knn,
)
from stgen.data.slide import make_slide
from stgen.encoders.fa_local import FALocalEncoder

K = 8
MOTIONS = [(0.0, False, (0.0, 0.0)), (0.0, False, (12345.0, -6789.0)), (math.pi / 2, False, (0.0, 0.0)),
           (1.1, False, (5000.0, -3000.0)), (0.0, True, (0.0, 0.0)), (2.3, True, (-700.0, 900.0))]


def hex_grid(rows: int = 17, cols: int = 24, spacing: float = 100.0) -> np.ndarray:
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    return np.stack([((c + 0.5 * (r % 2)) * spacing).ravel(), (r * spacing * math.sqrt(3) / 2).ravel()], axis=1)


def square_grid(rows: int = 18, cols: int = 20, spacing: float = 200.0) -> np.ndarray:
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    return np.stack([c.ravel() * spacing, r.ravel() * spacing], axis=1).astype(np.float64)


def rigid(xy: np.ndarray, angle: float, reflect: bool, shift: tuple[float, float]) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    if reflect:
        rot = rot @ np.diag([1.0, -1.0])
    return xy @ rot.T + np.asarray(shift)


def edge_set(ei: torch.Tensor) -> set[tuple[int, int]]:
    return set(map(tuple, ei.T.tolist()))


GRIDS = {"visium_hex": hex_grid, "legacy_st_square": square_grid}


@pytest.mark.parametrize("grid", list(GRIDS))
def test_most_spots_have_ties_and_all_are_kept(grid):
    xy = torch.from_numpy(GRIDS[grid]())
    ei = knn_edges(xy, K)
    deg = torch.bincount(ei[1], minlength=len(xy))
    assert int(deg.min()) >= K
    if grid == "visium_hex":  # interior spots: 6 at distance 1 and 6 at sqrt(3) (the 8th is one of those)
        assert int((deg == 12).sum()) > len(xy) // 2
    # every kept neighbour is within the tolerance of the k-th distance, every dropped one is beyond it
    d = torch.cdist(xy, xy)
    d.fill_diagonal_(float("inf"))
    kth = d.sort(dim=1).values[:, K - 1]
    expected = (d <= kth[:, None] * (1 + 1e-4)).nonzero()
    assert edge_set(ei) == {(int(j), int(i)) for i, j in expected.tolist()}


@pytest.mark.parametrize("grid", list(GRIDS))
@pytest.mark.parametrize("motion", MOTIONS)
def test_graph_identical_under_rigid_motion(grid, motion):
    xy = GRIDS[grid]()
    moved = rigid(xy, *motion)
    ref = knn_edges(torch.from_numpy(xy), K)
    assert torch.equal(knn_edges(torch.from_numpy(moved), K), ref)
    assert torch.equal(knn_edges(torch.from_numpy(moved).float(), K), ref)
    assert torch.equal(knn_edges_blockwise(torch.from_numpy(moved), K), ref)
    a = make_slide(np.ones((len(xy), 1)), moved, slide="s")
    assert torch.equal(squidpy_knn(a, K), ref)


def test_squidpy_knn_leaves_the_callers_anndata_alone():
    xy = hex_grid(6, 7)
    a = make_slide(np.ones((len(xy), 2)), xy, slide="s")
    a.obsp["spatial_connectivities"] = np.eye(len(xy))
    before = a.copy()
    squidpy_knn(a, K)
    assert list(a.obsp.keys()) == ["spatial_connectivities"]
    assert np.array_equal(np.asarray(a.obsp["spatial_connectivities"]), np.eye(len(xy)))
    assert set(a.uns.keys()) == set(before.uns.keys())


def test_graph_with_k_reuses_a_variable_degree_graph_and_rebuilds_for_another_k():
    xy = hex_grid(8, 9)
    adata = make_slide(np.ones((len(xy), 3)), xy, slide="s", features=np.zeros((len(xy), 4)))
    data = slide_to_data(adata, genes=None, k=K)
    batch = Batch.from_data_list([data, data])
    assert graph_with_k(batch, K) is batch.edge_index  # degrees vary (ties), still reused
    other = graph_with_k(batch, 4)
    assert other is not batch.edge_index
    assert int(torch.bincount(other[1]).min()) >= 4
    crop = random_crop(data, K, 0.5, centre=10)
    assert crop.graph_k == K and int(torch.bincount(crop.edge_index[1]).min()) >= K


def _fa_local_predictions(xy: np.ndarray, seed: int = 0) -> torch.Tensor:
    n = len(xy)
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 16, generator=gen), torch.randn(n, 5, generator=gen)
    adata = make_slide(np.ones((n, 5)), xy, slide="s", features=x.numpy())
    data = slide_to_data(adata, genes=None, k=K)
    data.x, data.y = x, y
    torch.manual_seed(0)
    model = FALocalEncoder(16, 5, k=K, hidden_dim=32, edge_dim=32).eval()
    batch = Batch.from_data_list([data])
    with torch.no_grad():
        return model(batch, batch.y, torch.tensor([0.4]))


@pytest.mark.parametrize("grid", list(GRIDS))
@pytest.mark.parametrize("motion", MOTIONS[1:])
def test_fa_local_predictions_invariant_on_perfect_grids(grid, motion):
    xy = GRIDS[grid]()
    ref = _fa_local_predictions(xy)
    moved = _fa_local_predictions(rigid(xy, *motion))
    assert float((moved - ref).abs().max()) < 1e-5


def test_fa_local_invariant_on_a_raw_batch_without_a_recorded_graph():
    xy = torch.from_numpy(hex_grid(9, 11))
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(len(xy), 16, generator=gen), torch.randn(len(xy), 5, generator=gen)
    torch.manual_seed(0)
    model = FALocalEncoder(16, 5, k=6, hidden_dim=32, edge_dim=32).eval()
    outs = []
    for pos in (xy, torch.from_numpy(rigid(xy.numpy(), 0.7, True, (300.0, 40.0)))):
        batch = Batch.from_data_list([Data(x=x, pos=pos.float(), y=y)])
        with torch.no_grad():
            outs.append(model(batch, batch.y, torch.tensor([0.7])))
    assert float((outs[0] - outs[1]).abs().max()) < 1e-5
