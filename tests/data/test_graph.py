from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch, Data

from stgen.data.graph import knn_edges, random_crop, slide_to_data
from stgen.data.slide import make_slide


def brute_force_knn(pos: np.ndarray, k: int) -> set[tuple[int, int]]:
    d = ((pos[:, None] - pos[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return {(int(j), i) for i in range(len(pos)) for j in np.argsort(d[i])[:k]}


@pytest.fixture
def slide():
    rng = np.random.default_rng(3)
    n = 80
    return make_slide(rng.poisson(3, (n, 4)).astype(np.float32), rng.random((n, 2)) * 500, slide="g",
                      genes=list("abcd"), features=rng.random((n, 5)))


def test_squidpy_graph_is_brute_force_knn_in_pyg_direction(slide):
    k = 6
    data = slide_to_data(slide, genes=list("abcd"), k=k)
    edges = {tuple(e) for e in data.edge_index.T.tolist()}
    assert edges == brute_force_knn(np.asarray(slide.obsm["spatial"]), k)
    assert (data.edge_index[1].bincount(minlength=slide.n_obs) == k).all()
    assert torch.allclose(data.y, torch.log1p(torch.as_tensor(slide.X)))


def test_torch_cluster_graph_matches_squidpy(slide):
    data = slide_to_data(slide, genes=None, k=5)
    ei = knn_edges(data.pos, 5)
    assert {tuple(e) for e in ei.T.tolist()} == {tuple(e) for e in data.edge_index.T.tolist()}


def test_batches_have_no_cross_slide_edges(tiny_slides):
    graphs = [slide_to_data(a, genes=None, k=8) for a in tiny_slides[:3]]
    batch = Batch.from_data_list(graphs)
    src, dst = batch.edge_index
    assert (batch.batch[src] == batch.batch[dst]).all()
    assert batch.num_nodes == sum(g.num_nodes for g in graphs)
    ei = knn_edges(batch.pos, 8, batch.batch)
    assert (batch.batch[ei[0]] == batch.batch[ei[1]]).all()


def test_random_crop_keeps_nearest_spots_and_k_neighbours(slide):
    data = slide_to_data(slide, genes=None, k=6)
    crop = random_crop(data, 6, fraction=0.5, centre=3)
    n = 40
    assert crop.num_nodes == n
    d = (data.pos - data.pos[3]).pow(2).sum(-1)
    kept = set(torch.topk(d, n, largest=False).indices.tolist())
    got = {int(torch.nonzero((data.pos == p).all(1))[0]) for p in crop.pos}
    assert got == kept
    assert (crop.edge_index[1].bincount(minlength=n) == 6).all()
    tiny = random_crop(data, 6, fraction=0.0, centre=0)
    assert tiny.num_nodes == 2 and tiny.edge_index.shape[1] == 2


def test_blockwise_fallback_equals_torch_cluster():
    from stgen.data.graph import knn_edges_blockwise

    g = torch.Generator().manual_seed(0)
    pos = torch.rand(300, 2, generator=g) * 1000  # general position: no distance ties
    batch = Batch.from_data_list([Data(pos=pos[:180]), Data(pos=pos[180:])])
    fast = knn_edges(batch.pos, 8, batch.batch)
    block = knn_edges_blockwise(batch.pos, 8, batch.batch, max_block=500)
    assert {tuple(e) for e in fast.T.tolist()} == {tuple(e) for e in block.T.tolist()}
