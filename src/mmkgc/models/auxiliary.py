"""The auxiliary-step protocol: an optimisation step beyond the main KGC step, over its own parameter group.

Models define their auxiliary steps (``KGEModel.auxiliary_steps``: the generator and discriminator steps of the
adversarial methods in :mod:`mmkgc.models.adversarial`, IMVIA's CLUB estimator step in :mod:`mmkgc.models.imvia`);
the trainer (:mod:`mmkgc.training.trainer`) runs them, after the main step, on the same batch tensors.  The
protocol lives with the models so that models never import the training layer; ``mmkgc.training.steps`` re-exports
it.

Parameters owned by an auxiliary step are excluded from the main optimiser (and from DDP's gradient hooks), so
gradients that a step deposits on another group are never applied by the wrong optimiser: the generator step of an
adversarial method (AdaMF-MAT, NativE, AFME; methods.md sections 5-7) updates only the generator, and a
mutual-information estimator step (IMVIA's CLUB, section 4) updates only the estimator.

Distributed training: the trainer passes each rank's loss ``scale`` (the :func:`mmkgc.distributed.batch_shard`
factor) and a ``reduce`` function that averages the group's gradients over the ranks
(:func:`mmkgc.distributed.average_gradients`), so every rank applies the same update: that of the global batch
when the step's loss is a mean over the batch's rows.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

__all__ = ["AuxiliaryStep", "GradientReducer"]

#: ``reduce(grads, params) -> grads``: averages one step's gradients over ranks (``None``: unused everywhere).
GradientReducer = Callable[[Sequence["torch.Tensor | None"], Sequence[torch.nn.Parameter]],
                           "list[torch.Tensor | None]"]


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

    def step(self, *tensors: torch.Tensor, check_finite: bool = True, scale: float = 1.0,
             reduce: GradientReducer | None = None) -> dict[str, float | torch.Tensor]:
        """Run one update of this step's group; returns ``{name: loss value}`` for the epoch log (the unscaled
        loss of this rank's batch).

        :param check_finite: read the loss now (a float; raises if it is not finite).  ``False`` returns the
            detached loss tensor unread, so that a GPU is not waited for; the caller then checks it later
            (the trainer does, every few steps).
        :param scale: the gradient is that of ``scale * loss`` (DDP: this rank's share of the global batch,
            ``n_rank * world / n``; 1 in one process).
        :param reduce: called with the group's gradients (``None`` for a parameter the loss does not use) and
            parameters before the optimiser step; returns the gradients to apply (DDP: the mean over ranks).
        :raises FloatingPointError: the loss is not finite (only with ``check_finite``).
        """
        for p in self.params:
            p.grad = None
        loss = self.loss(*tensors)
        if check_finite and not torch.isfinite(loss):
            raise FloatingPointError(f"auxiliary step {self.name!r}: loss became {loss.item()}")
        # only this group is differentiated: no gradient is deposited on the main model's parameters
        objective = loss * scale if scale != 1.0 else loss
        grads: Sequence[torch.Tensor | None] = torch.autograd.grad(objective, self.params, allow_unused=True)
        if reduce is not None:
            grads = reduce(grads, self.params)
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
