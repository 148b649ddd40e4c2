"""The model parts of VEMP's stage 2 (Sela et al., "Vision-Enhanced Message Passing"; methods.md section 2): the
R-GCN + MLP link model and its training negatives.  Plain arguments only; the two-stage orchestration (inputs,
pretraining, export, the sampled and filtered protocols, the comparison) is :mod:`mmkgc.vemp`, above the layers.
"""

from __future__ import annotations

import torch
from torch import nn

from mmkgc.nn.gnn import MessageGraph, MLPLinkPredictor, RGCNEncoder


# ------------------------------------------------------------------------------------------------ stage 2
class VempLinkModel(nn.Module):
    """R-GCN encoder + relation-agnostic MLP decoder over frozen node features ``x [N, d]``.

    ``encode(graph) -> z [N, out_dim]``; ``decoder(z_u, z_v)`` link logits.

    :param features: float ``[N, d]`` frozen node features (a non-persistent buffer).
    :param num_relations: edge types of the message graph.
    :param hidden_dims: R-GCN hidden widths; ``out_dim`` the node-embedding width.
    :param num_bases: basis matrices of the R-GCN weight decomposition; ``dropout`` between its layers.
    :param decoder_hidden: hidden widths of the MLP decoder; ``decoder_dropout`` its dropout.
    """

    def __init__(self, features: torch.Tensor, num_relations: int, hidden_dims, out_dim: int, num_bases,
                 dropout: float, decoder_hidden, decoder_dropout: float):
        super().__init__()
        self.register_buffer("x", features.float(), persistent=False)
        self.encoder = RGCNEncoder(features.shape[1], hidden_dims, out_dim, num_relations, num_bases,
                                   dropout, final_activation=True)
        self.decoder = MLPLinkPredictor(out_dim, decoder_hidden, decoder_dropout)

    def encode(self, graph: MessageGraph) -> torch.Tensor:
        dev = self.x.device
        return self.encoder(self.x, graph.edge_index.to(dev), graph.edge_type.to(dev))



def random_negatives(pos: torch.Tensor, num_nodes: int, known: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``len(pos)`` random ``(src, dst)`` pairs that are not known edges (PyG ``negative_sampling`` style)."""
    keys = torch.unique(known[:, 0] * num_nodes + known[:, 1])
    out = torch.empty(0, 2, dtype=torch.long)
    while out.shape[0] < pos.shape[0]:
        cand = torch.randint(num_nodes, (2 * pos.shape[0], 2), generator=gen)
        cand = cand[~torch.isin(cand[:, 0] * num_nodes + cand[:, 1], keys)]
        out = torch.cat([out, cand])
    return out[:pos.shape[0]]


def training_negatives(src: torch.Tensor, num_nodes: int, mode: str, gen: torch.Generator
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """One negative ``(source, destination)`` pair per positive edge for the binary link loss.

    * ``binary``: both endpoints uniform over the ``num_nodes`` nodes, drawn independently (sources first) and not
      checked against known edges -- PyG's binary negative sampling, which VEMP's ``LinkNeighborLoader(...,
      neg_sampling_ratio=1.0)`` uses (PyG 2.8 ``sampler/neighbor_sampler.py``, ``edge_sample``: ``src_neg`` and
      ``dst_neg`` from ``torch.randint``);
    * ``tail``: the positive's source and a uniform destination.

    :param src: int64 ``[B]`` sources of the positive edges.
    :returns: int64 ``[B]`` negative sources and ``[B]`` negative destinations.
    :raises ValueError: unknown ``mode``.
    """
    b = src.shape[0]
    if mode == "binary":
        neg_src = torch.randint(num_nodes, (b,), generator=gen)
        return neg_src, torch.randint(num_nodes, (b,), generator=gen)
    if mode == "tail":
        return src, torch.randint(num_nodes, (b,), generator=gen)
    raise ValueError(f"negatives must be 'binary' or 'tail', got {mode!r}")
