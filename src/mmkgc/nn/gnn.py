"""Graph encoders: a relational GCN over a message-passing graph, full batch or with fan-out neighbour sampling.

* :class:`MessageGraph` -- the directed, typed edges messages flow along (``src -> dst``).  It is built from the
  **training** edges only, so the edges a model is asked to predict are never message-passing edges (methods.md
  section 2.7, bug 3 of the VEMP code, and 8.6).
* :func:`sample_subgraph` -- fan-out neighbour sampling (GraphSAGE, Hamilton et al. 2017; PyG's
  ``NeighborLoader`` semantics): from the seed nodes, hop ``i`` keeps at most ``fanouts[i]`` incoming edges per
  frontier node, drawn without replacement; vectorised in torch (no pyg-lib / torch-sparse needed).
* :class:`RGCNEncoder` -- stacked ``torch_geometric.nn.RGCNConv`` layers (Schlichtkrull et al., 2018, "Modeling
  Relational Data with Graph Convolutional Networks"): ``h_i' = W_0 h_i + sum_r sum_{j in N_r(i)} 1/|N_r(i)| W_r h_j
  + b`` with basis decomposition ``W_r = sum_b a_rb V_b``; ReLU + dropout between layers, optional ReLU on the
  output (VEMP).
* :class:`MLPLinkPredictor` -- VEMP's relation-agnostic decoder ``s(u, v) = w_2ᵀ Dropout(ReLU(W_1 [z_u; z_v] + b_1))
  + b_2``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class MessageGraph:
    """Typed directed edges for message passing.

    :param edge_index: int64 ``[2, E]`` (row 0 = source, row 1 = destination; messages flow source -> destination).
    :param edge_type: int64 ``[E]`` in ``[0, num_relations)``.
    :param num_nodes: ``N``.
    :param num_relations: number of edge types.
    :raises ValueError: bad shapes or ids out of range.
    """

    edge_index: torch.Tensor
    edge_type: torch.Tensor
    num_nodes: int
    num_relations: int

    def __post_init__(self) -> None:
        self.edge_index = torch.as_tensor(self.edge_index).long()
        self.edge_type = torch.as_tensor(self.edge_type).long()
        if self.edge_index.ndim != 2 or self.edge_index.shape[0] != 2:
            raise ValueError(f"edge_index must be [2, E], got {tuple(self.edge_index.shape)}")
        if self.edge_type.shape != self.edge_index.shape[1:]:
            raise ValueError(f"edge_type must be [{self.edge_index.shape[1]}], got {tuple(self.edge_type.shape)}")
        if self.edge_index.numel() and (self.edge_index.min() < 0 or self.edge_index.max() >= self.num_nodes):
            raise ValueError(f"edge_index has node ids outside [0, {self.num_nodes})")
        if self.edge_type.numel() and (self.edge_type.min() < 0 or self.edge_type.max() >= self.num_relations):
            raise ValueError(f"edge_type has ids outside [0, {self.num_relations})")
        # Incoming-edge CSR (edges sorted by destination) for neighbour sampling.
        order = torch.argsort(self.edge_index[1], stable=True)
        self._in_order = order
        counts = torch.bincount(self.edge_index[1], minlength=self.num_nodes)
        self._in_ptr = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])

    @classmethod
    def from_triples(cls, triples: torch.Tensor, num_nodes: int, num_relations: int,
                     relation_map: torch.Tensor | None = None) -> MessageGraph:
        """Edges ``h -> t`` of type ``r`` (or ``relation_map[r]``) from ``(h, r, t)`` triples ``[n, 3]``.

        :param relation_map: int64 ``[R]`` mapping dataset relations to edge types (e.g. VEMP's meta-relations);
            ``num_relations`` is then the number of edge types.
        """
        triples = torch.as_tensor(triples).long()
        etype = triples[:, 1] if relation_map is None else torch.as_tensor(relation_map).long()[triples[:, 1]]
        return cls(torch.stack([triples[:, 0], triples[:, 2]]), etype, num_nodes, num_relations)

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])

    def edge_set(self) -> set[tuple[int, int]]:
        """The ``(src, dst)`` pairs (for checks that supervision edges are excluded)."""
        return set(map(tuple, self.edge_index.T.tolist()))

    def incoming(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Ids of all incoming edges of ``nodes [B]`` and, per edge, the position of its node in ``nodes``."""
        start, end = self._in_ptr[nodes], self._in_ptr[nodes + 1]
        deg = end - start
        owner = torch.repeat_interleave(torch.arange(nodes.numel()), deg)
        offsets = torch.arange(int(deg.sum())) - torch.repeat_interleave(deg.cumsum(0) - deg, deg)
        return self._in_order[start[owner] + offsets], owner


@dataclass
class Subgraph:
    """A sampled subgraph: ``nodes [n]`` (global ids; the seeds first, in order), local ``edge_index [2, e]``,
    ``edge_type [e]``."""

    nodes: torch.Tensor
    edge_index: torch.Tensor
    edge_type: torch.Tensor


def sample_subgraph(graph: MessageGraph, seeds: torch.Tensor, fanouts: Sequence[int],
                    generator: torch.Generator | None = None) -> Subgraph:
    """Fan-out neighbour sampling around ``seeds`` (one hop per entry of ``fanouts``; ``-1`` = all neighbours).

    Hop ``i`` takes, for every node first reached at hop ``i - 1``, at most ``fanouts[i]`` of its incoming edges,
    uniformly without replacement.  The returned subgraph holds every sampled edge and every node reached; the
    seeds (deduplicated, first-occurrence order) come first in ``nodes``.

    :param seeds: int64 ``[B]`` global node ids.
    :raises ValueError: a fan-out of 0 or below -1.
    """
    if any(int(f) == 0 or int(f) < -1 for f in fanouts):
        raise ValueError(f"fan-outs must be positive or -1 (all), got {list(fanouts)}")
    seeds = torch.as_tensor(seeds).long().cpu()
    # Unique seeds in first-occurrence order.
    uniq, inv = torch.unique(seeds, return_inverse=True)
    first = torch.full((uniq.numel(),), seeds.numel(), dtype=torch.long).scatter_reduce(
        0, inv, torch.arange(seeds.numel()), reduce="amin")
    nodes = uniq[torch.argsort(first)]
    seen = torch.zeros(graph.num_nodes, dtype=torch.bool)
    seen[nodes] = True
    frontier, all_nodes, edges = nodes, [nodes], []
    for fanout in fanouts:
        if frontier.numel() == 0:
            break
        eids, owner = graph.incoming(frontier)
        if int(fanout) != -1 and eids.numel():
            priority = torch.rand(eids.numel(), generator=generator)
            order = torch.argsort(owner.double() + priority.double())  # by owner, random within an owner
            eids, owner = eids[order], owner[order]
            deg = torch.bincount(owner, minlength=frontier.numel())
            rank = torch.arange(eids.numel()) - torch.repeat_interleave(deg.cumsum(0) - deg, deg)
            eids = eids[rank < int(fanout)]
        edges.append(eids)
        src = graph.edge_index[0, eids]
        new = torch.unique(src[~seen[src]])
        seen[new] = True
        all_nodes.append(new)
        frontier = new
    nodes = torch.cat(all_nodes)
    eids = torch.cat(edges) if edges else torch.empty(0, dtype=torch.long)
    local = torch.full((graph.num_nodes,), -1, dtype=torch.long)
    local[nodes] = torch.arange(nodes.numel())
    return Subgraph(nodes, local[graph.edge_index[:, eids]], graph.edge_type[eids])


class RGCNEncoder(nn.Module):
    """Stacked R-GCN layers on ``torch_geometric.nn.RGCNConv`` (mean aggregation per relation, root weight, bias).

    :param in_dim: input feature width.
    :param hidden_dims: widths of the hidden layers (VEMP: ``[256]``).
    :param out_dim: output width (VEMP: 128).
    :param num_relations: number of edge types (VEMP: 31 meta-relations).
    :param num_bases: basis decomposition size (VEMP: 31), ``None`` = one matrix per relation.
    :param dropout: dropout after each hidden activation (VEMP: 0.5).
    :param final_activation: ReLU on the output too (VEMP).

    ``forward(x [n, in_dim], edge_index [2, e], edge_type [e]) -> [n, out_dim]``.
    """

    def __init__(self, in_dim: int, hidden_dims: Sequence[int], out_dim: int, num_relations: int,
                 num_bases: int | None = None, dropout: float = 0.5, final_activation: bool = True):
        super().__init__()
        from mmkgc.extras import require

        require("torch_geometric", "the R-GCN encoder (representation: rgcn, VEMP)", extra="gnn")
        from torch_geometric.nn import RGCNConv

        if num_bases is not None and num_bases > num_relations:
            num_bases = num_relations  # more bases than relations only adds parameters
        dims = [int(in_dim), *map(int, hidden_dims), int(out_dim)]
        self.layers = nn.ModuleList(RGCNConv(a, b, num_relations, num_bases=num_bases, aggr="mean")
                                    for a, b in itertools.pairwise(dims))
        self.dropout = nn.Dropout(dropout)
        self.final_activation = final_activation
        self.in_dim, self.out_dim, self.num_relations = dims[0], dims[-1], num_relations

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_type: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"RGCNEncoder expects inputs of width {self.in_dim}, got {tuple(x.shape)}")
        for i, layer in enumerate(self.layers):
            x = layer(x, edge_index, edge_type)
            last = i == len(self.layers) - 1
            if not last or self.final_activation:
                x = torch.relu(x)
            if not last:
                x = self.dropout(x)
        return x


class MLPLinkPredictor(nn.Module):
    """VEMP's relation-agnostic edge decoder (methods.md 2.4): ``s(u, v) = w_2ᵀ Dropout(ReLU(W_1 [z_u; z_v] + b_1))
    + b_2`` (logits; ``BCEWithLogits`` in training).

    Shapes: ``forward(z_u [..., d], z_v [..., d]) -> [...]``.
    """

    def __init__(self, dim: int, hidden: int = 128, dropout: float = 0.3):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1))

    def forward(self, z_u: torch.Tensor, z_v: torch.Tensor) -> torch.Tensor:
        z_u, z_v = torch.broadcast_tensors(z_u, z_v)
        return self.net(torch.cat([z_u, z_v], -1)).squeeze(-1)
