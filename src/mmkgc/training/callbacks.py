"""Training callbacks (the PyKEEN ``TrainingCallback`` split): what happens around the epochs, apart from the
optimisation itself.

The :class:`~mmkgc.training.trainer.Trainer` calls, in this order, for every epoch:

1. :meth:`TrainingCallback.stop_before_epoch` (a reason stops the run before the epoch starts);
2. :meth:`TrainingCallback.epoch_deadline` (the earliest deadline, on the trainer's clock, ends the epoch early);
3. :meth:`TrainingCallback.on_epoch_start`, :meth:`TrainingCallback.on_batch_end` per batch,
   :meth:`TrainingCallback.on_epoch_trained` (the optimisation pass is over);
4. when the epoch validates: :meth:`TrainingCallback.on_validation` with the result and the selection value;
5. :meth:`TrainingCallback.on_epoch_end` with the epoch's record (already in ``trainer.history``);
6. :meth:`TrainingCallback.stop_after_epoch` (the first reason given stops the run after the epoch is saved;
   the callbacks after it are not asked).

Callbacks run in list order.  The default list (:func:`default_callbacks`) keeps the order of the single loop
this module replaced, so that records, checkpoints and resumed runs are bit-identical to it: legacy test
reporting, the time budget, best-model selection with early stopping, the progress bar, the trackers and
finally the ``last`` checkpoint.  The state they act on (``best_metric``, ``best_epoch``, ``bad_validations``,
``legacy_best_test``, ``training_seconds``) stays on the trainer, so the checkpoint layout is unchanged.

Under DDP every rank runs every callback; decisions that must agree (stop or go) are rank 0's, broadcast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from mmkgc import distributed as dist_helpers
from mmkgc.training.checkpoint import (
    load_checkpoint,
    read_auxiliary_state,
    read_checkpoint_state,
    read_scheduler_state,
    save_checkpoint,
)

if TYPE_CHECKING:
    from mmkgc.evaluation.metrics import EvaluationResult
    from mmkgc.training.tracking import ResultTracker
    from mmkgc.training.trainer import Trainer

__all__ = [
    "LEGACY_METRICS",
    "CheckpointCallback",
    "EarlyStopping",
    "LegacyBestTest",
    "ProgressBar",
    "TimeBudget",
    "TrackerCallback",
    "TrainingCallback",
    "default_callbacks",
]

#: Metrics tracked by ``evaluation.report: legacy_best_test_per_metric``.
LEGACY_METRICS = ("mrr", "mr", "hits@1", "hits@3", "hits@10")


class TrainingCallback:
    """Hooks around the epochs; every method is a no-op here (override what you need)."""

    def stop_before_epoch(self, trainer: Trainer) -> str | None:
        """A reason to stop before the next epoch starts (``trainer.summary.stopped_because``), or ``None``."""
        return None

    def epoch_deadline(self, trainer: Trainer, clock_start: float) -> float | None:
        """A time on ``trainer._clock()`` at which the epoch must end (checked after every batch), or ``None``."""
        return None

    def on_epoch_start(self, trainer: Trainer, num_batches: int) -> None:
        """Before the first batch of an epoch (``trainer.epoch`` is the number of finished epochs)."""

    def on_batch_end(self, trainer: Trainer, batches_done: int, mean_loss: float | None) -> None:
        """After every optimisation step; ``mean_loss`` is the mean of the losses read so far (``None`` if none)."""

    def on_epoch_trained(self, trainer: Trainer) -> None:
        """After the optimisation pass of an epoch (also when it raised)."""

    def on_validation(self, trainer: Trainer, result: EvaluationResult, value: float,
                      record: dict[str, Any]) -> None:
        """After a validation; ``value`` is the selection metric, ``record`` the epoch's record being built."""

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """After the epoch's record was appended to ``trainer.history``."""

    def stop_after_epoch(self, trainer: Trainer, record: dict[str, Any]) -> str | None:
        """A reason to stop after this epoch, or ``None``."""
        return None


class LegacyBestTest(TrainingCallback):
    """``evaluation.report: legacy_best_test_per_metric``: at every validation, evaluate on *test* and keep each
    metric's best value so far (``mr``: lowest) in ``trainer.legacy_best_test`` (metric -> ``{"value",
    "epoch"}``); the record gets ``legacy_test``.  This selects on the test set and is only for reproducing the
    MoMoK/IMVIA numbers (methods.md)."""

    def on_validation(self, trainer, result, value, record):
        if trainer.triples.test.shape[0] == 0:
            return
        from mmkgc.evaluation.metrics import evaluate

        cfg = trainer.eval_cfg
        trainer.model.eval()
        test = evaluate(trainer.model.score_fn(), trainer.triples, split="test", batch_size=cfg.batch_size,
                        sampled_candidates=cfg.sampled_candidates, policies=trainer.policies, seed=trainer.seed)
        now = {k: float(test.get(k, side="both", policy=cfg.tie_policy)) for k in LEGACY_METRICS}
        for key, v in now.items():
            best = trainer.legacy_best_test.get(key)
            better = best is None or (v < best["value"] if key == "mr" else v > best["value"])
            if better:
                trainer.legacy_best_test[key] = {"value": v, "epoch": trainer.epoch}
        record["legacy_test"] = now


class EarlyStopping(TrainingCallback):
    """Best-model selection on the validation metric, and early stopping after ``patience`` validations without
    improvement (``None``: never stop).

    On improvement (strictly greater value) the trainer's ``best_metric`` / ``best_epoch`` are set, the weights
    are kept in memory and written to ``checkpoints/best``; otherwise ``bad_validations`` grows.  The stop
    decision is rank 0's, broadcast to every rank.
    """

    def __init__(self, patience: int | None):
        self.patience = patience

    def on_validation(self, trainer, result, value, record):
        if trainer.best_metric is None or value > trainer.best_metric:
            trainer.best_metric, trainer.best_epoch, trainer.bad_validations = value, trainer.epoch, 0
            trainer._best_state = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
            trainer.save("best")
        else:
            trainer.bad_validations += 1

    def stop_after_epoch(self, trainer, record):
        early = self.patience is not None and trainer.bad_validations >= self.patience
        return "early_stopping" if dist_helpers.broadcast_flag(early) else None


class TimeBudget(TrainingCallback):
    """Stop once ``minutes`` of optimisation time have been spent (validation excluded; summed over resumes).

    Time is counted on the trainer's clock (``training.time_budget_clock``: wall ``perf_counter`` or the process's
    CPU seconds); an epoch that reaches the deadline ends after its current batch (the record says ``partial``)
    and the run stops after it is saved.
    """

    def __init__(self, minutes: float):
        self.seconds = float(minutes) * 60.0

    def stop_before_epoch(self, trainer):
        return "time_budget" if trainer.training_seconds >= self.seconds else None

    def epoch_deadline(self, trainer, clock_start):
        return clock_start + (self.seconds - trainer.training_seconds)

    def stop_after_epoch(self, trainer, record):
        return "time_budget" if record.get("partial") else None


class ProgressBar(TrainingCallback):
    """A transient rich progress bar per epoch with the running mean loss (rank 0 only)."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._task: Any = None

    def on_epoch_start(self, trainer, num_batches):
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self._bar = Progress(TextColumn(f"epoch {trainer.epoch + 1}"), BarColumn(), TextColumn("{task.fields[loss]}"),
                             TimeRemainingColumn(), transient=True)
        self._task = self._bar.add_task("train", total=num_batches, loss="")
        self._bar.start()

    def on_batch_end(self, trainer, batches_done, mean_loss):
        if self._bar is not None:
            self._bar.update(self._task, advance=1, loss=f"loss {mean_loss:.4f}" if mean_loss is not None else "")

    def on_epoch_trained(self, trainer):
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


class TrackerCallback(TrainingCallback):
    """Gives every epoch's record to result trackers (``metrics.jsonl`` by default; rank 0 only).  A tracker may
    raise to stop the run (the tuner's pruning); the callbacks after this one then do not run for the epoch."""

    def __init__(self, trackers: list[ResultTracker]):
        self.trackers = list(trackers)

    def on_epoch_end(self, trainer, record):
        for tracker in self.trackers:
            tracker.log_metrics(record, step=int(record["epoch"]))


class CheckpointCallback(TrainingCallback):
    """Checkpoint and resume: writes ``checkpoints/last`` after every epoch (rank 0; nothing without a run
    directory); :class:`EarlyStopping` writes ``checkpoints/best`` through :meth:`save`, and
    ``Trainer.train(resume=True)`` restores the trainer through :meth:`resume`.  The layout is
    :func:`mmkgc.training.checkpoint.save_checkpoint`'s (safetensors weights, JSON state, tensors-only training
    state)."""

    def on_epoch_end(self, trainer, record):
        trainer.save("last")

    def save(self, trainer: Trainer, which: str = "last") -> None:
        """Checkpoint the unwrapped model, the trainer's state, its optimiser, scheduler, random streams and the
        auxiliary steps' optimisers to ``checkpoints/which`` (rank 0 only; the other ranks hold identical weights)."""
        path = trainer._checkpoint_dir(which)
        if path is not None and trainer.rank == 0:
            save_checkpoint(path, trainer.model, trainer._state(), trainer.optimizer, trainer._rng_state(),
                            auxiliary={step.name: step.state_dict() for step in trainer.aux_steps},
                            scheduler=trainer.scheduler.state_dict() if trainer.scheduler is not None else None)

    def resume(self, trainer: Trainer) -> bool:
        """Restore the trainer from ``run_dir/checkpoints/last`` if it exists (every rank reads it); returns whether
        it did.  The restored random streams make the continued run bit-identical to an uninterrupted one.

        :raises CheckpointError: the checkpoint is corrupt, or was written for another config or feature table.
        """
        path = trainer._checkpoint_dir("last")
        if path is None or not (path.exists() or path.with_name("last.old").exists()):
            return False
        from mmkgc.errors import CheckpointError

        saved = read_checkpoint_state(path)
        if saved.get("fingerprint") != trainer.fingerprint:
            raise CheckpointError(
                f"{path}: checkpoint was written for a different config or feature table "
                f"(saved {saved.get('fingerprint')}, now {trainer.fingerprint}); start a new run directory"
            )
        state, rng = load_checkpoint(path, trainer.model, trainer.optimizer, map_location=trainer.device)
        auxiliary = read_auxiliary_state(path, map_location=trainer.device)
        for step in trainer.aux_steps:
            if step.name not in auxiliary:
                raise CheckpointError(f"{path}: no saved state for auxiliary step {step.name!r}")
            step.load_state_dict(auxiliary[step.name])
        if trainer.scheduler is not None:
            saved_schedule = read_scheduler_state(path, map_location=trainer.device)
            if saved_schedule is None:
                raise CheckpointError(f"{path}: the config has training.scheduler {trainer.cfg.scheduler.name} but the "
                                      "checkpoint holds no scheduler state; start a new run directory")
            trainer.scheduler.load_state_dict(saved_schedule)
        trainer.epoch = state["epoch"]
        trainer.step = state["step"]
        trainer.training_seconds = state["training_seconds"]
        trainer.best_metric = state["best_metric"]
        trainer.best_epoch = state["best_epoch"]
        trainer.bad_validations = state["bad_validations"]
        trainer.history = state["history"]
        trainer.legacy_best_test = state.get("legacy_best_test") or {}
        if state.get("grad_scaler") and trainer.scaler.is_enabled():
            trainer.scaler.load_state_dict(state["grad_scaler"])
        if "sampler" in rng:
            trainer.generator.set_state(rng["sampler"])
        if "torch_global" in rng:
            torch.set_rng_state(rng["torch_global"])
        trainer.log(f"resumed from {path} at epoch {trainer.epoch}")
        return True


def default_callbacks(trainer: Trainer) -> list[TrainingCallback]:
    """The callbacks a trainer's options ask for, in the order that keeps runs identical to the former single
    loop (see the module docstring)."""
    callbacks: list[TrainingCallback] = []
    if trainer.eval_cfg.report == "legacy_best_test_per_metric":
        callbacks.append(LegacyBestTest())
    if trainer.cfg.time_budget_minutes:  # before early stopping: a partial epoch stops as ``time_budget``
        callbacks.append(TimeBudget(trainer.cfg.time_budget_minutes))
    callbacks.append(EarlyStopping(trainer.eval_cfg.patience))
    if trainer.progress:
        callbacks.append(ProgressBar())
    callbacks.append(TrackerCallback(trainer.trackers))
    callbacks.append(CheckpointCallback())
    return callbacks

