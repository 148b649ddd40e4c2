"""Multi-layer modality self-attention: AFME's MoIEn encoder (Wang et al., Neural Networks 2025; methods.md §5.2) on
multi-head attention (Vaswani et al., NeurIPS 2017)."""

from __future__ import annotations

import torch
from torch import nn

from mmkgc.nn.fusion.base import Fusion

__all__ = ["ModalitySelfAttention", "self_attention"]


def self_attention(attn: nn.MultiheadAttention, h: torch.Tensor, key_padding_mask: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``attn(h, h, h, key_padding_mask=..., need_weights=True, average_attn_weights=True)`` for a batch-first
    :class:`torch.nn.MultiheadAttention` (Vaswani et al. 2017: ``softmax(Q Kᵀ / √d_h) V`` per head, output
    projection), written with one packed projection split by ``unbind``.

    Same parameters and values as the module's own forward (up to float rounding); for the short token sequences of
    the modality attentions (2-3 tokens) its backward is much cheaper: the module splits its packed ``[3, ...]``
    projection by ``select``, whose backward fills a zero tensor of the packed size for each of ``q``, ``k``, ``v``.
    Falls back to the module where this version does not apply (attention dropout while training, separate
    ``q``/``k``/``v`` weights, ``batch_first=False``, bias on the keys and values, zero attention).

    :param attn: the module (its weights are used).  :param h: ``[B, L, D]``.
    :param key_padding_mask: bool ``[B, L]``, ``True`` = not a key.
    :returns: ``(out [B, L, D], attention weights averaged over heads [B, L, L])``.
    """
    fallback = ((attn.dropout > 0 and attn.training) or not attn._qkv_same_embed_dim or not attn.batch_first
                or attn.bias_k is not None or attn.add_zero_attn)
    if fallback:
        return attn(h, h, h, key_padding_mask=key_padding_mask, need_weights=True, average_attn_weights=True)
    b, length, d = h.shape
    heads = attn.num_heads
    hd = d // heads
    qkv = nn.functional.linear(h, attn.in_proj_weight, attn.in_proj_bias)
    q, k, v = qkv.view(b, length, 3, heads, hd).permute(2, 0, 3, 1, 4).unbind(0)  # [B, H, L, d_h] each
    scores = (q * hd ** -0.5) @ k.transpose(-1, -2)  # [B, H, L, L]
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
    weights = torch.softmax(scores, -1)
    out = (weights @ v).transpose(1, 2).reshape(b, length, d)
    return nn.functional.linear(out, attn.out_proj.weight, attn.out_proj.bias), weights.mean(1)


class ModalitySelfAttention(Fusion):
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
    :param num_modalities: ``M`` if known (then ``forward`` checks it); ``None`` accepts any ``M``.
    :raises ValueError: ``dim`` not divisible by ``heads``, ``layers < 1``.
    """

    synonyms = ("self_attention",)

    def __init__(self, dim: int, layers: int = 2, heads: int = 4, dropout: float = 0.0,
                 num_modalities: int | None = None):
        super().__init__()
        self.dim, self.num_modalities = dim, num_modalities
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
            out, w = self_attention(attn, h, ~present)
            h = norm(h + out)
            q = present.to(w.dtype).unsqueeze(-1)  # average over present queries only
            received = received + (w * q).sum(-2) / q.sum(-2).clamp_min(1.0)
        return h, received / len(self.attention)

    def forward(self, x: torch.Tensor, present: torch.Tensor | None = None,
                relation: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.num_modalities is not None:
            present = self.check_input(x, present)
        elif present is None:
            present = torch.ones(x.shape[:-1], dtype=torch.bool, device=x.device)
        h, received = self.encode(x, present)
        p = present.to(h.dtype).unsqueeze(-1)
        return (h * p).sum(-2) / p.sum(-2).clamp_min(1.0), received
