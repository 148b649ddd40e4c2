"""The trainer: epochs of optimisation steps, validation with early stopping, checkpoints and resume.

The training regime is a loop class (:mod:`mmkgc.training.loops`, resolved from ``training.loop``):

* ``negative_sampling`` (sLCWA): each positive triple is scored against ``K`` corrupted triples (uniform or
  Bernoulli, filtered against train) under a pairwise or self-adversarial loss (Bordes et al. 2013; Sun et al.
  2019);
* ``one_to_n`` (LCWA / 1-N scoring): each ``(h, r)`` query of train (with reciprocal relations for head queries)
  is scored against all entities under BCE with label smoothing (Dettmers et al. 2018).

What happens around the epochs (selection and early stopping, time budget, the legacy reporting protocol,
progress, trackers, the ``last`` checkpoint) are callbacks (:mod:`mmkgc.training.callbacks`).

Determinism: every random draw (positive order, negatives, dropout) comes from generators seeded by the
experiment seed, and their states are checkpointed, so a resumed run continues the same random streams.

Distributed training (``torchrun``; :mod:`mmkgc.distributed`): every rank draws the same positive order from the
shared seeded stream and takes its contiguous slice of each global batch; negatives come from the rank's own
stream seeded by ``(seed, epoch, rank)`` (``training.distributed_negatives: per_rank``) or from the shared stream
for the whole global batch (``replicated``: the same batches and negatives as one process).  The model is wrapped
in :class:`torch.nn.parallel.DistributedDataParallel` through :class:`TrainingStep`, whose ``forward`` computes
the loss, so DDP averages the gradients; each rank's loss is scaled so that the average is the gradient of the
global batch's mean loss.  Auxiliary steps (generators, discriminator, CLUB estimator) scale their loss the same
way and average their gradients over the ranks themselves (their parameters are left out of DDP).  Only rank 0
logs, writes ``metrics.jsonl`` and checkpoints (of the unwrapped model); every rank validates on its shard of the
queries and gets the same gathered metrics, and rank 0's early-stopping and time-budget decisions are broadcast
(callbacks).  The logged loss and terms are means over the ranks, and a non-finite loss on any rank raises on
every rank (:func:`~mmkgc.distributed.raise_if_nonfinite`).  A checkpoint written by any world size resumes under
any other, since
the shared stream is identical on all ranks and the per-rank streams are re-derived from ``(seed, epoch, rank)``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mmkgc import distributed as dist_helpers
from mmkgc.errors import ConfigError, TrainingInterrupted
from mmkgc.evaluation.metrics import EvaluationResult, evaluate
from mmkgc.evaluation.ranking import to_device_nonblocking
from mmkgc.models.inductive import modality_structures, pop_auxiliary_losses
from mmkgc.training.callbacks import (
    LEGACY_METRICS,
    CheckpointCallback,
    TrainingCallback,
    default_callbacks,
)
from mmkgc.training.checkpoint import load_checkpoint, read_checkpoint_state
from mmkgc.training.loops import TrainingLoop, loop_resolver
from mmkgc.training.tracking import FileTracker, ResultTracker

if TYPE_CHECKING:  # configuration objects are duck-typed at run time (layering: training never imports config)
    from mmkgc.config import EvaluationConfig, SchedulerConfig, TrainingConfig
    from mmkgc.data.triples import TripleSet
    from mmkgc.models.kge import KGEModel

__all__ = ["LEGACY_METRICS", "Trainer", "TrainingStep", "TrainingSummary", "build_optimizer", "build_scheduler",
           "evaluation_policies"]


@dataclass
class TrainingSummary:
    """What :meth:`Trainer.train` did.

    :param epochs_completed: epochs finished (including those before a resume).
    :param stopped_because: ``max_epochs``, ``early_stopping`` or ``time_budget``.
    :param best_epoch: epoch of the selected model (``None`` when no validation ran).
    :param best_metric: its validation metric.
    :param training_seconds: optimisation wall time, validation excluded (summed over resumes).
    :param history: one dict per epoch (loss, seconds, validation metrics when run).
    """

    epochs_completed: int
    stopped_because: str
    best_epoch: int | None
    best_metric: float | None
    training_seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """Within the block, SIGTERM raises :class:`KeyboardInterrupt` like Ctrl-C (main thread only; restored after)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def evaluation_policies(cfg: EvaluationConfig) -> tuple[str, ...]:
    """Tie policies to compute: the library's default set, plus ``cfg.tie_policy`` (e.g. ``random``, the IMVIA
    protocol) when it is not among them, so that the selection policy is always available."""
    from mmkgc.evaluation.metrics import DEFAULT_POLICIES

    return tuple(DEFAULT_POLICIES) + ((cfg.tie_policy,) if cfg.tie_policy not in DEFAULT_POLICIES else ())


def build_optimizer(model: torch.nn.Module, cfg: TrainingConfig,
                    exclude: set[int] | None = None) -> torch.optim.Optimizer:
    """Adam or Adagrad over the model's trainable parameters.

    Embedding tables (entity and relation lookups) use ``cfg.lr``; every other parameter (modality adapters,
    fusion projections, learned fill vectors) uses ``cfg.dense_lr`` when it is set.  Recipes tuned for embedding
    tables, such as Adagrad with lr 0.1 for ComplEx-N3 (Lacroix et al., 2018), move each dense weight by about
    ``lr`` on the first step, which wipes out an identity-initialised fusion projection.

    :param exclude: ``id()`` of parameters owned by auxiliary steps (generators, estimators); they get no update here.
    """
    if cfg.sparse:  # sparse row-wise updates of the entity table (mmkgc.training.sparse)
        from mmkgc.training.sparse import build_sparse_optimizer

        return build_sparse_optimizer(model, cfg.optimizer, cfg.lr,  # type: ignore[return-value]
                                      dense_lr=cfg.dense_lr if cfg.dense_lr is not None else cfg.lr)
    embedding_params = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    exclude = exclude or set()
    params = [p for p in model.parameters() if p.requires_grad and id(p) not in exclude]
    tables = [p for p in params if id(p) in embedding_params]
    dense = [p for p in params if id(p) not in embedding_params]
    groups = [{"params": tables, "lr": cfg.lr}]
    if dense:
        groups.append({"params": dense, "lr": cfg.dense_lr if cfg.dense_lr is not None else cfg.lr})
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.Adagrad(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: SchedulerConfig | None) -> Any:
    """The ``torch.optim.lr_scheduler`` class ``cfg.name`` over ``optimizer`` with ``cfg.kwargs`` (``None``: none).

    ``ReduceLROnPlateau`` gets ``mode="max"`` unless the kwargs say otherwise (it is stepped with the validation
    metric, which grows).  The scheduler's ``state_dict()`` is checkpointed with the optimiser
    (:func:`~mmkgc.training.checkpoint.save_checkpoint`), so a resumed run continues the same schedule.

    :raises ConfigError: the scheduler refuses the kwargs' values (message names ``training.scheduler``).
    """
    if cfg is None:
        return None
    from torch.optim import lr_scheduler

    kwargs = dict(cfg.kwargs)
    if cfg.name == "ReduceLROnPlateau":
        kwargs.setdefault("mode", "max")
    try:
        return getattr(lr_scheduler, cfg.name)(optimizer, **kwargs)
    except (TypeError, ValueError, KeyError) as err:
        raise ConfigError(f"training.scheduler: {cfg.name}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())}): "
                          f"{err}") from None


class TrainingStep(torch.nn.Module):
    """The module DDP wraps: ``forward(*batch_tensors) -> loss`` runs the trainer's whole scoring and loss, so
    DDP's gradient hooks see every parameter use of the step.

    :param model: the :class:`KGEModel` (its parameters are this module's parameters).
    :param step: the trainer's loss function of the batch tensors (not a submodule).
    """

    def __init__(self, model: KGEModel, step: Callable[..., torch.Tensor]):
        super().__init__()
        self.model = model
        self._step = step

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self._step(*tensors)


class Trainer:
    """Trains a :class:`~mmkgc.models.kge.KGEModel` on a :class:`~mmkgc.data.triples.TripleSet`.

    The regime (batching and the loss of a batch) is a :class:`~mmkgc.training.loops.TrainingLoop` resolved from
    ``training.loop``; what happens around the epochs (selection and early stopping, time budget, legacy test
    reporting, progress, trackers, the ``last`` checkpoint) are :mod:`~mmkgc.training.callbacks`.  The trainer
    keeps the optimisation itself: optimiser and scheduler, mixed precision, DDP, the model's auxiliary steps,
    gradient clipping, and the state that checkpoints carry.

    :param model: the model (moved to ``device``).
    :param triples: the dataset; training uses ``train``, selection uses ``evaluation.split``.
    :param training: optimisation options (the ``training`` section; duck-typed).
    :param evaluation: validation / early-stopping options (the ``evaluation`` section; duck-typed).
    :param seed: seeds every random stream of the run.
    :param run_dir: where ``metrics.jsonl`` and ``checkpoints/{last,best}`` go; ``None`` keeps nothing on disk
        (the best weights are kept in memory).
    :param fingerprint: extra JSON state stored in checkpoints and checked on resume (config hash, feature
        fingerprints); a mismatch raises :class:`~mmkgc.errors.CheckpointError`.
    :param progress: show rich progress bars.
    :param log: a callable receiving one human-readable line per event.
    :param trackers: receive every epoch's record (:class:`~mmkgc.training.tracking.ResultTracker`, rank 0 only);
        default: a :class:`~mmkgc.training.tracking.FileTracker` writing ``run_dir/metrics.jsonl`` when there is a
        run directory.  A tracker may raise to stop training after the epoch is checkpointed (the tuner's pruning).
    :param callbacks: extra :class:`~mmkgc.training.callbacks.TrainingCallback` objects, run after the default ones
        (:func:`~mmkgc.training.callbacks.default_callbacks`).
    :param validate_fn: ``() -> EvaluationResult`` of the selection split under another evaluation protocol
        (``evaluation.protocol``); selection reads the result's :attr:`~EvaluationResult.default_side`.
    :raises ConfigError: fp16 without CUDA, fp16 with sparse updates, sparse updates under DDP with NCCL.
    """

    def __init__(
        self,
        model: KGEModel,
        triples: TripleSet,
        training: TrainingConfig,
        evaluation: EvaluationConfig,
        seed: int = 0,
        run_dir: str | Path | None = None,
        fingerprint: dict[str, Any] | None = None,
        device: str | torch.device = "cpu",
        progress: bool = False,
        log: Callable[[str], None] | None = None,
        trackers: list[ResultTracker] | None = None,
        callbacks: list[TrainingCallback] | None = None,
        validate_fn: Callable[[], EvaluationResult] | None = None,
    ):
        self.model = model.to(device)
        #: replaces the filtered evaluation of :meth:`validate` (another protocol, e.g. VEMP's sampled one)
        self.validate_fn = validate_fn
        self.triples = triples
        self.cfg = training
        self.eval_cfg = evaluation
        self.policies = evaluation_policies(evaluation)
        self.seed = seed
        self.device = torch.device(device)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.fingerprint = fingerprint or {}
        self.rank = dist_helpers.get_rank()
        self.world_size = dist_helpers.get_world_size()
        main = self.rank == 0
        self.progress = progress and main
        #: read the step losses every this many steps (``None``: every step on the CPU, every 25 on a GPU)
        self.sync_every: int | None = None
        self.log = (log or (lambda line: None)) if main else (lambda line: None)
        #: extra per-batch steps over their own parameter groups (generator, estimator; mmkgc.models.auxiliary)
        self.aux_steps = list(self.model.auxiliary_steps(training))
        owned = {id(p) for step in self.aux_steps for p in step.params}
        self.optimizer = build_optimizer(self.model, training, exclude=owned)
        #: modality substitutes of entities without training triples (``model.unseen``): their alignment term
        self._substitutes = modality_structures(self.model)
        self.scheduler = build_scheduler(self.optimizer, training.scheduler)  # type: ignore[arg-type]
        if trackers is None:
            trackers = [FileTracker(self.run_dir)] if self.run_dir is not None else []
        self.trackers = trackers if main else []
        if training.precision == "fp16" and self.device.type != "cuda":
            raise ConfigError(f"training.precision: fp16 needs a CUDA device (this run uses {self.device}); "
                              "use bf16 or fp32 on the CPU")
        if training.precision == "fp16" and training.sparse:
            raise ConfigError("training.precision: fp16 (loss scaling) is not supported with training.sparse: true")
        self._amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[training.precision]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=training.precision == "fp16")
        self.ddp: torch.nn.Module | None = None
        #: averages an auxiliary step's gradients over the ranks (``None`` in one process)
        self._reduce_aux = dist_helpers.average_gradients if self.world_size > 1 else None
        if self.world_size > 1:
            if training.sparse and torch.distributed.get_backend() == "nccl":
                raise ConfigError("training.sparse: true under DDP is supported with the gloo backend only")
            self.ddp = self._wrap_ddp(owned)
        #: negatives of this rank under DDP with ``distributed_negatives: per_rank`` (re-seeded every epoch).
        self.rank_generator = torch.Generator()

        self.generator = torch.Generator().manual_seed(seed)
        self.loop: TrainingLoop = loop_resolver.make(training.loop, model=self.model, triples=triples,
                                                     training=training, generator=self.generator,
                                                     device=self.device, amp_dtype=self._amp_dtype)

        self.epoch = 0
        self.step = 0
        self.training_seconds = 0.0
        self.best_metric: float | None = None
        self.best_epoch: int | None = None
        self.bad_validations = 0
        self.history: list[dict[str, Any]] = []
        self._best_state: dict[str, torch.Tensor] | None = None
        self._terms: dict[str, torch.Tensor] = {}
        self.epoch_terms: dict[str, float] = {}
        #: ``evaluation.report: legacy_best_test_per_metric`` only: metric -> {"value", "epoch"}, the best *test*
        #: value of each metric separately over the validation epochs (MoMoK/IMVIA reporting; selects on test).
        self.legacy_best_test: dict[str, dict[str, float]] = {}
        self.callbacks: list[TrainingCallback] = default_callbacks(self) + list(callbacks or [])
        #: writes and reads ``checkpoints/{last,best}`` (one of the default callbacks)
        self.checkpointing = next(cb for cb in self.callbacks if isinstance(cb, CheckpointCallback))

    def _wrap_ddp(self, aux_owned: set[int]) -> torch.nn.Module:
        """:class:`TrainingStep` in DDP.  Parameters owned by auxiliary steps are left out of DDP's hooks: the main
        step does not train them (their steps average their own gradients, :func:`dist_helpers.average_gradients`).
        Models with auxiliary steps also have parts that some configurations leave out of the main loss (IMVIA's
        gate-noise weights without ``noisy_gating``, its alignment heads with ``align_weight: 0``), so DDP looks for
        unused parameters after each forward pass for them (one traversal of the autograd graph per step), and for
        loops that declare :attr:`TrainingLoop.unused_parameters` (link-BCE: ``mlp_link``'s relation table)."""
        import inspect

        ddp_cls = torch.nn.parallel.DistributedDataParallel
        module = TrainingStep(self.model, self._step_loss)
        ignored = [name for name, p in module.named_parameters() if id(p) in aux_owned]
        if ignored:
            ddp_cls._set_params_and_buffers_to_ignore_for_model(module, ignored)
        # Buffers are frozen feature tables, identical on every rank: synced once at construction, never per step.
        no_sync = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(ddp_cls).parameters
                   else "broadcast_buffers")
        return ddp_cls(module, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                       find_unused_parameters=bool(aux_owned) or loop_resolver.lookup(self.cfg.loop).unused_parameters,
                       **{no_sync: False})

    # ------------------------------------------------------------------------------------------ the loop's parts
    @property
    def batcher(self) -> Any:
        """The loop's batch iterator (``len()`` = batches per epoch); assignable (benchmarks train on a subset)."""
        return self.loop.batcher

    @batcher.setter
    def batcher(self, value: Any) -> None:
        self.loop.batcher = value

    @property
    def sampler(self) -> Any:
        """The negative sampler (``None`` for 1-N scoring)."""
        return getattr(self.loop, "sampler", None)

    @property
    def loss(self) -> Any:
        """The loss object the loop gives the model."""
        return self.loop.loss

    # ------------------------------------------------------------------------------------------ steps
    def _step_loss(self, *tensors: torch.Tensor) -> torch.Tensor:
        """The loss of one (local) batch given as tensors (see :meth:`TrainingLoop.batch_loss`), plus the
        alignment term of modality substitutes when the model has some."""
        if not self._substitutes:
            loss, self._terms = self.loop.batch_loss(*tensors)
            return loss
        pop_auxiliary_losses(self._substitutes)  # anything recorded outside this step (auxiliary steps) is dropped
        loss, self._terms = self.loop.batch_loss(*tensors)
        extra, terms = pop_auxiliary_losses(self._substitutes)
        if extra is not None:
            loss = loss + extra
            self._terms = {**self._terms, **terms}
        return loss

    def _negative_sampling_step(self, positives: torch.Tensor, entities: torch.Tensor | None = None,
                                tail_corrupted: torch.Tensor | None = None) -> torch.Tensor:
        """The negative-sampling loop's loss of one batch (negatives drawn from the shared stream when not given)."""
        loss, self._terms = self.loop.batch_loss(positives, entities, tail_corrupted)
        return loss

    def _local_batches(self):
        """This rank's part of every global batch of the epoch: ``(tensors for _step_loss, loss factor)``
        (:meth:`TrainingLoop.local_batches`)."""
        return self.loop.local_batches(self.rank, self.world_size, self.rank_generator)

    def _to_device(self, tensors: tuple) -> tuple:
        """A batch's host tensors moved to a CUDA training device without a host synchronisation: staged in pinned
        memory and copied with ``non_blocking=True`` (a copy from pageable memory waits until the GPU has finished
        everything queued before it, i.e. the previous step).  Unchanged on other devices and for tensors already
        there.  The batch is built on the host (sampler, batcher: data/sampling.py), so this is the one transfer
        of a step."""
        if self.device.type != "cuda":
            return tensors
        return tuple(to_device_nonblocking(t, self.device) if isinstance(t, torch.Tensor) else t for t in tensors)

    def _epoch(self, deadline: float | None) -> tuple[float, bool]:
        """One pass; returns (mean loss, ran out of time).

        :param deadline: a time on :meth:`_clock` after which the epoch ends (after the current batch), or ``None``.
        """
        self.model.train()
        total, count, out_of_time = 0.0, 0, False
        term_sums: dict[str, float] = {}
        # On an accelerator the loss and the logged terms stay on the device and are read every
        # ``sync_every`` steps (and at the end of the epoch): reading them every step would wait for the GPU
        # to finish the step before the next one is queued.  On the CPU reading is free: every step.
        sync_every = self.sync_every or (1 if self.device.type == "cpu" else 25)
        pending_losses: list[torch.Tensor] = []
        pending_weights: list[float] = []
        pending_terms: dict[str, list[torch.Tensor]] = {}
        aux_keys: set[str] = set()

        def settle() -> float:
            """Read the pending losses and terms (one host synchronisation); raises on a non-finite loss."""
            if not pending_losses:
                return 0.0
            values = torch.stack([v.float() for v in pending_losses]).tolist()
            first_step = self.step - len(values)
            if sync_every > 1:  # every rank raises together (with sync_every 1 each step was checked already)
                dist_helpers.raise_if_nonfinite(values, self.epoch + 1, first_step)
            settled = 0.0
            for value, weight in zip(values, pending_weights):
                settled += value * weight
            pending_losses.clear()
            pending_weights.clear()
            for key, vals in pending_terms.items():
                values = torch.stack([v.float() for v in vals]).tolist()
                if key in aux_keys:  # every rank raises together
                    dist_helpers.raise_if_nonfinite(values, self.epoch + 1, self.step - len(values),
                                                    f"auxiliary step {key!r}: loss")
                for value in values:
                    term_sums[key] = term_sums.get(key, 0.0) + value
            pending_terms.clear()
            return settled
        if self.world_size > 1:
            state = np.random.SeedSequence([self.seed, self.epoch, self.rank]).generate_state(2, dtype=np.uint32)
            self.rank_generator.manual_seed(int(state[0]) << 32 | int(state[1]))
        batches = self._local_batches()
        num = len(self.loop)
        for callback in self.callbacks:
            callback.on_epoch_start(self, num)
        try:
            for tensors, factor in batches:
                tensors = self._to_device(tensors)
                self.optimizer.zero_grad(set_to_none=True)
                if self.ddp is not None:
                    loss = self.ddp(*tensors)
                else:
                    loss = self._step_loss(*tensors)
                if sync_every == 1:  # CPU: stop before the step is applied, on every rank if one rank's is bad
                    dist_helpers.raise_if_nonfinite([loss.item()], self.epoch + 1, self.step)
                scaled = loss * factor if factor != 1.0 else loss
                if self.scaler.is_enabled():
                    self.scaler.scale(scaled).backward()
                    if self.cfg.gradient_clip is not None:
                        self.scaler.unscale_(self.optimizer)
                        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.gradient_clip)
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                else:
                    scaled.backward()
                    if self.cfg.gradient_clip is not None:
                        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.gradient_clip)
                    self.optimizer.step()
                if self.scheduler is not None and self.cfg.scheduler.interval == "step":
                    self.scheduler.step()
                for aux in self.aux_steps:  # generator / estimator steps on the same batch, own parameter groups
                    # under DDP its loss is checked by settle() with every rank (a rank raising alone would hang)
                    for key, value in aux.step(*tensors, check_finite=sync_every == 1 and self.world_size == 1,
                                               scale=factor, reduce=self._reduce_aux).items():
                        if isinstance(value, torch.Tensor):
                            pending_terms.setdefault(key, []).append(value)
                            aux_keys.add(key)
                        else:
                            term_sums[key] = term_sums.get(key, 0.0) + value
                for key, value in self._terms.items():
                    pending_terms.setdefault(key, []).append(value.detach())
                self._terms = {}
                self.step += 1
                # sum over ranks of loss * factor / world = the mean loss over the global batch
                pending_losses.append(loss.detach())
                pending_weights.append(factor / self.world_size)
                count += 1
                if len(pending_losses) >= sync_every:
                    total += settle()
                settled = count - len(pending_losses)
                for callback in self.callbacks:
                    callback.on_batch_end(self, count, total / max(settled, 1) if settled else None)
                if deadline is not None:
                    out_of_time = dist_helpers.broadcast_flag(self._clock() >= deadline)
                    if out_of_time:
                        break
            total += settle()
        finally:
            for callback in self.callbacks:
                callback.on_epoch_trained(self)
        if self.world_size > 1:
            total = dist_helpers.all_reduce_sum([total])[0]
        self.epoch_terms = dist_helpers.mean_over_ranks({k: v / max(count, 1) for k, v in term_sums.items()})
        return total / max(count, 1), out_of_time

    # ------------------------------------------------------------------------------------------ validation
    def validate(self) -> EvaluationResult:
        """Filtered ranks on the selection split (``evaluation.split``), or ``validate_fn``'s result."""
        self.model.eval()
        if self.validate_fn is not None:
            return self.validate_fn()
        return evaluate(
            self.model.score_fn(),
            self.triples,
            split=self.eval_cfg.split,
            batch_size=self.eval_cfg.batch_size,
            sampled_candidates=self.eval_cfg.sampled_candidates,
            policies=self.policies,
            seed=self.seed,
        )

    def _selection_value(self, result: EvaluationResult) -> float:
        return float(result.get(self.eval_cfg.metric, side=result.default_side, policy=self.eval_cfg.tie_policy))

    # ------------------------------------------------------------------------------------------ state
    def _rng_state(self) -> dict[str, torch.Tensor]:
        return {
            "sampler": self.generator.get_state(),
            "torch_global": torch.get_rng_state(),
        }

    def _state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "step": self.step,
            "training_seconds": self.training_seconds,
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "bad_validations": self.bad_validations,
            "history": self.history,
            "fingerprint": self.fingerprint,
            "world_size": self.world_size,
            "grad_scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "legacy_best_test": self.legacy_best_test,
        }

    def _checkpoint_dir(self, which: str) -> Path | None:
        return None if self.run_dir is None else self.run_dir / "checkpoints" / which

    def save(self, which: str = "last") -> None:
        """Checkpoint ``which`` (``last`` / ``best``): :meth:`CheckpointCallback.save`."""
        self.checkpointing.save(self, which)

    def resume(self) -> bool:
        """Continue from ``run_dir/checkpoints/last`` if it exists (:meth:`CheckpointCallback.resume`).

        :raises CheckpointError: the checkpoint is corrupt, or was written for another config or feature table.
        """
        return self.checkpointing.resume(self)

    # ------------------------------------------------------------------------------------------ main loop
    def train(self, resume: bool = False) -> TrainingSummary:
        """Run epochs until ``training.epochs``, early stopping, or the time budget.

        The selected model (best validation metric; the last one if validation never ran) is loaded into
        ``self.model`` on return.
        """
        if resume:
            self.resume()
        with _sigterm_as_interrupt():
            try:
                return self._train_loop()
            except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the unfinished epoch is discarded, checkpoints kept
                raise self._interrupted() from None

    def _interrupted(self) -> TrainingInterrupted:
        last = self._checkpoint_dir("last")
        saved = 0
        if last is not None and (last.exists() or last.with_name("last.old").exists()):
            saved = int(read_checkpoint_state(last).get("epoch", 0))
        if last is None or saved == 0:
            kept = "no epoch finished, nothing was saved"
        else:
            kept = f"the last checkpoint (epoch {saved}) is kept in {last}"
        return TrainingInterrupted(f"training interrupted during epoch {saved + 1}; that epoch is discarded "
                                   f"and {kept}", checkpoint=last if saved else None, epoch=saved)

    def _clock(self) -> float:
        """Seconds on the clock that ``training.time_budget_clock`` names (wall: ``perf_counter``; process_cpu:
        ``process_time``, the CPU time of every thread of this process)."""
        return time.process_time() if self.cfg.time_budget_clock == "process_cpu" else time.perf_counter()

    def _train_loop(self) -> TrainingSummary:
        if self.cfg.num_threads:
            torch.set_num_threads(self.cfg.num_threads)
        has_valid = self.triples.split(self.eval_cfg.split).shape[0] > 0
        stopped = "max_epochs"
        if self.epoch == 0:
            torch.manual_seed(self.seed)  # dropout and other global draws; restored from checkpoints on resume
        while self.epoch < self.cfg.epochs:
            reason = next((r for r in (cb.stop_before_epoch(self) for cb in self.callbacks) if r), None)
            if reason is not None:
                stopped = reason
                break
            start, clock_start = time.perf_counter(), self._clock()
            deadlines = [d for d in (cb.epoch_deadline(self, clock_start) for cb in self.callbacks) if d is not None]
            deadline = min(deadlines) if deadlines else None
            lr = float(self.optimizer.param_groups[0]["lr"])  # the rate the epoch starts with
            loss, out_of_time = self._epoch(deadline)
            # rank 0's clock decides, so every rank sees the same training time and budget decisions
            seconds, counted = dist_helpers.broadcast_object((time.perf_counter() - start, self._clock() - clock_start))
            self.training_seconds += float(counted)
            self.epoch += 1
            record: dict[str, Any] = {"epoch": self.epoch, "loss": loss, "seconds": float(seconds),
                                      "training_seconds": self.training_seconds, "partial": out_of_time}
            if self.cfg.time_budget_clock == "process_cpu":
                record["cpu_seconds"] = float(counted)
            if self.scheduler is not None:
                record["lr"] = lr
            if self.epoch_terms:
                record["terms"] = dict(self.epoch_terms)
            last = self.epoch >= self.cfg.epochs or out_of_time
            if has_valid and (self.epoch % self.eval_cfg.every == 0 or last):
                t0 = time.perf_counter()
                result = self.validate()
                value = self._selection_value(result)
                record["valid"] = {k: result.get(k, side=result.default_side, policy=self.eval_cfg.tie_policy)
                                   for k in ("mrr", "hits@1", "hits@3", "hits@10")}
                record["valid_seconds"] = time.perf_counter() - t0
                for callback in self.callbacks:  # legacy test reporting, best-model selection
                    callback.on_validation(self, result, value, record)
                if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    self.scheduler.step(value)
                best = f"{self.best_metric:.4f}" if self.best_metric is not None else "none"
                self.log(f"epoch {self.epoch}: loss {loss:.4f}, valid {self.eval_cfg.metric} {value:.4f} "
                         f"(best {best} at {self.best_epoch})")
            else:
                self.log(f"epoch {self.epoch}: loss {loss:.4f} ({seconds:.1f} s)")
            if (self.scheduler is not None and self.cfg.scheduler.interval == "epoch"
                    and not isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)):
                self.scheduler.step()
            self.history.append(record)
            for callback in self.callbacks:  # trackers (may stop the run: the tuner's pruning), checkpoint "last"
                callback.on_epoch_end(self, record)
            reason = next((r for r in (cb.stop_after_epoch(self, record) for cb in self.callbacks) if r), None)
            if reason is not None:
                stopped = reason
                break
        self._load_best()
        return TrainingSummary(self.epoch, stopped, self.best_epoch, self.best_metric, self.training_seconds,
                               list(self.history))

    def _load_best(self) -> None:
        if self._best_state is not None:
            self.model.load_state_dict(self._best_state)
            return
        best = self._checkpoint_dir("best")
        if best is not None and best.exists():
            load_checkpoint(best, self.model, map_location=self.device)

