"""VEMP's token-level cross-attention encoder (Sela et al., "Vision-Enhanced Message Passing"; methods.md 2.2)."""

from __future__ import annotations

import torch
from torch import nn

from mmkgc.nn.fusion.base import TokenFusionEncoder

__all__ = ["CrossAttentionTokenFusion"]


class CrossAttentionTokenFusion(TokenFusionEncoder):
    """VEMP's token-level multimodal encoder (Sela et al., "Vision-Enhanced Message Passing"; methods.md 2.2).

    Text tokens ``X_t [B, L_t, d_t]`` (with mask ``m [B, L_t]``, ``True`` = real token) and image patch tokens
    ``X_v [B, L_v, d_v]`` are projected to a common width ``D`` (``T = X_t W_t + b_t``, ``V = X_v W_v + b_v``), then:

    * ``A_tv = MHA(Q=T, K=V, V=V)`` (no mask), ``T' = FFN_t(A_tv + T)``;
    * ``A_vt = MHA(Q=V, K=T, V=T, key_padding=not m)``, ``V' = FFN_v(A_vt + V)``;
      ``FFN(x) = W_2 GELU(W_1 x)`` (``D -> ffn_dim -> D``), no LayerNorm and no second residual;
    * pooling: ``p_t = sum_l m_l T'_l / max(sum_l m_l, 1e-6)`` (masked mean), ``p_v = mean_p V'_p``;
    * fusion ``f = W_4 GELU(LN(W_3 [p_t; p_v]))`` (``2D -> D -> D``);
    * heads ``z_g = norm(W_g f)``, ``z_t = norm(W_tp p_t)``, ``z_v = norm(W_vp p_v)`` (``D -> proj_dim``, L2-normalised).

    Padding text tokens never influence any output: they are excluded as attention keys and from the text pooling
    (their own query rows are computed but dropped by the masked mean).

    :param text_dim: ``d_t`` (512 for CLIP ViT-B/32 text).
    :param image_dim: ``d_v`` (768 for CLIP ViT-B/32 vision).
    :param dim: ``D`` (VEMP: 512).
    :param num_heads: heads of both attentions (VEMP: 8); must divide ``dim``.
    :param ffn_dim: hidden width of the FFNs (VEMP: ``2 * dim`` = 1024); default ``2 * dim``.
    :param proj_dim: width of the three heads (VEMP: 256).
    :param dropout: attention dropout (VEMP: 0).

    ``forward(text [B, L_t, d_t], text_mask [B, L_t] bool, image [B, L_v, d_v]) -> dict`` with ``fused [B, D]``,
    ``text [B, D]`` (``p_t``), ``image [B, D]`` (``p_v``), ``z_graph``, ``z_text``, ``z_image`` ``[B, proj_dim]``.
    :raises ValueError: inconsistent shapes or a ``text_mask`` of the wrong shape (a row without any real text
        token is allowed: its ``p_t`` is 0).
    """

    def __init__(self, text_dim: int, image_dim: int, dim: int = 512, num_heads: int = 8,
                 ffn_dim: int | None = None, proj_dim: int = 256, dropout: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        ffn_dim = 2 * dim if ffn_dim is None else ffn_dim
        self.text_dim, self.image_dim, self.dim, self.proj_dim = text_dim, image_dim, dim, proj_dim
        self.text_in = nn.Linear(text_dim, dim)
        self.image_in = nn.Linear(image_dim, dim)
        self.text_to_image = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.image_to_text = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.text_ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Linear(ffn_dim, dim))
        self.image_ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Linear(ffn_dim, dim))
        self.fusion = nn.Sequential(nn.Linear(2 * dim, dim), nn.LayerNorm(dim), nn.GELU(), nn.Linear(dim, dim))
        self.graph_head = nn.Linear(dim, proj_dim)
        self.text_head = nn.Linear(dim, proj_dim)
        self.image_head = nn.Linear(dim, proj_dim)

    def encode(self, text: torch.Tensor, text_mask: torch.Tensor, image: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Fused vector ``f [B, D]`` and the pooled text / image vectors ``p_t, p_v [B, D]`` (before the heads)."""
        if text.ndim != 3 or image.ndim != 3 or text.shape[0] != image.shape[0]:
            raise ValueError(f"expected text [B, L_t, {self.text_dim}] and image [B, L_v, {self.image_dim}], "
                             f"got {tuple(text.shape)} and {tuple(image.shape)}")
        if text_mask.shape != text.shape[:2]:
            raise ValueError(f"text_mask must be {tuple(text.shape[:2])}, got {tuple(text_mask.shape)}")
        mask = text_mask.bool()
        t = self.text_in(text)
        v = self.image_in(image)
        a_tv, _ = self.text_to_image(t, v, v, need_weights=False)
        t2 = self.text_ffn(a_tv + t)
        # A row without real tokens would make every key masked (NaN softmax); give it one dummy key and zero p_t.
        empty = ~mask.any(1)
        key_padding = ~mask
        if bool(empty.any()):
            key_padding = key_padding.clone()
            key_padding[empty, 0] = False
        a_vt, _ = self.image_to_text(v, t, t, key_padding_mask=key_padding, need_weights=False)
        v2 = self.image_ffn(a_vt + v)
        m = mask.unsqueeze(-1).to(t2.dtype)
        p_t = (t2 * m).sum(1) / m.sum(1).clamp_min(1e-6)
        p_v = v2.mean(1)
        return self.fusion(torch.cat([p_t, p_v], -1)), p_t, p_v

    def forward(self, text: torch.Tensor, text_mask: torch.Tensor, image: torch.Tensor) -> dict[str, torch.Tensor]:
        f, p_t, p_v = self.encode(text, text_mask, image)
        norm = torch.nn.functional.normalize
        return {"fused": f, "text": p_t, "image": p_v, "z_graph": norm(self.graph_head(f), dim=-1),
                "z_text": norm(self.text_head(p_t), dim=-1), "z_image": norm(self.image_head(p_v), dim=-1)}
