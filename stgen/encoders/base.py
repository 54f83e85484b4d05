"""The encoder contract: predicted clean expression for every spot of a batch of slide graphs."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

from torch import Tensor, nn
from torch_geometric.data import Batch

from stgen.components import Configurable
from stgen.registry import ENCODERS

#: default ``context`` of :meth:`Encoder.forward`: call :meth:`Encoder.prepare` first
UNPREPARED: Any = object()


class Encoder(Configurable, nn.Module, ABC):
    """Base class of every encoder (the denoiser network shared by all generators).

    Subclasses implement one hook, :meth:`denoise`. The base class checks shapes, broadcasts nothing
    silently and caches per-slide work through :meth:`prepare`, which generators call once per batch
    and reuse across refinement steps (e.g. kNN graph and edge geometry).

    Iterative generators hand the encoder the current expression state ``y`` and the time ``t``;
    one-shot regression passes ``y = 0`` and ``t = 0``. Encoders that ignore them (``uses_state =
    False``) are still valid for regression.

    Args:
        in_dim: patch-embedding width F (data-derived).
        out_dim: gene-panel size G (data-derived).

    Shapes:
        batch: PyG ``Batch`` with ``x [N, F]``, ``pos [N, 2]``, ``edge_index [2, E]``, ``batch [N]``;
        y: ``[N, G]``; t: ``[B]`` (one per slide); output: ``[N, G]``.
    """

    data_args: ClassVar[tuple[str, ...]] = ("in_dim", "out_dim")
    #: whether predictions depend on ``y`` and ``t`` (False for purely per-spot regressors)
    uses_state: ClassVar[bool] = True
    #: E(2) invariance of the output to rotations/reflections/translations of ``pos`` (contract-tested)
    invariant_to_rigid_motion: ClassVar[bool] = False
    #: graph hops that can influence a spot's output (0: per spot; None: the whole slide). Chunked
    #: whole-slide inference uses it to cut exact neighbourhoods.
    receptive_field: int | None = None
    #: the constructor parameter that sets the neighbours per spot of the kNN graph this encoder reads
    #: (``k``); None, or a constructor without it, means the encoder reads no graph. Data modules and
    #: prediction build exactly the graph it declares (:attr:`graph_k`): k has no other home.
    graph_param: ClassVar[str | None] = "k"

    @classmethod
    def graph_k_from(cls, params: Mapping[str, Any]) -> int | None:
        """``k`` of the graph an encoder built with ``params`` reads (its default when not given), or None."""
        name = cls.graph_param
        defaults = {p.name: p.default for p in cls.params()}
        if name is None or name not in defaults:
            return None
        k = params.get(name, defaults[name])
        if k is None:
            return None
        if int(k) < 1:
            raise ValueError(f"{cls.__name__}: {name} must be >= 1, got {k}")
        return int(k)

    @property
    def graph_k(self) -> int | None:
        """Neighbours per spot of the graph this encoder reads (None: no graph)."""
        name = type(self).graph_param
        if name is None or not hasattr(self, name):
            return type(self).graph_k_from({})
        return type(self).graph_k_from({name: getattr(self, name)})

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        if in_dim <= 0 or out_dim <= 0:
            raise ValueError(f"{type(self).__name__}: in_dim and out_dim must be positive, got {in_dim}, {out_dim}")
        self.in_dim = in_dim
        self.out_dim = out_dim

    def prepare(self, batch: Batch) -> Any:
        """Per-batch work that does not depend on ``y`` or ``t``; the result is passed to ``denoise``."""
        return None

    def forward(self, batch: Batch, y: Tensor, t: Tensor, context: Any = UNPREPARED) -> Tensor:
        n = batch.num_nodes
        if batch.x.shape != (n, self.in_dim):
            raise ValueError(
                f"{type(self).__name__}: expected features of shape ({n}, {self.in_dim}), got {tuple(batch.x.shape)}"
            )
        if y.shape != (n, self.out_dim):
            raise ValueError(f"{type(self).__name__}: expected y of shape ({n}, {self.out_dim}), got {tuple(y.shape)}")
        b = batch.num_graphs
        if t.dim() == 0:
            t = t.expand(b)
        if t.shape != (b,):
            raise ValueError(f"{type(self).__name__}: expected t of shape ({b},) (one per slide), got {tuple(t.shape)}")
        if context is UNPREPARED:
            context = self.prepare(batch)
        out = self.denoise(batch, y, t, context)
        if out.shape != (n, self.out_dim):
            raise RuntimeError(f"{type(self).__name__}.denoise returned {tuple(out.shape)}, expected ({n}, {self.out_dim})")
        return out

    @abstractmethod
    def denoise(self, batch: Batch, y: Tensor, t: Tensor, context: Any) -> Tensor:
        """Predicted clean (log1p) expression ``[N, G]``."""


def node_time(batch: Batch, t: Tensor) -> Tensor:
    """Per-slide times ``[B]`` broadcast to nodes ``[N]``."""
    return t[batch.batch]


ENCODERS.set_base(Encoder)
