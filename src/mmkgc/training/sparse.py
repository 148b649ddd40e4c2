"""Optimisers for sparse (row-wise) updates of large embedding tables (``training.sparse: true``).

With ``nn.Embedding(sparse=True)`` a batch's backward pass yields a sparse gradient holding only the rows the
batch used, and the optimiser touches only those rows: per step ``O(rows used x D)`` instead of ``O(N x D)``
for the moment updates of a dense Adam over the whole table.

* ``adam``: :class:`torch.optim.SparseAdam` for the sparse tables ("lazy" Adam: the moments of a row are updated
  only when the row occurs in a batch) and :class:`torch.optim.Adam` for the dense parameters (relations,
  scorer parameters), driven together by :class:`SparseDenseOptimizer`;
* ``adagrad``: one :class:`torch.optim.Adagrad`, which accepts sparse and dense gradients (Duchi et al., 2011).

Neither supports ``weight_decay`` on sparse gradients (the config rejects it with ``sparse: true``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["SparseDenseOptimizer", "build_sparse_optimizer", "sparse_parameters"]


def sparse_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``(sparse, dense)`` trainable parameters: weights of ``nn.Embedding(sparse=True)`` modules, and the rest."""
    sparse_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding) and m.sparse}
    params = [p for p in model.parameters() if p.requires_grad]
    return [p for p in params if id(p) in sparse_ids], [p for p in params if id(p) not in sparse_ids]


class SparseDenseOptimizer:
    """Steps a sparse-gradient optimiser and a dense one as one optimiser (``zero_grad``, ``step``,
    ``state_dict``, ``load_state_dict``, ``param_groups``).

    :param sparse: e.g. ``torch.optim.SparseAdam`` over the sparse embedding tables.
    :param dense: e.g. ``torch.optim.Adam`` over the remaining parameters, or ``None`` when there are none.
    """

    def __init__(self, sparse: torch.optim.Optimizer, dense: torch.optim.Optimizer | None):
        self.optimizers = [o for o in (sparse, dense) if o is not None]

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [g for o in self.optimizers for g in o.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for o in self.optimizers:
            o.step()

    def state_dict(self) -> dict[str, Any]:
        """``{"optimizers": [state_dict, ...]}`` (tensors, numbers, lists and dicts only)."""
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """:raises ValueError: the saved state holds a different number of optimisers."""
        saved = state.get("optimizers") if isinstance(state, dict) else None
        if not isinstance(saved, list) or len(saved) != len(self.optimizers):
            raise ValueError("saved optimizer state was written for a different (sparse/dense) optimizer layout")
        for o, s in zip(self.optimizers, saved):
            o.load_state_dict(s)


def build_sparse_optimizer(model: nn.Module, optimizer: str, lr: float,
                           dense_lr: float | None = None) -> torch.optim.Optimizer | SparseDenseOptimizer:
    """The optimiser for ``training.sparse: true`` (see the module docstring).

    :param optimizer: ``"adam"`` or ``"adagrad"``.
    :param lr: learning rate of the sparse tables.
    :param dense_lr: learning rate of the dense parameters (default ``lr``).
    :raises ValueError: the model has no sparse embedding, or an unknown optimiser name.
    """
    sparse, dense = sparse_parameters(model)
    if not sparse:
        raise ValueError("training.sparse: true but the model has no nn.Embedding(sparse=True) table")
    dense_lr = lr if dense_lr is None else dense_lr
    if optimizer == "adagrad":
        groups = [{"params": sparse, "lr": lr}] + ([{"params": dense, "lr": dense_lr}] if dense else [])
        return torch.optim.Adagrad(groups, lr=lr)
    if optimizer == "adam":
        return SparseDenseOptimizer(torch.optim.SparseAdam(sparse, lr=lr),
                                    torch.optim.Adam(dense, lr=dense_lr) if dense else None)
    raise ValueError(f"unknown optimizer {optimizer!r}; expected 'adam' or 'adagrad'")
