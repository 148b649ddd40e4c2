"""Tanh attention over modality vectors: AdaMF (Zhang et al., LREC-COLING 2024), with NativE's relation temperature
(Zhang et al., SIGIR 2024) and AFME's confidence weights (Wang et al., Neural Networks 2025); methods.md §6.2, §7,
§5.2.  The same attention as PyG's ``AttentionalAggregation`` with a ``wᵀ tanh(·)`` gate."""

from __future__ import annotations

import torch
from torch import nn

from mmkgc.nn.fusion.base import Fusion, masked_softmax

__all__ = ["TanhAttentionFusion"]


class TanhAttentionFusion(Fusion):
    """AdaMF / NativE / AFME tanh attention. Attention over modality vectors: ``β = softmax_m( α_m · wᵀ tanh(x_m) / τ_r )``, ``y = Σ_m β_m x_m``.

    * AdaMF (Zhang et al., LREC-COLING 2024, methods.md §6.2): one shared ``w ∈ R^D`` without bias, ``α = τ = 1``.
    * NativE (Zhang et al., SIGIR 2024, §7): ``relation_temperature=True``: ``τ_r = sigmoid(g_r)`` with one scalar
      ``g_r`` per relation, initialised uniformly in ``±init_range`` (NativE: ``(γ + ε) / (2d)``, so τ ≈ 0.5).
    * AFME dynamic weights (Wang et al., Neural Networks 2025, §5.2): ``confidence='l2'``: ``α_m = ‖x_m‖₂``.

    Absent modalities (``present`` False) get weight exactly 0 (the softmax runs over the present ones only).

    :param dim: ``D``.
    :param num_modalities: ``M`` (the structural embedding counts as one).
    :param relation_temperature: use ``τ_r`` (then ``forward`` needs ``relation``).
    :param num_relations: ``R`` (rows of ``g``), needed with ``relation_temperature``.
    :param confidence: ``none`` or ``l2``.
    :param init_range: half-width of the uniform initialisation of ``g``.

    Shapes: ``x [B, M, D]``, ``present`` bool ``[B, M]`` (``None`` = all present), ``relation`` int64 ``[B]`` ->
    ``(fused [B, D], weights [B, M])``.
    :raises ValueError: wrong ``M``, or a relation-conditioned fusion called without ``relation``.
    """

    synonyms = ("attention",)

    def __init__(self, dim: int, num_modalities: int, relation_temperature: bool = False, num_relations: int = 0,
                 confidence: str = "none", init_range: float = 0.05):
        super().__init__()
        if confidence not in ("none", "l2"):
            raise ValueError(f"confidence must be 'none' or 'l2', got {confidence!r}")
        if relation_temperature and num_relations < 1:
            raise ValueError("relation_temperature needs num_relations >= 1")
        self.dim, self.num_modalities = dim, num_modalities
        self.relation_temperature, self.confidence = relation_temperature, confidence
        self.w = nn.Parameter(torch.empty(dim).uniform_(-dim ** -0.5, dim ** -0.5))
        if relation_temperature:
            self.g = nn.Parameter(torch.empty(num_relations).uniform_(-init_range, init_range))
        else:
            self.register_parameter("g", None)
        self.relation_aware = relation_temperature

    def temperature(self, relation: torch.Tensor) -> torch.Tensor:
        """``τ_r = sigmoid(g_r)`` of ``relation [B]`` -> ``[B]``."""
        return torch.sigmoid(self.g[relation])

    def base_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The relation-independent part ``α_m wᵀ tanh(x_m)`` ``[B, M]`` (reusable across relations)."""
        a = torch.tanh(x) @ self.w.to(x.dtype)
        if self.confidence == "l2":
            a = a * x.norm(dim=-1)
        return a

    def logits(self, x: torch.Tensor, relation: torch.Tensor | None = None,
               base: torch.Tensor | None = None) -> torch.Tensor:
        """Unmasked attention logits ``[B, M]`` (``base``: precomputed :meth:`base_logits`)."""
        a = self.base_logits(x) if base is None else base
        if self.relation_temperature:
            if relation is None:
                raise ValueError("TanhAttentionFusion with relation_temperature needs the relation ids")
            a = a / self.temperature(relation).to(a.dtype).unsqueeze(-1)
        return a

    def forward(self, x: torch.Tensor, present: torch.Tensor | None = None,
                relation: torch.Tensor | None = None, base: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        present = self.check_input(x, present)
        weights = masked_softmax(self.logits(x, relation, base), present)
        return (weights.unsqueeze(-1) * x).sum(-2), weights
