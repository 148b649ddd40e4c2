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
    :param fixed_residual: keep the residual slot's block the identity for good instead of a learned block that
        starts as the identity: ``y = x_r + W' [x_m]_{m != r} + b`` with ``W'`` of shape ``[D, (M - 1) D]``.  The
        same family of functions when ``x_r`` is a free embedding (a learned invertible block can be absorbed
        into the embedding table), without the ``D x D`` product per entity on that slot, forward and backward:
        the cheaper "residual concat" for CPU budgets (docs/benchmarks.md).  Needs ``residual_slot``.

    Shapes: ``x [B, M, D]``, ``present [B, M]`` (unused: concatenation has no weights) -> ``([B, D], None)``.
    Absent modalities enter through their filled vectors (:attr:`masks_absent` is ``False``).
    :raises ValueError: ``residual_slot`` out of range, ``fixed_residual`` without a ``residual_slot``, or ``x`` with
        another number of modalities.
    """

    has_weights = False
    masks_absent = False

    def __init__(self, num_modalities: int, dim: int, residual_slot: int | None = None, other_scale: float = 0.1,
                 fixed_residual: bool = False):
        super().__init__()
        self.num_modalities, self.dim = num_modalities, dim
        if residual_slot is not None and not 0 <= residual_slot < num_modalities:
            raise ValueError(f"residual_slot {residual_slot} out of range for {num_modalities} modalities")
        if fixed_residual and (residual_slot is None or num_modalities < 2):
            raise ValueError("fixed_residual needs a residual_slot and at least one other modality")
        self.residual_slot, self.fixed_residual = residual_slot, fixed_residual
        learned = num_modalities - int(fixed_residual)
        self.projection = nn.Linear(learned * dim, dim)
        if residual_slot is not None:
            with torch.no_grad():
                self.projection.weight.mul_(other_scale)
                self.projection.bias.zero_()
                if not fixed_residual:
                    block = slice(residual_slot * dim, (residual_slot + 1) * dim)
                    self.projection.weight[:, block] = torch.eye(dim)

    def block(self, slot: int) -> torch.Tensor | None:
        """The ``[D, D]`` block of the projection that multiplies slot ``slot`` (a view of the weight, so gradients
        reach it), or ``None`` for the fixed identity slot of ``fixed_residual``."""
        if self.fixed_residual:
            if slot == self.residual_slot:
                return None
            slot -= int(slot > self.residual_slot)
        return self.projection.weight[:, slot * self.dim:(slot + 1) * self.dim]

    def forward(
        self, x: torch.Tensor, present: torch.Tensor | None = None, relation: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, None]:
        self.check_input(x, present)
        if not self.fixed_residual:
            return self.projection(x.flatten(-2)), None
        r = self.residual_slot
        others = torch.cat([x[..., :r, :], x[..., r + 1:, :]], -2)
        return x[..., r, :] + self.projection(others.flatten(-2)), None
