"""R-GCN entity representation: entity vectors computed by an R-GCN over the training graph.

``representation: rgcn`` (config ``model.gnn``) plugs :class:`~mmkgc.nn.gnn.RGCNEncoder` into the KGE model as its
:class:`~mmkgc.models.kge.EntityRepresentation`, so the ordinary trainer, negative samplers and the filtered
all-entity evaluator train and evaluate R-GCN + DistMult/RotatE (the relation-aware variant of VEMP, methods.md
2.8; Schlichtkrull et al. 2018 used R-GCN + DistMult the same way).  The message-passing graph holds the
**training** triples only, so no validation/test edge ever carries a message.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mmkgc.features.store import FeatureTable
from mmkgc.models.kge import EntityRepresentation
from mmkgc.nn.gnn import MessageGraph, RGCNEncoder, sample_subgraph


class RGCNRepresentation(EntityRepresentation):
    """Entity vectors ``R-GCN(X)[ids]`` over a fixed message-passing graph.

    :param graph: the message-passing graph (training edges only).
    :param dim: output width ``D`` (the scorer's entity width).
    :param features: frozen input tables (concatenated along the feature axis; missing rows are zeros), or empty
        for a learned input table of width ``input_dim``.
    :param hidden_dims: R-GCN hidden widths.
    :param num_bases: basis decomposition size.
    :param dropout: dropout between layers.
    :param final_activation: ReLU on the output layer.
    :param fanouts: per-hop fan-outs for neighbour-sampled training (``None``: full batch); evaluation is always
        full batch.
    :param input_dim: width of the learned input table when ``features`` is empty.

    Shapes: ``forward(ids [B] | None) -> [B, D]``.  In eval mode without gradients the full-graph output is cached
    until the module is put back into training mode.
    """

    def __init__(self, graph: MessageGraph, dim: int, features: Sequence[FeatureTable] = (),
                 hidden_dims: Sequence[int] = (256,), num_bases: int | None = None, dropout: float = 0.5,
                 final_activation: bool = True, fanouts: Sequence[int] | None = None, input_dim: int = 128,
                 seed: int = 0):
        super().__init__()
        self.num_entities, self.dim = graph.num_nodes, dim
        self.graph = graph
        if features:
            cols = []
            for f in features:
                v = torch.as_tensor(f.values, dtype=torch.float32)
                if v.ndim != 2 or v.shape[0] != graph.num_nodes:
                    raise ValueError(f"modality {f.modality!r}: expected [{graph.num_nodes}, d], got {tuple(v.shape)}")
                cols.append(v * torch.as_tensor(f.present, dtype=torch.bool).unsqueeze(1))
            self.register_buffer("features", torch.cat(cols, 1), persistent=False)
            self.table = None
        else:
            self.features = None
            self.table = nn.Embedding(graph.num_nodes, input_dim)
            nn.init.xavier_uniform_(self.table.weight)
        in_dim = self.features.shape[1] if self.features is not None else input_dim
        self.encoder = RGCNEncoder(in_dim, hidden_dims, dim, graph.num_relations, num_bases, dropout, final_activation)
        self.fanouts = list(fanouts) if fanouts else None
        self.generator = torch.Generator().manual_seed(int(seed))
        self._cache: torch.Tensor | None = None

    def _inputs(self, nodes: torch.Tensor | None) -> torch.Tensor:
        base = self.features if self.features is not None else self.table.weight
        return base if nodes is None else base[nodes.to(base.device)]

    def full(self) -> torch.Tensor:
        """R-GCN output for every entity ``[N, D]`` (full batch)."""
        dev = self._inputs(None).device
        return self.encoder(self._inputs(None), self.graph.edge_index.to(dev), self.graph.edge_type.to(dev))

    def train(self, mode: bool = True) -> "RGCNRepresentation":
        self._cache = None
        return super().train(mode)

    def forward(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        if not self.training and not torch.is_grad_enabled():
            if self._cache is None:
                self._cache = self.full()
            return self._cache if ids is None else self._cache[ids]
        if ids is None or self.fanouts is None:
            out = self.full()
            return out if ids is None else out[ids]
        sub = sample_subgraph(self.graph, ids.cpu(), self.fanouts, self.generator)
        dev = ids.device
        out = self.encoder(self._inputs(sub.nodes), sub.edge_index.to(dev), sub.edge_type.to(dev))
        local = torch.full((self.num_entities,), -1, dtype=torch.long)
        local[sub.nodes] = torch.arange(sub.nodes.numel())
        return out[local[ids.cpu()].to(dev)]
