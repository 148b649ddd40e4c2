"""Fusion operators: a set of modality vectors ``x [B, M, D]`` (+ presence ``[B, M]``, optional relation
embedding) -> one entity vector ``[B, D]``.

Every operator returns ``(fused, weights)``; ``weights [B, M]`` are the per-modality weights for diagnostics,
or ``None`` for operators without weights.  Missing modalities arrive already filled by the representation's
explicit fill policy (a learned "missing" vector or zeros); weighted operators additionally give an absent
modality zero weight through ``present``.
"""

from __future__ import annotations

import torch
from torch import nn


class ConcatFusion(nn.Module):
    """Concatenate the ``M`` modality vectors and project back: ``y = W [x_1; ...; x_M] + b``.

    The "concat" configuration of VEMP's feature comparison (Sela et al.) and the usual multimodal KGE baseline.

    :param num_modalities: ``M`` (the structural embedding counts as one).
    :param dim: ``D``.
    :param residual_slot: if given, the projection starts as the identity on this slot (the structural
        embedding) plus the default random initialisation scaled by ``other_scale`` on the other slots and no
        bias, so training starts from the structure-only model and learns how much of each modality to add.
        With the plain random initialisation the structural embedding is scrambled by a random matrix at the
        start, which slows down the structural part (measured on the synthetic KG, see docs/benchmarks.md).
    :param other_scale: scale of the initial weights of the non-residual slots.

    Shapes: ``x [B, M, D]``, ``present [B, M]`` (unused: concatenation has no weights) -> ``([B, D], None)``.
    """

    def __init__(self, num_modalities: int, dim: int, residual_slot: int | None = None, other_scale: float = 0.1):
        super().__init__()
        self.num_modalities = num_modalities
        self.projection = nn.Linear(num_modalities * dim, dim)
        if residual_slot is not None:
            if not 0 <= residual_slot < num_modalities:
                raise ValueError(f"residual_slot {residual_slot} out of range for {num_modalities} modalities")
            with torch.no_grad():
                self.projection.weight.mul_(other_scale)
                block = slice(residual_slot * dim, (residual_slot + 1) * dim)
                self.projection.weight[:, block] = torch.eye(dim)
                self.projection.bias.zero_()

    def forward(
        self, x: torch.Tensor, present: torch.Tensor | None = None, relation: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, None]:
        if x.shape[-2] != self.num_modalities:
            raise ValueError(f"ConcatFusion expects {self.num_modalities} modalities, got x of shape {tuple(x.shape)}")
        return self.projection(x.flatten(-2)), None
