"""Training batches: positive batching, negative sampling (uniform / Bernoulli, train-filtered) and 1-N labels
(the data layer: the training loops and the sampled evaluation protocol both draw from here).

Negative sampling follows OpenKE's sampler (``Base.cpp`` / ``Corrupt.h``; see ``docs`` methods §1.3): for each
positive ``(h, r, t)`` and each of the ``K`` negatives independently, the tail is replaced with probability
``p_tail(r)`` (1/2 for uniform sampling; ``hpt / (tph + hpt)`` for the Bernoulli trick of Wang et al., 2014,
TransH), otherwise the head; the replacement is drawn uniformly from the entities that do **not** form a
training triple with the kept pair.  Everything is vectorised in torch and driven by a ``torch.Generator``,
so the same seed gives the same negatives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Literal

import torch

from mmkgc.data.triples import FilterIndex, TripleSet

__all__ = [
    "NegativeSample",
    "NegativeSampler",
    "UniformNegativeSampler",
    "BernoulliNegativeSampler",
    "TripleBatcher",
    "OneToNBatch",
    "OneToNBatcher",
    "openke_tail_probability",
]

Corruption = Literal["both", "head", "tail"]


def _check_triples(x: torch.Tensor, what: str) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.ndim != 2 or x.shape[1] != 3:
        raise ValueError(f"{what} must be an int64 tensor [n, 3] of (h, r, t), got shape {tuple(x.shape)}")
    return x.to(torch.long)


@dataclass
class NegativeSample:
    """Negatives of a batch of positives.

    :ivar triples: int64 ``[B, K, 3]`` (h, r, t); negative ``k`` of positive ``i`` is ``triples[i, k]``.
    :ivar tail_corrupted: bool ``[B, K]``: ``True`` where the tail was replaced, ``False`` where the head was.
    """

    triples: torch.Tensor
    tail_corrupted: torch.Tensor

    @property
    def entities(self) -> torch.Tensor:
        """The replacement entity of each negative, int64 ``[B, K]``."""
        return torch.where(self.tail_corrupted, self.triples[..., 2], self.triples[..., 0])

    def to(self, device: torch.device | str) -> "NegativeSample":
        return NegativeSample(self.triples.to(device), self.tail_corrupted.to(device))


class NegativeSampler:
    """Corrupts the head or the tail of each positive, ``K`` times, with a per-relation tail probability.

    :param num_entities: ``N``; replacements are drawn from ``[0, N)``.
    :param num_negatives: ``K`` >= 1.
    :param tail_probability: probability of replacing the tail: a float, or float ``[R]`` indexed by relation.
    :param filtered_by: if given, a :class:`FilterIndex` (normally ``TripleSet.train_index``): no negative is a
        triple of that index (OpenKE semantics; rejection resampling, then an exact draw from the complement).
    :param generator: default random source (CPU ``torch.Generator``); ``None`` uses torch's global RNG.
    :param max_rounds: rejection rounds before the exact fallback.
    :raises ValueError: for ``num_negatives < 1``, ``num_entities < 1`` or probabilities outside [0, 1].
    """

    def __init__(self, num_entities: int, num_negatives: int, tail_probability: float | torch.Tensor = 0.5,
                 filtered_by: FilterIndex | None = None, generator: torch.Generator | None = None,
                 max_rounds: int = 10):
        if int(num_entities) < 1:
            raise ValueError(f"num_entities must be >= 1, got {num_entities}")
        if int(num_negatives) < 1:
            raise ValueError(f"num_negatives must be >= 1, got {num_negatives}")
        prob = torch.as_tensor(tail_probability, dtype=torch.float32)
        if prob.ndim > 1 or bool(((prob < 0) | (prob > 1) | torch.isnan(prob)).any()):
            raise ValueError("tail_probability must be a scalar or a [R] tensor of values in [0, 1]")
        if filtered_by is not None and filtered_by.num_entities != int(num_entities):
            raise ValueError(
                f"filter index has {filtered_by.num_entities} entities but the sampler {num_entities}"
            )
        self.num_entities = int(num_entities)
        self.num_negatives = int(num_negatives)
        self.tail_probability = prob
        self.filtered_by = filtered_by
        self.generator = generator
        self.max_rounds = int(max_rounds)

    def _tail_probability(self, relations: torch.Tensor) -> torch.Tensor:
        if self.tail_probability.ndim == 0:
            return self.tail_probability.expand(relations.shape)
        num_relations = self.tail_probability.shape[0]
        if relations.numel() and (int(relations.min()) < 0 or int(relations.max()) >= num_relations):
            raise ValueError(
                f"relation id out of range [0, {num_relations}) of the per-relation tail probabilities: "
                f"min {int(relations.min())}, max {int(relations.max())}"
            )
        return self.tail_probability[relations]

    def sample(self, positives: torch.Tensor, generator: torch.Generator | None = None) -> NegativeSample:
        """Draw ``K`` negatives per positive.

        :param positives: int64 ``[B, 3]`` (h, r, t) on any device.
        :param generator: overrides the sampler's generator for this call.
        :returns: :class:`NegativeSample` on the device of ``positives``.
        """
        positives = _check_triples(positives, "positives")
        device = positives.device
        pos = positives.cpu()
        gen = generator if generator is not None else self.generator
        batch, k = pos.shape[0], self.num_negatives
        p_tail = self._tail_probability(pos[:, 1])
        tail = torch.rand(batch, k, generator=gen) < p_tail[:, None]
        triples = pos[:, None, :].expand(batch, k, 3).clone()
        entities = torch.randint(self.num_entities, (batch, k), generator=gen)
        triples[..., 2] = torch.where(tail, entities, triples[..., 2])
        triples[..., 0] = torch.where(tail, triples[..., 0], entities)
        if self.filtered_by is not None:
            self._filter(triples.view(-1, 3), tail.view(-1), gen)
        return NegativeSample(triples.to(device), tail.to(device))

    __call__ = sample

    # ------------------------------------------------------------------ filtering
    def _filter(self, flat: torch.Tensor, tail: torch.Tensor, gen: torch.Generator | None) -> None:
        """Replace, in place, every negative of ``flat [M, 3]`` that is a triple of the filter index."""
        index = self.filtered_by
        bad = torch.nonzero(index.contains(flat), as_tuple=True)[0]
        for _ in range(self.max_rounds):
            if bad.numel() == 0:
                return
            fresh = torch.randint(self.num_entities, (bad.numel(),), generator=gen)
            column = torch.where(tail[bad], 2, 0)
            flat[bad, column] = fresh
            bad = bad[index.contains(flat[bad])]
        if bad.numel():
            self._exact_fill(flat, tail, bad, gen)

    def _exact_fill(self, flat: torch.Tensor, tail: torch.Tensor, bad: torch.Tensor,
                    gen: torch.Generator | None) -> None:
        """Draw uniformly from the complement of the known answers for the rows ``bad`` (the few negatives
        left after rejection).  Rows whose kept pair is linked to every entity are left unchanged."""
        index = self.filtered_by
        n = self.num_entities
        for side_is_tail in (True, False):
            rows = bad[tail[bad] == side_is_tail]
            if rows.numel() == 0:
                continue
            side = "tail" if side_is_tail else "head"
            queries = flat[rows]
            q_rows, known = index.known(queries, side)  # q_rows ascending, entities ascending per row
            counts = torch.bincount(q_rows, minlength=rows.numel())
            allowed = n - counts
            ok = allowed > 0
            u = torch.floor(torch.rand(rows.numel(), generator=gen) * allowed.clamp_min(1)).long()
            u = torch.minimum(u, (allowed - 1).clamp_min(0))
            # The u-th allowed entity is u + #{j : s_j - j <= u} for the sorted known list s_0 < s_1 < ...
            first = torch.cumsum(counts, 0) - counts
            rank_in_row = torch.arange(known.numel()) - first[q_rows]
            shifted = q_rows * (n + 1) + (known - rank_in_row)
            target = torch.arange(rows.numel()) * (n + 1) + u
            skipped = torch.searchsorted(shifted, target, right=True) - first
            value = u + skipped
            column = 2 if side_is_tail else 0
            flat[rows[ok], column] = value[ok]


class UniformNegativeSampler(NegativeSampler):
    """Uniform negative sampling (Bordes et al., 2013): head or tail with probability 1/2 (``corruption="both"``),
    or always the head / always the tail.

    :param num_entities: ``N``.
    :param num_negatives: ``K``.
    :param corruption: ``"both"``, ``"head"`` or ``"tail"``.
    :param filtered_by: optional train :class:`FilterIndex` (see :class:`NegativeSampler`).
    :param generator: default ``torch.Generator``.
    :raises ValueError: for an unknown ``corruption``.
    """

    def __init__(self, num_entities: int, num_negatives: int, corruption: Corruption = "both",
                 filtered_by: FilterIndex | None = None, generator: torch.Generator | None = None,
                 max_rounds: int = 10):
        probs = {"both": 0.5, "head": 0.0, "tail": 1.0}
        if corruption not in probs:
            raise ValueError(f"corruption must be 'both', 'head' or 'tail', got {corruption!r}")
        self.corruption = corruption
        super().__init__(num_entities, num_negatives, probs[corruption], filtered_by, generator, max_rounds)

    @classmethod
    def from_triples(cls, triples: TripleSet, num_negatives: int, corruption: Corruption = "both",
                     filtered: bool = True, generator: torch.Generator | None = None) -> "UniformNegativeSampler":
        """Sampler for ``triples``' entities, filtered against its train split when ``filtered``."""
        return cls(triples.num_entities, num_negatives, corruption,
                   triples.train_index if filtered else None, generator)


class BernoulliNegativeSampler(NegativeSampler):
    """Bernoulli negative sampling (Wang et al., 2014, TransH; OpenKE ``bern_flag=1``): the tail of a triple of
    relation ``r`` is replaced with probability ``hpt(r) / (tph(r) + hpt(r))``, otherwise the head.

    :param num_entities: ``N``.
    :param num_negatives: ``K``.
    :param tail_probability: float ``[R]``, normally ``TripleSet.tail_corruption_probability``.
    :param filtered_by: optional train :class:`FilterIndex`.
    :param generator: default ``torch.Generator``.
    """

    def __init__(self, num_entities: int, num_negatives: int, tail_probability: torch.Tensor,
                 filtered_by: FilterIndex | None = None, generator: torch.Generator | None = None,
                 max_rounds: int = 10):
        tail_probability = torch.as_tensor(tail_probability, dtype=torch.float32)
        if tail_probability.ndim != 1:
            raise ValueError(f"tail_probability must be a [R] tensor, got shape {tuple(tail_probability.shape)}")
        super().__init__(num_entities, num_negatives, tail_probability, filtered_by, generator, max_rounds)

    @classmethod
    def from_triples(cls, triples: TripleSet, num_negatives: int, filtered: bool = True,
                     generator: torch.Generator | None = None) -> "BernoulliNegativeSampler":
        """OpenKE's sampler for ``triples``: statistics and filter from its train split."""
        return cls(triples.num_entities, num_negatives, triples.tail_corruption_probability,
                   triples.train_index if filtered else None, generator)


def openke_tail_probability(tail_probability: torch.Tensor) -> torch.Tensor:
    """The tail-corruption probability OpenKE's sampler actually applies (``sampler: openke_bernoulli``).

    OpenKE (``Base.cpp``, ``bern_flag``; the AdaMF-MAT and NativE checkouts ship it) corrupts the tail when
    ``randd(id) % 1000 < 1000 p``, so ``p`` is rounded *up* to a multiple of 1/1000 and a relation with
    ``p > 0.999`` never has its head corrupted (DB15K ``rdf:type``: ``p = 0.99904``).  Only for reproducing the
    official code's negatives; Wang et al. (2014) define the exact ``p`` (``sampler: bernoulli``).

    :param tail_probability: float ``[R]`` (:attr:`TripleSet.tail_corruption_probability`).
    :returns: float32 ``[R]``, ``ceil(1000 p) / 1000`` capped at 1 (computed in float32, as OpenKE does).
    """
    # float32 as OpenKE's ``REAL``: 1000 p of a ratio like 2/5 is exactly 400 there (P = 0.4), where float64
    # arithmetic on the float32 value would give 400.0000059 and round it up to 0.401
    p = torch.as_tensor(tail_probability, dtype=torch.float32)
    return torch.ceil(p * 1000).clamp(max=1000) / 1000


class TripleBatcher:
    """Batches of positive triples for one epoch.

    * ``mode="permutation"``: a shuffled pass over all triples (PyKEEN / LibKGE style); ``ceil(n / B)`` batches
      (``floor`` with ``drop_last=True``).
    * ``mode="with_replacement"``: OpenKE style (methods §1.3): ``max(1, floor(n / B))`` batches of exactly ``B``
      triples drawn uniformly with replacement.  OpenKE de-duplicates train first; pass unique triples.

    :param triples: int64 ``[n, 3]``.
    :param batch_size: ``B`` >= 1.
    :param mode: ``"permutation"`` or ``"with_replacement"``.
    :param generator: ``torch.Generator`` for the draws (``None``: global RNG).
    :param drop_last: drop the final partial batch in permutation mode.
    :raises ValueError: for an empty triple set, a bad batch size or mode.
    """

    def __init__(self, triples: torch.Tensor, batch_size: int,
                 mode: Literal["permutation", "with_replacement"] = "permutation",
                 generator: torch.Generator | None = None, drop_last: bool = False):
        self.triples = _check_triples(triples, "triples")
        if self.triples.shape[0] == 0:
            raise ValueError("cannot batch an empty set of triples")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if mode not in ("permutation", "with_replacement"):
            raise ValueError(f"mode must be 'permutation' or 'with_replacement', got {mode!r}")
        self.batch_size = int(batch_size)
        self.mode = mode
        self.generator = generator
        self.drop_last = bool(drop_last)

    def __len__(self) -> int:
        n, b = self.triples.shape[0], self.batch_size
        if self.mode == "with_replacement":
            return max(1, n // b)
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self) -> Iterator[torch.Tensor]:
        n, b = self.triples.shape[0], self.batch_size
        if self.mode == "with_replacement":
            for _ in range(len(self)):
                yield self.triples[torch.randint(n, (b,), generator=self.generator).to(self.triples.device)]
            return
        order = torch.randperm(n, generator=self.generator).to(self.triples.device)
        for i in range(len(self)):
            yield self.triples[order[i * b:(i + 1) * b]]


@dataclass
class OneToNBatch:
    """A batch of 1-N training queries (Dettmers et al., 2018, ConvE).

    :ivar entities: int64 ``[B]``, the known entity: the head of a tail query, the tail of a head query.
    :ivar relations: int64 ``[B]``; with reciprocal relations, head queries ``(?, r, t)`` appear as
        tail queries ``(t, r + R, ?)``.
    :ivar predict_tail: bool ``[B]``; ``True`` for tail queries (always ``True`` with reciprocal relations).
    :ivar labels: float32 ``[B, N]``, 1 for every training answer of the query, else 0.
    """

    entities: torch.Tensor
    relations: torch.Tensor
    predict_tail: torch.Tensor
    labels: torch.Tensor


class OneToNBatcher:
    """Iterates over the unique training queries with their dense label rows.

    Queries are every distinct ``(h, r)`` of train (tail prediction) and every distinct ``(r, t)`` (head
    prediction), the latter written as ``(t, r + R)`` when ``reciprocal=True`` (IMVIA / MoMoK / ConvE) or kept as
    head queries with ``predict_tail=False`` otherwise (for scorers with a native head mode).  Labels are built
    per batch from the train answer index, so memory is bounded by ``B x N``.

    :param triples: the :class:`TripleSet` (its train split is used).
    :param batch_size: ``B`` >= 1.
    :param reciprocal: use reciprocal relations ``r + R`` for head queries.
    :param generator: ``torch.Generator`` for the per-epoch shuffle.
    :param shuffle: shuffle the queries each epoch.
    """

    def __init__(self, triples: TripleSet, batch_size: int, reciprocal: bool = True,
                 generator: torch.Generator | None = None, shuffle: bool = True):
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        train = triples.train
        if train.shape[0] == 0:
            raise ValueError(f"{triples.name}: the train split is empty; nothing to batch")
        self.num_entities = triples.num_entities
        self.num_relations = triples.num_relations
        self.batch_size = int(batch_size)
        self.reciprocal = bool(reciprocal)
        self.generator = generator
        self.shuffle = bool(shuffle)
        self._index = triples.train_index
        tail_q = torch.unique(train[:, :2], dim=0)  # (h, r)
        head_q = torch.unique(train[:, [2, 1]], dim=0)  # (t, r)
        if self.reciprocal:
            head_q = torch.stack([head_q[:, 0], head_q[:, 1] + self.num_relations], 1)
        #: int64 ``[Q, 2]`` (known entity, relation) and bool ``[Q]`` tail flag of every query.
        self.queries = torch.cat([tail_q, head_q], 0)
        self.predict_tail = torch.cat([
            torch.ones(tail_q.shape[0], dtype=torch.bool),
            torch.full((head_q.shape[0],), self.reciprocal, dtype=torch.bool),
        ])

    def __len__(self) -> int:
        return -(-self.queries.shape[0] // self.batch_size)

    def labels(self, entities: torch.Tensor, relations: torch.Tensor, predict_tail: torch.Tensor) -> torch.Tensor:
        """Dense training labels of queries, float32 ``[B, N]`` (relations may be reciprocal ``r + R``)."""
        batch = entities.shape[0]
        labels = torch.zeros(batch, self.num_entities)
        inverse = relations >= self.num_relations
        base_rel = relations - inverse.long() * self.num_relations
        # A reciprocal tail query (t, r + R, ?) asks for the heads of (?, r, t), and vice versa.
        as_tail = predict_tail ^ inverse
        triples = torch.zeros(batch, 3, dtype=torch.long)
        triples[:, 1] = base_rel
        triples[:, 0] = torch.where(as_tail, entities, 0)
        triples[:, 2] = torch.where(as_tail, 0, entities)
        for side, mask in (("tail", as_tail), ("head", ~as_tail)):
            rows = torch.nonzero(mask, as_tuple=True)[0]
            if rows.numel():
                q_rows, answers = self._index.known(triples[rows], side)
                labels[rows[q_rows], answers] = 1.0
        return labels

    def index_batches(self) -> Iterator[torch.Tensor]:
        """One epoch of query-index batches, int64 ``[B]`` rows of :attr:`queries` (one shuffle per epoch)."""
        q = self.queries.shape[0]
        order = torch.randperm(q, generator=self.generator) if self.shuffle else torch.arange(q)
        for i in range(len(self)):
            yield order[i * self.batch_size:(i + 1) * self.batch_size]

    def make_batch(self, idx: torch.Tensor) -> OneToNBatch:
        """The :class:`OneToNBatch` of query rows ``idx`` (int64 ``[b]``), labels included.  A distributed trainer
        builds only its rank's slice of each index batch, so labels cost ``b x N``, not ``B x N``, per rank."""
        ents, rels, tail = self.queries[idx, 0], self.queries[idx, 1], self.predict_tail[idx]
        return OneToNBatch(ents, rels, tail, self.labels(ents, rels, tail))

    def __iter__(self) -> Iterator[OneToNBatch]:
        for idx in self.index_batches():
            yield self.make_batch(idx)
