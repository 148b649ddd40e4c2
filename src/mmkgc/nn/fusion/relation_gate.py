"""AFME's relation-driven denoising gate (Wang et al., "AFME", Neural Networks 2025; MoIFu, methods.md §5.2): a
modality transform applied before the attention fusion, not a fusion itself."""

from __future__ import annotations

import torch
from torch import nn

from mmkgc.nn.fusion.base import ModalityGate

__all__ = ["RelationGate"]


class RelationGate(ModalityGate):
    """AFME's relation-driven denoising gate (MoIFu, methods.md §5.2): ``γ_m = σ(W_g (x_m ⊙ c_r) + b_g)``,
    ``x̃_m = γ_m ⊙ x_m``, with one dedicated relation context vector ``c_r ∈ R^D`` per relation and one ``W_g``
    shared by the modalities (a single bias: ``nn.Linear``'s; the seed sample's second bias is not reproduced).

    Choice (paper silent): ``c_r`` starts at 1 plus N(0, 0.1) noise and ``b_g`` at ``bias_init`` (3.0:
    ``σ ≈ 0.95``), so the gate starts close to the identity and learns what to suppress.

    :param dim: ``D``.  :param num_relations: ``R``.  :param bias_init: initial ``b_g``.
    :param rank: ``None`` (full ``D x D`` ``W_g``, the paper) or ``k`` for ``W_g = U V`` (``V: D -> k`` without
        bias, ``U: k -> D``), ``2Dk`` instead of ``D^2`` multiply-adds per token.

    Shapes: ``x [B, M, D]``, ``present [B, M]`` (unused: the gate is elementwise), ``relation [B]`` ->
    ``(gated x [B, M, D], mean gate value per modality [B, M])``.
    :raises ValueError: called without ``relation``.
    """

    relation_aware = True

    def __init__(self, dim: int, num_relations: int, bias_init: float = 3.0, rank: int | None = None):
        super().__init__()
        self.context = nn.Parameter(1.0 + 0.1 * torch.randn(num_relations, dim))
        out = nn.Linear(dim if rank is None else rank, dim)
        with torch.no_grad():
            out.weight.mul_(0.1)
            out.bias.fill_(bias_init)
        # ``rank``: W_g = U V (low rank; see FusionConfig.gate_rank), else the full D x D matrix
        self.linear = out if rank is None else nn.Sequential(nn.Linear(dim, rank, bias=False), out)

    def forward(self, x: torch.Tensor, present: torch.Tensor | None = None,
                relation: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if relation is None:
            raise ValueError("RelationGate needs the relation ids")
        c = self.context[relation].to(x.dtype).unsqueeze(-2)
        gate = torch.sigmoid(self.linear(x * c))
        return gate * x, gate.mean(-1)
