"""Modality adapters: project a modality's feature vector ``x ∈ R^{d_m}`` to the entity width ``D``.

``LinearAdapter`` is AdaMF's single projection ``W x + b`` (Zhang et al., LREC-COLING 2024);
``MLPAdapter`` is NativE's ``Linear(d_m, D) -> ReLU -> Linear(D, D)`` (Zhang et al., SIGIR 2024).
"""

from __future__ import annotations

import torch
from class_resolver import ClassResolver
from torch import nn

from mmkgc.errors import UnknownNameError

__all__ = ["Adapter", "LinearAdapter", "MLPAdapter", "MoEAdapter", "adapter_resolver", "build_adapter"]


class Adapter(nn.Module):
    """Base class of modality adapters: constructed as ``cls(in_dim, out_dim, **options)``,
    ``forward(x [..., in_dim]) -> [..., out_dim]``.  Registered in :data:`adapter_resolver`.

    Optional capability: an adapter whose output is a linear map of a hidden vector defines
    ``split_last_linear(x) -> (h, last)`` with ``forward(x) == last(h)``, so that a following linear map can be
    folded into ``last`` (the concat representation checks for the method with ``hasattr``; an adapter without it
    takes the unfolded path).
    """


class LinearAdapter(Adapter):
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

    def split_last_linear(self, x: torch.Tensor) -> tuple[torch.Tensor, nn.Linear]:
        """``(h, last)`` with ``forward(x) == last(h)``: the input after dropout, and the projection.

        Lets a following linear map ``P`` be folded in: ``P forward(x) = (P W) h + P b``.
        """
        return self.dropout(x), self.linear


class MLPAdapter(Adapter):
    """``y = W_2 relu(W_1 dropout(x) + b_1) + b_2`` with hidden width ``hidden_dim`` (default ``out_dim``).

    Shapes: ``x [..., d_m] -> [..., D]``.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int | None = None, dropout: float = 0.0):
        super().__init__()
        hidden = hidden_dim or out_dim
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def split_last_linear(self, x: torch.Tensor) -> tuple[torch.Tensor, nn.Linear]:
        """``(h [..., hidden], last)`` with ``forward(x) == last(h)`` (see :meth:`LinearAdapter.split_last_linear`)."""
        return self.net[:-1](x), self.net[-1]


#: The modality adapters by name: ``linear`` (AdaMF), ``mlp`` (NativE).  :class:`MoEAdapter` returns views and gates
#: as well, so it is not one of them.
adapter_resolver: ClassResolver[Adapter] = ClassResolver(
    [LinearAdapter, MLPAdapter], base=Adapter, location="mmkgc.nn.adapters.adapter_resolver"
)


def build_adapter(kind: str, in_dim: int, out_dim: int, **options) -> Adapter:
    """Adapter by name (``linear`` or ``mlp``, see :data:`adapter_resolver`): ``in_dim -> out_dim``.

    :raises UnknownNameError: for an unknown name.
    """
    try:
        cls = adapter_resolver.lookup(kind)
    except (KeyError, ValueError):
        raise UnknownNameError(f"unknown adapter {kind!r}; known: {', '.join(sorted(adapter_resolver.lookup_dict))}"
                               ) from None
    return cls(in_dim, out_dim, **options)


class MoEAdapter(nn.Module):
    """Mixture of "whitening" experts with noisy softmax gating (IMVIA's intra-modality multi-view fusion; MoMoK,
    Zhang et al. ICLR 2025; methods.md section 4.2).  Each expert is one "view" of the modality.

    Expert ``k``: ``v_k = W_k (x - b_k)`` (``W_k ~ N(0, 0.02^2)``, ``b_k = 0``, no output bias).
    Gate logits ``l = x W_gate`` (``W_gate`` zero-initialised, so the gates start uniform); in training mode with
    ``noisy_gating`` they become ``l + eps * (softplus(x W_noise) + 0.01)``, ``eps ~ N(0, 1)`` (``W_noise``
    zero-initialised); never in eval mode.  For query entities under relation ``r`` the gates are
    ``softmax(l / sigmoid(g_r))`` (a per-relation temperature ``g``, ``N(0, 1)`` init); without a relation (the
    all-entity candidate pass) ``softmax(l)``.  Output ``sum_k pi_k v_k``.

    The temperature table ``g`` is either the adapter's own (``num_relations > 0``, pass ``relation`` ids) or a
    table the caller shares between several adapters (pass the looked-up values ``g_r`` as ``relation_gate``):
    the published IMVIA model has one ``rel_gate`` embedding (``2R x 1``) used by the structure, visual and text
    MoEs alike (``models/RelMoE.py``, ``RelMoE.forward``).

    :param in_dim: input width.
    :param out_dim: expert output width ``D``.
    :param num_experts: ``n`` (published 3).
    :param num_relations: rows of the adapter's own ``g`` (``2R`` with reciprocal relations); 0: no own table.
    :param noisy_gating: add the gate noise in training mode.
    :param expert_init: ``normal`` (published: ``W_k ~ N(0, 0.02^2)``) or ``identity`` (``W_k = I + N(0, 0.02^2)``,
        needs ``in_dim == out_dim``): every view starts as the input itself instead of a 0.02-scaled random
        projection of it.  Same function family; only the starting point differs.  Under the published init a 1-N
        TuckER decoder behind the adapter learns far slower in its first epochs than the same decoder on the raw
        table (DB15K, docs/benchmarks.md "IMVIA against its TuckER backbone").

    Shapes: ``forward(x [B, in_dim], relation [B] int64 | None, relation_gate [B] or [B, 1] | None)
    -> (mixed [B, D], views [B, n, D], gates [B, n])``.
    :raises ValueError: bad sizes, a relation given to an adapter built with ``num_relations=0``, both
        ``relation`` and ``relation_gate``, an unknown ``expert_init``, or ``identity`` with ``in_dim != out_dim``.
    """

    def __init__(self, in_dim: int, out_dim: int, num_experts: int = 3, num_relations: int = 0,
                 noisy_gating: bool = True, expert_init: str = "normal"):
        super().__init__()
        if num_experts < 1 or in_dim < 1 or out_dim < 1 or num_relations < 0:
            raise ValueError(f"MoEAdapter: bad sizes in_dim={in_dim}, out_dim={out_dim}, "
                             f"num_experts={num_experts}, num_relations={num_relations}")
        if expert_init not in ("normal", "identity"):
            raise ValueError(f"MoEAdapter: expert_init must be 'normal' or 'identity', got {expert_init!r}")
        if expert_init == "identity" and in_dim != out_dim:
            raise ValueError(f"MoEAdapter: expert_init 'identity' needs in_dim == out_dim, got {in_dim} and {out_dim}")
        self.in_dim, self.out_dim, self.num_experts = in_dim, out_dim, num_experts
        self.noisy_gating = noisy_gating
        self.expert_weight = nn.Parameter(torch.randn(num_experts, in_dim, out_dim) * 0.02)
        if expert_init == "identity":
            with torch.no_grad():
                self.expert_weight.add_(torch.eye(in_dim))
        self.expert_bias = nn.Parameter(torch.zeros(num_experts, in_dim))
        self.gate = nn.Parameter(torch.zeros(in_dim, num_experts))
        self.noise = nn.Parameter(torch.zeros(in_dim, num_experts))
        self.relation_gate = nn.Embedding(num_relations, 1) if num_relations > 0 else None
        if self.relation_gate is not None:
            nn.init.normal_(self.relation_gate.weight)

    def gates(self, x: torch.Tensor, relation: torch.Tensor | None = None,
              relation_gate: torch.Tensor | None = None) -> torch.Tensor:
        """Gate probabilities ``[B, n]`` (noisy in training mode only); see the class for the two temperature
        sources (``relation`` ids into the own table, or shared values ``relation_gate`` ``[B]`` / ``[B, 1]``)."""
        logits = x @ self.gate
        if self.training and self.noisy_gating:
            std = nn.functional.softplus(x @ self.noise) + 0.01
            logits = logits + torch.randn_like(logits) * std
        if relation is not None and relation_gate is not None:
            raise ValueError("MoEAdapter: give relation ids or shared relation_gate values, not both")
        if relation is not None:
            if self.relation_gate is None:
                raise ValueError("MoEAdapter built with num_relations=0 got a relation")
            relation_gate = self.relation_gate(relation)
        if relation_gate is not None:
            logits = logits / torch.sigmoid(relation_gate.reshape(-1, 1))
        return torch.softmax(logits, dim=-1)

    def forward(self, x: torch.Tensor, relation: torch.Tensor | None = None,
                relation_gate: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"MoEAdapter: expected x [B, {self.in_dim}], got {tuple(x.shape)}")
        centred = x.unsqueeze(1) - self.expert_bias  # [B, n, in]
        views = torch.einsum("bki,kio->bko", centred, self.expert_weight)  # [B, n, D]
        pi = self.gates(x, relation, relation_gate)
        return (pi.unsqueeze(-1) * views).sum(1), views, pi

    def extra_repr(self) -> str:
        return (f"in_dim={self.in_dim}, out_dim={self.out_dim}, num_experts={self.num_experts}, "
                f"relation_temperature={self.relation_gate is not None}, noisy_gating={self.noisy_gating}")
