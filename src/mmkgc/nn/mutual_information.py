"""CLUB: a sampled contrastive log-ratio upper bound of the mutual information between two variables (Cheng et
al., ICML 2020), used by MoMoK / IMVIA to disentangle the expert views of a modality (methods.md sections 4.4, 4.7).

A variational Gaussian ``q(y | x) = N(mu(x), diag(exp(logvar(x))))`` is fitted by its own optimiser
(:meth:`CLUBEstimator.learning_loss`, the estimator step); the model then minimises the upper bound
(:meth:`CLUBEstimator.upper_bound`) with the estimator held fixed.
"""

from __future__ import annotations

import torch
from torch import nn


def draw_expert_pair(num_experts: int, generator: torch.Generator | None = None) -> tuple[int, int]:
    """Two distinct expert indices ``(a, b)``, an ordered pair drawn uniformly (``randperm(n)[:2]``; the
    published ``random.sample(range(n), k=2)`` in IMVIA's ``MIEstimator``, same distribution).

    :raises ValueError: ``num_experts < 2``.
    """
    if num_experts < 2:
        raise ValueError(f"CLUB needs at least 2 experts, got {num_experts}")
    a, b = torch.randperm(num_experts, generator=generator)[:2].tolist()
    return a, b


class CLUBEstimator(nn.Module):
    """Gaussian variational network and the CLUB bound between two expert views.

    ``mu(x) = W_2 relu(W_1 x)`` and ``logvar(x) = tanh(V_2 relu(V_1 x))`` with hidden width ``dim // 2``.

    * :meth:`upper_bound`: ``1/2 mean_i [ sum_d -(mu(x_i) - y_i)^2 / e^{logvar} + sum_d (mu(x_i) - y_pi(i))^2 /
      e^{logvar} ]`` with ``pi`` a random permutation of the batch;
    * :meth:`learning_loss`: the negative Gaussian log-likelihood ``-mean_i sum_d [-(mu - y)^2 / (2 e^{logvar})
      - logvar / 2]``; with ``include_logvar=False`` the ``-logvar / 2`` term is dropped (the published code:
      the estimator then has no incentive to fit variances and ``logvar`` drifts to the tanh bound).

    :meth:`pair` selects the two views: ``legacy_indexing=False`` compares expert ``a`` with expert ``b`` across the
    batch (``views[:, a]`` vs ``views[:, b]``, ``[B, D]`` each); ``legacy_indexing=True`` reproduces the published
    ``views[a]`` vs ``views[b]``: the ``n`` expert outputs of batch elements ``a`` and ``b`` (``[n, D]`` each).

    :param dim: view width ``D``.
    :param legacy_indexing: the published batch-element indexing (for reproduction only).
    :param include_logvar: include the log-variance term in the estimator's likelihood.

    Shapes: ``upper_bound(x [S, D], y [S, D]) -> []``; ``learning_loss(x, y) -> []``;
    ``pair(views [B, n, D]) -> (x, y)``.
    """

    def __init__(self, dim: int, legacy_indexing: bool = False, include_logvar: bool = True):
        super().__init__()
        hidden = max(dim // 2, 1)
        self.mu = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        self.logvar = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim), nn.Tanh())
        self.legacy_indexing = legacy_indexing
        self.include_logvar = include_logvar

    def pair(self, views: torch.Tensor, generator: torch.Generator | None = None,
             indices: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The two views of experts ``(a, b)`` (see class): ``indices`` when given (e.g. one pair drawn by
        :func:`draw_expert_pair` and shared by every modality, as published), else a fresh draw.

        :raises ValueError: ``views`` is not ``[B, n, D]`` with ``n >= 2`` (and ``B >= n`` in legacy mode), or
            ``indices`` are not two distinct experts of ``{0..n-1}``.
        """
        if views.ndim != 3 or views.shape[1] < 2:
            raise ValueError(f"CLUB needs views [B, n >= 2, D], got {tuple(views.shape)}")
        n = views.shape[1]
        if indices is None:
            a, b = draw_expert_pair(n, generator)
        else:
            a, b = (int(i) for i in indices)
            if a == b or not (0 <= a < n and 0 <= b < n):
                raise ValueError(f"CLUB expert pair {indices} is not two distinct experts of 0..{n - 1}")
        if self.legacy_indexing:
            if views.shape[0] < n:
                raise ValueError(f"legacy CLUB indexing needs a batch of at least {n} rows")
            return views[a], views[b]
        return views[:, a], views[:, b]

    def _moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mu(x), self.logvar(x)

    def upper_bound(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The sampled CLUB bound (see class); gradients flow into ``x`` and ``y`` (and the estimator)."""
        mu, logvar = self._moments(x)
        inv = torch.exp(-logvar)
        perm = torch.randperm(y.shape[0], generator=generator, device="cpu").to(y.device)
        positive = -((mu - y) ** 2 * inv).sum(-1)
        negative = -((mu - y[perm]) ** 2 * inv).sum(-1)
        return 0.5 * (positive - negative).mean()

    def log_likelihood(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``mean_i log q(y_i | x_i)`` up to the constant (see class for the ``include_logvar`` switch)."""
        mu, logvar = self._moments(x)
        ll = -((mu - y) ** 2) * torch.exp(-logvar) / 2.0
        if self.include_logvar:
            ll = ll - logvar / 2.0
        return ll.sum(-1).mean()

    def learning_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The estimator's loss ``-log_likelihood(x, y)`` (inputs detached by the caller)."""
        return -self.log_likelihood(x, y)

    def extra_repr(self) -> str:
        return f"legacy_indexing={self.legacy_indexing}, include_logvar={self.include_logvar}"
