"""Decision-level (late) fusion of per-modality predictions: IMVIA (methods.md section 4.2)."""

from __future__ import annotations

import torch
from torch import nn

from mmkgc.nn.fusion.base import ScoreFusion

__all__ = ["DecisionFusion"]


class DecisionFusion(ScoreFusion):
    """Late (decision-level) fusion of per-modality predictions ``P [B, M, N] -> [B, N]``.

    * ``mean``: ``(1/M) sum_m P_m`` -- IMVIA's ``(P_s + P_v + P_t) / 3`` (methods.md section 4.2), no parameters;
    * ``learned``: ``sum_m softmax(w)_m P_m`` with one trainable logit per modality (zero init = mean);
    * ``relation``: ``sum_m softmax(w_r)_m P_m`` with logits per query relation (zero init = mean) -- the
      "relation-aware gated decision fusion" the IMVIA paper describes but its code does not implement.

    The inputs are whatever the caller fuses (IMVIA: probabilities); a convex combination of probabilities stays
    a probability.

    :param num_modalities: ``M``.
    :param mode: ``mean``, ``learned`` or ``relation``.
    :param num_relations: rows of the relation weight table (needed for ``relation``).

    Shapes: ``forward(P [B, M, N], relation [B] | None) -> (fused [B, N], weights [B, M])``.
    :raises ValueError: unknown mode, missing relation for ``relation``, or wrong ``M``.
    """

    def __init__(self, num_modalities: int, mode: str = "mean", num_relations: int = 0):
        super().__init__()
        if mode not in ("mean", "learned", "relation"):
            raise ValueError(f"DecisionFusion: mode must be mean, learned or relation, got {mode!r}")
        if mode == "relation" and num_relations < 1:
            raise ValueError("DecisionFusion mode 'relation' needs num_relations >= 1")
        self.num_modalities, self.mode = num_modalities, mode
        self.logits = nn.Parameter(torch.zeros(num_modalities)) if mode == "learned" else None
        self.relation_logits = nn.Embedding(num_relations, num_modalities) if mode == "relation" else None
        if self.relation_logits is not None:
            nn.init.zeros_(self.relation_logits.weight)

    def weights(self, batch: int, relation: torch.Tensor | None = None, device=None) -> torch.Tensor:
        """Per-query modality weights ``[B, M]`` (rows sum to 1)."""
        if self.mode == "mean":
            return torch.full((batch, self.num_modalities), 1.0 / self.num_modalities, device=device)
        if self.mode == "learned":
            return torch.softmax(self.logits, 0).expand(batch, -1)
        if relation is None:
            raise ValueError("DecisionFusion mode 'relation' needs the query relations")
        return torch.softmax(self.relation_logits(relation), -1)

    def forward(self, predictions: torch.Tensor, relation: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        if predictions.ndim != 3 or predictions.shape[1] != self.num_modalities:
            raise ValueError(f"DecisionFusion expects [B, {self.num_modalities}, N], got {tuple(predictions.shape)}")
        w = self.weights(predictions.shape[0], relation, predictions.device).to(predictions.dtype)
        return (w.unsqueeze(-1) * predictions).sum(1), w
