"""The training loop: epochs of optimisation steps, validation with early stopping, checkpoints and resume.

One loop serves both training regimes of the field:

* ``negative_sampling`` (sLCWA): each positive triple is scored against ``K`` corrupted triples (uniform or
  Bernoulli, filtered against train) under a pairwise or self-adversarial loss (Bordes et al. 2013; Sun et al.
  2019);
* ``one_to_n`` (LCWA / 1-N scoring): each ``(h, r)`` query of train (with reciprocal relations for head queries)
  is scored against all entities under BCE with label smoothing (Dettmers et al. 2018).

Determinism: every random draw (positive order, negatives, dropout) comes from generators seeded by the
experiment seed, and their states are checkpointed, so a resumed run continues the same random streams.

Distributed training (``torchrun``; :mod:`mmkgc.distributed`): every rank draws the same positive order from the
shared seeded stream and takes its contiguous slice of each global batch; negatives come from the rank's own
stream seeded by ``(seed, epoch, rank)`` (``training.distributed_negatives: per_rank``) or from the shared stream
for the whole global batch (``replicated``: the same batches and negatives as one process).  The model is wrapped
in :class:`torch.nn.parallel.DistributedDataParallel` through :class:`TrainingStep`, whose ``forward`` computes
the loss, so DDP averages the gradients; each rank's loss is scaled so that the average is the gradient of the
global batch's mean loss.  Only rank 0 logs, writes ``metrics.jsonl`` and checkpoints (of the unwrapped model);
every rank validates on its shard of the queries and gets the same gathered metrics, and rank 0's early-stopping
and time-budget decisions are broadcast.  A checkpoint written by any world size resumes under any other, since
the shared stream is identical on all ranks and the per-rank streams are re-derived from ``(seed, epoch, rank)``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmkgc import distributed as dist_helpers
from mmkgc.config import EvaluationConfig, SchedulerConfig, TrainingConfig
from mmkgc.errors import ConfigError, TrainingInterrupted
from mmkgc.data.triples import TripleSet
from mmkgc.evaluation.metrics import EvaluationResult, evaluate
from mmkgc.models.inductive import modality_structures, pop_auxiliary_losses
from mmkgc.models.kge import KGEModel
from mmkgc.training.checkpoint import (
    load_checkpoint,
    read_auxiliary_state,
    read_checkpoint_state,
    read_scheduler_state,
    save_checkpoint,
)
from mmkgc.training.losses import build_loss, l2_regularizer, n3_regularizer
from mmkgc.training.sampling import (
    BernoulliNegativeSampler,
    OneToNBatch,
    OneToNBatcher,
    TripleBatcher,
    UniformNegativeSampler,
)
from mmkgc.training.tracking import FileTracker, ResultTracker


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


#: Metrics tracked by ``evaluation.report: legacy_best_test_per_metric``.
LEGACY_METRICS = ("mrr", "mr", "hits@1", "hits@3", "hits@10")


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

    :param model: the model (moved to ``device``).
    :param triples: the dataset; training uses ``train``, selection uses ``evaluation.split``.
    :param training: optimisation options.
    :param evaluation: validation / early-stopping options.
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
    ):
        self.model = model.to(device)
        self.triples = triples
        self.cfg = training
        self.eval_cfg = evaluation
        self.seed = seed
        self.device = torch.device(device)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.fingerprint = fingerprint or {}
        self.progress = progress
        self.rank = dist_helpers.get_rank()
        self.world_size = dist_helpers.get_world_size()
        main = self.rank == 0
        self.progress = progress and main
        #: read the step losses every this many steps (``None``: every step on the CPU, every 25 on a GPU)
        self.sync_every: int | None = None
        self.log = (log or (lambda line: None)) if main else (lambda line: None)
        #: extra per-batch steps over their own parameter groups (generator, estimator; mmkgc.training.steps)
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
        if self.world_size > 1 and self.aux_steps:
            raise ConfigError("auxiliary optimisation steps (adversarial generators, estimators) are not supported "
                              "under DDP: their gradients would not be averaged across ranks; train with one process")
        if self.world_size > 1:
            if training.sparse and torch.distributed.get_backend() == "nccl":
                raise ConfigError("training.sparse: true under DDP is supported with the gloo backend only")
            import inspect

            ddp_cls = torch.nn.parallel.DistributedDataParallel
            # Buffers are frozen feature tables, identical on every rank: synced once at construction, never per step.
            no_sync = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(ddp_cls).parameters
                       else "broadcast_buffers")
            self.ddp = ddp_cls(TrainingStep(self.model, self._step_loss),
                               device_ids=[self.device.index] if self.device.type == "cuda" else None,
                               **{no_sync: False})
        #: negatives of this rank under DDP with ``distributed_negatives: per_rank`` (re-seeded every epoch).
        self.rank_generator = torch.Generator()

        self.generator = torch.Generator().manual_seed(seed)
        train = triples.train
        if training.loop == "negative_sampling":
            self.batcher = TripleBatcher(train, training.batch_size, mode=training.positives, generator=self.generator)
            filter_index = triples.train_index if training.filtered_negatives else None
            if training.sampler == "bernoulli":
                self.sampler = BernoulliNegativeSampler(
                    triples.num_entities,
                    training.num_negatives,
                    triples.tail_corruption_probability,
                    filtered_by=filter_index,
                    generator=self.generator,
                )
            else:
                self.sampler = UniformNegativeSampler(
                    triples.num_entities,
                    training.num_negatives,
                    filtered_by=filter_index,
                    generator=self.generator,
                )
            options: dict[str, Any] = {}
            if training.loss == "nssa":
                options["adversarial_temperature"] = training.adversarial_temperature
            elif training.loss == "margin":
                options["margin"] = training.margin
            self.loss = build_loss(training.loss, **options)
        else:
            self.batcher = OneToNBatcher(
                triples, training.batch_size, reciprocal=model.reciprocal, generator=self.generator
            )
            self.sampler = None
            self.loss = build_loss(training.loss, label_smoothing=training.label_smoothing)

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

    # ------------------------------------------------------------------------------------------ steps
    def _regularization(self, entities: list[torch.Tensor], relations: torch.Tensor) -> torch.Tensor | float:
        """N3 (Lacroix et al., 2018; complex modulus for ComplEx/RotatE layouts) or L2 over the entity vectors
        ``[B, De]`` and relation vectors ``[B, Dr]`` used by the batch."""
        if self.cfg.regularizer == "none" or self.cfg.regularizer_weight == 0:
            return 0.0
        weight = self.cfg.regularizer_weight
        if self.cfg.regularizer == "n3":
            scorer = self.model.scorer
            complex_entities = scorer.entity_dim == 2 * scorer.dim
            complex_relations = scorer.relation_dim == 2 * scorer.dim
            return (n3_regularizer(*entities, weight=weight, complex_layout=complex_entities)
                    + n3_regularizer(relations, weight=weight, complex_layout=complex_relations))
        return l2_regularizer(*entities, relations, weight=weight)

    def _autocast(self):
        """Autocast to ``training.precision`` (bf16/fp16) for the forward pass, or nothing for fp32."""
        if self._amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self._amp_dtype)

    def _step_loss(self, *tensors: torch.Tensor) -> torch.Tensor:
        """The loss of one (local) batch given as tensors: ``(positives [B, 3], negative entities [B, K],
        tail_corrupted [B, K])`` or ``(entities [B], relations [B], predict_tail [B], labels [B, N])``."""
        if not self._substitutes:
            if self.cfg.loop == "negative_sampling":
                return self._negative_sampling_step(*tensors)
            return self._one_to_n_step(OneToNBatch(*tensors))
        pop_auxiliary_losses(self._substitutes)  # anything recorded outside this step (auxiliary steps) is dropped
        if self.cfg.loop == "negative_sampling":
            loss = self._negative_sampling_step(*tensors)
        else:
            loss = self._one_to_n_step(OneToNBatch(*tensors))
        extra, terms = pop_auxiliary_losses(self._substitutes)
        if extra is not None:
            loss = loss + extra
            self._terms = {**self._terms, **terms}
        return loss

    def _negative_sampling_step(self, positives: torch.Tensor, entities: torch.Tensor | None = None,
                                tail_corrupted: torch.Tensor | None = None) -> torch.Tensor:
        if entities is None or tail_corrupted is None:
            sample = self.sampler.sample(positives)
            entities, tail_corrupted = sample.entities, sample.tail_corrupted
        positives = positives.to(self.device)
        with self._autocast():
            loss, terms = self.model.negative_sampling_loss(
                positives, entities.to(self.device), tail_corrupted.to(self.device), self.loss)
        self._terms = terms
        if self.cfg.regularizer == "l2" and self.cfg.regularizer_weight > 0:
            # OpenKE / NativE: structural h, t, r of every row of the batch (positives and negatives)
            loss = loss + self.cfg.regularizer_weight * self.model.l2_regularization(
                positives, entities.to(self.device), tail_corrupted.to(self.device))
        elif self.cfg.regularizer != "none" and self.cfg.regularizer_weight > 0:
            h, r, t = self.model.embed(positives)
            loss = loss + self._regularization([h, t], r)
        return loss

    def _one_to_n_step(self, batch: OneToNBatch) -> torch.Tensor:
        """1-N scoring: every query against all entities under BCE (Dettmers et al., 2018)."""
        known = batch.entities.to(self.device)
        relations = batch.relations.to(self.device)
        tail = batch.predict_tail.to(self.device)
        zeros = torch.zeros_like(known)
        # Tail queries are (e, r, ?); head queries without reciprocal relations are (?, r, e).
        queries = torch.stack([torch.where(tail, known, zeros), relations, torch.where(tail, zeros, known)], 1)
        with self._autocast():
            loss, terms, ents = self.model.one_to_n_loss(queries, tail, batch.labels.to(self.device), self.loss)
        self._terms = terms
        ents = ents.float()
        # 1-N batches hold queries, not triples: regularise the known entity and the relation of each query.
        return loss + self._regularization([ents[known]], self.model.relations(relations))

    def _local_batches(self):
        """This rank's part of every global batch of the epoch: ``(tensors for _step_loss, loss factor)``.

        In a single process the factor is 1 and the batches and negatives are exactly those of the plain loop.
        """
        rank, world = self.rank, self.world_size
        if self.cfg.loop == "negative_sampling":
            replicated = world == 1 or self.cfg.distributed_negatives == "replicated"
            for batch in self.batcher:
                start, stop, factor = dist_helpers.batch_shard(batch.shape[0], rank, world)
                if replicated:  # the whole global batch's negatives from the shared stream, then this rank's slice
                    sample = self.sampler.sample(batch)
                    yield (batch[start:stop], sample.entities[start:stop], sample.tail_corrupted[start:stop]), factor
                else:
                    local = batch[start:stop]
                    sample = self.sampler.sample(local, generator=self.rank_generator)
                    yield (local, sample.entities, sample.tail_corrupted), factor
        else:
            for idx in self.batcher.index_batches():
                start, stop, factor = dist_helpers.batch_shard(idx.shape[0], rank, world)
                b = self.batcher.make_batch(idx[start:stop])
                yield (b.entities, b.relations, b.predict_tail, b.labels), factor

    def _epoch(self, deadline: float | None) -> tuple[float, bool]:
        """One pass; returns (mean loss, ran out of time)."""
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
            for i, value in enumerate(values):
                if not np.isfinite(value):
                    raise FloatingPointError(
                        f"training loss became {value} at epoch {self.epoch + 1}, step {first_step + i}; "
                        "lower the learning rate or check the features"
                    )
            settled = 0.0
            for value, weight in zip(values, pending_weights):
                settled += value * weight
            pending_losses.clear()
            pending_weights.clear()
            for key, vals in pending_terms.items():
                for value in torch.stack([v.float() for v in vals]).tolist():
                    if key in aux_keys and not np.isfinite(value):
                        raise FloatingPointError(f"auxiliary step {key!r}: loss became {value} in epoch "
                                                 f"{self.epoch + 1}")
                    term_sums[key] = term_sums.get(key, 0.0) + value
            pending_terms.clear()
            return settled
        if self.world_size > 1:
            state = np.random.SeedSequence([self.seed, self.epoch, self.rank]).generate_state(2, dtype=np.uint32)
            self.rank_generator.manual_seed(int(state[0]) << 32 | int(state[1]))
        batches = self._local_batches()
        num = len(self.batcher)
        bar = None
        if self.progress:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            bar = Progress(TextColumn(f"epoch {self.epoch + 1}"), BarColumn(), TextColumn("{task.fields[loss]}"),
                           TimeRemainingColumn(), transient=True)
            task = bar.add_task("train", total=num, loss="")
            bar.start()
        try:
            for tensors, factor in batches:
                self.optimizer.zero_grad(set_to_none=True)
                if self.ddp is not None:
                    loss = self.ddp(*tensors)
                else:
                    loss = self._step_loss(*tensors)
                if sync_every == 1 and not torch.isfinite(loss):  # CPU: stop before the step is applied
                    raise FloatingPointError(
                        f"training loss became {loss.item()} at epoch {self.epoch + 1}, step {self.step}; "
                        "lower the learning rate or check the features"
                    )
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
                    for key, value in aux.step(*tensors, check_finite=sync_every == 1).items():
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
                if bar is not None:
                    settled = count - len(pending_losses)
                    bar.update(task, advance=1, loss=f"loss {total / max(settled, 1):.4f}" if settled else "")
                if deadline is not None:
                    out_of_time = dist_helpers.broadcast_flag(self._clock() >= deadline)
                    if out_of_time:
                        break
            total += settle()
        finally:
            if bar is not None:
                bar.stop()
        if self.world_size > 1:
            total = dist_helpers.all_reduce_sum([total])[0]
        self.epoch_terms = {k: v / max(count, 1) for k, v in term_sums.items()}
        return total / max(count, 1), out_of_time

    # ------------------------------------------------------------------------------------------ validation
    def validate(self) -> EvaluationResult:
        """Filtered ranks on the selection split (``evaluation.split``)."""
        self.model.eval()
        return evaluate(
            self.model.score_fn(),
            self.triples,
            split=self.eval_cfg.split,
            batch_size=self.eval_cfg.batch_size,
            sampled_candidates=self.eval_cfg.sampled_candidates,
            policies=evaluation_policies(self.eval_cfg),
            seed=self.seed,
        )

    def _legacy_test(self) -> dict[str, float]:
        """Legacy report mode: evaluate on *test* now and keep each metric's best value so far (``mr``: lowest).
        This selects on the test set and is only for reproducing the MoMoK/IMVIA numbers."""
        self.model.eval()
        result = evaluate(self.model.score_fn(), self.triples, split="test", batch_size=self.eval_cfg.batch_size,
                          sampled_candidates=self.eval_cfg.sampled_candidates,
                          policies=evaluation_policies(self.eval_cfg), seed=self.seed)
        now = {k: float(result.get(k, side="both", policy=self.eval_cfg.tie_policy)) for k in LEGACY_METRICS}
        for key, value in now.items():
            best = self.legacy_best_test.get(key)
            better = best is None or (value < best["value"] if key == "mr" else value > best["value"])
            if better:
                self.legacy_best_test[key] = {"value": value, "epoch": self.epoch}
        return now

    def _selection_value(self, result: EvaluationResult) -> float:
        return float(result.get(self.eval_cfg.metric, side="both", policy=self.eval_cfg.tie_policy))

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
        """Checkpoint the unwrapped model (rank 0 only; the other ranks hold identical weights)."""
        path = self._checkpoint_dir(which)
        if path is not None and self.rank == 0:
            save_checkpoint(path, self.model, self._state(), self.optimizer, self._rng_state(),
                            auxiliary={step.name: step.state_dict() for step in self.aux_steps},
                            scheduler=self.scheduler.state_dict() if self.scheduler is not None else None)

    def resume(self) -> bool:
        """Continue from ``run_dir/checkpoints/last`` if it exists; returns whether it did.

        :raises CheckpointError: the checkpoint is corrupt, or was written for another config or feature table.
        """
        path = self._checkpoint_dir("last")
        if path is None or not (path.exists() or path.with_name("last.old").exists()):
            return False
        from mmkgc.errors import CheckpointError

        saved = read_checkpoint_state(path)
        if saved.get("fingerprint") != self.fingerprint:
            raise CheckpointError(
                f"{path}: checkpoint was written for a different config or feature table "
                f"(saved {saved.get('fingerprint')}, now {self.fingerprint}); start a new run directory"
            )
        state, rng = load_checkpoint(path, self.model, self.optimizer, map_location=self.device)
        auxiliary = read_auxiliary_state(path, map_location=self.device)
        for step in self.aux_steps:
            if step.name not in auxiliary:
                raise CheckpointError(f"{path}: no saved state for auxiliary step {step.name!r}")
            step.load_state_dict(auxiliary[step.name])
        if self.scheduler is not None:
            saved_schedule = read_scheduler_state(path, map_location=self.device)
            if saved_schedule is None:
                raise CheckpointError(f"{path}: the config has training.scheduler {self.cfg.scheduler.name} but the "
                                      "checkpoint holds no scheduler state; start a new run directory")
            self.scheduler.load_state_dict(saved_schedule)
        self.epoch = state["epoch"]
        self.step = state["step"]
        self.training_seconds = state["training_seconds"]
        self.best_metric = state["best_metric"]
        self.best_epoch = state["best_epoch"]
        self.bad_validations = state["bad_validations"]
        self.history = state["history"]
        self.legacy_best_test = state.get("legacy_best_test") or {}
        if state.get("grad_scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["grad_scaler"])
        if "sampler" in rng:
            self.generator.set_state(rng["sampler"])
        if "torch_global" in rng:
            torch.set_rng_state(rng["torch_global"])
        self.log(f"resumed from {path} at epoch {self.epoch}")
        return True

    def _append_log(self, record: dict[str, Any]) -> None:
        """Give the epoch's record to every tracker (``metrics.jsonl`` by default; rank 0 only)."""
        for tracker in self.trackers:
            tracker.log_metrics(record, step=int(record["epoch"]))

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
        budget = self.cfg.time_budget_minutes * 60.0 if self.cfg.time_budget_minutes else None
        has_valid = self.triples.split(self.eval_cfg.split).shape[0] > 0
        stopped = "max_epochs"
        if self.epoch == 0:
            torch.manual_seed(self.seed)  # dropout and other global draws; restored from checkpoints on resume
        while self.epoch < self.cfg.epochs:
            if budget is not None and self.training_seconds >= budget:
                stopped = "time_budget"
                break
            start, clock_start = time.perf_counter(), self._clock()
            deadline = clock_start + (budget - self.training_seconds) if budget is not None else None
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
                record["valid"] = {k: result.get(k, side="both", policy=self.eval_cfg.tie_policy)
                                   for k in ("mrr", "hits@1", "hits@3", "hits@10")}
                record["valid_seconds"] = time.perf_counter() - t0
                if self.eval_cfg.report == "legacy_best_test_per_metric" and self.triples.test.shape[0] > 0:
                    record["legacy_test"] = self._legacy_test()
                if self.best_metric is None or value > self.best_metric:
                    self.best_metric, self.best_epoch, self.bad_validations = value, self.epoch, 0
                    self._best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                    self.save("best")
                else:
                    self.bad_validations += 1
                if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    self.scheduler.step(value)
                self.log(f"epoch {self.epoch}: loss {loss:.4f}, valid {self.eval_cfg.metric} {value:.4f} "
                         f"(best {self.best_metric:.4f} at {self.best_epoch})")
            else:
                self.log(f"epoch {self.epoch}: loss {loss:.4f} ({seconds:.1f} s)")
            if (self.scheduler is not None and self.cfg.scheduler.interval == "epoch"
                    and not isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)):
                self.scheduler.step()
            self.history.append(record)
            self._append_log(record)  # a tracker may stop the run here (the tuner's pruning)
            self.save("last")
            if out_of_time:
                stopped = "time_budget"
                break
            early = self.eval_cfg.patience is not None and self.bad_validations >= self.eval_cfg.patience
            if dist_helpers.broadcast_flag(early):  # every rank follows rank 0's decision
                stopped = "early_stopping"
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

