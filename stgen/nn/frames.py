"""Frame averaging over 2-D local neighbourhoods: rotation/reflection/translation-invariant edge inputs.

For every spot ``i`` and each neighbour ``j`` (PyG source-to-target edges: ``edge_index[1] = i``,
``edge_index[0] = j``) the relative vector ``r_ij = C_j - C_i`` is centred over ``i``'s neighbours and
expressed in the 4 sign-flipped eigenframes of their 2 x 2 covariance. A network applied to each frame
and averaged over the 4 frames is E(2) invariant whenever the covariance has distinct eigenvalues.
Everything is O(E): per-spot statistics are scattered over edges, never an N x N matrix.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.utils import scatter

#: the 4 sign patterns ``s`` of the frames ``U diag(s)``
FRAME_SIGNS: tuple[tuple[float, float], ...] = ((1.0, 1.0), (1.0, -1.0), (-1.0, 1.0), (-1.0, -1.0))


def geometry_dtype(pos: Tensor) -> torch.dtype:
    """float64 for the small O(E) geometry (robust eigenvectors), except where it is unsupported."""
    return torch.float32 if pos.device.type == "mps" else torch.float64


def sym2x2_eigenvectors(cov: Tensor) -> Tensor:
    """Eigenvectors of symmetric 2x2 matrices in closed form (columns, ascending eigenvalues).

    For ``[[a, b], [b, c]]`` the major axis has angle ``theta = atan2(2b, a - c) / 2``; the eigenvectors
    are ``(-sin theta, cos theta)`` (smaller eigenvalue) and ``(cos theta, sin theta)`` (larger). Exact,
    O(N), and free of batched LAPACK/cuSOLVER calls (which fail or over-allocate for hundreds of
    thousands of tiny matrices on a GPU). An isotropic matrix has no preferred axis: it gets ``theta = 0``.

    Shapes:
        cov ``[N, 2, 2]`` -> ``[N, 2, 2]``.
    """
    a, b, c = cov[:, 0, 0], cov[:, 0, 1], cov[:, 1, 1]
    theta = 0.5 * torch.atan2(2 * b, a - c)
    cos, sin = torch.cos(theta), torch.sin(theta)
    small = torch.stack([-sin, cos], dim=-1)
    large = torch.stack([cos, sin], dim=-1)
    return torch.stack([small, large], dim=-1)


def local_frames(pos: Tensor, edge_index: Tensor) -> tuple[Tensor, Tensor]:
    """Centred relative vectors and the eigenvectors of their covariance per spot.

    The covariance is computed without gradient; eigenvectors come from :func:`sym2x2_eigenvectors`
    (columns, ascending eigenvalues). A spot without neighbours gets a zero covariance (a fixed frame).

    Args:
        pos: spot coordinates.
        edge_index: ``edge_index[1]`` the spot ``i``, ``edge_index[0]`` its neighbour ``j``.

    Shapes:
        pos ``[N, 2]``, edge_index ``[2, E]`` -> centred ``r~ [E, 2]``, eigenvectors ``U [N, 2, 2]``
        (``U[i, :, c]`` is the ``c``-th eigenvector of spot ``i``).
    """
    if pos.dim() != 2 or pos.size(1) != 2:
        raise ValueError(f"local_frames expects 2-D coordinates [N, 2], got {tuple(pos.shape)}")
    n = pos.size(0)
    src, dst = edge_index
    rel = pos[src] - pos[dst]
    centred = rel - scatter(rel, dst, dim=0, dim_size=n, reduce="mean")[dst]
    with torch.no_grad():
        outer = centred.detach()[:, :, None] * centred.detach()[:, None, :]
        cov = scatter(outer.reshape(-1, 4), dst, dim=0, dim_size=n, reduce="mean").reshape(n, 2, 2)
        vecs = sym2x2_eigenvectors(cov)
    return centred, vecs


#: a spot whose neighbourhood covariance has eigenvalues this close (relative) has no eigenframe
ISOTROPY_RTOL = 1e-4


def isotropic_spots(centred: Tensor, dst: Tensor, n: int, rtol: float = ISOTROPY_RTOL) -> Tensor:
    """Spots whose neighbourhood covariance is isotropic (relative eigenvalue gap ``<= rtol``).

    A full ring of neighbours (an interior spot of a perfect hex or square grid) has such a covariance:
    its eigenvectors are arbitrary (set by floating-point noise), so an eigenframe would not turn with
    the slide. :func:`frame_inputs` gives those spots frame-free inputs instead.

    Shapes:
        centred ``[E, 2]``, dst ``[E]`` -> ``[N]`` bool.
    """
    with torch.no_grad():
        c = centred.detach()
        outer = torch.stack([c[:, 0] * c[:, 0], c[:, 0] * c[:, 1], c[:, 1] * c[:, 1]], dim=-1)
        a, b, d = scatter(outer, dst, dim=0, dim_size=n, reduce="mean").unbind(-1)
        gap = torch.sqrt((a - d) ** 2 + 4 * b**2)
        return gap <= rtol * (a + d)


def compact_frame_inputs(pos: Tensor, edge_index: Tensor, frame_averaging: bool = True) -> Tensor:
    """The edge MLP's inputs before the frame sign flips: 3 numbers per edge (a quarter of
    :func:`frame_inputs`, which is ``expand_frame_inputs(compact_frame_inputs(...))``).

    With ``frame_averaging``: ``[p_ij, ||r_ij||]`` with ``p_ij = r~_ij^T U_i`` in the unflipped eigenframe
    (see :func:`frame_inputs`); the 4 frames are its sign patterns, expanded by :func:`expand_frame_inputs`
    where they are used. Without it: ``[r_ij, ||r_ij||]``. Returned in ``pos``'s floating dtype.

    Shapes:
        pos ``[N, 2]``, edge_index ``[2, E]`` (int64 or int32) -> ``[E, 3]``.
    """
    out_dtype = pos.dtype if pos.is_floating_point() else torch.get_default_dtype()
    pos = pos.to(geometry_dtype(pos))
    edge_index = edge_index.long()
    src, dst = edge_index
    rel = pos[src] - pos[dst]
    norm = rel.norm(dim=-1, keepdim=True)
    if not frame_averaging:
        return torch.cat([rel, norm], dim=-1).to(out_dtype)
    centred, vecs = local_frames(pos, edge_index)
    proj = torch.einsum("ec,ecf->ef", centred, vecs[dst])
    iso = isotropic_spots(centred, dst, pos.size(0))[dst]
    if bool(iso.any()):  # no eigenframe: each edge is seen in its own frame (distance only), invariant
        along = centred[iso].norm(dim=-1)
        proj[iso] = torch.stack([along, torch.zeros_like(along)], dim=-1)
    return torch.cat([proj, norm], dim=-1).to(out_dtype)


def expand_frame_inputs(compact: Tensor, frame_averaging: bool = True) -> Tensor:
    """One row per frame from :func:`compact_frame_inputs`: ``[s_g * p_ij, ||r_ij||]`` for the 4 sign
    patterns ``s_g`` of :data:`FRAME_SIGNS` (a sign flip is exact, so this equals building the 4 rows in
    the geometry dtype and rounding afterwards); a single row without frame averaging.

    Shapes:
        compact ``[E, 3]`` -> ``[E, 4, 3]`` (``[E, 1, 3]`` without frame averaging).
    """
    if not frame_averaging:
        return compact[:, None]
    signs = torch.tensor([(*s, 1.0) for s in FRAME_SIGNS], dtype=compact.dtype, device=compact.device)
    return compact[:, None, :] * signs[None]


def frame_inputs(pos: Tensor, edge_index: Tensor, frame_averaging: bool = True) -> Tensor:
    """Per-edge inputs of the edge MLP, one row per frame.

    With ``frame_averaging`` (STFlow): ``[p_ij^(g), ||r_ij||]`` for the 4 frames ``g``, where
    ``p_ij^(g) = r~_ij^T U_i diag(s_g)`` is the neighbour-centred relative vector in spot ``i``'s sign-
    flipped eigenframe and ``||r_ij||`` the norm of the uncentred ``r_ij = C_j - C_i``. Averaging a network
    over the 4 frames is invariant to rotations, reflections and translations of ``pos``.

    A spot whose neighbourhood covariance is isotropic (:func:`isotropic_spots`, e.g. a full ring of
    neighbours on a perfect grid) has no eigenframe; its edges get ``p_ij = (||r~_ij||, 0)`` in every frame
    (each edge in its own frame), which keeps the inputs exactly invariant.

    Without it (ablation): a single "frame" ``[r_ij, ||r_ij||]`` holding the raw relative vector in slide
    coordinates: invariant to translations only, **not** to rotations or reflections.

    The geometry is computed in float64 (float32 on MPS) and returned in ``pos``'s floating dtype.
    Encoders keep :func:`compact_frame_inputs` (4x smaller) and expand it per edge slice.

    Args:
        pos: spot coordinates.
        edge_index: ``edge_index[1]`` the spot ``i``, ``edge_index[0]`` its neighbour ``j``.
        frame_averaging: 4 eigenframes (True) or the raw relative vector (False).

    Shapes:
        pos ``[N, 2]``, edge_index ``[2, E]`` -> ``[E, 4, 3]`` (``[E, 1, 3]`` without frame averaging).
    """
    return expand_frame_inputs(compact_frame_inputs(pos, edge_index, frame_averaging), frame_averaging)
