"""Knowledge graph embedding models: an entity representation, a relation table and a scorer.

The model is the only place that knows about ids.  It turns id triples into vectors (the entity representation
may fuse modality features) and hands them to a :class:`~mmkgc.nn.scorers.Scorer`, which only sees vectors.
The evaluator sees only ``score_fn(queries, side) -> [B, N]`` (:meth:`KGEModel.score_fn`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mmkgc.nn.adapters import build_adapter
from mmkgc.nn.fusion import ConcatFusion


@dataclass
class ModalityFeatures:
    """A frozen feature table handed to a multimodal representation.

    :param name: modality name.
    :param values: float32 ``[N, d_m]``.
    :param present: bool ``[N]``; rows with ``False`` are replaced by the fill policy.
    :param missing: ``learned`` (one trainable vector per modality) or ``zeros``.
    """

    name: str
    values: torch.Tensor
    present: torch.Tensor
    missing: str = "learned"


class EntityRepresentation(nn.Module):
    """Maps entity ids to vectors: ``forward(ids [B] | None) -> [B, D]`` (``None`` = all ``N`` entities)."""

    num_entities: int
    dim: int

    def regularization_tensors(self, ids: torch.Tensor) -> list[torch.Tensor]:
        """The trainable tensors behind ``ids`` that N3/L2 regularisers act on."""
        return [self(ids)]


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

    Shapes: ``forward(ids [B] | None) -> [B, D]``.  Features are a non-persistent buffer: checkpoints store the
    adapter, not the (reproducible, cached) table; :attr:`fingerprint` records which table was used.  With
    ``trainable=True`` the table is a parameter instead (fine-tuned and checkpointed; AdaMF, methods.md 6.1).
    """

    def __init__(self, features: ModalityFeatures, dim: int, adapter: str = "linear", dropout: float = 0.0,
                 trainable: bool = False):
        super().__init__()
        values = torch.as_tensor(features.values, dtype=torch.float32)
        present = torch.as_tensor(features.present, dtype=torch.bool)
        if values.ndim != 2 or present.shape != values.shape[:1]:
            raise ValueError(
                f"modality {features.name!r}: expected values [N, d] and present [N], got "
                f"{tuple(values.shape)} and {tuple(present.shape)}"
            )
        self.name = features.name
        if trainable:
            self.values = nn.Parameter(values.clone())
        else:
            self.register_buffer("values", values, persistent=False)
        self.register_buffer("present", present, persistent=False)
        self.adapter = build_adapter(adapter, values.shape[1], dim, dropout=dropout)
        self.missing_policy = features.missing
        if features.missing == "learned":
            self.missing = nn.Parameter(torch.zeros(dim))
            nn.init.normal_(self.missing, std=0.01)
        elif features.missing == "zeros":
            self.register_buffer("missing", torch.zeros(dim), persistent=False)
        else:
            raise ValueError(f"modality {features.name!r}: unknown missing policy {features.missing!r}")
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


class MultimodalRepresentation(EntityRepresentation):
    """Structural embedding and/or modality tables, adapted to width ``D`` and fused.

    ``with_structure=True`` with concatenation fusion is the "concat" configuration (structure + each modality
    projected, concatenated, projected back); ``with_structure=False`` with a single modality is the
    "modality only" model (e.g. text-only), whose entity vector is the projected feature.

    Shapes: ``forward(ids [B] | None) -> [B, D]``; :meth:`fused` also returns the stacked per-modality
    vectors ``[B, M, D]`` and presence ``[B, M]``.
    """

    def __init__(
        self,
        num_entities: int,
        dim: int,
        modalities: Sequence[ModalityFeatures],
        with_structure: bool = True,
        init: Callable[[torch.Tensor], None] | None = None,
        adapter: str = "linear",
        dropout: float = 0.0,
    ):
        super().__init__()
        if not modalities:
            raise ValueError("a multimodal representation needs at least one modality")
        self.num_entities, self.dim = num_entities, dim
        for m in modalities:
            if m.values.shape[0] != num_entities:
                raise ValueError(
                    f"modality {m.name!r} has {m.values.shape[0]} rows but the dataset has {num_entities} entities"
                )
        self.structure = EmbeddingRepresentation(num_entities, dim, init) if with_structure else None
        self.inputs = nn.ModuleList(ModalityInput(m, dim, adapter, dropout) for m in modalities)
        num = len(self.inputs) + int(with_structure)
        # Residual start: the fused vector begins as the structural embedding (slot 0) when there is one.
        self.fusion = ConcatFusion(num, dim, residual_slot=0 if with_structure else None) if num > 1 else None

    @property
    def modality_names(self) -> list[str]:
        return (["structure"] if self.structure is not None else []) + [m.name for m in self.inputs]

    def stacked(self, ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-modality vectors ``[B, M, D]`` and presence ``[B, M]`` (structure is always present)."""
        vecs, pres = [], []
        if self.structure is not None:
            s = self.structure(ids)
            vecs.append(s)
            pres.append(torch.ones(s.shape[0], dtype=torch.bool, device=s.device))
        for m in self.inputs:
            v, p = m(ids)
            vecs.append(v)
            pres.append(p)
        return torch.stack(vecs, -2), torch.stack(pres, -1)

    def forward(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        if self.fusion is not None and all(hasattr(m.adapter, "split_last_linear") for m in self.inputs):
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

        The same function of the same parameters as stacking ``[B, M, D]`` and projecting ``[B, M D]`` (equal
        up to float rounding, gradients included; tested), without the stacked copies and with one ``D x D``
        product per entity and modality fewer: 1.36-1.57x fewer multiply-adds per entity on DB15K text
        (384-d MiniLM features, ``D = 500``).

        Shapes: ``ids [B] | None`` -> ``[B, D]`` (``None``: all ``N`` entities).
        """
        weight, bias = self.fusion.projection.weight, self.fusion.projection.bias
        d = self.dim
        slot = 0
        out = None
        if self.structure is not None:
            out = torch.nn.functional.linear(self.structure(ids), weight[:, :d], bias)
            slot = 1
        for m in self.inputs:
            block = weight[:, slot * d:(slot + 1) * d]
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
    """Entity representation + relation embeddings + scorer.

    :param num_entities: ``N``.
    :param num_relations: ``R`` of the dataset (the relation table has ``2R`` rows with ``reciprocal``).
    :param scorer: a :class:`~mmkgc.nn.scorers.Scorer`; its ``entity_dim`` must equal the representation's width.
    :param representation: an :class:`EntityRepresentation` producing ``[B, scorer.entity_dim]``.
    :param reciprocal: answer head queries ``(?, r, t)`` as tail queries ``(t, r + R, ?)``.

    All scores are higher-is-better.
    """

    def __init__(self, num_entities: int, num_relations: int, scorer: nn.Module, representation: EntityRepresentation,
                 reciprocal: bool = False):
        super().__init__()
        if representation.dim != scorer.entity_dim:
            raise ValueError(
                f"representation width {representation.dim} != scorer entity width {scorer.entity_dim}"
            )
        self.num_entities = num_entities
        self.num_relations = num_relations
        self.reciprocal = reciprocal
        self.scorer = scorer
        self.entities = representation
        self.relations = nn.Embedding(num_relations * (2 if reciprocal else 1), scorer.relation_dim)
        with torch.no_grad():
            scorer.init_relation_(self.relations.weight)

    # -------------------------------------------------------------------------------- pointwise
    def embed(self, triples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Vectors of ``triples [..., 3]``: ``h [..., De]``, ``r [..., Dr]``, ``t [..., De]``.

        Entity representations are computed once per distinct id in the batch (fusion is not repeated for the
        same entity among negatives).
        """
        shape = triples.shape[:-1]
        flat = triples.reshape(-1, 3)
        ents = torch.cat([flat[:, 0], flat[:, 2]])
        unique, inverse = torch.unique(ents, return_inverse=True)
        reps = self.entities(unique).index_select(0, inverse)
        n = flat.shape[0]
        h = reps[:n].reshape(*shape, -1)
        t = reps[n:].reshape(*shape, -1)
        r = self.relations(triples[..., 1])
        return h, r, t

    def score_hrt(self, triples: torch.Tensor) -> torch.Tensor:
        """Scores of ``triples [..., 3]`` -> ``[...]``."""
        h, r, t = self.embed(triples)
        return self.scorer.score_hrt(h, r, t)

    def score_positives_and_negatives(
        self, positives: torch.Tensor, negative_entities: torch.Tensor, tail_corrupted: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores of positives ``[B, 3]`` and of their corruptions (negative ``k`` of positive ``b`` replaces the
        tail with ``negative_entities[b, k]`` where ``tail_corrupted[b, k]``, else the head).

        With a factorising scorer the ``(h, r)`` and ``(r, t)`` query vectors are computed once per positive
        and matched against the ``K`` replacement entities, instead of scoring ``B (K + 1)`` independent
        triples; entity representations are computed once per distinct entity of the batch.

        :returns: ``pos [B]``, ``neg [B, K]``.
        """
        b, k = negative_entities.shape
        ids = torch.cat([positives[:, 0], positives[:, 2], negative_entities.reshape(-1)])
        unique, inverse = torch.unique(ids, return_inverse=True)
        reps = self.entities(unique)
        h = reps.index_select(0, inverse[:b])
        t = reps.index_select(0, inverse[b:2 * b])
        r = self.relations(positives[:, 1])
        scorer = self.scorer
        if scorer.factorises:
            q_tail = scorer.tail_query(h, r)
            queries = torch.cat([q_tail, scorer.head_query(r, t)])  # [2B, De]: tail queries, then head queries
            which = torch.arange(b, device=positives.device).unsqueeze(1) + b * (~tail_corrupted).long()
            neg = scorer.match_gathered(queries, which.reshape(-1), reps, inverse[2 * b:])
            return scorer.match(q_tail, t), neg.reshape(b, k)
        e = reps.index_select(0, inverse[2 * b:]).reshape(b, k, -1)
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
        """The main loss of one 1-N batch: every query ``[B, 3]`` against all ``N`` entities.

        :param queries: ``(e, r, ?)`` rows for tail queries and ``(?, r, e)`` rows for head queries.
        :param predict_tail: bool ``[B]``.
        :param labels: float ``[B, N]`` targets.
        :returns: ``(loss, named terms, all entity vectors [N, De])`` (the latter for the regulariser).
        """
        ents = self.entities(None)
        if bool(predict_tail.all()):
            logits = self.score_t(queries, ents)
        else:
            logits = torch.empty(queries.shape[0], self.num_entities, device=queries.device)
            logits = logits.index_put((predict_tail.nonzero(as_tuple=True)[0],),
                                      self.score_t(queries[predict_tail], ents).to(logits.dtype))
            logits = logits.index_put((~predict_tail).nonzero(as_tuple=True),
                                      self.score_h(queries[~predict_tail], ents).to(logits.dtype))
        return loss_fn(logits.float(), labels), {}, ents

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
    def score_t(self, queries: torch.Tensor, all_entities: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of every candidate tail for ``queries [B, 3]`` (tail column ignored) -> ``[B, N]``."""
        ents = self.entities(None) if all_entities is None else all_entities
        h = ents.index_select(0, queries[:, 0])
        r = self.relations(queries[:, 1])
        return self.scorer.score_t(h, r, ents)

    def score_h(self, queries: torch.Tensor, all_entities: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of every candidate head for ``queries [B, 3]`` (head column ignored) -> ``[B, N]``.

        With reciprocal relations this is ``score_t`` of ``(t, r + R, ?)``.
        """
        ents = self.entities(None) if all_entities is None else all_entities
        if self.reciprocal:
            inverse = torch.stack([queries[:, 2], queries[:, 1] + self.num_relations, queries[:, 0]], 1)
            return self.score_t(inverse, ents)
        t = ents.index_select(0, queries[:, 2])
        r = self.relations(queries[:, 1])
        return self.scorer.score_h(ents, r, t)

    def score_candidates(self, queries: torch.Tensor, side: str, candidates: torch.Tensor,
                         all_entities: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of a few candidate entities per query (sampled-candidate evaluation).

        ``out[b, c]`` is the score of ``(h_b, r_b, candidates[b, c])`` for ``side="tail"`` and of
        ``(candidates[b, c], r_b, t_b)`` for ``side="head"`` (via ``(t, r + R, ?)`` with reciprocal relations),
        computed with the scorer's query/match factorisation.

        :param queries: int64 ``[B, 3]``.
        :param candidates: int64 ``[B, C]``.
        :param all_entities: precomputed ``entities(None)`` ``[N, De]``, or ``None`` to embed only the ids used.
        :returns: float ``[B, C]``.
        :raises ValueError: for an unknown side.
        """
        def embed(ids: torch.Tensor) -> torch.Tensor:
            if all_entities is not None:
                return all_entities[ids]
            return self.entities(ids.reshape(-1)).reshape(*ids.shape, -1)

        scorer = self.scorer
        if side == "tail":
            q = scorer.tail_query(embed(queries[:, 0]), self.relations(queries[:, 1]))
        elif side == "head":
            if self.reciprocal:
                q = scorer.tail_query(embed(queries[:, 2]), self.relations(queries[:, 1] + self.num_relations))
            else:
                q = scorer.head_query(self.relations(queries[:, 1]), embed(queries[:, 2]))
        else:
            raise ValueError(f"side must be 'head' or 'tail', got {side!r}")
        return scorer.match(q.unsqueeze(1), embed(candidates))

    @torch.no_grad()
    def scoring_context(self) -> tuple[Any, torch.device]:
        """What :meth:`score_fn` computes once per session and passes as ``all_entities`` to :meth:`score_t`,
        :meth:`score_h` and :meth:`score_candidates` (here: all entity vectors ``[N, De]`` in float32), and the device
        scores are computed on."""
        ents = self.entities(None).detach().float()
        return ents, ents.device

    @torch.no_grad()
    def score_fn(self) -> Callable[[torch.Tensor, str], torch.Tensor]:
        """A ``score_fn(queries [B, 3], side) -> [B, N]`` for the evaluator.

        All entity representations are computed once (the model must be in eval mode and unchanged while the
        returned function is used).  The function also carries ``fn.device`` (where scores are computed, for
        ``batch_size: auto``) and ``fn.score_candidates(queries, side, candidates) -> [B, C]`` (for
        sampled-candidate evaluation).  Scores are computed in float32 even when training used autocast.
        Subclasses change what is precomputed through :meth:`scoring_context` (and may set ``fn.query_order``).
        """
        ents, device = self.scoring_context()

        def fn(queries: torch.Tensor, side: str) -> torch.Tensor:
            with torch.no_grad():
                q = queries.to(device)
                return self.score_t(q, ents) if side == "tail" else self.score_h(q, ents)

        def candidates_fn(queries: torch.Tensor, side: str, candidates: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return self.score_candidates(queries.to(device), side, candidates.to(device), ents)

        fn.device = device  # type: ignore[attr-defined]
        fn.score_candidates = candidates_fn  # type: ignore[attr-defined]
        return fn
