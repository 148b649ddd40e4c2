"""Modality adapters: project a modality's feature vector ``x ∈ R^{d_m}`` to the entity width ``D``.

``LinearAdapter`` is AdaMF's single projection ``W x + b`` (Zhang et al., LREC-COLING 2024);
``MLPAdapter`` is NativE's ``Linear(d_m, D) -> ReLU -> Linear(D, D)`` (Zhang et al., SIGIR 2024).
"""

from __future__ import annotations

import torch
from torch import nn

from mmkgc.errors import UnknownNameError


class LinearAdapter(nn.Module):
    """``y = dropout(x) W^T + b``.

    :param in_dim: feature width ``d_m``.
    :param out_dim: entity width ``D``.
    :param dropout: dropout probability on the input features (training only).

    Shapes: ``x [..., d_m] -> [..., D]``.
    """

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(x))


class MLPAdapter(nn.Module):
    """``y = W_2 relu(W_1 dropout(x) + b_1) + b_2`` with hidden width ``hidden_dim`` (default ``out_dim``).

    Shapes: ``x [..., d_m] -> [..., D]``.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int | None = None, dropout: float = 0.0):
        super().__init__()
        hidden = hidden_dim or out_dim
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


ADAPTERS = {"linear": LinearAdapter, "mlp": MLPAdapter}


def build_adapter(kind: str, in_dim: int, out_dim: int, **options) -> nn.Module:
    """Adapter by name (``linear`` or ``mlp``).

    :raises UnknownNameError: for an unknown name.
    """
    try:
        cls = ADAPTERS[kind]
    except KeyError:
        raise UnknownNameError(f"unknown adapter {kind!r}; known: {', '.join(ADAPTERS)}") from None
    return cls(in_dim, out_dim, **options)
