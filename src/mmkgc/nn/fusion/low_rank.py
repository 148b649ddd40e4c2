"""Low-rank multimodal fusion (LMF): Liu et al., "Efficient Low-rank Multimodal Fusion with Modality-Specific
Factors", ACL 2018.

The tensor fusion ``h = W · (⊗_m [x_m; 1])`` over the outer product of the modality vectors, with the weight tensor
``W`` of rank ``r`` decomposed into modality-specific factors, so that it is never formed:
``h = Σ_{i=1}^{r} λ_i ∏_m (W_m^{(i)} [x_m; 1]) + b`` (products element-wise over the ``D`` outputs).
"""

from __future__ import annotations

import torch
from torch import nn

from mmkgc.nn.fusion.base import Fusion

__all__ = ["LowRankFusion"]


class LowRankFusion(Fusion):
    """Low-rank multimodal fusion (Liu et al., ACL 2018): ``y = Σ_i λ_i ∏_m (W_m^{(i)} [x_m; 1]) + b``.

    Each modality has ``rank`` factors ``W_m^{(i)} ∈ R^{(D + 1) x D}`` (the appended 1 keeps the unimodal and lower-order
    terms of the outer product), ``λ ∈ R^r`` weighs the rank-1 terms and ``b ∈ R^D`` is a bias.  Initialisation as
    in the paper's experiments: Xavier-normal factors and ``λ``, zero bias.

    Choice (the paper has no missing modalities): an absent modality contributes the multiplicative identity, i.e. it
    is dropped from the product of its rows, so its filled vector has no influence and receives no gradient.  The
    operator has no per-modality weights (``weights`` is ``None``).

    :param dim: ``D`` (input and output width).
    :param num_modalities: ``M``.
    :param rank: ``r`` (the paper uses 1-16; 4 by default).
    :raises ValueError: ``rank < 1``, or ``x`` with another number of modalities.

    Shapes: ``x [B, M, D]``, ``present [B, M]`` bool (``None``: all present), ``relation`` unused ->
    ``(fused [B, D], None)``.
    """

    has_weights = False
    synonyms = ("lmf",)

    def __init__(self, dim: int, num_modalities: int, rank: int = 4):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LowRankFusion: rank must be >= 1, got {rank}")
        self.dim, self.num_modalities, self.rank = dim, num_modalities, rank
        self.factors = nn.Parameter(torch.empty(num_modalities, rank, dim + 1, dim))
        self.rank_weights = nn.Parameter(torch.empty(1, rank))
        self.bias = nn.Parameter(torch.zeros(dim))
        for m in range(num_modalities):
            for i in range(rank):
                nn.init.xavier_normal_(self.factors.data[m, i])
        nn.init.xavier_normal_(self.rank_weights)

    def forward(self, x: torch.Tensor, present: torch.Tensor | None = None,
                relation: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        present = self.check_input(x, present)
        ones = x.new_ones(*x.shape[:-1], 1)
        # per modality and rank: [x_m; 1] W_m^(i) -> [B, M, r, D]
        z = torch.einsum("bmk,mrkd->bmrd", torch.cat([x, ones], -1), self.factors.to(x.dtype))
        z = torch.where(present[:, :, None, None], z, torch.ones_like(z))  # absent: the identity of the product
        product = z.prod(dim=1)  # [B, r, D]
        fused = torch.einsum("r,brd->bd", self.rank_weights[0].to(x.dtype), product) + self.bias.to(x.dtype)
        return fused, None
