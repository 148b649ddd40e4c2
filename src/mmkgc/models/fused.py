"""Adaptively fused multimodal entity representations (AdaMF / NativE / AFME) and the relation-aware KGE model.

:class:`FusedRepresentation` turns an entity id into the per-modality vectors ``[M, D]`` (structure first, then
every modality through its adapter, missing rows filled and masked) and fuses them with an attention operator of
:mod:`mmkgc.nn.fusion`, optionally after AFME's relation gate.  When the fusion depends on the relation
(NativE's temperature ``τ_r``, AFME's gate), the entity vector of a triple depends on the triple's relation: the
representation is ``relation_aware`` and answers the interface of :class:`~mmkgc.models.kge.EntityRepresentation`
with (entity, relation) occurrences (:meth:`FusedRepresentation.occurrences`) and per-relation all-entity tables
(:class:`RelationTables`), which :class:`~mmkgc.models.kge.KGEModel` uses for heads, tails, negatives and the
evaluator.  :class:`FusedKGEModel` adds only the fused methods' diagnostics.

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

from mmkgc.models.kge import (
    EmbeddingRepresentation,
    EntityRepresentation,
    EntityTables,
    FillPolicy,
    KGEModel,
    ModalityInput,
    Occurrences,
    fill_policy,
    mix_rows,
    stack_modalities,
)
from mmkgc.features.store import FeatureTable
from mmkgc.nn.adapters import build_adapter
from mmkgc.nn.fusion import (
    RelationGate,
    TanhAttentionFusion,
    gated_pair_logits,
    gated_pair_mixtures,
    masked_softmax,
)
from mmkgc.nn.distances import mixture_columns
from mmkgc.nn.scorers import mixture_table_transposed, scorer_kernel_available


class FusedRepresentation(EntityRepresentation):
    """Structure + modality vectors fused by attention (``model.representation: fused``).

    :param num_entities: ``N``.
    :param dim: entity width ``D`` (RotatE: ``2d``).
    :param modalities: the modality feature tables (``[N, d_m]`` each, with presence).
    :param missing: fill of absent rows (:data:`~mmkgc.models.kge.FillPolicy`: one policy or one per modality).
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

    def __init__(self, num_entities: int, dim: int, modalities: Sequence[FeatureTable], num_relations: int,
                 init: Callable[[torch.Tensor], None] | None = None, adapter: str = "linear",
                 adapter_hidden: int | None = None, dropout: float = 0.0, trainable_features: bool = False,
                 relation_temperature: bool = False, confidence: str = "none", relation_gate: bool = False,
                 use_masks: bool = True, temperature_init_range: float = 0.05, gate_rank: int | None = None,
                 missing: FillPolicy = "learned"):
        super().__init__()
        if not modalities:
            raise ValueError("a fused representation needs at least one modality")
        self.num_entities, self.dim = num_entities, dim
        self.structure = EmbeddingRepresentation(num_entities, dim, init)
        inputs = []
        for m in modalities:
            if m.values.shape[0] != num_entities:
                raise ValueError(f"modality {m.modality!r} has {m.values.shape[0]} rows but the dataset has "
                                 f"{num_entities} entities")
            mi = ModalityInput(m, dim, adapter, dropout, trainable=trainable_features,
                               missing=fill_policy(missing, m.modality))
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
        return stack_modalities(self.structure, self.inputs, ids)

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


    # ---------------------------------------------------------------- the representation interface
    def occurrences(self, ids: torch.Tensor, relation: torch.Tensor | None = None, first: Sequence[int] = (),
                    keep_components: bool = False) -> Occurrences:
        """:meth:`EntityRepresentation.occurrences` of a fused representation.

        Relation-agnostic (AdaMF): the fused vector of each distinct id.  Relation-conditioned (NativE, AFME): the
        components ``[U, M, D]`` are computed once per distinct entity and every occurrence is a mixture
        ``Σ_m β_m X_m`` (:meth:`mixtures`); the first ``sum(first)`` occurrences (a batch's positives) are
        materialised, the rest stay gathered mixtures, so a scorer's ``match_gathered_mixture`` never stores their fused vectors.
        With AFME's gate the first occurrences' pairs are gated apart from the rest (2B of B(K + 2) occurrences in
        a batch), so the gradient of the negatives' gated components comes from the mixture kernel alone.

        :raises ValueError: a relation-conditioned representation without ``relation``.
        """
        if not self.relation_aware:
            return super().occurrences(ids, relation, first)
        if relation is None:
            raise ValueError("this fused representation depends on the relation: pass relation ids")
        sizes, first = list(first), sum(first)
        unique, inverse = torch.unique(ids, return_inverse=True)
        x, present = self.components(unique)
        n = ids.shape[0]
        if self.gate is None:
            mix, beta, j = self.mixtures(x, present, inverse, relation)
            beta = beta.to(mix.dtype)
            mix_p, beta_p, j_p, mix_n, beta_n, j_n = mix, beta[:first], j[:first], mix, beta[first:], j[first:]
        else:
            empty = (x[:0], x.new_empty((0, x.shape[1])), inverse[:0])
            mix_p, beta_p, j_p = (self.mixtures(x, present, inverse[:first], relation[:first]) if first > 0
                                  else empty)
            mix_n, beta_n, j_n = (self.mixtures(x, present, inverse[first:], relation[first:]) if first < n
                                  else empty)
            beta_p, beta_n = beta_p.to(mix_p.dtype), beta_n.to(mix_n.dtype)
        rows_p = mix_p.index_select(0, j_p)  # [first, M, D]
        vectors = mix_rows(rows_p, beta_p, torch.arange(first, device=rows_p.device))
        components = None
        if keep_components:
            # without a gate rows_p are the first occurrences' components themselves (one gather, one gradient)
            comp = rows_p if self.gate is None else x.index_select(0, inverse[:first])
            components = (comp, present.index_select(0, inverse[:first]))
        return Occurrences(tuple(vectors.split(sizes)), mix_n, j_n, beta_n, components)

    def tables(self, detach: bool = True) -> EntityTables:
        """:meth:`EntityRepresentation.tables`; relation-conditioned: the components of all entities computed once
        and each relation's fused table on demand (:class:`RelationTables`)."""
        if not self.relation_aware:
            return super().tables(detach)
        return RelationTables(self, detach=detach)


class RelationTables(EntityTables):
    """All-entity fused tables per relation for one scoring session (LRU, bounded memory).

    The evaluator sorts queries by relation and scores both sides of a chunk together
    (:meth:`~mmkgc.models.kge.KGEModel.score_sides`), so a relation's table is needed again only by the next chunk:
    two tables are kept by default.

    :param max_bytes: memory for cached ``[N, D]`` tables (at least one is always kept; default: two tables).

    Without a gate (NativE's temperature) the components do not depend on the relation: a detached session on the
    CPU with the compiled kernels keeps them once in the transposed layout ``[M, D, N]`` (:attr:`columns`, one more
    ``N x M x D`` float32 copy) and builds each relation's table from it in one streaming pass
    (:func:`~mmkgc.nn.distances.mixture_columns`), equal bit for bit to :meth:`FusedRepresentation.relation_table`.
    """

    relation_aware = True

    def __init__(self, rep: FusedRepresentation, max_bytes: int | None = None, detach: bool = True):
        self.rep = rep
        x, present = rep.components(None)
        self.x = x.detach().float() if detach else x
        self.present = present
        self.detach = detach
        # without a gate the attention logits only change by the temperature: compute tanh/confidence once
        self.base = rep.fusion.base_logits(self.x) if rep.gate is None else None
        #: the components ``[M, D, N]`` (transposed once) for the streaming table of a gate-free detached session
        self.columns = (self.x.permute(1, 2, 0).contiguous()
                        if detach and rep.gate is None and self.x.device.type == "cpu"
                        and self.x.dtype == torch.float32 and scorer_kernel_available() else None)
        per = self.x.shape[0] * self.x.shape[-1] * 4
        self.capacity = (2 if max_bytes is None else max(1, max_bytes // max(per, 1))) if detach else 1
        self.cache: OrderedDict[int, torch.Tensor] = OrderedDict()
        self.device = self.x.device

    def table(self, r: int | None = None) -> torch.Tensor:
        """The fused vectors of all entities in triples of relation ``r``: ``[N, D]``.

        :raises ValueError: ``r`` is ``None`` (every table here is a relation's).
        """
        if r is None:
            raise ValueError("a relation-conditioned representation has one table per relation: pass the relation")
        if r in self.cache:
            self.cache.move_to_end(r)
            return self.cache[r]
        if self.columns is not None and not torch.is_grad_enabled():
            # relation_table's kernel path, reading the components already transposed
            rel = torch.full((self.x.shape[0],), int(r), dtype=torch.long, device=self.x.device)
            beta = masked_softmax(self.rep.fusion.logits(self.x, rel, base=self.base), self.present)
            out = mixture_columns(self.columns, beta.to(self.x.dtype)).t()
        else:
            out = self.rep.relation_table(self.x, self.present, r, base=self.base)
        if self.detach:
            out = out.detach()
        self.cache[r] = out
        while len(self.cache) > self.capacity:
            self.cache.popitem(last=False)
        return out


    def regularization_rows(self) -> torch.Tensor:
        """The structural table of all entities ``[N, D]`` (what a 1-N step's regulariser acts on)."""
        return self.rep.structure(None)


class FusedKGEModel(KGEModel):
    """A :class:`~mmkgc.models.kge.KGEModel` over a :class:`FusedRepresentation`, with the modality-weight
    diagnostics of the fused methods.

    All scoring is :class:`~mmkgc.models.kge.KGEModel`'s: the representation hands it (entity, relation) occurrences
    and per-relation tables when the fusion is relation-conditioned.  Reciprocal relations are refused with a
    relation-conditioned fusion (the fusion has ``R`` relation parameters).
    """

    entities: FusedRepresentation

    def joint_components(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-modality vectors and fusion mask of ``ids [B]`` (for the adversarial methods)."""
        return self.entities.components(ids)

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
