"""Knowledge graph embedding models: an entity representation, a relation table and a scorer.

The model is the only place that knows about ids.  It turns id triples into vectors (the entity representation
may fuse modality features) and hands them to a :class:`~mmkgc.nn.scorers.Scorer`, which only sees vectors.
The evaluator sees only ``score_fn(queries, side) -> [B, N]`` (:meth:`KGEModel.score_fn`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from mmkgc.features.store import FeatureTable
from mmkgc.nn.adapters import build_adapter
from mmkgc.nn.fusion import ConcatFusion


#: How a representation fills the rows of entities that lack a modality: one policy for every modality, or one per
#: modality name (``learned``: one trainable vector per modality; ``zeros``: the zero vector).
FillPolicy = str | Mapping[str, str]


def fill_policy(missing: FillPolicy, modality: str) -> str:
    """The fill policy of ``modality`` under ``missing`` (a policy, or a mapping by modality name).

    :raises ValueError: a mapping without an entry for ``modality``.
    """
    if isinstance(missing, str):
        return missing
    if modality not in missing:
        raise ValueError(f"modality {modality!r}: no fill policy given (have: {', '.join(sorted(missing)) or 'none'})")
    return missing[modality]


def mix_rows(table: torch.Tensor, weights: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Gathered mixtures ``out[p] = Σ_m weights[p, m] table[index[p], m]``.

    Shapes: ``table [V, M, D]``, ``weights [P, M]``, ``index [P]`` (int64 rows of ``table``) -> ``[P, D]``.
    """
    rows = table.index_select(0, index)
    out = rows[:, 0] * weights[:, :1]
    for m in range(1, table.shape[1]):
        out = out.addcmul(rows[:, m], weights[:, m:m + 1])
    return out


def relation_groups(relations: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
    """The distinct relations of ``relations`` int64 ``[B]``, ascending, each with the positions that hold it
    (ascending): ``[(r, idx [B_r])]``.

    One host synchronisation for the whole batch (the distinct ids and their counts are read back as one small
    tensor); the position tensors stay on the device of ``relations``.  Equal to ``torch.unique(relations)`` with
    ``(relations == r).nonzero()`` per relation, which synchronises once per relation.
    """
    order = torch.argsort(relations, stable=True)
    ids, counts = torch.unique_consecutive(relations.index_select(0, order), return_counts=True)
    ids_l, counts_l = torch.stack([ids, counts]).tolist()  # the one host sync
    groups, start = [], 0
    for r, c in zip(ids_l, counts_l):
        groups.append((int(r), order[start:start + c]))
        start += c
    return groups


@dataclass
class Occurrences:
    """Entity vectors of ``P`` occurrences (an entity in a triple of a relation), as a representation hands them to
    the scoring code (:meth:`EntityRepresentation.occurrences`).

    The first ``H = sum(sizes)`` occurrences are materialised in :attr:`first`, one tensor ``[size, D]`` per group
    size asked for (a batch's heads, then its tails); the remaining ``P - H`` are kept in *gathered* form, so that
    distinct rows are computed once and a scorer can match queries against them without building ``[P - H, D]``:

    * ``weights is None``: occurrence ``p`` is ``table[index[p]]`` with ``table [V, D]`` (one row per distinct id);
    * else a mixture ``Σ_m weights[p, m] table[index[p], m]`` with ``table [V, M, D]``, ``weights [P - H, M]``
      (relation-conditioned fusion: per-modality vectors of distinct entities or (entity, relation) pairs, and
      per-occurrence fusion weights).

    :attr:`components` is ``(x [H, M, D], present [H, M])``, what the fusion saw for the first ``H`` occurrences,
    when the caller asked for them and the representation has modality components (else ``None``).
    """

    first: tuple[torch.Tensor, ...]
    table: torch.Tensor
    index: torch.Tensor
    weights: torch.Tensor | None = None
    components: tuple[torch.Tensor, torch.Tensor] | None = None

    def rest(self) -> torch.Tensor:
        """The gathered occurrences materialised: ``[P - H, D]``."""
        if self.weights is None:
            return self.table.index_select(0, self.index)
        return mix_rows(self.table, self.weights, self.index)


class EntityTables:
    """All-entity vectors for one scoring session (evaluation, 1-N training): :meth:`table` ``(relation) -> [N, D]``.

    A relation-agnostic representation has one table, returned for every relation; a relation-conditioned one
    (:attr:`relation_aware`) builds the table of a relation on demand (``mmkgc.models.fused``).

    :param table: the ``[N, D]`` vectors of all entities.
    """

    relation_aware = False

    def __init__(self, table: torch.Tensor):
        self._table = table
        self.device = table.device

    def table(self, relation: int | None = None) -> torch.Tensor:
        """The vectors of all ``N`` entities (in triples of ``relation``): ``[N, D]``."""
        return self._table

    def regularization_rows(self) -> torch.Tensor:
        """The all-entity tensor a 1-N step's regulariser acts on (here the table itself): ``[N, D']``."""
        return self._table


class EntityRepresentation(nn.Module):
    """Maps entity ids to vectors: the one interface every model's scoring code uses.

    * (a) all entities and (b) distinct ids: ``forward(ids [B] | None) -> [B, D]`` (``None`` = all ``N``);
    * (c) occurrences, i.e. entities in triples of given relations: :meth:`occurrences` (distinct entities, or
      distinct (entity, relation) pairs when the representation is :attr:`relation_aware`, computed once);
    * all entities for a scoring session, per relation: :meth:`tables`.

    A relation-agnostic subclass implements ``forward`` only; a relation-conditioned one (NativE's temperature,
    AFME's gate: :class:`~mmkgc.models.fused.FusedRepresentation`) sets ``relation_aware`` and overrides
    :meth:`occurrences` and :meth:`tables`.  Modelled on PyKEEN's ``Representation`` (the model asks it for vectors
    and hands them to the interaction); the gathered form of :class:`Occurrences` is ours.
    """

    num_entities: int
    dim: int
    #: whether an entity's vector depends on the relation of its triple
    relation_aware: bool = False

    def regularization_tensors(self, ids: torch.Tensor) -> list[torch.Tensor]:
        """The trainable tensors behind ``ids`` that N3/L2 regularisers act on."""
        return [self(ids)]

    def occurrences(self, ids: torch.Tensor, relation: torch.Tensor | None = None, first: Sequence[int] = (),
                    keep_components: bool = False) -> Occurrences:
        """The vectors of ``P`` occurrences ``ids [P]`` (in triples of ``relation [P]``; ignored here), computed
        once per distinct id; the first ``sum(first)`` are materialised in groups of the sizes ``first``, the rest
        gathered (see :class:`Occurrences`).

        :param keep_components: also return the first occurrences' modality components (only representations with
            components have them).
        """
        unique, inverse = torch.unique(ids, return_inverse=True)
        reps = self(unique)
        groups, start = [], 0
        for size in first:
            groups.append(reps.index_select(0, inverse[start:start + size]))
            start += size
        return Occurrences(tuple(groups), reps, inverse[start:])

    def tables(self, detach: bool = True) -> EntityTables:
        """All-entity vectors for a scoring session (one ``forward(None)``); ``detach``: detached float32 (evaluation),
        else with the autograd graph (1-N training)."""
        ents = self(None)
        return EntityTables(ents.detach().float() if detach else ents)


class EmbeddingRepresentation(EntityRepresentation):
    """A plain trainable table ``[N, D]`` (structure only).

    :param sparse: ``nn.Embedding(sparse=True)``: lookups produce sparse row gradients, so an optimiser that
        accepts them (``torch.optim.SparseAdam``, ``Adagrad``) updates only the rows of the batch -- the
        ``training.sparse`` option for very large entity tables.  ``forward(None)`` (all rows) is a dense use of
        the weight and is only for evaluation then.
    """

    def __init__(self, num_entities: int, dim: int, init: Callable[[torch.Tensor], None] | None = None,
                 sparse: bool = False):
        super().__init__()
        self.num_entities, self.dim = num_entities, dim
        self.embedding = nn.Embedding(num_entities, dim, sparse=sparse)
        if init is not None:
            with torch.no_grad():
                init(self.embedding.weight)

    def forward(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.embedding.weight if ids is None else self.embedding(ids)


class ModalityInput(nn.Module):
    """One frozen modality table + its adapter + the explicit fill for missing rows.

    :param features: a pooled :class:`~mmkgc.features.store.FeatureTable` (``values [N, d]``, ``present [N]``).
    :param missing: the fill of absent rows, ``learned`` (a trainable vector) or ``zeros``.
    :raises ValueError: a token table, or an unknown fill policy.

    Shapes: ``forward(ids [B] | None) -> [B, D]``.  Features are a non-persistent buffer: checkpoints store the
    adapter, not the (reproducible, cached) table; :attr:`fingerprint` records which table was used.  With
    ``trainable=True`` the table is a parameter instead (fine-tuned and checkpointed; AdaMF, methods.md 6.1).
    """

    def __init__(self, features: FeatureTable, dim: int, adapter: str = "linear", dropout: float = 0.0,
                 trainable: bool = False, missing: str = "learned"):
        super().__init__()
        values, present = features.values, features.present
        if values.ndim != 2:
            raise ValueError(f"modality {features.modality!r}: expected pooled values [N, d], got {tuple(values.shape)}")
        self.name = features.modality
        if trainable:
            self.values = nn.Parameter(values.clone())
        else:
            self.register_buffer("values", values, persistent=False)
        self.register_buffer("present", present, persistent=False)
        self.adapter = build_adapter(adapter, values.shape[1], dim, dropout=dropout)
        self.missing_policy = missing
        if missing == "learned":
            self.missing = nn.Parameter(torch.zeros(dim))
            nn.init.normal_(self.missing, std=0.01)
        elif missing == "zeros":
            self.register_buffer("missing", torch.zeros(dim), persistent=False)
        else:
            raise ValueError(f"modality {features.modality!r}: unknown missing policy {missing!r}")
        self.fingerprint = feature_fingerprint(values, present)

    def forward(self, ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.values if ids is None else self.values[ids]
        present = self.present if ids is None else self.present[ids]
        y = self.adapter(x)
        y = torch.where(present.unsqueeze(-1), y, self.missing.to(y.dtype).expand_as(y))
        return y, present


def feature_fingerprint(values: torch.Tensor, present: torch.Tensor) -> str:
    """A short content hash of a feature table (shape + bytes), to detect a changed table at resume time."""
    import hashlib

    h = hashlib.sha256()
    h.update(str(tuple(values.shape)).encode())
    h.update(values.detach().cpu().contiguous().numpy().tobytes())
    h.update(present.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def stack_modalities(structure: nn.Module | None, inputs: Sequence[ModalityInput], ids: torch.Tensor | None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-modality vectors of ``ids [B]`` (``None``: all ``N`` entities) stacked: ``x [B, M, D]`` (the structural
    row first when there is a ``structure`` table, then every modality input's adapted vector, absent rows = its fill)
    and presence ``[B, M]`` (the structural slot is always present)."""
    vecs, pres = [], []
    if structure is not None:
        s = structure(ids)
        vecs.append(s)
        pres.append(torch.ones(s.shape[0], dtype=torch.bool, device=s.device))
    for m in inputs:
        v, p = m(ids)
        vecs.append(v)
        pres.append(p)
    return torch.stack(vecs, -2), torch.stack(pres, -1)


class MultimodalRepresentation(EntityRepresentation):
    """Structural embedding and/or modality tables, adapted to width ``D`` and fused.

    ``with_structure=True`` with concatenation fusion is the "concat" configuration (structure + each modality
    projected, concatenated, projected back); ``with_structure=False`` with a single modality is the
    "modality only" model (e.g. text-only), whose entity vector is the projected feature.  ``fusion`` replaces the
    concatenation by any relation-agnostic operator of :data:`mmkgc.nn.fusion.fusion_resolver` built for
    ``M = len(modalities) + with_structure`` inputs of width ``D`` (``representation: fused`` with a ``fusion.kind``
    other than ``attention``, e.g. ``lowrank``); :raises ValueError: for an operator of another width or a
    relation-conditioned one.

    :param modalities: pooled feature tables ``[N, d_m]`` with presence (:class:`~mmkgc.features.store.FeatureTable`).
    :param missing: fill of absent rows (:data:`FillPolicy`: one policy, or one per modality name).

    Shapes: ``forward(ids [B] | None) -> [B, D]``; :meth:`fused` also returns the stacked per-modality
    vectors ``[B, M, D]`` and presence ``[B, M]``.
    """

    def __init__(
        self,
        num_entities: int,
        dim: int,
        modalities: Sequence[FeatureTable],
        with_structure: bool = True,
        init: Callable[[torch.Tensor], None] | None = None,
        adapter: str = "linear",
        dropout: float = 0.0,
        fusion: nn.Module | None = None,
        missing: FillPolicy = "learned",
    ):
        super().__init__()
        if not modalities:
            raise ValueError("a multimodal representation needs at least one modality")
        self.num_entities, self.dim = num_entities, dim
        for m in modalities:
            if m.values.shape[0] != num_entities:
                raise ValueError(
                    f"modality {m.modality!r} has {m.values.shape[0]} rows but the dataset has {num_entities} entities"
                )
        self.structure = EmbeddingRepresentation(num_entities, dim, init) if with_structure else None
        self.inputs = nn.ModuleList(ModalityInput(m, dim, adapter, dropout, missing=fill_policy(missing, m.modality))
                                    for m in modalities)
        num = len(self.inputs) + int(with_structure)
        if fusion is not None:
            if num < 2 or getattr(fusion, "num_modalities", num) != num:
                raise ValueError(f"the fusion operator expects {getattr(fusion, 'num_modalities', '?')} inputs; this "
                                 f"representation stacks {num} (structure + modalities)")
            if getattr(fusion, "relation_aware", False):
                raise ValueError("a relation-conditioned fusion operator needs the fused representation")
            self.fusion = fusion
        else:
            # Residual start: the fused vector begins as the structural embedding (slot 0) when there is one.
            self.fusion = ConcatFusion(num, dim, residual_slot=0 if with_structure else None) if num > 1 else None

    @property
    def modality_names(self) -> list[str]:
        return (["structure"] if self.structure is not None else []) + [m.name for m in self.inputs]

    def stacked(self, ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-modality vectors ``[B, M, D]`` and presence ``[B, M]`` (structure is always present)."""
        return stack_modalities(self.structure, self.inputs, ids)

    def forward(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        if isinstance(self.fusion, ConcatFusion) and all(hasattr(m.adapter, "split_last_linear") for m in self.inputs):
            return self._concat_folded(ids)
        x, present = self.stacked(ids)
        if self.fusion is None:
            return x[..., 0, :]
        fused, _ = self.fusion(x, present)
        return fused

    def _concat_folded(self, ids: torch.Tensor | None) -> torch.Tensor:
        """The concat fusion ``P [s; A_1(x_1); ...] + b`` computed block by block, with the last linear layer
        ``W h + c`` of every adapter folded into its block ``P_m`` of the projection:
        ``P_m (W h + c) = (P_m W) h + P_m c``; an absent row contributes ``P_m f`` (its fill vector ``f``).

        A slot whose block is the fixed identity (:class:`~mmkgc.nn.fusion.ConcatFusion` with ``fixed_residual``)
        adds its vector as it is.  The same function of the same parameters as stacking ``[B, M, D]`` and
        projecting ``[B, M D]`` (equal up to float rounding, gradients included; tested), without the stacked
        copies and with one ``D x D`` product per entity and modality fewer: 1.36-1.57x fewer multiply-adds per
        entity on DB15K text (384-d MiniLM features, ``D = 500``).

        Shapes: ``ids [B] | None`` -> ``[B, D]`` (``None``: all ``N`` entities).
        """
        fusion = self.fusion
        bias = fusion.projection.bias
        slot = 0
        out = None
        if self.structure is not None:
            s, block = self.structure(ids), fusion.block(0)
            out = s + bias if block is None else torch.nn.functional.linear(s, block, bias)
            slot = 1
        for m in self.inputs:
            block = fusion.block(slot)
            if block is None:  # the fixed identity slot of ``fixed_residual``: the adapter's output itself
                part = m(ids)[0]
            else:
                x = m.values if ids is None else m.values[ids]
                present = m.present if ids is None else m.present[ids]
                hidden, last = m.adapter.split_last_linear(x)
                part = torch.nn.functional.linear(hidden, block @ last.weight, block @ last.bias)
                part = torch.where(present.unsqueeze(-1), part, (block @ m.missing.to(part.dtype)).expand_as(part))
            out = part if out is None else out + part
            slot += 1
        if self.structure is None:
            out = out + bias
        return out


class KGEModel(nn.Module):
    """Entity representation + relation embeddings + scorer: the one model class of structure, concat, R-GCN and
    every fused method (AdaMF, NativE, AFME).

    :param num_entities: ``N``.
    :param num_relations: ``R`` of the dataset (the relation table has ``2R`` rows with ``reciprocal``).
    :param scorer: a :class:`~mmkgc.nn.scorers.Scorer`; its ``entity_dim`` must equal the representation's width.
    :param representation: an :class:`EntityRepresentation` producing ``[B, scorer.entity_dim]``.
    :param reciprocal: answer head queries ``(?, r, t)`` as tail queries ``(t, r + R, ?)``.
    :raises ValueError: widths that differ, or ``reciprocal`` with a relation-conditioned representation (its
        relation parameters have ``R`` rows).

    The scoring code asks the representation for vectors once (:meth:`EntityRepresentation.occurrences` for a
    batch, :meth:`EntityRepresentation.tables` for all entities) and hands them to the scorer; when the
    representation is relation-conditioned, every entity is taken in the relation of its triple and all-entity
    scoring groups the queries by relation.  All scores are higher-is-better.
    """

    def __init__(self, num_entities: int, num_relations: int, scorer: nn.Module, representation: EntityRepresentation,
                 reciprocal: bool = False):
        super().__init__()
        if representation.dim != scorer.entity_dim:
            raise ValueError(
                f"representation width {representation.dim} != scorer entity width {scorer.entity_dim}"
            )
        if reciprocal and representation.relation_aware:
            raise ValueError("relation-conditioned fusion does not support reciprocal relations")
        self.num_entities = num_entities
        self.num_relations = num_relations
        self.reciprocal = reciprocal
        self.scorer = scorer
        self.entities = representation
        self.relations = nn.Embedding(num_relations * (2 if reciprocal else 1), scorer.relation_dim)
        with torch.no_grad():
            scorer.init_relation_(self.relations.weight)
        #: while ``True`` (set by a subclass around its main step), :meth:`score_positives_and_negatives` leaves
        #: ``(positives, x [2B, M, D], present [2B, M])``, the modality components of the positives' heads then
        #: tails (when the representation has them), in :attr:`batch_components` for the subclass to reuse and clear
        self.keep_batch_components = False
        self.batch_components: tuple[torch.Tensor, ...] | None = None

    @property
    def relation_aware(self) -> bool:
        """Whether entity vectors depend on the relation of their triple (the representation's flag)."""
        return self.entities.relation_aware

    # -------------------------------------------------------------------------------- pointwise
    def embed(self, triples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Vectors of ``triples [..., 3]``: ``h [..., De]``, ``r [..., Dr]``, ``t [..., De]``.

        Entity representations are computed once per distinct id (distinct (entity, relation) pair when
        relation-conditioned) in the batch.
        """
        shape = triples.shape[:-1]
        flat = triples.reshape(-1, 3)
        n = flat.shape[0]
        relation = flat[:, 1].repeat(2) if self.relation_aware else None
        (reps,) = self.entities.occurrences(torch.cat([flat[:, 0], flat[:, 2]]), relation, first=(2 * n,)).first
        return reps[:n].reshape(*shape, -1), self.relations(triples[..., 1]), reps[n:].reshape(*shape, -1)

    def score_hrt(self, triples: torch.Tensor) -> torch.Tensor:
        """Scores of ``triples [..., 3]`` -> ``[...]``."""
        h, r, t = self.embed(triples)
        return self.scorer.score_hrt(h, r, t)

    def score_positives_and_negatives(
        self, positives: torch.Tensor, negative_entities: torch.Tensor, tail_corrupted: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores of positives ``[B, 3]`` and of their corruptions (negative ``k`` of positive ``b`` replaces the
        tail with ``negative_entities[b, k]`` where ``tail_corrupted[b, k]``, else the head).

        The representation computes each distinct entity (or (entity, relation) pair) of the batch once and hands
        back the negatives in gathered form (:class:`Occurrences`).  With a factorising scorer the ``(h, r)`` and
        ``(r, t)`` query vectors are computed once per positive and matched against the ``K`` replacement entities
        (:meth:`~mmkgc.nn.scorers.Scorer.match_gathered`, or ``match_gathered_mixture`` for fused mixtures: compiled
        CPU kernels for RotatE and TransE-L1), instead of scoring ``B (K + 1)`` independent triples.

        :returns: ``pos [B]``, ``neg [B, K]``.
        """
        b, k = negative_entities.shape
        ids = torch.cat([positives[:, 0], positives[:, 2], negative_entities.reshape(-1)])
        rel = positives[:, 1]
        relation = torch.cat([rel, rel, rel.repeat_interleave(k)]) if self.relation_aware else None
        occ = self.entities.occurrences(ids, relation, first=(b, b), keep_components=self.keep_batch_components)
        if self.keep_batch_components and occ.components is not None:
            self.batch_components = (positives, *occ.components)
        h, t = occ.first
        r = self.relations(rel)
        scorer = self.scorer
        if scorer.factorises:
            q_tail = scorer.tail_query(h, r)
            queries = torch.cat([q_tail, scorer.head_query(r, t)])  # [2B, De]: tail queries, then head queries
            which = (torch.arange(b, device=positives.device).unsqueeze(1) + b * (~tail_corrupted).long()).reshape(-1)
            if occ.weights is None:
                neg = scorer.match_gathered(queries, which, occ.table, occ.index)
            else:
                neg = scorer.match_gathered_mixture(queries, which, occ.table, occ.weights, occ.index)
            return scorer.match(q_tail, t), neg.reshape(b, k)
        e = occ.rest().reshape(b, k, -1)
        mask = tail_corrupted.unsqueeze(-1)
        neg_h = torch.where(mask, h.unsqueeze(1), e)
        neg_t = torch.where(mask, e, t.unsqueeze(1))
        return scorer.score_hrt(h, r, t), scorer.score_hrt(neg_h, r.unsqueeze(1), neg_t)

    def l2_regularization(self, positives: torch.Tensor, negative_entities: torch.Tensor,
                          tail_corrupted: torch.Tensor) -> torch.Tensor:
        """OpenKE's / NativE's L2 term of a negative-sampling batch (``RotatE.regularization`` in OpenKE, applied by
        ``NegativeSampling`` to every row of the batch, positives and negatives):
        ``(mean(h²) + mean(t²) + mean(r²)) / 3`` where ``h``, ``t``, ``r`` stack the *structural* embeddings
        (:meth:`EntityRepresentation.regularization_tensors`) of the heads, tails and relations of all ``B (1 + K)``
        rows.

        Nothing of shape ``[B (1 + K), D]`` is built: each distinct entity's squared norm is weighted by how often it
        is a head or a tail of a row (a positive's head is also the head of its tail-corrupted negatives), and every
        row of positive ``b`` has relation ``r_b``, so ``mean(r²)`` is the mean over the positives.

        :param positives: int64 ``[B, 3]``; ``negative_entities``: int64 ``[B, K]``; ``tail_corrupted``: bool ``[B, K]``.
        :returns: scalar (unweighted; the trainer multiplies by ``training.regularizer_weight``).
        """
        b, k = negative_entities.shape
        ids = torch.cat([positives[:, 0], positives[:, 2], negative_entities.reshape(-1)])
        unique, inverse = torch.unique(ids, return_inverse=True)
        rows = torch.cat([t.reshape(unique.shape[0], -1) for t in self.entities.regularization_tensors(unique)], 1)
        squares = rows.float().pow(2).sum(-1)  # [U]
        n_tail = tail_corrupted.sum(1).to(squares.dtype)  # negatives of b that keep its head
        weights = torch.cat([1.0 + n_tail, 1.0 + (k - n_tail), squares.new_ones(b * k)])
        per_row = squares.new_zeros(unique.shape[0]).index_add_(0, inverse, weights)
        entity_mean = (per_row * squares).sum() / (b * (1 + k) * rows.shape[1])  # mean(h²) + mean(t²)
        relation_mean = self.relations(positives[:, 1]).float().pow(2).mean()
        return (entity_mean + relation_mean) / 3.0

    # -------------------------------------------------------------------------------- training hooks
    def negative_sampling_loss(
        self, positives: torch.Tensor, negative_entities: torch.Tensor, tail_corrupted: torch.Tensor,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The main (KGC) loss of one negative-sampling batch.

        The default scores positives ``[B, 3]`` and their ``K`` corruptions (see
        :meth:`score_positives_and_negatives`) under ``loss_fn(pos [B], neg [B, K]) -> []``.  Methods with extra
        terms in the main step (e.g. fake-modality triples of adversarial training) override this and add them.

        :returns: ``(loss, named terms for the epoch log)``.
        """
        pos, neg = self.score_positives_and_negatives(positives, negative_entities, tail_corrupted)
        return loss_fn(pos.float(), neg.float()), {}

    def one_to_n_loss(
        self, queries: torch.Tensor, predict_tail: torch.Tensor, labels: torch.Tensor,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """The main loss of one 1-N batch: every query ``[B, 3]`` against all ``N`` entities (one scoring session of
        :meth:`EntityRepresentation.tables`, with gradients; per relation when relation-conditioned).

        :param queries: ``(e, r, ?)`` rows for tail queries and ``(?, r, e)`` rows for head queries.
        :param predict_tail: bool ``[B]``.
        :param labels: float ``[B, N]`` targets.
        :returns: ``(loss, named terms, all-entity tensor for the regulariser)``: the entity vectors ``[N, De]``, or
            the structural table of a relation-conditioned representation.
        """
        tables = self.entities.tables(detach=False)
        if bool(predict_tail.all()):
            logits = self.score_t(queries, tables)
        else:
            logits = torch.empty(queries.shape[0], self.num_entities, device=queries.device)
            for mask, score in ((predict_tail, self.score_t), (~predict_tail, self.score_h)):
                if bool(mask.any()):
                    idx = mask.nonzero(as_tuple=True)[0]
                    logits = logits.index_put((idx,), score(queries[idx], tables).to(logits.dtype))
        return loss_fn(logits.float(), labels), {}, tables.regularization_rows()

    def auxiliary_steps(self, training) -> list:
        """Extra optimisation steps (:class:`~mmkgc.training.steps.AuxiliaryStep`) run after the main step on every
        batch, each over its own parameter group (excluded from the main optimiser).  None by default.

        :param training: the :class:`~mmkgc.config.TrainingConfig` of the run.
        """
        return []

    def write_diagnostics(self, run_dir, triples) -> dict:
        """Write method-specific diagnostics (e.g. modality weights) into ``run_dir`` after training; returns a
        JSON-able summary for ``metrics.json`` (empty by default)."""
        return {}

    # -------------------------------------------------------------------------------- all entities
    def _tables(self, all_entities: EntityTables | torch.Tensor | None) -> EntityTables:
        """A scoring session: the given one, a precomputed ``[N, De]`` table, or a new one with gradients."""
        if isinstance(all_entities, EntityTables):
            return all_entities
        if all_entities is not None:
            return EntityTables(all_entities)
        return self.entities.tables(detach=False)

    @staticmethod
    def _by_relation(queries: torch.Tensor, tables: EntityTables,
                     fn: Callable[[torch.Tensor, torch.Tensor | None, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``fn(queries, rows, table [N, D])`` once for a relation-agnostic session (``rows = None``: all queries);
        else once per distinct relation of ``queries [B, 3]`` with its rows and table, reassembled in query order."""
        if not tables.relation_aware:
            return fn(queries, None, tables.table(None))
        out = None
        for r, idx in relation_groups(queries[:, 1]):
            part = fn(queries[idx], idx, tables.table(r))
            if out is None:
                out = part.new_empty((queries.shape[0], *part.shape[1:]))
            out = out.index_put((idx,), part)
        return out

    def score_t(self, queries: torch.Tensor, all_entities: EntityTables | torch.Tensor | None = None
                ) -> torch.Tensor:
        """Scores of every candidate tail for ``queries [B, 3]`` (tail column ignored) -> ``[B, N]``.

        :param all_entities: a scoring session (:meth:`scoring_context`), a precomputed all-entity table
            ``[N, De]`` (relation-agnostic representations), or ``None`` (computed here, with gradients).
        """
        return self._by_relation(queries, self._tables(all_entities), lambda q, _, ents: self.scorer.score_t(
            ents.index_select(0, q[:, 0]), self.relations(q[:, 1]), ents))

    def score_h(self, queries: torch.Tensor, all_entities: EntityTables | torch.Tensor | None = None
                ) -> torch.Tensor:
        """Scores of every candidate head for ``queries [B, 3]`` (head column ignored) -> ``[B, N]``.

        With reciprocal relations this is ``score_t`` of ``(t, r + R, ?)``.
        """
        tables = self._tables(all_entities)
        if self.reciprocal:
            inverse = torch.stack([queries[:, 2], queries[:, 1] + self.num_relations, queries[:, 0]], 1)
            return self.score_t(inverse, tables)
        return self._by_relation(queries, tables, lambda q, _, ents: self.scorer.score_h(
            ents, self.relations(q[:, 1]), ents.index_select(0, q[:, 2])))

    def score_candidates(self, queries: torch.Tensor, side: str, candidates: torch.Tensor,
                         all_entities: EntityTables | torch.Tensor | None = None) -> torch.Tensor:
        """Scores of a few candidate entities per query (sampled-candidate evaluation).

        ``out[b, c]`` is the score of ``(h_b, r_b, candidates[b, c])`` for ``side="tail"`` and of
        ``(candidates[b, c], r_b, t_b)`` for ``side="head"`` (via ``(t, r + R, ?)`` with reciprocal relations),
        computed with the scorer's query/match factorisation.

        :param queries: int64 ``[B, 3]``.
        :param candidates: int64 ``[B, C]``.
        :param all_entities: a scoring session or a precomputed ``[N, De]`` table, or ``None`` to embed only the
            ids used (relation-agnostic representations; a relation-conditioned one builds its tables).
        :returns: float ``[B, C]``.
        :raises ValueError: for an unknown side.
        """
        if side not in ("head", "tail"):
            raise ValueError(f"side must be 'head' or 'tail', got {side!r}")
        scorer = self.scorer

        def part(q: torch.Tensor, cand: torch.Tensor, embed: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
            if side == "tail":
                query = scorer.tail_query(embed(q[:, 0]), self.relations(q[:, 1]))
            elif self.reciprocal:
                query = scorer.tail_query(embed(q[:, 2]), self.relations(q[:, 1] + self.num_relations))
            else:
                query = scorer.head_query(self.relations(q[:, 1]), embed(q[:, 2]))
            return scorer.match(query.unsqueeze(1), embed(cand))

        if all_entities is None and not self.relation_aware:
            return part(queries, candidates,
                        lambda ids: self.entities(ids.reshape(-1)).reshape(*ids.shape, -1))
        return self._by_relation(queries, self._tables(all_entities), lambda q, rows, ents: part(
            q, candidates if rows is None else candidates[rows], lambda ids: ents[ids]))

    def score_sides(self, queries: torch.Tensor, sides: Sequence[str], tables: EntityTables
                    ) -> dict[str, torch.Tensor]:
        """All-entity scores of ``queries [B, 3]`` for each of ``sides`` (``"head"``, ``"tail"``) -> ``{side: [B, N]}``;
        a relation-conditioned session builds the table of each distinct relation of the queries once for all
        sides (equal to :meth:`score_t` / :meth:`score_h`).

        With a relation-conditioned session and a scorer whose all-entity kernel does not depend on the batch
        (:attr:`~mmkgc.nn.scorers.Scorer.stacks_queries`: RotatE, TransE-L1) the query vectors of every side of a
        relation are scored against its table in one call (:meth:`~mmkgc.nn.scorers.Scorer.match_all`), which
        writes them straight into the rows of the returned matrices (views of one ``[len(sides), B, N]`` buffer);
        the scores are the same bit for bit.  Host synchronisations: one per call (:func:`relation_groups`).

        :raises ValueError: an unknown side.
        """
        for side in sides:
            if side not in ("head", "tail"):
                raise ValueError(f"side must be 'head' or 'tail', got {side!r}")
        if not tables.relation_aware:
            return {side: self.score_t(queries, tables) if side == "tail" else self.score_h(queries, tables)
                    for side in sides}
        if self.scorer.stacks_queries and not torch.is_grad_enabled():
            return self._score_sides_stacked(queries, tuple(sides), tables)
        out: dict[str, torch.Tensor] = {}
        for r, idx in relation_groups(queries[:, 1]):
            q = queries.index_select(0, idx)
            ents = tables.table(r)
            rv = self.relations(q[:, 1])
            for side in sides:
                if side == "tail":
                    part = self.scorer.score_t(ents.index_select(0, q[:, 0]), rv, ents)
                else:
                    part = self.scorer.score_h(ents, rv, ents.index_select(0, q[:, 2]))
                if side not in out:
                    out[side] = part.new_empty((queries.shape[0], part.shape[1]))
                out[side].index_copy_(0, idx, part)
        return out

    def _score_sides_stacked(self, queries: torch.Tensor, sides: tuple[str, ...], tables: EntityTables
                             ) -> dict[str, torch.Tensor]:
        """:meth:`score_sides` of a relation-conditioned session with a :attr:`~mmkgc.nn.scorers.Scorer.stacks_queries`
        scorer: per relation one :meth:`~mmkgc.nn.scorers.Scorer.match_all` call over the query vectors of all
        sides, written into rows ``s * B + idx`` of one ``[S, B, N]`` buffer (no per-side copies)."""
        scorer = self.scorer
        b = queries.shape[0]
        buffer = None
        for r, idx in relation_groups(queries[:, 1]):
            q = queries.index_select(0, idx)
            ents = tables.table(r)
            rv = self.relations(q[:, 1])
            vectors = [scorer.tail_query(ents.index_select(0, q[:, 0]), rv) if side == "tail"
                       else scorer.head_query(rv, ents.index_select(0, q[:, 2])) for side in sides]
            if buffer is None:
                buffer = torch.empty((len(sides), b, ents.shape[0]), dtype=torch.float32, device=queries.device)
            rows = torch.cat([idx + s * b for s in range(len(sides))])
            scorer.match_all(torch.cat(vectors), ents, out=buffer.view(len(sides) * b, -1), out_rows=rows)
        if buffer is None:  # no queries
            buffer = torch.empty((len(sides), 0, self.num_entities), dtype=torch.float32, device=queries.device)
        return {side: buffer[s] for s, side in enumerate(sides)}

    @torch.no_grad()
    def scoring_context(self) -> tuple[EntityTables, torch.device]:
        """The scoring session :meth:`score_fn` opens once and passes as ``all_entities`` to :meth:`score_t`,
        :meth:`score_h`, :meth:`score_candidates` and :meth:`score_sides` (:meth:`EntityRepresentation.tables`,
        detached float32), and the device scores are computed on."""
        tables = self.entities.tables(detach=True)
        return tables, tables.device

    @torch.no_grad()
    def score_fn(self) -> Callable[[torch.Tensor, str], torch.Tensor]:
        """A ``score_fn(queries [B, 3], side) -> [B, N]`` for the evaluator.

        The scoring session is opened once (the model must be in eval mode and unchanged while the returned
        function is used).  The function also carries ``fn.device`` (where scores are computed, for
        ``batch_size: auto``) and ``fn.score_candidates(queries, side, candidates) -> [B, C]`` (for
        sampled-candidate evaluation).  With a relation-conditioned representation the evaluator is asked to group
        queries by relation (``fn.query_order``) and to score both sides of a chunk together (``fn.score_sides``),
        so each relation's table is built once per evaluation.  Scores are computed in float32 even when training
        used autocast.
        """
        tables, device = self.scoring_context()

        def fn(queries: torch.Tensor, side: str) -> torch.Tensor:
            with torch.no_grad():
                return self.score_sides(queries.to(device), (side,), tables)[side]

        def candidates_fn(queries: torch.Tensor, side: str, candidates: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return self.score_candidates(queries.to(device), side, candidates.to(device), tables)

        fn.device = device  # type: ignore[attr-defined]
        fn.score_candidates = candidates_fn  # type: ignore[attr-defined]
        if tables.relation_aware:
            def score_sides(queries: torch.Tensor, sides: Sequence[str]) -> dict[str, torch.Tensor]:
                with torch.no_grad():
                    return self.score_sides(queries.to(device), tuple(sides), tables)

            fn.score_sides = score_sides  # type: ignore[attr-defined]
            fn.query_order = "relation"  # type: ignore[attr-defined]
        return fn
