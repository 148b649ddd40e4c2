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

    Shapes: ``x [B, M, D]``, ``present [B, M]`` (unused: concatenation has no weights) -> ``([B, D], None)``.
    """

    def __init__(self, num_modalities: int, dim: int):
        super().__init__()
        self.num_modalities = num_modalities
        self.projection = nn.Linear(num_modalities * dim, dim)

    def forward(
        self, x: torch.Tensor, present: torch.Tensor | None = None, relation: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, None]:
        if x.shape[-2] != self.num_modalities:
            raise ValueError(f"ConcatFusion expects {self.num_modalities} modalities, got x of shape {tuple(x.shape)}")
        return self.projection(x.flatten(-2)), None
