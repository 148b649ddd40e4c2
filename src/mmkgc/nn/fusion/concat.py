"""Concatenation fusion: the "concat" configuration of VEMP's feature comparison (Sela et al., "Vision-Enhanced
Message Passing") and the usual multimodal KGE baseline, ``y = W [x_1; ...; x_M] + b``."""

from __future__ import annotations

import torch
from torch import nn

from mmkgc.nn.fusion.base import Fusion

__all__ = ["ConcatFusion"]


class ConcatFusion(Fusion):
    """Concatenation fusion (the "concat" baseline of VEMP, Sela et al.). Concatenate the ``M`` modality vectors and project back: ``y = W [x_1; ...; x_M] + b``.

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
    Absent modalities enter through their filled vectors (:attr:`masks_absent` is ``False``).
    :raises ValueError: ``residual_slot`` out of range, or ``x`` with another number of modalities.
    """

    has_weights = False
    masks_absent = False

    def __init__(self, num_modalities: int, dim: int, residual_slot: int | None = None, other_scale: float = 0.1):
        super().__init__()
        self.num_modalities, self.dim = num_modalities, dim
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
        self.check_input(x, present)
        return self.projection(x.flatten(-2)), None
