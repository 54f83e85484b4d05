"""Message-passing encoder over the slide's kNN graph (GraphSAGE layers)."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torch_geometric.data import Batch
from torch_geometric.nn import SAGEConv

from stgen.data.graph import graph_with_k
from stgen.encoders.base import Encoder, node_time
from stgen.encoders.mlp import StateInput
from stgen.registry import ENCODERS


@ENCODERS.register("gnn")
class GNNEncoder(Encoder):
    """Residual GraphSAGE stack over the spatial kNN graph.

    Layer type: ``SAGEConv`` with mean aggregation and a separate root weight. It keeps the spot's own
    token and the mean of its neighbours' tokens apart (``W_1 h_i + W_2 mean_j h_j``), so the model can
    tell "what this spot is" from "what surrounds it" (the neighbourhood signal), it is linear in the
    number of edges, and it has no attention weights to overfit on small slide sets. Each layer:
    ``h <- h + Dropout(GELU(SAGEConv(LayerNorm(h))))``.

    Args:
        in_dim: patch-embedding width F (data-derived).
        out_dim: gene-panel size G (data-derived).
        hidden_dim: width d.
        num_layers: message-passing layers (receptive field = num_layers hops).
        k: neighbours per spot (the data's graph is reused when it has exactly k per spot).
        dropout: dropout after each layer.

    Shapes:
        x ``[N, F]``, edge_index ``[2, E]``, y ``[N, G]``, t ``[B]`` -> ``[N, G]``.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 128, num_layers: int = 3, k: int = 8,
                 dropout: float = 0.1) -> None:
        super().__init__(in_dim, out_dim)
        self.k = k
        self.receptive_field = num_layers
        self.inp = StateInput(in_dim, out_dim, hidden_dim)
        self.norms = nn.ModuleList(nn.LayerNorm(hidden_dim) for _ in range(num_layers))
        self.convs = nn.ModuleList(SAGEConv(hidden_dim, hidden_dim, aggr="mean") for _ in range(num_layers))
        self.drop = nn.Dropout(dropout)
        self.act = nn.GELU()
        self.head = nn.Sequential(nn.LayerNorm(hidden_dim), nn.Linear(hidden_dim, out_dim))

    def prepare(self, batch: Batch) -> Tensor:
        return graph_with_k(batch, self.k)

    def denoise(self, batch: Batch, y: Tensor, t: Tensor, context: Any) -> Tensor:
        h = self.inp(batch.x, y, node_time(batch, t))
        for norm, conv in zip(self.norms, self.convs, strict=True):
            h = h + self.drop(self.act(conv(norm(h), context)))
        return self.head(h)

