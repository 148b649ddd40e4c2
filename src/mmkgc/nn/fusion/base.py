"""The contracts of the fusion layer: four kinds of operator, each with its own small base class.

* :class:`Fusion` -- *vector fusion* (AdaMF, NativE, AFME, the concat baseline): per-modality vectors of an entity
  ``x [B, M, D]``, which modalities are present ``present [B, M]`` (bool), optionally the relation of the triple
  ``relation [B]`` (int64) -> one entity vector ``fused [B, D]`` and per-modality weights ``weights [B, M]``.
  Missing modalities arrive already filled by the representation's fill policy (a learned "missing" vector or zeros);
  a weighted operator (:attr:`Fusion.masks_absent`) gives an absent modality weight exactly 0, so its filled vector
  never reaches the output.  Every subclass in this package is registered in
  :data:`mmkgc.nn.fusion.fusion_resolver`.
* :class:`ModalityGate` -- a *modality transform* (AFME's relation gate): ``x [B, M, D] -> x̃ [B, M, D]`` plus a
  per-modality summary ``[B, M]``; it runs before a fusion, it is not one.
* :class:`ScoreFusion` -- *decision fusion* (IMVIA): per-modality predictions ``P [B, M, N] -> [B, N]``.
* :class:`TokenFusionEncoder` -- a *token encoder* (VEMP stage 1): token sequences of two modalities -> a dict of
  pooled vectors; its inputs are not modality vectors, so it has a contract of its own.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
from torch import nn

__all__ = ["Fusion", "ModalityGate", "ScoreFusion", "TokenFusionEncoder", "masked_softmax"]


def masked_softmax(logits: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis restricted to ``present`` entries (absent ones get exactly 0); ``logits`` and
    ``present`` (bool) of the same shape ``[..., M]``.

    A row without any present entry (never produced by the representations, which always include structure)
    gets all-zero weights instead of NaN.
    """
    logits = logits.masked_fill(~present, float("-inf"))
    weights = torch.softmax(logits, dim=-1)
    return torch.nan_to_num(weights, nan=0.0)


class Fusion(nn.Module, abc.ABC):
    """Base class of vector fusion operators.

    Contract of :meth:`forward`: ``x [B, M, D]`` (float), ``present [B, M]`` (bool; ``None`` = all present),
    ``relation [B]`` (int64; needed only when :attr:`relation_aware`) -> ``(fused [B, D], weights [B, M])``.

    * ``weights`` rows sum to 1 over the present modalities and are exactly 0 on absent ones when
      :attr:`has_weights`; an operator without weights (concatenation) returns ``None``.
    * when :attr:`masks_absent`, ``fused`` does not depend on ``x`` at absent positions (no gradient flows there).
    * rows are independent: permuting the batch permutes the output (no batch statistics).

    Construct operators with keywords: every registered operator accepts ``dim`` (``D``) and ``num_modalities``
    (``M``), and relation-conditioned ones ``num_relations`` (``R``), so
    ``fusion_resolver.make(name, dim=D, num_modalities=M, ...)`` works for all of them.

    :raises ValueError: (from :meth:`check_input`) ``x`` with a number of modalities other than ``M``.
    """

    #: Whether ``forward`` needs ``relation`` (an operator may set it per instance from its options).
    relation_aware: ClassVar[bool] = False
    #: Whether ``forward`` returns per-modality weights (``False``: ``None``).
    has_weights: ClassVar[bool] = True
    #: Whether the output ignores absent modalities (``False``: their filled vectors enter the output).
    masks_absent: ClassVar[bool] = True
    #: Other names the resolver accepts for this operator (normalised: case and ``_``/``-`` ignored).
    synonyms: ClassVar[tuple[str, ...]] = ()

    num_modalities: int

    def check_input(self, x: torch.Tensor, present: torch.Tensor | None) -> torch.Tensor:
        """Validate ``x [B, M, D]`` against :attr:`num_modalities` and return ``present`` (all ``True`` for ``None``).

        :raises ValueError: wrong number of modalities.
        """
        if x.ndim < 2 or x.shape[-2] != self.num_modalities:
            raise ValueError(f"{type(self).__name__} expects {self.num_modalities} modalities, got x of shape "
                             f"{tuple(x.shape)}")
        if present is None:
            present = torch.ones(x.shape[:-1], dtype=torch.bool, device=x.device)
        return present

    @abc.abstractmethod
    def forward(self, x: torch.Tensor, present: torch.Tensor | None = None,
                relation: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Fuse ``x [B, M, D]`` (see the class docstring) -> ``(fused [B, D], weights [B, M] or None)``."""


class ModalityGate(nn.Module, abc.ABC):
    """Base class of modality transforms applied before a fusion.

    Contract: ``forward(x [B, M, D], present [B, M] | None, relation [B] | None) -> (x̃ [B, M, D], summary [B, M])``
    where ``summary`` is a per-modality diagnostic (e.g. the mean gate value).
    """

    relation_aware: ClassVar[bool] = False

    @abc.abstractmethod
    def forward(self, x: torch.Tensor, present: torch.Tensor | None = None,
                relation: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Transform ``x [B, M, D]`` -> ``(x̃ [B, M, D], summary [B, M])``."""


class ScoreFusion(nn.Module, abc.ABC):
    """Base class of decision (late) fusion: per-modality predictions ``P [B, M, N]`` and optionally the query
    relations ``relation [B]`` -> ``(fused [B, N], weights [B, M])`` with rows of ``weights`` summing to 1."""

    num_modalities: int

    @abc.abstractmethod
    def forward(self, predictions: torch.Tensor, relation: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fuse ``predictions [B, M, N]`` -> ``(fused [B, N], weights [B, M])``."""


class TokenFusionEncoder(nn.Module, abc.ABC):
    """Base class of token-level multimodal encoders: ``forward(text [B, L_t, d_t], text_mask [B, L_t] bool,
    image [B, L_v, d_v]) -> dict`` of named ``[B, *]`` tensors, at least ``fused [B, D]``."""

    @abc.abstractmethod
    def forward(self, text: torch.Tensor, text_mask: torch.Tensor, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Encode one batch of token sequences -> ``{"fused": [B, D], ...}``."""
