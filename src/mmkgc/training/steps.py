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

from collections.abc import Iterable
from typing import Any

import torch


class AuxiliaryStep:
    """One extra optimisation step per batch over its own parameter group.

    Subclasses implement :meth:`loss`; :meth:`step` zeroes the group's gradients, back-propagates, clips (if
    ``gradient_clip``) and steps the group's optimiser.  The step's optimiser state is checkpointed under
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

    def loss(self, *tensors: torch.Tensor) -> torch.Tensor:
        """The step's loss on the batch tensors the main step received (see ``Trainer._step_loss``)."""
        raise NotImplementedError

    def step(self, *tensors: torch.Tensor) -> dict[str, float]:
        """Run one update of this step's group; returns ``{name: loss value}`` for the epoch log.

        :raises FloatingPointError: the loss is not finite.
        """
        for p in self.params:
            p.grad = None
        loss = self.loss(*tensors)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"auxiliary step {self.name!r}: loss became {loss.item()}")
        loss.backward()
        if self.gradient_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.gradient_clip)
        self.optimizer.step()
        for p in self.params:  # gradients of this group never leak into the next main step
            p.grad = None
        return {self.name: float(loss.detach())}

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
