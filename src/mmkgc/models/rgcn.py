"""R-GCN entity representation: entity vectors computed by an R-GCN over the training graph.

``representation: rgcn`` (config ``model.gnn``) plugs :class:`~mmkgc.nn.gnn.RGCNEncoder` into the KGE model as its
:class:`~mmkgc.models.kge.EntityRepresentation`, so the ordinary trainer, negative samplers and the filtered
all-entity evaluator train and evaluate R-GCN + DistMult/RotatE (the relation-aware variant of VEMP, methods.md
2.8; Schlichtkrull et al. 2018 used R-GCN + DistMult the same way).  The message-passing graph holds the
**training** triples only, so no validation/test edge ever carries a message.

Two hooks serve VEMP's stage 2 (``training.loop: link_bce``, ``evaluation.protocol: vemp_sampled``):
:attr:`RGCNRepresentation.training_graph` replaces the message graph in training mode (the loop removes each
epoch's supervision edges from it), and :meth:`RGCNRepresentation.use_graph` swaps the evaluation graph for a block
(VEMP passes messages along train + valid edges when it ranks test edges); :meth:`RGCNRepresentation.graph_of`
builds a graph from triples with the representation's relation grouping.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

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
    :param seed: seeds the representation's own neighbour-sampling stream.
    :param relation_map: int64 ``[R]`` dataset relation -> edge type of ``graph`` (``None``: the identity), kept for
        :meth:`graph_of`.

    Shapes: ``forward(ids [B] | None) -> [B, D]``.  In eval mode without gradients the full-graph output is cached
    until the module is put back into training mode.
    """

    def __init__(self, graph: MessageGraph, dim: int, features: Sequence[FeatureTable] = (),
                 hidden_dims: Sequence[int] = (256,), num_bases: int | None = None, dropout: float = 0.5,
                 final_activation: bool = True, fanouts: Sequence[int] | None = None, input_dim: int = 128,
                 seed: int = 0, relation_map: torch.Tensor | None = None):
        super().__init__()
        self.num_entities, self.dim = graph.num_nodes, dim
        self.graph = graph
        #: message graph used in training mode instead of :attr:`graph` when set (the link-BCE loop's per-epoch
        #: graph without its supervision edges); evaluation always uses :attr:`graph`
        self.training_graph: MessageGraph | None = None
        self.relation_map = None if relation_map is None else torch.as_tensor(relation_map).long()
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

    def graph_of(self, triples: torch.Tensor) -> MessageGraph:
        """The message graph of ``(h, r, t)`` triples ``[n, 3]`` with this representation's edge types."""
        return MessageGraph.from_triples(triples, self.num_entities, self.graph.num_relations, self.relation_map)

    @contextlib.contextmanager
    def use_graph(self, graph: MessageGraph) -> Iterator[None]:
        """Within the block, :attr:`graph` is ``graph`` (the cached evaluation output is dropped on entry and exit).

        :raises ValueError: a graph over another node count or edge-type count.
        """
        if graph.num_nodes != self.num_entities or graph.num_relations != self.graph.num_relations:
            raise ValueError(f"graph has {graph.num_nodes} nodes / {graph.num_relations} edge types; the "
                             f"representation has {self.num_entities} / {self.graph.num_relations}")
        previous, self.graph, self._cache = self.graph, graph, None
        try:
            yield
        finally:
            self.graph, self._cache = previous, None

    def _active_graph(self) -> MessageGraph:
        return self.training_graph if self.training and self.training_graph is not None else self.graph

    def full(self) -> torch.Tensor:
        """R-GCN output for every entity ``[N, D]`` (full batch) over the active message graph."""
        graph = self._active_graph()
        dev = self._inputs(None).device
        return self.encoder(self._inputs(None), graph.edge_index.to(dev), graph.edge_type.to(dev))

    def train(self, mode: bool = True) -> "RGCNRepresentation":
        self._cache = None
        return super().train(mode)

    def encode(self, ids: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Vectors of ``ids [B]`` (repeats allowed) ``-> [B, D]`` over the active message graph: one full-batch pass,
        or with ``fanouts`` one pass over the subgraph sampled around ``ids`` (:func:`~mmkgc.nn.gnn.sample_subgraph`)
        with ``generator`` (default: the representation's own stream)."""
        if self.fanouts is None:
            return self.full()[ids]
        sub = sample_subgraph(self._active_graph(), ids.cpu(), self.fanouts,
                              self.generator if generator is None else generator)
        dev = ids.device
        out = self.encoder(self._inputs(sub.nodes), sub.edge_index.to(dev), sub.edge_type.to(dev))
        local = torch.full((self.num_entities,), -1, dtype=torch.long)
        local[sub.nodes] = torch.arange(sub.nodes.numel())
        return out[local[ids.cpu()].to(dev)]

    def forward(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        if not self.training and not torch.is_grad_enabled():
            if self._cache is None:
                self._cache = self.full()
            return self._cache if ids is None else self._cache[ids]
        if ids is None:
            return self.full()
        return self.encode(ids)
