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


def _masked_softmax(logits: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis restricted to ``present`` entries (absent ones get exactly 0).

    A row without any present entry (never produced by the representations, which always include structure)
    gets all-zero weights instead of NaN.
    """
    logits = logits.masked_fill(~present, float("-inf"))
    weights = torch.softmax(logits, dim=-1)
    return torch.nan_to_num(weights, nan=0.0)


class TanhAttentionFusion(nn.Module):
    """Attention over modality vectors: ``β = softmax_m( α_m · wᵀ tanh(x_m) / τ_r )``, ``y = Σ_m β_m x_m``.

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

    def logits(self, x: torch.Tensor, relation: torch.Tensor | None = None) -> torch.Tensor:
        """Unmasked attention logits ``[B, M]``."""
        a = torch.tanh(x) @ self.w.to(x.dtype)
        if self.confidence == "l2":
            a = a * x.norm(dim=-1)
        if self.relation_temperature:
            if relation is None:
                raise ValueError("TanhAttentionFusion with relation_temperature needs the relation ids")
            a = a / self.temperature(relation).to(a.dtype).unsqueeze(-1)
        return a

    def forward(self, x: torch.Tensor, present: torch.Tensor | None = None,
                relation: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[-2] != self.num_modalities:
            raise ValueError(f"TanhAttentionFusion expects {self.num_modalities} modalities, got {tuple(x.shape)}")
        if present is None:
            present = torch.ones(x.shape[:-1], dtype=torch.bool, device=x.device)
        weights = _masked_softmax(self.logits(x, relation), present)
        return (weights.unsqueeze(-1) * x).sum(-2), weights


class RelationGate(nn.Module):
    """AFME's relation-driven denoising gate (MoIFu, methods.md §5.2): ``γ_m = σ(W_g (x_m ⊙ c_r) + b_g)``,
    ``x̃_m = γ_m ⊙ x_m``, with one dedicated relation context vector ``c_r ∈ R^D`` per relation and one ``W_g``
    shared by the modalities (a single bias: ``nn.Linear``'s; the seed sample's second bias is not reproduced).

    Choice (paper silent): ``c_r`` starts at 1 plus N(0, 0.1) noise and ``b_g`` at ``bias_init`` (3.0:
    ``σ ≈ 0.95``), so the gate starts close to the identity and learns what to suppress.

    Shapes: ``x [B, M, D]``, ``present [B, M]`` (unused: the gate is elementwise), ``relation [B]`` ->
    ``(gated x [B, M, D], mean gate value per modality [B, M])``.
    :raises ValueError: called without ``relation``.
    """

    relation_aware = True

    def __init__(self, dim: int, num_relations: int, bias_init: float = 3.0):
        super().__init__()
        self.context = nn.Parameter(1.0 + 0.1 * torch.randn(num_relations, dim))
        self.linear = nn.Linear(dim, dim)
        with torch.no_grad():
            self.linear.weight.mul_(0.1)
            self.linear.bias.fill_(bias_init)

    def forward(self, x: torch.Tensor, present: torch.Tensor | None = None,
                relation: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if relation is None:
            raise ValueError("RelationGate needs the relation ids")
        c = self.context[relation].to(x.dtype).unsqueeze(-2)
        gate = torch.sigmoid(self.linear(x * c))
        return gate * x, gate.mean(-1)


class ModalitySelfAttention(nn.Module):
    """Multi-layer multi-head self-attention over the sequence of modality tokens of each entity (AFME MoIEn,
    methods.md §5.2; the seed sample's length-1 "attention" is not reproduced): per layer
    ``H ← LayerNorm(H + MHA(H, H, H))`` with absent modalities masked out as keys.

    As a fusion, the output tokens are averaged over the present modalities and the weights are the attention
    each token receives, averaged over queries, heads and layers.

    :param dim: ``D`` (divisible by ``heads``).
    :param layers: ``L`` >= 1.
    :param heads: attention heads.

    Shapes: :meth:`encode`: ``x [B, M, D]``, ``present [B, M]`` -> ``([B, M, D], attention received [B, M])``;
    ``forward`` -> ``(fused [B, D], weights [B, M])``.
    :raises ValueError: ``dim`` not divisible by ``heads``, ``layers < 1``.
    """

    relation_aware = False

    def __init__(self, dim: int, layers: int = 2, heads: int = 4, dropout: float = 0.0):
        super().__init__()
        if layers < 1 or heads < 1 or dim % heads:
            raise ValueError(f"ModalitySelfAttention: need layers >= 1 and dim divisible by heads "
                             f"(dim={dim}, layers={layers}, heads={heads})")
        self.attention = nn.ModuleList(nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
                                       for _ in range(layers))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))

    def encode(self, x: torch.Tensor, present: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if present is None:
            present = torch.ones(x.shape[:-1], dtype=torch.bool, device=x.device)
        received = torch.zeros(present.shape, dtype=x.dtype, device=x.device)
        h = x
        for attn, norm in zip(self.attention, self.norms):
            out, w = attn(h, h, h, key_padding_mask=~present, need_weights=True, average_attn_weights=True)
            h = norm(h + out)
            q = present.to(w.dtype).unsqueeze(-1)  # average over present queries only
            received = received + (w * q).sum(-2) / q.sum(-2).clamp_min(1.0)
        return h, received / len(self.attention)

    def forward(self, x: torch.Tensor, present: torch.Tensor | None = None,
                relation: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if present is None:
            present = torch.ones(x.shape[:-1], dtype=torch.bool, device=x.device)
        h, received = self.encode(x, present)
        p = present.to(h.dtype).unsqueeze(-1)
        return (h * p).sum(-2) / p.sum(-2).clamp_min(1.0), received

