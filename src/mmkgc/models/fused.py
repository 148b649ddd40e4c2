"""Adaptively fused multimodal entity representations (AdaMF / NativE / AFME) and the relation-aware KGE model.

:class:`FusedRepresentation` turns an entity id into the per-modality vectors ``[M, D]`` (structure first, then
every modality through its adapter, missing rows filled and masked) and fuses them with an attention operator of
:mod:`mmkgc.nn.fusion`, optionally after AFME's relation gate.  When the fusion depends on the relation
(NativE's temperature ``τ_r``, AFME's gate), the entity vector of a triple depends on the triple's relation:
:class:`FusedKGEModel` passes it for heads, tails and negatives, and its all-entity paths (used by the evaluator)
fuse all ``N`` entities once per distinct relation of a chunk of queries.

Methods: methods.md §5 (AFME), §6 (AdaMF-MAT), §7 (NativE), §8.4.
"""

from __future__ import annotations

import csv
import io
import json
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from mmkgc.models.kge import EmbeddingRepresentation, EntityRepresentation, KGEModel, ModalityFeatures, ModalityInput
from mmkgc.nn.adapters import build_adapter
from mmkgc.nn.fusion import (
    RelationGate,
    TanhAttentionFusion,
    gated_pair_logits,
    gated_pair_mixtures,
    masked_softmax,
)
from mmkgc.nn.scorers import mixture_table_transposed, scorer_kernel_available


class FusedRepresentation(EntityRepresentation):
    """Structure + modality vectors fused by attention (``model.representation: fused``).

    :param num_entities: ``N``.
    :param dim: entity width ``D`` (RotatE: ``2d``).
    :param modalities: the modality feature tables (``[N, d_m]`` each, with presence).
    :param num_relations: ``R`` (for relation-conditioned fusion).
    :param init: initialiser of the structural table (the scorer's).
    :param adapter: ``linear`` (AdaMF) or ``mlp`` (NativE / AFME, hidden width ``adapter_hidden``, default ``D``).
    :param trainable_features: fine-tune the raw feature tables (AdaMF, methods.md §6.1) instead of freezing them.
    :param relation_temperature, confidence: options of :class:`~mmkgc.nn.fusion.TanhAttentionFusion`.
    :param relation_gate: AFME's :class:`~mmkgc.nn.fusion.RelationGate` before the fusion.
    :param use_masks: give absent modalities zero fusion weight (``True``); ``False`` averages their fill vector
        in like a present modality (the ablation of the missing-modality experiment).
    :param temperature_init_range: half-width of the uniform init of NativE's ``g_r`` (``(γ + ε) / (2d)``).
    :param gate_rank: low-rank gate matrix (``model.fusion.gate_rank``), ``None`` = full.

    Shapes: ``forward(ids [B] | None, relation [B] | None) -> [B, D]``; :meth:`components` ->
    ``(x [B, M, D], present [B, M])``; :meth:`fuse` -> ``(fused [B, D], weights [B, M])``.
    """

    def __init__(self, num_entities: int, dim: int, modalities: Sequence[ModalityFeatures], num_relations: int,
                 init: Callable[[torch.Tensor], None] | None = None, adapter: str = "linear",
                 adapter_hidden: int | None = None, dropout: float = 0.0, trainable_features: bool = False,
                 relation_temperature: bool = False, confidence: str = "none", relation_gate: bool = False,
                 use_masks: bool = True, temperature_init_range: float = 0.05, gate_rank: int | None = None):
        super().__init__()
        if not modalities:
            raise ValueError("a fused representation needs at least one modality")
        self.num_entities, self.dim = num_entities, dim
        self.structure = EmbeddingRepresentation(num_entities, dim, init)
        inputs = []
        for m in modalities:
            if m.values.shape[0] != num_entities:
                raise ValueError(f"modality {m.name!r} has {m.values.shape[0]} rows but the dataset has "
                                 f"{num_entities} entities")
            mi = ModalityInput(m, dim, adapter, dropout, trainable=trainable_features)
            if adapter == "mlp":
                mi.adapter = build_adapter("mlp", mi.values.shape[1], dim, hidden_dim=adapter_hidden, dropout=dropout)
            inputs.append(mi)
        self.inputs = nn.ModuleList(inputs)
        self.trainable_features = trainable_features
        self.use_masks = use_masks
        self.gate = RelationGate(dim, num_relations, rank=gate_rank) if relation_gate else None
        self.fusion = TanhAttentionFusion(dim, len(inputs) + 1, relation_temperature, num_relations, confidence,
                                          init_range=temperature_init_range)
        self.relation_aware = relation_gate or relation_temperature
        #: optional ``complete(x [B, M, D], present [B, M]) -> (x', mask')`` filling absent modalities (AFME MoIEn);
        #: the returned mask is what the fusion sees (all ``True`` once the absent slots are filled)
        self.completer: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None

    @property
    def modality_names(self) -> list[str]:
        return ["structure"] + [m.name for m in self.inputs]

    def raw_components(self, ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Adapted vectors ``[B, M, D]`` (absent rows = the fill vector) and true presence ``[B, M]``."""
        s = self.structure(ids)
        vecs, pres = [s], [torch.ones(s.shape[0], dtype=torch.bool, device=s.device)]
        for m in self.inputs:
            v, p = m(ids)
            vecs.append(v)
            pres.append(p)
        return torch.stack(vecs, -2), torch.stack(pres, -1)

    def components(self, ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """What the fusion sees: ``x [B, M, D]`` and the fusion mask ``[B, M]``.  With a completer, absent rows
        are replaced by generated vectors and count as present (the completer may decline, e.g. during its warm-up,
        and return the true mask); without masks every slot counts as present."""
        x, present = self.raw_components(ids)
        if self.completer is not None:
            x, present = self.completer(x, present)
        if not self.use_masks:
            present = torch.ones_like(present)
        return x, present

    def fuse(self, x: torch.Tensor, present: torch.Tensor,
             relation: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Gate (AFME) and fuse ``x [B, M, D]`` -> ``(fused [B, D], weights [B, M])``.

        :raises ValueError: a relation-aware fusion without ``relation``.
        """
        if self.relation_aware and relation is None:
            raise ValueError("this fused representation depends on the relation: pass relation ids")
        if self.gate is not None:
            x, _ = self.gate(x, present, relation)
        return self.fusion(x, present, relation)

    def forward(self, ids: torch.Tensor | None = None, relation: torch.Tensor | None = None) -> torch.Tensor:
        x, present = self.components(ids)
        if relation is not None and relation.ndim == 0:
            relation = relation.expand(x.shape[0])
        return self.fuse(x, present, relation)[0]

    def regularization_tensors(self, ids: torch.Tensor) -> list[torch.Tensor]:
        return [self.structure(ids)]

    def relation_table(self, x: torch.Tensor, present: torch.Tensor, relation: int,
                       base: torch.Tensor | None = None) -> torch.Tensor:
        """The fused vectors of all rows of ``x [N, M, D]`` (mask ``present [N, M]``) under one relation -> ``[N, D]``;
        equal to ``fuse(x, present, full(relation))[0]`` (the all-entity table of the evaluator).

        The relation's gate context is folded into the gate's first matrix (``W (x ⊙ c_r) = (W diag c_r) x``), so no
        ``x ⊙ c_r`` copy is made; ``base`` (:meth:`TanhAttentionFusion.base_logits` of ``x``) is reused without a gate.
        Without autograd the intermediate ``[N, M, D]`` tensors are updated in place.

        Without autograd on the CPU in float32 with the compiled kernels (evaluation): the gate runs through
        :func:`~mmkgc.nn.fusion.gated_pair_logits` (one pass per entity row in cache) and the table is written in the
        transposed layout of the all-entity kernels (:func:`~mmkgc.nn.scorers.mixture_table_transposed`); the
        returned ``[N, D]`` is then a view of that ``[D, N]`` tensor, which the scorer uses without transposing.
        """
        n = x.shape[0]
        rel = torch.full((n,), int(relation), dtype=torch.long, device=x.device)
        inplace = not torch.is_grad_enabled()
        if inplace and x.device.type == "cpu" and x.dtype == torch.float32 and scorer_kernel_available():
            if self.gate is not None:
                x, base = gated_pair_logits(self.gate, self.fusion, x, torch.arange(n, device=x.device), rel)
            logits = self.fusion.logits(x, rel, base=base)
            beta = masked_softmax(logits, present).to(x.dtype)
            return mixture_table_transposed(x, beta).t()
        if self.gate is not None:
            c = self.gate.context[int(relation)].to(x.dtype)
            lin = self.gate.linear
            first, rest = (lin, None) if isinstance(lin, nn.Linear) else (lin[0], lin[1])
            z = nn.functional.linear(x, first.weight.to(x.dtype) * c,
                                     None if first.bias is None else first.bias.to(x.dtype))
            if rest is not None:
                z = rest(z)
            x = z.sigmoid_().mul_(x) if inplace else torch.sigmoid(z) * x
            logits = self.fusion.logits(x, rel)
        else:
            logits = self.fusion.logits(x, rel, base=base)
        beta = masked_softmax(logits, present).to(x.dtype)
        out = x[:, 0] * beta[:, :1]
        for m in range(1, x.shape[1]):
            out = out.addcmul_(x[:, m], beta[:, m:m + 1]) if inplace else out.addcmul(x[:, m], beta[:, m:m + 1])
        return out

    # ---------------------------------------------------------------- per-occurrence mixtures (training path)
    def occurrence_weights(self, x: torch.Tensor, present: torch.Tensor, index: torch.Tensor,
                           relation: torch.Tensor | None) -> torch.Tensor:
        """Fusion weights ``β [P, M]`` of ``P`` occurrences of distinct entities without a gate.

        ``x [U, M, D]``, ``present [U, M]`` are the components of the distinct entities; occurrence ``p`` is entity
        ``index[p]`` under ``relation[p]``.  The relation-independent logits ``α_m wᵀtanh(x_m)`` are computed once
        per distinct entity ``[U, M]``; only the temperature division and the softmax run per occurrence (``[P, M]``).
        Equal to ``fusion(x[index], present[index], relation)[1]``.
        """
        base = self.fusion.base_logits(x)
        logits = self.fusion.logits(None, relation, base=base.index_select(0, index))
        return masked_softmax(logits, present.index_select(0, index))

    def mixtures(self, x: torch.Tensor, present: torch.Tensor, index: torch.Tensor, relation: torch.Tensor | None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The fused vectors of ``P`` occurrences as mixtures, without materialising them:
        ``fused[p] = Σ_m β[p, m] X[j[p], m]``.

        ``x [U, M, D]``, ``present [U, M]``: components of distinct entities; occurrence ``p`` is entity ``index[p]``
        under ``relation[p]`` (``None`` for a relation-agnostic fusion).

        * without a gate (AdaMF, NativE): ``X = x``, ``j = index``, ``β`` from :meth:`occurrence_weights`;
        * with AFME's gate: the gate depends on (entity, relation), so it runs once per *distinct* pair
          (``torch.unique`` over ``index * R + relation``): ``X [V, M, D]`` are the gated components of the ``V``
          pairs and ``j`` maps occurrences to pairs.  On the CPU in float32 with the compiled kernels the pairs'
          fused vectors are computed directly (:func:`~mmkgc.nn.fusion.gated_pair_mixtures`): ``X [V, 1, D]`` and
          ``β = 1 [P, 1]`` (a pair's weights do not depend on the occurrence).

        :returns: ``(X [V, M, D], β [P, M], j [P])``.
        """
        if self.gate is None:
            return x, self.occurrence_weights(x, present, index, relation), index
        if relation is None:
            raise ValueError("this fused representation depends on the relation: pass relation ids")
        num_relations = self.gate.context.shape[0]
        pairs, j = torch.unique(index * num_relations + relation, return_inverse=True)
        ent, rel = pairs // num_relations, pairs % num_relations
        if x.device.type == "cpu" and x.dtype == torch.float32 and scorer_kernel_available():
            # the pairs' fused vectors directly (one mixture component each): no [V, M, D] tensor is kept
            fused, _ = gated_pair_mixtures(self.gate, self.fusion, x, ent, rel, present.index_select(0, ent))
            return fused.unsqueeze(1), fused.new_ones(j.shape[0], 1), j
        xg, base = gated_pair_logits(self.gate, self.fusion, x, ent, rel)
        pp = present.index_select(0, ent)
        beta = masked_softmax(self.fusion.logits(None, rel, base=base), pp)
        return xg, beta.index_select(0, j), j


def _mix(x: torch.Tensor, beta: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``Σ_m beta[p, m] x[index[p], m]`` -> ``[P, D]`` for ``x [V, M, D]``, ``beta [P, M]``, ``index [P]``."""
    rows = x.index_select(0, index)
    out = rows[:, 0] * beta[:, :1]
    for m in range(1, x.shape[1]):
        out = out.addcmul(rows[:, m], beta[:, m:m + 1])
    return out


class _RelationTables:
    """All-entity fused tables per relation for one scoring session (LRU, bounded memory).

    The evaluator sorts queries by relation and scores both sides of a chunk together
    (:meth:`FusedKGEModel.score_sides`), so a relation's table is needed again only by the next chunk: two tables
    are kept by default.

    :param max_bytes: memory for cached ``[N, D]`` tables (at least one is always kept; default: two tables).
    """

    def __init__(self, rep: FusedRepresentation, max_bytes: int | None = None, detach: bool = True):
        self.rep = rep
        x, present = rep.components(None)
        self.x = x.detach().float() if detach else x
        self.present = present
        self.detach = detach
        # without a gate the attention logits only change by the temperature: compute tanh/confidence once
        self.base = rep.fusion.base_logits(self.x) if rep.gate is None else None
        per = self.x.shape[0] * self.x.shape[-1] * 4
        self.capacity = (2 if max_bytes is None else max(1, max_bytes // max(per, 1))) if detach else 1
        self.cache: OrderedDict[int, torch.Tensor] = OrderedDict()

    def table(self, r: int) -> torch.Tensor:
        if r in self.cache:
            self.cache.move_to_end(r)
            return self.cache[r]
        out = self.rep.relation_table(self.x, self.present, r, base=self.base)
        if self.detach:
            out = out.detach()
        self.cache[r] = out
        while len(self.cache) > self.capacity:
            self.cache.popitem(last=False)
        return out


class FusedKGEModel(KGEModel):
    """A :class:`KGEModel` over a :class:`FusedRepresentation`; when the fusion is relation-conditioned, every
    entity vector is fused for the relation of its triple (heads, tails, negatives, all-entity candidates).

    Relation-agnostic fusion (AdaMF) keeps the fast shared paths of :class:`KGEModel`.
    Reciprocal relations are refused with a relation-aware fusion (the fusion has ``R`` relation parameters).
    """

    entities: FusedRepresentation

    def __init__(self, num_entities: int, num_relations: int, scorer: nn.Module,
                 representation: FusedRepresentation, reciprocal: bool = False):
        if reciprocal and representation.relation_aware:
            raise ValueError("relation-conditioned fusion does not support reciprocal relations")
        super().__init__(num_entities, num_relations, scorer, representation, reciprocal=reciprocal)
        #: while ``True`` (set by a subclass around its main step), :meth:`score_positives_and_negatives` leaves
        #: ``(positives, x [2B, M, D], present [2B, M])``, the components of the positives' heads then tails, in
        #: :attr:`batch_components` for the subclass to reuse and clear
        self.keep_batch_components = False
        self.batch_components: tuple[torch.Tensor, ...] | None = None

    @property
    def relation_aware(self) -> bool:
        return self.entities.relation_aware

    # -------------------------------------------------------------------------------- pointwise
    def embed(self, triples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not self.relation_aware:
            return super().embed(triples)
        shape = triples.shape[:-1]
        flat = triples.reshape(-1, 3)
        n = flat.shape[0]
        unique, inverse = torch.unique(torch.cat([flat[:, 0], flat[:, 2]]), return_inverse=True)
        x, present = self.entities.components(unique)
        rel = flat[:, 1].repeat(2)
        reps, _ = self.entities.fuse(x[inverse], present[inverse], rel)
        return reps[:n].reshape(*shape, -1), self.relations(triples[..., 1]), reps[n:].reshape(*shape, -1)

    def joint_components(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-modality vectors and fusion mask of ``ids [B]`` (for the adversarial methods)."""
        return self.entities.components(ids)

    def score_positives_and_negatives(
        self, positives: torch.Tensor, negative_entities: torch.Tensor, tail_corrupted: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`KGEModel.score_positives_and_negatives`, every entity fused for the relation of its triple.

        The components ``[U, M, D]`` are computed once per distinct entity of the batch and every occurrence is a
        mixture ``Σ_m β_m X_m`` (:meth:`FusedRepresentation.mixtures`); with a factorising scorer the negatives are
        scored by :meth:`~mmkgc.nn.scorers.Scorer.match_gathered_mixture`, which never stores their ``[B K, D]``
        fused vectors (RotatE, TransE-L1: a compiled CPU kernel).
        """
        if not self.relation_aware:
            return super().score_positives_and_negatives(positives, negative_entities, tail_corrupted)
        b, k = negative_entities.shape
        ids = torch.cat([positives[:, 0], positives[:, 2], negative_entities.reshape(-1)])
        unique, inverse = torch.unique(ids, return_inverse=True)
        x, present = self.entities.components(unique)
        rel = positives[:, 1]
        rel_all = torch.cat([rel, rel, rel.repeat_interleave(k)])
        if self.entities.gate is None:
            mix, beta, j = self.entities.mixtures(x, present, inverse, rel_all)
            beta = beta.to(mix.dtype)
            mix_p, beta_p, j_p, mix_n, beta_n, j_n = mix, beta[:2 * b], j[:2 * b], mix, beta[2 * b:], j[2 * b:]
        else:
            # AFME: the positives' pairs are gated apart from the negatives' (2B of B(K + 2) occurrences), so the
            # gradient of the negatives' [V, M, D] gated components comes from the mixture kernel alone instead of
            # being summed with a mostly-zero [V, M, D] gradient of the positives' rows
            mix_p, beta_p, j_p = self.entities.mixtures(x, present, inverse[:2 * b], rel_all[:2 * b])
            mix_n, beta_n, j_n = self.entities.mixtures(x, present, inverse[2 * b:], rel_all[2 * b:])
            beta_p, beta_n = beta_p.to(mix_p.dtype), beta_n.to(mix_n.dtype)
        rows_p = mix_p.index_select(0, j_p)  # [2B, M, D]: the positives' heads, then tails
        ht = _mix(rows_p, beta_p, torch.arange(2 * b, device=rows_p.device))
        h, t = ht[:b], ht[b:]
        if self.keep_batch_components:
            # without a gate rows_p are the positives' components themselves (one gather, one gradient buffer)
            comp = rows_p if self.entities.gate is None else x.index_select(0, inverse[:2 * b])
            self.batch_components = (positives, comp, present.index_select(0, inverse[:2 * b]))
        r = self.relations(rel)
        scorer = self.scorer
        if scorer.factorises:
            # every negative of positive b shares its relation: one (h, r) and one (r, t) query per positive,
            # matched against the negatives' own (relation-fused) mixtures
            queries = torch.cat([scorer.tail_query(h, r), scorer.head_query(r, t)])
            which = torch.arange(b, device=positives.device).unsqueeze(1) + b * (~tail_corrupted).long()
            neg = scorer.match_gathered_mixture(queries, which.reshape(-1), mix_n, beta_n, j_n)
            return scorer.match(queries[:b], t), neg.reshape(b, k)
        e = _mix(mix_n, beta_n, j_n).reshape(b, k, -1)
        mask = tail_corrupted.unsqueeze(-1)
        neg_h = torch.where(mask, h.unsqueeze(1), e)
        neg_t = torch.where(mask, e, t.unsqueeze(1))
        return scorer.score_hrt(h, r, t), scorer.score_hrt(neg_h, r.unsqueeze(1), neg_t)

    # -------------------------------------------------------------------------------- all entities
    def _grouped(self, queries: torch.Tensor, tables: _RelationTables,
                 fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``fn(rows of queries, relation ids, fused table [N, D])`` per distinct relation, reassembled."""
        rels = queries[:, 1]
        out = None
        for r in torch.unique(rels).tolist():
            idx = (rels == r).nonzero(as_tuple=True)[0]
            part = fn(queries[idx], rels[idx], tables.table(int(r)))
            if out is None:
                out = part.new_empty((queries.shape[0], *part.shape[1:]))
            out = out.index_put((idx,), part)
        return out

    def score_t(self, queries: torch.Tensor, all_entities=None) -> torch.Tensor:
        if not self.relation_aware:
            return super().score_t(queries, all_entities)
        tables = all_entities if isinstance(all_entities, _RelationTables) else _RelationTables(self.entities,
                                                                                                 detach=False)
        return self._grouped(queries, tables, lambda q, r, ents: self.scorer.score_t(
            ents.index_select(0, q[:, 0]), self.relations(r), ents))

    def score_h(self, queries: torch.Tensor, all_entities=None) -> torch.Tensor:
        if not self.relation_aware:
            return super().score_h(queries, all_entities)
        tables = all_entities if isinstance(all_entities, _RelationTables) else _RelationTables(self.entities,
                                                                                                 detach=False)
        return self._grouped(queries, tables, lambda q, r, ents: self.scorer.score_h(
            ents, self.relations(r), ents.index_select(0, q[:, 2])))

    def score_candidates(self, queries: torch.Tensor, side: str, candidates: torch.Tensor,
                         all_entities=None) -> torch.Tensor:
        if not self.relation_aware:
            return super().score_candidates(queries, side, candidates, all_entities)
        if side not in ("head", "tail"):
            raise ValueError(f"side must be 'head' or 'tail', got {side!r}")
        tables = all_entities if isinstance(all_entities, _RelationTables) else _RelationTables(self.entities)
        scorer = self.scorer

        def part(q, r, ents, cand):
            if side == "tail":
                query = scorer.tail_query(ents.index_select(0, q[:, 0]), self.relations(r))
            else:
                query = scorer.head_query(self.relations(r), ents.index_select(0, q[:, 2]))
            return scorer.match(query.unsqueeze(1), ents[cand])

        rels = queries[:, 1]
        out = None
        for r in torch.unique(rels).tolist():
            idx = (rels == r).nonzero(as_tuple=True)[0]
            p = part(queries[idx], rels[idx], tables.table(int(r)), candidates[idx])
            out = p.new_empty((queries.shape[0], candidates.shape[1])) if out is None else out
            out = out.index_put((idx,), p)
        return out

    @torch.no_grad()
    def scoring_context(self):
        """With a relation-aware fusion: the per-modality vectors of all entities, computed once, and the fused table
        of each relation computed on demand (:class:`_RelationTables`, the last two kept)."""
        if not self.relation_aware:
            return super().scoring_context()
        tables = _RelationTables(self.entities)
        return tables, tables.x.device

    def score_sides(self, queries: torch.Tensor, sides: Sequence[str], tables: "_RelationTables"
                    ) -> dict[str, torch.Tensor]:
        """All-entity scores of ``queries [B, 3]`` for each of ``sides`` (``"head"``, ``"tail"``) -> ``{side: [B, N]}``,
        building the fused table of each distinct relation of the queries once for all sides (evaluation loops over
        the relations of the chunk; equal to :meth:`score_t` / :meth:`score_h`).

        :raises ValueError: an unknown side.
        """
        for side in sides:
            if side not in ("head", "tail"):
                raise ValueError(f"side must be 'head' or 'tail', got {side!r}")
        rels = queries[:, 1]
        out: dict[str, torch.Tensor] = {}
        for r in torch.unique(rels).tolist():
            idx = (rels == r).nonzero(as_tuple=True)[0]
            q = queries.index_select(0, idx)
            ents = tables.table(int(r))
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

    @torch.no_grad()
    def score_fn(self) -> Callable[[torch.Tensor, str], torch.Tensor]:
        """As :meth:`KGEModel.score_fn`; with a relation-aware fusion the evaluator is asked to group queries by
        relation (``fn.query_order``) and to score both sides of a chunk together (``fn.score_sides``), so each
        relation's fused table is built once per evaluation."""
        if not self.relation_aware:
            return super().score_fn()
        tables, device = self.scoring_context()

        def score_sides(queries: torch.Tensor, sides: Sequence[str]) -> dict[str, torch.Tensor]:
            with torch.no_grad():
                return self.score_sides(queries.to(device), tuple(sides), tables)

        def single(queries: torch.Tensor, side: str) -> torch.Tensor:
            return score_sides(queries, (side,))[side]

        def candidates_fn(queries: torch.Tensor, side: str, candidates: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return self.score_candidates(queries.to(device), side, candidates.to(device), tables)

        single.device = device  # type: ignore[attr-defined]
        single.score_candidates = candidates_fn  # type: ignore[attr-defined]
        single.score_sides = score_sides  # type: ignore[attr-defined]
        single.query_order = "relation"  # type: ignore[attr-defined]
        return single

    def one_to_n_loss(self, queries, predict_tail, labels, loss_fn):
        if not self.relation_aware:
            return super().one_to_n_loss(queries, predict_tail, labels, loss_fn)
        tables = _RelationTables(self.entities, detach=False)
        logits = torch.empty(queries.shape[0], self.num_entities, device=queries.device)
        for mask, fn in ((predict_tail, self.score_t), (~predict_tail, self.score_h)):
            if bool(mask.any()):
                idx = mask.nonzero(as_tuple=True)[0]
                logits = logits.index_put((idx,), fn(queries[idx], tables).to(logits.dtype))
        return loss_fn(logits.float(), labels), {}, self.entities.structure(None)

    # -------------------------------------------------------------------------------- diagnostics
    @torch.no_grad()
    def modality_weights(self, triples: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
        """Fusion weights of the heads and tails of ``triples [T, 3]`` under their relation: ``[T, 2, M]``,
        and the true presence ``[T, 2, M]``."""
        ws, ps = [], []
        for start in range(0, triples.shape[0], chunk):
            part = triples[start:start + chunk]
            ids = torch.cat([part[:, 0], part[:, 2]])
            rel = part[:, 1].repeat(2)
            x, mask = self.entities.components(ids)
            _, w = self.entities.fuse(x, mask, rel if self.relation_aware else None)
            _, present = self.entities.raw_components(ids)
            n = part.shape[0]
            ws.append(torch.stack([w[:n], w[n:]], 1))
            ps.append(torch.stack([present[:n], present[n:]], 1))
        return torch.cat(ws), torch.cat(ps)

    def write_diagnostics(self, run_dir, triples, max_triples: int = 20000) -> dict:
        """Per-entity and per-relation modality weights (CSV), their distribution (PNG), and test metrics broken
        down by which modalities the query's known entity has.

        Weights are those of the training triples (a seeded sample of at most ``max_triples``): per relation the
        mean over its heads and tails, per entity the mean over its occurrences.

        Files: ``modality_weights_entities.csv``, ``modality_weights_relations.csv``, ``modality_weights.png``.
        :returns: summary for ``metrics.json`` (mean weight per modality, metrics by modality group).
        """
        from mmkgc.fileio import atomic_write_text

        run_dir = Path(run_dir)
        names = self.entities.modality_names
        device = next(self.parameters()).device
        train = triples.train
        if train.shape[0] > max_triples:
            g = torch.Generator().manual_seed(0)
            train = train[torch.randperm(train.shape[0], generator=g)[:max_triples]]
        train = train.to(device)
        w, present = self.modality_weights(train)
        w, present = w.float().cpu(), present.cpu()
        n, r = self.num_entities, self.num_relations
        ents = torch.stack([train[:, 0], train[:, 2]], 1).cpu().reshape(-1)
        flat_w = w.reshape(-1, len(names))
        ent_sum = torch.zeros(n, len(names)).index_add_(0, ents, flat_w)
        ent_cnt = torch.zeros(n).index_add_(0, ents, torch.ones(ents.shape[0]))
        rels = train[:, 1].cpu().repeat_interleave(2)
        rel_sum = torch.zeros(r, len(names)).index_add_(0, rels, flat_w)
        rel_cnt = torch.zeros(r).index_add_(0, rels, torch.ones(rels.shape[0]))
        _, ent_present = self.entities.raw_components(torch.arange(n, device=device))
        ent_present = ent_present.cpu()

        buf = io.StringIO()
        out = csv.writer(buf)
        out.writerow(["entity_id", "entity", "occurrences", *[f"w_{m}" for m in names],
                      *[f"has_{m}" for m in names[1:]]])
        labels = triples.entity_labels
        for e in range(n):
            c = float(ent_cnt[e])
            if c == 0:
                continue
            out.writerow([e, labels[e], int(c), *[f"{v:.6f}" for v in (ent_sum[e] / c).tolist()],
                          *[int(v) for v in ent_present[e, 1:].tolist()]])
        atomic_write_text(run_dir / "modality_weights_entities.csv", buf.getvalue())
        buf = io.StringIO()
        out = csv.writer(buf)
        out.writerow(["relation_id", "relation", "occurrences", *[f"w_{m}" for m in names]]
                     + (["temperature"] if self.entities.fusion.relation_temperature else []))
        rel_labels = triples.relation_labels
        for i in range(r):
            c = float(rel_cnt[i])
            if c == 0:
                continue
            row = [i, rel_labels[i], int(c), *[f"{v:.6f}" for v in (rel_sum[i] / c).tolist()]]
            if self.entities.fusion.relation_temperature:
                row.append(f"{float(self.entities.fusion.temperature(torch.tensor([i], device=device)).detach()):.6f}")
            out.writerow(row)
        atomic_write_text(run_dir / "modality_weights_relations.csv", buf.getvalue())
        from mmkgc.extras import available

        if available("matplotlib"):  # the histogram is skipped on an install without the plots extra
            _plot_weights(flat_w, present.reshape(-1, len(names)), names, run_dir / "modality_weights.png")

        summary: dict = {
            "modality_weights": {
                "mean": dict(zip(names, flat_w.mean(0).tolist())),
                "mean_where_present": {
                    m: float(flat_w[present.reshape(-1, len(names))[:, j], j].mean())
                    if bool(present.reshape(-1, len(names))[:, j].any()) else None
                    for j, m in enumerate(names)},
                "triples_sampled": int(train.shape[0]),
            }
        }
        summary["test_by_modalities"] = self._metrics_by_modalities(triples, ent_present, names)
        atomic_write_text(run_dir / "modality_diagnostics.json", json.dumps(summary, indent=2))
        return summary

    def _metrics_by_modalities(self, triples, ent_present: torch.Tensor, names: list[str]) -> dict:
        """Test metrics (realistic ties, head and tail averaged) per group of the entity being *predicted*: the
        group names the modalities it has (e.g. ``text+visual``, ``none``)."""
        from mmkgc.evaluation.metrics import evaluate

        test = triples.test
        if test.shape[0] == 0:
            return {}

        def group(e: int) -> str:
            has = [m for m, p in zip(names[1:], ent_present[e, 1:].tolist()) if p]
            return "+".join(has) if has else "none"

        heads = [group(int(h)) for h in test[:, 0]]  # head prediction predicts the head
        tails = [group(int(t)) for t in test[:, 2]]
        if len(set(heads) | set(tails)) == 1:  # one group: identical to the test metrics, skip a second ranking
            return {heads[0]: {"count": 2 * len(heads), "same_as": "test"}}
        result = evaluate(self.score_fn(), triples, split="test", per_relation=False,
                          group_labels={"head": heads, "tail": tails}, distributed=False)
        return _group_summary(result.to_dict())


def _group_summary(d: dict) -> dict:
    """``{group: {metric: value}}`` (realistic ties, both sides) from ``EvaluationResult.to_dict()["by_group"]``."""
    out = {}
    for label, by_policy in d.get("by_group", {}).items():
        policy = by_policy.get("realistic") or next(iter(by_policy.values()))
        both = policy.get("both") or next(iter(policy.values()))
        out[label] = {k: v for k, v in both.items() if k in ("mrr", "mr", "hits@1", "hits@3", "hits@10", "count")}
    return out


def _plot_weights(weights: torch.Tensor, present: torch.Tensor, names: list[str], path: Path) -> None:
    """Histogram of the fusion weight of each modality over entity occurrences where it is present."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for j, m in enumerate(names):
        values = weights[present[:, j], j].numpy()
        if values.size:
            ax.hist(values, bins=50, range=(0.0, 1.0), alpha=0.5, label=f"{m} (n={values.size})")
    ax.set_xlabel("fusion weight")
    ax.set_ylabel("entity occurrences (training triples)")
    ax.set_title("modality weight distribution")
    ax.legend()
    from mmkgc.plotting import save_figure

    save_figure(fig, path)
