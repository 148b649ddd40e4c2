"""Training regimes as loop classes (the PyKEEN ``TrainingLoop`` split): how an epoch is cut into batches and
what one batch's loss is.  The :class:`~mmkgc.training.trainer.Trainer` owns everything common (optimiser,
mixed precision, DDP, auxiliary steps, gradient clipping, callbacks) and asks its loop for

* :meth:`TrainingLoop.local_batches`: this rank's part of every global batch of the epoch, as the tensors
  :meth:`TrainingLoop.batch_loss` takes plus the factor the rank's mean loss is multiplied by (1 in one process);
* :meth:`TrainingLoop.batch_loss`: ``(loss [], logged terms)`` of one local batch.

Loops are resolved by ``training.loop`` through :data:`loop_resolver` (``negative_sampling`` ->
:class:`NegativeSamplingLoop`, ``one_to_n`` -> :class:`OneToNLoop`, ``link_bce`` -> :class:`LinkBCELoop`, VEMP's
stage 2).  A new regime is one subclass registered there.

Determinism: every draw (positive order, negatives) comes from the ``generator`` the trainer passes (seeded by the
experiment seed and checkpointed), so a loop never owns random state of its own.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from class_resolver import ClassResolver

from mmkgc import distributed as dist_helpers
from mmkgc.training.losses import build_loss, l2_regularizer, n3_regularizer
from mmkgc.data.sampling import openke_tail_probability
from mmkgc.training.sampling import (
    BernoulliNegativeSampler,
    OneToNBatch,
    OneToNBatcher,
    TripleBatcher,
    UniformNegativeSampler,
)

if TYPE_CHECKING:  # configuration objects are duck-typed at run time (layering: training never imports config)
    from mmkgc.config import TrainingConfig
    from mmkgc.data.triples import TripleSet
    from mmkgc.models.kge import KGEModel

__all__ = ["LinkBCELoop", "NegativeSamplingLoop", "OneToNLoop", "TrainingLoop", "loop_resolver",
           "training_negatives"]


class TrainingLoop(ABC):
    """One training regime: batching of the train split and the loss of a batch.

    :param model: the :class:`~mmkgc.models.kge.KGEModel` (already on ``device``).
    :param triples: the dataset (``train`` is batched).
    :param training: the ``training`` section (duck-typed: ``batch_size``, ``loss``, ``regularizer``,
        ``regularizer_weight`` and the fields each subclass names).
    :param generator: the run's shared seeded stream (positive order, replicated negatives).
    :param device: where batches are moved before scoring.
    :param amp_dtype: autocast dtype of the forward pass (``torch.bfloat16`` / ``torch.float16``) or ``None``.
    """

    #: whether a batch's loss may leave some trainable parameters out (DDP must then look for unused parameters
    #: after each forward pass, :class:`torch.nn.parallel.DistributedDataParallel`'s ``find_unused_parameters``)
    unused_parameters: bool = False

    def __init__(self, model: KGEModel, triples: TripleSet, training: TrainingConfig,
                 generator: torch.Generator, device: torch.device, amp_dtype: torch.dtype | None = None):
        self.model = model
        self.triples = triples
        self.cfg = training
        self.generator = generator
        self.device = torch.device(device)
        self.amp_dtype = amp_dtype
        #: the batch iterator (``len()`` = batches per epoch); replaceable, e.g. by a benchmark on a subset
        self.batcher: Any = None
        #: the loss object given to the model's loss method
        self.loss: Any = None

    def __len__(self) -> int:
        return len(self.batcher)

    def autocast(self):
        """Autocast to ``amp_dtype`` for the forward pass, or nothing for fp32."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def regularization(self, entities: list[torch.Tensor], relations: torch.Tensor) -> torch.Tensor | float:
        """N3 (Lacroix et al., 2018; complex modulus for ComplEx/RotatE layouts) or L2 over the entity vectors
        ``[B, De]`` and relation vectors ``[B, Dr]`` used by the batch (0.0 when off)."""
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

    @abstractmethod
    def local_batches(self, rank: int = 0, world_size: int = 1,
                      rank_generator: torch.Generator | None = None
                      ) -> Iterator[tuple[tuple[torch.Tensor, ...], float]]:
        """This rank's part of every global batch of one epoch: ``(tensors for batch_loss, loss factor)``.

        The factor is :func:`mmkgc.distributed.batch_shard`'s: averaged over ranks by DDP, the scaled losses give
        the gradient of the global batch's mean loss.  In one process every factor is 1 and the batches are those
        of the plain loop.

        :param rank_generator: this rank's own stream (``distributed_negatives: per_rank``), re-seeded per epoch.
        """

    @abstractmethod
    def batch_loss(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(loss [], {term name: detached value []})`` of one local batch given as tensors."""


class NegativeSamplingLoop(TrainingLoop):
    """sLCWA: each positive ``(h, r, t)`` against ``training.num_negatives`` corrupted triples (uniform or
    Bernoulli corruption, filtered against train when ``filtered_negatives``) under a pairwise or self-adversarial
    loss (Bordes et al. 2013; Sun et al. 2019).

    Batch tensors: ``(positives [B, 3], negative entities [B, K], tail_corrupted [B, K])``.
    Under DDP, ``distributed_negatives: replicated`` draws the whole global batch's negatives from the shared
    stream (the same negatives as one process), ``per_rank`` draws the rank's slice from its own stream.
    """

    def __init__(self, model: KGEModel, triples: TripleSet, training: TrainingConfig,
                 generator: torch.Generator, device: torch.device, amp_dtype: torch.dtype | None = None):
        super().__init__(model, triples, training, generator, device, amp_dtype)
        self.batcher = TripleBatcher(triples.train, training.batch_size, mode=training.positives,
                                     generator=generator)
        filter_index = triples.train_index if training.filtered_negatives else None
        if training.sampler in ("bernoulli", "openke_bernoulli"):
            tail_probability = triples.tail_corruption_probability
            if training.sampler == "openke_bernoulli":
                tail_probability = openke_tail_probability(tail_probability)
            self.sampler: Any = BernoulliNegativeSampler(
                triples.num_entities, training.num_negatives, tail_probability,
                filtered_by=filter_index, generator=generator)
        else:
            self.sampler = UniformNegativeSampler(
                triples.num_entities, training.num_negatives, filtered_by=filter_index, generator=generator)
        options: dict[str, Any] = {}
        if training.loss == "nssa":
            options["adversarial_temperature"] = training.adversarial_temperature
        elif training.loss == "margin":
            options["margin"] = training.margin
        self.loss = build_loss(training.loss, **options)

    def local_batches(self, rank=0, world_size=1, rank_generator=None):
        replicated = world_size == 1 or self.cfg.distributed_negatives == "replicated"
        for batch in self.batcher:
            start, stop, factor = dist_helpers.batch_shard(batch.shape[0], rank, world_size)
            if replicated:  # the whole global batch's negatives from the shared stream, then this rank's slice
                sample = self.sampler.sample(batch)
                yield (batch[start:stop], sample.entities[start:stop], sample.tail_corrupted[start:stop]), factor
            else:
                local = batch[start:stop]
                sample = self.sampler.sample(local, generator=rank_generator)
                yield (local, sample.entities, sample.tail_corrupted), factor

    def batch_loss(self, positives: torch.Tensor, entities: torch.Tensor | None = None,
                   tail_corrupted: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The model's ``negative_sampling_loss`` plus the regulariser; negatives are drawn from the shared stream
        when not given."""
        if entities is None or tail_corrupted is None:
            sample = self.sampler.sample(positives)
            entities, tail_corrupted = sample.entities, sample.tail_corrupted
        positives = positives.to(self.device)
        with self.autocast():
            loss, terms = self.model.negative_sampling_loss(
                positives, entities.to(self.device), tail_corrupted.to(self.device), self.loss)
        if self.cfg.regularizer == "l2" and self.cfg.regularizer_weight > 0:
            # OpenKE / NativE: structural h, t, r of every row of the batch (positives and negatives)
            loss = loss + self.cfg.regularizer_weight * self.model.l2_regularization(
                positives, entities.to(self.device), tail_corrupted.to(self.device))
        elif self.cfg.regularizer != "none" and self.cfg.regularizer_weight > 0:
            h, r, t = self.model.embed(positives)
            loss = loss + self.regularization([h, t], r)
        return loss, terms


class OneToNLoop(TrainingLoop):
    """LCWA / 1-N scoring (KvsAll): each ``(h, r)`` query of train (with reciprocal relations for head queries) is
    scored against all entities under BCE with label smoothing (Dettmers et al. 2018) or softmax cross-entropy.

    Batch tensors: ``(entities [B], relations [B], predict_tail [B] bool, labels [B, N])``.
    """

    def __init__(self, model: KGEModel, triples: TripleSet, training: TrainingConfig,
                 generator: torch.Generator, device: torch.device, amp_dtype: torch.dtype | None = None):
        super().__init__(model, triples, training, generator, device, amp_dtype)
        self.batcher = OneToNBatcher(triples, training.batch_size, reciprocal=model.reciprocal, generator=generator)
        self.sampler = None
        self.loss = build_loss(training.loss, label_smoothing=training.label_smoothing)

    def local_batches(self, rank=0, world_size=1, rank_generator=None):
        for idx in self.batcher.index_batches():
            start, stop, factor = dist_helpers.batch_shard(idx.shape[0], rank, world_size)
            b = self.batcher.make_batch(idx[start:stop])
            yield (b.entities, b.relations, b.predict_tail, b.labels), factor

    def batch_loss(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The model's ``one_to_n_loss`` plus the regulariser of the known entity and the relation of each query."""
        batch = OneToNBatch(*tensors)
        known = batch.entities.to(self.device)
        relations = batch.relations.to(self.device)
        tail = batch.predict_tail.to(self.device)
        zeros = torch.zeros_like(known)
        # Tail queries are (e, r, ?); head queries without reciprocal relations are (?, r, e).
        queries = torch.stack([torch.where(tail, known, zeros), relations, torch.where(tail, zeros, known)], 1)
        with self.autocast():
            loss, terms, ents = self.model.one_to_n_loss(queries, tail, batch.labels.to(self.device), self.loss)
        ents = ents.float()
        # 1-N batches hold queries, not triples: regularise the known entity and the relation of each query.
        return loss + self.regularization([ents[known]], self.model.relations(relations)), terms


def training_negatives(src: torch.Tensor, num_nodes: int, mode: str, generator: torch.Generator
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """One negative ``(source, destination)`` pair per positive edge for the binary link loss.

    * ``binary``: both endpoints uniform over the ``num_nodes`` nodes, drawn independently (sources first) and not
      checked against known edges -- PyG's binary negative sampling, which VEMP's ``LinkNeighborLoader(...,
      neg_sampling_ratio=1.0)`` uses (PyG 2.8 ``sampler/neighbor_sampler.py``, ``edge_sample``: ``src_neg`` and
      ``dst_neg`` from ``torch.randint``);
    * ``tail``: the positive's source and a uniform destination.

    :param src: int64 ``[B]`` sources of the positive edges.
    :returns: int64 ``[B]`` negative sources and ``[B]`` negative destinations.
    :raises ValueError: unknown ``mode``.
    """
    b = src.shape[0]
    if mode == "binary":
        neg_src = torch.randint(num_nodes, (b,), generator=generator)
        return neg_src, torch.randint(num_nodes, (b,), generator=generator)
    if mode == "tail":
        return src, torch.randint(num_nodes, (b,), generator=generator)
    raise ValueError(f"negatives must be 'binary' or 'tail', got {mode!r}")


class _EdgeBatches:
    """Batches per epoch of the link-BCE loop: ``ceil(supervision edges / batch_size)``."""

    def __init__(self, num_edges: int, batch_size: int):
        self.num_edges, self.batch_size = num_edges, batch_size

    def __len__(self) -> int:
        return -(-self.num_edges // self.batch_size)


class LinkBCELoop(TrainingLoop):
    """VEMP's stage-2 regime (Sela et al.; methods.md 2.4, with the fix of bug 2.7.3): binary cross-entropy over
    each supervision edge ``(u, r, v)`` (label 1) and one negative edge (label 0) per positive,
    ``L = mean BCEWithLogits([s(u, r, v); s(u', r, v')], [1; 0])`` over the ``2B`` logits of a batch.

    Each epoch draws a permutation of the training triples; the first ``link_bce.disjoint_supervision`` fraction
    are the epoch's supervision edges, in batches of ``batch_size``, and the rest its message-passing graph
    (:attr:`~mmkgc.models.rgcn.RGCNRepresentation.training_graph`, for representations that have one), so a
    supervised edge never carries a message (``0``: every training edge is both, as the public code).  Negatives:
    :func:`training_negatives` (``link_bce.negatives``).  The batch's nodes ``[src, dst, (neg_src,) neg_dst]`` are
    encoded together (:meth:`~mmkgc.models.rgcn.RGCNRepresentation.encode`: one subgraph sampled around them with
    the run's stream when the representation has fan-outs), then scored by the model's scorer; the negative takes
    the positive's relation (ignored by the relation-agnostic ``mlp_link`` scorer).

    Draw order on the run's stream (one process): the epoch's permutation, then per batch the negatives and the
    subgraph, so a run repeats VEMP stage 2 as mmkgc ran it before this loop existed.  Under DDP every rank draws
    the same permutation and negatives for the global batch and scores its contiguous slice of it
    (:func:`~mmkgc.distributed.batch_shard`); the subgraph depends on ``training.distributed_negatives``:

    * ``replicated``: every rank encodes the subgraph sampled from the shared stream around the *whole* global
      batch's nodes (one process's draw) and keeps its slice's vectors, so two processes take the one-process
      updates (up to summation order; the decoder's dropout masks are drawn for the rank's rows, so with dropout
      the match is in distribution) at the cost of running the encoder on the global batch on every rank;
    * ``per_rank`` (default): a rank samples its subgraph around its slice's nodes from its own stream, so the
      encoder's work is split, but a node's sampled neighbourhood (and so its vector) differs from one process's
      and the updates are not the one-process ones (the gradients are still averaged, every rank still holds the
      same parameters after each step).

    Without ``fanouts`` (full-graph encoding) nothing is sampled and both modes take the one-process updates.

    Batch tensors: ``(positives [B, 3], negative sources [B], negative destinations [B])``, plus under DDP with
    ``replicated`` the rows ``[2]`` (start, stop) of the rank's slice, the other tensors then being the global
    batch's.
    """

    #: the relation table of a relation-agnostic scorer (``mlp_link``) gets no gradient, and a sampled subgraph
    #: may hold no edge of some relation types (their R-GCN weights then get none in that step)
    unused_parameters = True

    def __init__(self, model: KGEModel, triples: TripleSet, training: TrainingConfig,
                 generator: torch.Generator, device: torch.device, amp_dtype: torch.dtype | None = None):
        super().__init__(model, triples, training, generator, device, amp_dtype)
        options = training.link_bce
        self.negatives = options.negatives
        self.disjoint_supervision = float(options.disjoint_supervision)
        n = triples.train.shape[0]
        supervised = int(round(self.disjoint_supervision * n)) or n
        self.batcher = _EdgeBatches(supervised, training.batch_size)
        self.loss = torch.nn.BCEWithLogitsLoss()
        self._subgraph_generator: torch.Generator = generator

    def local_batches(self, rank=0, world_size=1, rank_generator=None):
        train = self.triples.train
        perm = torch.randperm(train.shape[0], generator=self.generator)
        n_sup = int(round(self.disjoint_supervision * train.shape[0]))
        if n_sup > 0:
            sup, msg = train[perm[:n_sup]], train[perm[n_sup:]]
        else:  # the public code: supervision edges are the message-passing edges
            sup, msg = train[perm], train
        rep = self.model.entities
        if hasattr(rep, "training_graph"):
            rep.training_graph = rep.graph_of(msg)
        per_rank = world_size > 1 and rank_generator is not None and self.cfg.distributed_negatives == "per_rank"
        self._subgraph_generator = rank_generator if per_rank else self.generator
        size = self.cfg.batch_size
        for s in range(0, sup.shape[0], size):
            batch = sup[s:s + size]
            neg_src, neg_dst = training_negatives(batch[:, 0], self.triples.num_entities, self.negatives,
                                                  self.generator)
            start, stop, factor = dist_helpers.batch_shard(batch.shape[0], rank, world_size)
            if world_size == 1 or per_rank:
                yield (batch[start:stop], neg_src[start:stop], neg_dst[start:stop]), factor
            else:  # replicated: the global batch's nodes are encoded (the one-process subgraph), the slice scored
                yield (batch, neg_src, neg_dst, torch.tensor([start, stop])), factor

    def batch_loss(self, positives: torch.Tensor, neg_src: torch.Tensor, neg_dst: torch.Tensor,
                   rows: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(BCE loss [], {})`` of one batch (see the class docstring); with ``rows`` (start, stop) the nodes of
        every row are encoded and only rows ``start:stop`` are scored."""
        b = positives.shape[0]
        lo, hi = (0, b) if rows is None else (int(rows[0]), int(rows[1]))
        src, dst = positives[:, 0], positives[:, 2]
        tail = self.negatives == "tail"
        seeds = torch.cat([src, dst, neg_dst] if tail else [src, dst, neg_src, neg_dst]).to(self.device)
        rep = self.model.entities
        scorer = self.model.scorer
        with self.autocast():
            if hasattr(rep, "encode"):
                z = rep.encode(seeds, generator=self._subgraph_generator)
            else:
                z = rep(seeds)
            r = self.model.relations(positives[lo:hi, 1].to(self.device))
            last = z.shape[0] - b  # first row of the negative destinations' block
            z_src, z_dst, z_neg_dst = z[lo:hi], z[b + lo:b + hi], z[last + lo:last + hi]
            z_neg_src = z_src if tail else z[2 * b + lo:2 * b + hi]
            logits = torch.cat([scorer.score_hrt(z_src, r, z_dst), scorer.score_hrt(z_neg_src, r, z_neg_dst)])
        labels = torch.cat([torch.ones(hi - lo), torch.zeros(hi - lo)]).to(self.device)
        return self.loss(logits.float(), labels), {}


#: ``training.loop`` -> loop class (``negative_sampling``, ``one_to_n``, ``link_bce``; names are normalised, so
#: ``NegativeSampling`` or ``negative-sampling`` resolve too).
loop_resolver: ClassResolver[TrainingLoop] = ClassResolver(
    [NegativeSamplingLoop, OneToNLoop, LinkBCELoop], base=TrainingLoop, suffix="Loop")
