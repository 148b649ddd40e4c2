"""Optimisation steps beyond the main KGC step.

:class:`AuxiliaryStep` (one extra step per batch over its own parameter group) is defined with the models that
declare such steps, in :mod:`mmkgc.models.auxiliary`, and re-exported here; the trainer runs them.  This module
keeps :class:`ContrastivePretrainStep`, the contrastive pretraining of VEMP stage 1.
"""

from __future__ import annotations

import torch

from mmkgc.models.auxiliary import AuxiliaryStep

__all__ = ["AuxiliaryStep", "ContrastivePretrainStep"]


class ContrastivePretrainStep:
    """VEMP stage 1 (methods.md 2.3): one AdamW update of a :class:`~mmkgc.nn.fusion.CrossAttentionTokenFusion`
    on a batch of ``B`` training edges.

    The ``2B`` nodes (anchors = sources, positives = destinations) are encoded together;
    ``L = L_mm + λ L_graph`` with ``L_mm = InfoNCE(z_text, z_image)`` over the ``2B`` nodes (text of node i must
    match image of node i) and ``L_graph = InfoNCE(z_graph[:B], z_graph[B:])`` (anchor i must match its neighbour
    i), both :class:`~mmkgc.training.losses.SymmetricInfoNCE`.  With ``mask_duplicates`` the known false
    negatives of a batch (bug 2.7.6: the same node twice in the text/image batch; the same anchor twice in the
    neighbour batch, whose other neighbour is a true one) are masked out of the softmax.

    Only edges of the message/training graph may be given; :meth:`step` checks them against ``forbidden``
    (validation/test edges) when that set is passed (bug 2.7.2: the public code pretrains on every edge).

    :param fusion: the fusion module (its parameters are the trained group; the frozen token tables are inputs).
    :param text_tokens: float ``[N, L_t, d_t]``; ``text_mask``: bool ``[N, L_t]``; ``image_tokens``: ``[N, L_v, d_v]``.
    :param temperature: ``τ`` (VEMP 0.07); ``learnable_temperature``: train ``τ`` too.
    :param graph_weight: ``λ`` (VEMP 1.0).
    :param lr, weight_decay: AdamW (VEMP 5e-5, 1e-4).
    :param amp: mixed precision with a gradient scaler on CUDA (ignored on CPU).
    :param forbidden: int64 ``[F, 2]`` ``(src, dst)`` pairs that must never be a training pair.
    """

    def __init__(self, fusion: torch.nn.Module, text_tokens: torch.Tensor, text_mask: torch.Tensor,
                 image_tokens: torch.Tensor, temperature: float = 0.07, learnable_temperature: bool = False,
                 graph_weight: float = 1.0, lr: float = 5e-5, weight_decay: float = 1e-4, amp: bool = True,
                 mask_duplicates: bool = True, forbidden: torch.Tensor | None = None):
        from mmkgc.training.losses import SymmetricInfoNCE

        self.fusion = fusion
        self.text_tokens, self.text_mask, self.image_tokens = text_tokens, text_mask, image_tokens
        self.mm_loss = SymmetricInfoNCE(temperature, learnable=learnable_temperature).to(text_tokens.device)
        self.graph_loss = SymmetricInfoNCE(temperature, learnable=learnable_temperature).to(text_tokens.device)
        self.graph_weight = float(graph_weight)
        params = [*fusion.parameters(), *self.mm_loss.parameters(), *self.graph_loss.parameters()]
        self.optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        self.device = text_tokens.device
        self.amp = bool(amp) and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.mask_duplicates = mask_duplicates
        self.forbidden = None
        if forbidden is not None and len(forbidden):
            n = int(text_tokens.shape[0])
            f = torch.as_tensor(forbidden).long()
            self.forbidden = torch.unique(f[:, 0] * n + f[:, 1])

    def loss(self, src: torch.Tensor, dst: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """``(L, {"mm": L_mm, "graph": L_graph})`` for the edges ``src [B] -> dst [B]``.

        :raises ValueError: a ``(src, dst)`` pair is a forbidden (validation/test) edge.
        """
        if self.forbidden is not None:
            keys = src.cpu().long() * int(self.text_tokens.shape[0]) + dst.cpu().long()
            if bool(torch.isin(keys, self.forbidden).any()):
                raise ValueError("contrastive pretraining was given a validation/test edge")
        nodes = torch.cat([src, dst]).to(self.device)
        with torch.autocast(self.device.type, enabled=self.amp):
            out = self.fusion(self.text_tokens[nodes], self.text_mask[nodes], self.image_tokens[nodes])
        z_t, z_v, z_g = out["z_text"].float(), out["z_image"].float(), out["z_graph"].float()
        b = src.shape[0]
        l_mm = self.mm_loss(z_t, z_v, ids=nodes if self.mask_duplicates else None)
        l_graph = self.graph_loss(z_g[:b], z_g[b:], ids=nodes[:b] if self.mask_duplicates else None)
        return l_mm + self.graph_weight * l_graph, {"mm": float(l_mm.detach()), "graph": float(l_graph.detach())}

    def step(self, src: torch.Tensor, dst: torch.Tensor) -> dict[str, float]:
        """One AdamW (+ GradScaler) update; returns ``{"loss", "mm", "graph"}``.

        :raises FloatingPointError: the loss is not finite.
        """
        self.fusion.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss, parts = self.loss(src, dst)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"contrastive pretraining: loss became {loss.item()}")
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return {"loss": float(loss.detach()), **parts}
