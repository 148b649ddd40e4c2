"""Optimisation steps beyond the main KGC step: each owns a parameter group and its optimiser.

The :class:`~mmkgc.training.trainer.Trainer` runs, for every batch, the main step (the model's loss over the main
parameter group) and then every :class:`AuxiliaryStep` the model declares (``KGEModel.auxiliary_steps``), on the
same batch tensors.  Parameters owned by an auxiliary step are excluded from the main optimiser, so gradients that
a step deposits on another group are never applied by the wrong optimiser: the generator step of an adversarial
method (AdaMF-MAT, NativE, AFME; methods.md sections 5-7) updates only the generator, and a mutual-information
estimator step (IMVIA's CLUB, section 4) updates only the estimator.

Concrete steps live next to what they train: adversarial steps in :mod:`mmkgc.nn.adversarial` users, the
estimator step with the IMVIA objectives, the contrastive pretraining of VEMP below.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any

import torch


class AuxiliaryStep(ABC):
    """One extra optimisation step per batch over its own parameter group.

    Subclasses implement :meth:`loss`; :meth:`step` differentiates the loss with respect to the group only
    (``torch.autograd.grad``: other parameters receive no gradient), clips (if ``gradient_clip``) and steps the
    group's optimiser.  The step's optimiser state is checkpointed under
    :attr:`name`.

    :param name: unique key of the step (``generator``, ``club_estimator``...), used in logs and checkpoints.
    :param parameters: the parameters this step updates (excluded from the main optimiser).
    :param lr: learning rate of the step's Adam optimiser.
    :param gradient_clip: max gradient norm, or ``None``.
    """

    def __init__(self, name: str, parameters: Iterable[torch.nn.Parameter], lr: float,
                 gradient_clip: float | None = None, betas: tuple[float, float] = (0.9, 0.999)):
        self.name = name
        self.params = [p for p in parameters if p.requires_grad]
        if not self.params:
            raise ValueError(f"auxiliary step {name!r} has no trainable parameters")
        self.optimizer = torch.optim.Adam(self.params, lr=lr, betas=betas)
        self.gradient_clip = gradient_clip

    @abstractmethod
    def loss(self, *tensors: torch.Tensor) -> torch.Tensor:
        """The step's loss on the batch tensors the main step received (see ``Trainer._step_loss``)."""

    def step(self, *tensors: torch.Tensor, check_finite: bool = True) -> dict[str, float | torch.Tensor]:
        """Run one update of this step's group; returns ``{name: loss value}`` for the epoch log.

        :param check_finite: read the loss now (a float; raises if it is not finite).  ``False`` returns the
            detached loss tensor unread, so that a GPU is not waited for; the caller then checks it later
            (the trainer does, every few steps).
        :raises FloatingPointError: the loss is not finite (only with ``check_finite``).
        """
        for p in self.params:
            p.grad = None
        loss = self.loss(*tensors)
        if check_finite and not torch.isfinite(loss):
            raise FloatingPointError(f"auxiliary step {self.name!r}: loss became {loss.item()}")
        # only this group is differentiated: no gradient is deposited on the main model's parameters
        grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        for p, g in zip(self.params, grads):
            p.grad = g  # None (unused this batch): the optimiser skips it
        if self.gradient_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.gradient_clip)
        self.optimizer.step()
        for p in self.params:  # gradients of this group never leak into the next main step
            p.grad = None
        return {self.name: float(loss.detach()) if check_finite else loss.detach()}

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])


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
