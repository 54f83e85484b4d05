"""Property tests (hypothesis) of the slide validator and the graph builder over random and degenerate layouts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from stgen.data.graph import TIE_RTOL, knn_edges, knn_edges_blockwise, slide_to_data
from stgen.data.slide import SlideError, make_slide, validate_slide

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@st.composite
def layouts(draw) -> np.ndarray:
    """Random points, and the degenerate kinds: collinear, all identical, duplicated, huge offsets, grids."""
    kind = draw(st.sampled_from(["random", "collinear", "identical", "duplicates", "huge_offset", "grid",
                                 "tiny_spacing"]))
    n = draw(st.integers(min_value=3, max_value=40))
    if kind == "random":
        return draw(arrays(np.float64, (n, 2), elements=finite))
    if kind == "collinear":
        t = draw(arrays(np.float64, (n,), elements=finite))
        angle = draw(st.floats(0, math.pi))
        return np.stack([t * math.cos(angle), t * math.sin(angle)], axis=1) + draw(finite)
    if kind == "identical":
        return np.tile([draw(finite), draw(finite)], (n, 1))
    if kind == "duplicates":
        base = draw(arrays(np.float64, (n, 2), elements=finite))
        return np.vstack([base, base[: draw(st.integers(1, n))]])
    if kind == "huge_offset":
        base = np.random.default_rng(draw(st.integers(0, 99))).uniform(0, 1000, (n, 2))
        return base + draw(st.sampled_from([1e6, 1e9, 1e12, -1e12]))
    if kind == "tiny_spacing":
        base = np.random.default_rng(draw(st.integers(0, 99))).uniform(0, 1e4, (n, 2))
        base[1] = base[0] + draw(st.sampled_from([1e-3, 1e-6, 1e-9]))
        return base
    rows, cols = draw(st.integers(2, 7)), draw(st.integers(2, 7))
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    hexagonal = draw(st.booleans())
    xy = np.stack([c.ravel() + (0.5 * (r.ravel() % 2) if hexagonal else 0.0),
                   r.ravel() * (math.sqrt(3) / 2 if hexagonal else 1.0)], axis=1)
    return xy * draw(st.sampled_from([1.0, 100.0, 137.5]))


def brute_force_edges(xy: np.ndarray, k: int, rtol: float = TIE_RTOL) -> set[tuple[int, int]]:
    d = np.sqrt(((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    kk = min(k, len(xy) - 1)
    kth = np.sort(d, axis=1)[:, kk - 1]
    return {(int(j), int(i)) for i, j in zip(*np.nonzero(d <= kth[:, None] * (1 + rtol)), strict=True)}


def _slide(xy: np.ndarray):
    return make_slide(np.ones((len(xy), 2), np.float32), xy, slide="prop", features=np.zeros((len(xy), 3)))


@SETTINGS
@given(layouts())
def test_validator_either_accepts_a_usable_layout_or_names_the_problem(xy):
    slide = _slide(xy)
    try:
        validate_slide(slide)
    except SlideError as exc:
        assert "slide 'prop'" in str(exc)
        assert any(w in str(exc) for w in ("one position", "one line", "share their position", "cannot be resolved"))
        return
    # accepted: a 2-D layout whose spots are all distinct, also as the float32 positions the model sees
    data = slide_to_data(slide, genes=None, k=4, with_expression=False)
    pos = data.pos.double().numpy()
    assert len(np.unique(pos, axis=0)) == len(xy)
    deg = torch.bincount(data.edge_index[1], minlength=len(xy))
    assert int(deg.min()) >= min(4, len(xy) - 1)


@SETTINGS
@given(layouts(), st.integers(1, 10))
def test_graph_is_exactly_the_tie_inclusive_knn(xy, k):
    if np.abs(xy - xy.mean(0)).max() > 1e7 or np.abs(xy).max() > 1e13:
        return  # beyond what float64 distances resolve at this tolerance; the validator refuses such slides
    pos = torch.from_numpy(xy)
    ei = knn_edges(pos, k)
    assert (ei[0] != ei[1]).all()
    assert set(map(tuple, ei.T.tolist())) == brute_force_edges(xy, k)
    assert torch.equal(knn_edges_blockwise(pos, k), ei)


@SETTINGS
@given(st.integers(2, 8), st.integers(2, 8), st.booleans(), st.floats(0, 2 * math.pi), st.booleans(),
       st.floats(-1e4, 1e4), st.floats(-1e4, 1e4), st.integers(1, 12))
def test_graph_of_a_perfect_grid_is_invariant_to_rigid_motions(rows, cols, hexagonal, angle, mirror, dx, dy, k):
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    xy = np.stack([c.ravel() + (0.5 * (r.ravel() % 2) if hexagonal else 0.0),
                   r.ravel() * (math.sqrt(3) / 2 if hexagonal else 1.0)], axis=1) * 100.0
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    if mirror:
        rot = rot @ np.diag([1.0, -1.0])
    moved = xy @ rot.T + np.array([dx, dy])
    assert torch.equal(knn_edges(torch.from_numpy(moved), k), knn_edges(torch.from_numpy(xy), k))


@pytest.mark.parametrize("n", [2, 3])
def test_tiny_graphs_connect_every_other_spot(n):
    ei = knn_edges(torch.rand(n, 2), 8)
    assert ei.size(1) == n * (n - 1)
