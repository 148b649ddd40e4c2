"""IMVIA (kernelLZ/ICASSP2025_IMVIA_Code; methods.md section 4): per-modality mixture-of-experts adapters, one
1-N TuckER decoder per modality, contrastive alignment between modalities, CLUB disentanglement of expert views,
and decision fusion of the per-modality predictions.

Composition of shared parts:

* entity tables per branch ("structure" and every modality): a trainable structural table, and for each modality
  either frozen features + a learned linear projection (:class:`~mmkgc.models.kge.ModalityInput`; any feature
  width, so MKG-W/Y, TIVA and Kuai16K run) or the published trainable table initialised from the (optionally
  :func:`~mmkgc.features.pooling.imvia_pool_256`-pooled) features;
* :class:`~mmkgc.nn.adapters.MoEAdapter` per branch (relation temperature for query entities only, from one table
  shared by the branches as published, or one table per branch);
* :class:`~mmkgc.nn.scorers.TuckER` per branch with its own relation table (``2R`` rows, reciprocal relations);
* per-branch alignment projections ``Linear + BatchNorm1d`` (replacing the 256-only shared Conv1x1 head) under
  :class:`~mmkgc.training.losses.SymmetricInfoNCE`;
* :class:`~mmkgc.nn.mutual_information.CLUBEstimator` per branch, trained by :class:`CLUBEstimatorStep`; the two
  expert views it compares are one pair per step shared by the branches (published) or one pair per branch;
* :class:`~mmkgc.nn.fusion.DecisionFusion` of per-branch probabilities.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmkgc.fileio import atomic_write_text
from mmkgc.models.kge import (
    EmbeddingRepresentation,
    EntityRepresentation,
    FillPolicy,
    KGEModel,
    ModalityInput,
    fill_policy,
)
from mmkgc.features.store import FeatureTable
from mmkgc.nn.adapters import MoEAdapter
from mmkgc.nn.fusion import DecisionFusion
from mmkgc.nn.mutual_information import CLUBEstimator, draw_expert_pair
from mmkgc.nn.scorers import TuckER
from mmkgc.losses import BCEWithLabelSmoothing, SoftmaxCrossEntropyLoss, SymmetricInfoNCE
from mmkgc.models.auxiliary import AuxiliaryStep


class ProjectedModalityTable(EntityRepresentation):
    """A frozen modality table projected to width ``D`` (:class:`ModalityInput` with a linear adapter and the
    explicit fill ``missing`` of absent rows).  Shapes: ``forward(ids [B] | None) -> [B, D]``."""

    def __init__(self, features: FeatureTable, dim: int, missing: str = "learned"):
        super().__init__()
        self.num_entities, self.dim = int(features.values.shape[0]), dim
        self.input = ModalityInput(features, dim, adapter="linear", missing=missing)

    def forward(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.input(ids)[0]


def feature_initialised_table(features: FeatureTable, dim: int) -> EmbeddingRepresentation:
    """The published trainable modality table ``[N, D]`` initialised from the features (rows of missing entities
    get ``N(0, 0.01^2)`` values instead).

    :raises ValueError: the feature width is not ``D`` (pool first, or use the projected input).
    """
    values = features.values
    if values.shape[1] != dim:
        raise ValueError(f"modality {features.modality!r}: imvia.modality_input 'table' needs features of width "
                         f"model.dim = {dim}, got {values.shape[1]} (set pooling: imvia_256 with dim 256, or use "
                         "modality_input: projected)")
    present = features.present

    def init(weight: torch.Tensor) -> None:
        weight.copy_(torch.where(present.unsqueeze(-1), values, torch.randn_like(values) * 0.01))

    return EmbeddingRepresentation(values.shape[0], dim, init=init)


class IMVIAModel(KGEModel):
    """IMVIA: one branch per modality (structure first), each ``table -> MoE -> TuckER``, fused at decision level.

    Branch ``m`` for a query ``(e, r)`` (tail queries; head queries are ``(t, r + R, ?)``)::

        X_m = table_m(all entities)                  [N, D]
        A_m = MoE_m(X_m)            (no relation)    [N, D]   candidate side
        q_m, views_m, gates_m = MoE_m(X_m[e], r)      [B, D], [B, n, D], [B, n]
        logits_m = TuckER_m(q_m, R_m[r]) . A_m^T      [B, N];  P_m = sigmoid(logits_m)
        u_m = BN(W_m q_m)                             alignment features [B, A]

    Training loss (:meth:`one_to_n_loss`): ``sum_m BCE(logits_m, y~)`` (``y~`` the smoothed labels; BCE on logits,
    numerically the published ``nn.BCELoss(sigmoid(.))`` without its log clamp) ``+ align_weight * sum_{m<m'}
    InfoNCE(u_m, u_m') + mi_weight * mean_m CLUB_m(views_m)`` and, when the decision weights are trainable
    (``learned`` / ``relation``), ``+ BCE(P_fused, y~)``.

    Inference (:meth:`score_fn`): ``P = DecisionFusion(P_1..P_M)``, a convex combination of **probabilities**, as
    published (``(P_s + P_v + P_t) / 3``).  The mean of probabilities ranks differently from the mean of logits
    (sigmoid is monotone per decoder, not jointly), so the published choice is kept.  Probabilities saturate in
    float32 (``sigmoid(x) == 1`` for ``x > ~17``), which creates ties; report tie-aware ranks (realistic, or the
    published ``random`` policy).  Per-decoder diagnostics rank each decoder's logits (same order as its
    probabilities, fewer float ties).
    With ``decision_space: log_probability`` the fusion averages log-probabilities instead (the log of the
    geometric mean, ``(1/M) sum_m log P_m``; a product of experts, not a probability).

    :param num_entities: ``N``. :param num_relations: ``R`` (relation tables have ``2R`` rows).
    :param dim: entity width ``D`` of every branch.
    :param modalities: modality feature tables (the structure branch is added when ``options.structure``).
    :param options: a :class:`mmkgc.config.ImviaConfig`.
    :param missing: fill of absent rows of the projected inputs (:data:`~mmkgc.models.kge.FillPolicy`).
    :raises ValueError: no branch, or a feature width that does not fit ``modality_input: table``.
    """

    def __init__(self, num_entities: int, num_relations: int, dim: int, modalities: Sequence[FeatureTable],
                 options: Any, missing: FillPolicy = "learned"):
        from mmkgc.features.pooling import imvia_pool_256

        rdim = options.relation_dim or dim
        tables: list[EntityRepresentation] = []
        names: list[str] = []
        if options.structure:
            names.append("structure")
            tables.append(EmbeddingRepresentation(num_entities, dim, init=nn.init.xavier_normal_))
        for feats in modalities:
            values = feats.values
            if options.l2_normalize_features:
                values = nn.functional.normalize(values, dim=-1)
            if options.pooling == "imvia_256":
                values = imvia_pool_256(values, feats.modality)
            prepared = feats.replace(values=values)
            names.append(feats.modality)
            tables.append(feature_initialised_table(prepared, dim) if options.modality_input == "table"
                          else ProjectedModalityTable(prepared, dim, fill_policy(missing, feats.modality)))
        if not tables:
            raise ValueError("IMVIA needs at least one branch (structure or a modality)")

        def decoder() -> TuckER:
            return TuckER(dim, rdim, input_dropout=options.input_dropout, hidden_dropout1=options.hidden_dropout1,
                          hidden_dropout2=options.hidden_dropout2, batch_norm=options.batch_norm)

        # Branch 0 is the KGEModel's own (entities, relations, scorer); the others live in the lists below.
        super().__init__(num_entities, num_relations, decoder(), tables[0], reciprocal=True)
        self.options = options
        self.branch_names = names
        self.extra_tables = nn.ModuleList(tables[1:])
        self.extra_decoders = nn.ModuleList(decoder() for _ in tables[1:])
        self.extra_relations = nn.ModuleList(nn.Embedding(2 * num_relations, rdim) for _ in tables[1:])
        for emb, dec in zip(self.extra_relations, self.extra_decoders):
            dec.init_relation_(emb.weight)
        m = len(names)
        per_branch = options.relation_temperature and options.relation_temperature_table == "per_branch"
        rel_rows = 2 * num_relations if per_branch else 0
        self.adapters = nn.ModuleList(MoEAdapter(dim, dim, options.num_experts, rel_rows, options.noisy_gating,
                                                 options.expert_init)
                                      for _ in range(m))
        # The published single rel_gate (2R x 1, nn.Embedding's N(0, 1) init) shared by all branches.
        self.relation_gate = (nn.Embedding(2 * num_relations, 1)
                              if options.relation_temperature and not per_branch else None)
        adim = options.align_dim or dim
        # one projection per branch, or one shared by every branch (the published single head: ``align_head``)
        self.align_heads = nn.ModuleList(nn.Sequential(nn.Linear(dim, adim, bias=False), nn.BatchNorm1d(adim))
                                         for _ in range(1 if options.align_head == "shared" else m))
        raw = options.align_temperature_parameterization == "raw"
        self.align_loss = SymmetricInfoNCE(options.align_temperature, learnable=options.align_learnable,
                                           min_temperature=options.align_min_temperature if options.align_learnable
                                           else None,
                                           max_temperature=None if raw else 100.0,
                                           normalize=options.align_normalize,
                                           parameterization="raw" if raw else "log")
        self.estimators = nn.ModuleList(
            CLUBEstimator(dim, options.club_legacy_indexing, options.club_include_logvar) for _ in range(m)
        ) if options.mi_weight > 0 and options.num_experts >= 2 else None
        self.decision_fusion = DecisionFusion(m, options.decision_fusion, num_relations=2 * num_relations)
        if options.branch_loss == "softmax_ce":
            self.bce = SoftmaxCrossEntropyLoss(options.label_smoothing)
        else:
            self.bce = BCEWithLabelSmoothing(options.label_smoothing, variant=options.label_smoothing_variant,
                                             from_logits=True)
        self.fused_bce = BCEWithLabelSmoothing(options.label_smoothing, variant=options.label_smoothing_variant,
                                               from_logits=False)

    # ------------------------------------------------------------------------------------------ branches
    @property
    def num_branches(self) -> int:
        return len(self.branch_names)

    def branch(self, i: int) -> tuple[EntityRepresentation, nn.Embedding, TuckER]:
        """``(entity table, relation table, decoder)`` of branch ``i``."""
        if i == 0:
            return self.entities, self.relations, self.scorer
        return self.extra_tables[i - 1], self.extra_relations[i - 1], self.extra_decoders[i - 1]

    def _query(self, i: int, x: torch.Tensor, relations: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not self.options.relation_temperature:
            return self.adapters[i](x)
        if self.relation_gate is not None:
            return self.adapters[i](x, relation_gate=self.relation_gate(relations))
        return self.adapters[i](x, relations)

    def club_pairs(self, views: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The two expert views compared by each branch's CLUB estimator: one pair of expert indices drawn and
        shared by every branch (``club_pair: shared``, published ``MIEstimator``), or one draw per branch."""
        if self.options.club_pair == "shared":
            indices = draw_expert_pair(views[0].shape[1])
            return [est.pair(v, indices=indices) for est, v in zip(self.estimators, views)]
        return [est.pair(v) for est, v in zip(self.estimators, views)]

    def candidates(self, i: int) -> torch.Tensor:
        """MoE-adapted table of all entities of branch ``i`` (no relation temperature): ``[N, D]``."""
        table = self.branch(i)[0]
        return self.adapters[i](table(None))[0]

    def branch_logits(self, i: int, entities: torch.Tensor, relations: torch.Tensor,
                      candidates: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Branch ``i`` for tail queries ``(entities [B], relations [B], ?)`` (relations may be ``r + R``):
        ``(logits [B, N], views [B, n, D], adapted query [B, D])``."""
        table, rel_table, decoder = self.branch(i)
        cand = self.candidates(i) if candidates is None else candidates
        q, views, _ = self._query(i, table(entities), relations)
        return decoder.score_t(q, rel_table(relations), cand), views, q

    def query_views(self, entities: torch.Tensor, relations: torch.Tensor) -> list[torch.Tensor]:
        """Expert views ``[B, n, D]`` of the query entities in every branch."""
        return [self._query(i, self.branch(i)[0](entities), relations)[1] for i in range(self.num_branches)]

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """A decoder's probabilities over the ``N`` entities from its logits ``[B, N]``: sigmoid under the
        published BCE, softmax under ``branch_loss: softmax_ce`` (what each decoder was trained to output)."""
        if self.options.branch_loss == "softmax_ce":
            return torch.softmax(logits, dim=-1)
        return torch.sigmoid(logits)

    def log_probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """A decoder's log-probabilities ``[B, N]`` from its logits: ``log_softmax`` under ``softmax_ce``,
        ``log sigmoid`` under the BCE (exact where the probabilities underflow; what ``decision_space:
        log_probability`` averages)."""
        if self.options.branch_loss == "softmax_ce":
            return torch.log_softmax(logits, dim=-1)
        return nn.functional.logsigmoid(logits)

    @staticmethod
    def _as_tail_queries(queries: torch.Tensor, predict_tail: torch.Tensor, num_relations: int
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        e = torch.where(predict_tail, queries[:, 0], queries[:, 2])
        r = torch.where(predict_tail, queries[:, 1], queries[:, 1] + num_relations)
        return e, r

    # ------------------------------------------------------------------------------------------ training
    def one_to_n_loss(self, queries, predict_tail, labels, loss_fn):
        """Sum of per-branch BCE + alignment + CLUB (+ fused BCE for trainable decision weights); see class.

        ``loss_fn`` (the trainer's generic 1-N loss) is not used: the BCE and its label smoothing come from
        ``model.imvia`` (``label_smoothing``, ``label_smoothing_variant``).
        """
        e, r = self._as_tail_queries(queries, predict_tail, self.num_relations)
        labels = labels.float()
        terms: dict[str, torch.Tensor] = {}
        total = labels.new_zeros(())
        logits, views, aligned = [], [], []
        for i, name in enumerate(self.branch_names):
            lg, vw, q = self.branch_logits(i, e, r)
            lg = lg.float()
            bce = self.bce(lg, labels)
            terms[f"bce_{name}"] = bce.detach()
            total = total + bce
            logits.append(lg)
            views.append(vw)
            aligned.append(self.align_heads[min(i, len(self.align_heads) - 1)](q))
        opts = self.options
        if opts.decision_fusion != "mean":
            fused, _ = self.decision_fusion(torch.stack([self.probabilities(x) for x in logits], 1), r)
            fused_bce = self.fused_bce(fused.clamp(0.0, 1.0), labels)
            terms["bce_fused"] = fused_bce.detach()
            total = total + fused_bce
        if opts.align_weight > 0 and len(aligned) > 1:
            ids = e if opts.align_mask_duplicates else None
            align = sum(self.align_loss(aligned[a].float(), aligned[b].float(), ids)
                        for a, b in itertools.combinations(range(len(aligned)), 2))
            terms["align"] = align.detach()
            total = total + opts.align_weight * align
        if self.estimators is not None:
            for est in self.estimators:
                est.eval()
            pairs = self.club_pairs([v.float() for v in views])
            mi = sum(est.upper_bound(x, y) for est, (x, y) in zip(self.estimators, pairs)) / len(views)
            terms["mi"] = mi.detach()
            total = total + opts.mi_weight * mi
        return total, terms, self.entities(None)

    def auxiliary_steps(self, training) -> list:
        """The CLUB estimator step (own Adam at ``training.lr``, as published), when ``mi_weight > 0``."""
        if self.estimators is None:
            return []
        return [CLUBEstimatorStep(self, lr=training.lr)]

    # ------------------------------------------------------------------------------------------ inference
    @torch.no_grad()
    def branch_score_fn(self, i: int | None = None, probabilities: bool = True
                        ) -> Callable[[torch.Tensor, str], torch.Tensor]:
        """``score_fn(queries [B, 3], side) -> [B, N]`` of branch ``i`` (logits, or probabilities), or of the
        decision fusion (``i=None``; probabilities, or mean log-probabilities under ``decision_space:
        log_probability``).  Candidate tables are computed once; the model must stay in
        eval mode and unchanged while the function is used."""
        cands = [self.candidates(j).detach().float() for j in range(self.num_branches)]
        device = cands[0].device
        num_relations = self.num_relations

        def fn(queries: torch.Tensor, side: str) -> torch.Tensor:
            with torch.no_grad():
                q = queries.to(device)
                if side == "tail":
                    e, r = q[:, 0], q[:, 1]
                elif side == "head":
                    e, r = q[:, 2], q[:, 1] + num_relations
                else:
                    raise ValueError(f"side must be 'head' or 'tail', got {side!r}")
                if i is not None:
                    lg = self.branch_logits(i, e, r, cands[i])[0].float()
                    return self.probabilities(lg) if probabilities else lg
                decide = (self.log_probabilities if self.options.decision_space == "log_probability"
                          else self.probabilities)
                decisions = torch.stack([decide(self.branch_logits(j, e, r, cands[j])[0].float())
                                         for j in range(self.num_branches)], 1)
                return self.decision_fusion(decisions, r)[0]

        fn.device = device  # type: ignore[attr-defined]
        return fn

    @torch.no_grad()
    def score_fn(self) -> Callable[[torch.Tensor, str], torch.Tensor]:
        """Decision-fused scores ``[B, N]`` (probabilities, or mean log-probabilities; see class); no
        sampled-candidate scoring."""
        return self.branch_score_fn(None)

    def score_t(self, queries: torch.Tensor, all_entities: torch.Tensor | None = None) -> torch.Tensor:
        """Fused probabilities of every tail for ``queries [B, 3]`` (``all_entities`` is ignored)."""
        return self.branch_score_fn(None)(queries, "tail")

    def score_h(self, queries: torch.Tensor, all_entities: torch.Tensor | None = None) -> torch.Tensor:
        """Fused probabilities of every head, through ``(t, r + R, ?)``."""
        return self.branch_score_fn(None)(queries, "head")

    def score_hrt(self, triples: torch.Tensor) -> torch.Tensor:
        """Fused probabilities of individual triples ``[B, 3] -> [B]`` (1-N scoring, then the tail column)."""
        flat = triples.reshape(-1, 3)
        scores = self.branch_score_fn(None)(flat, "tail")
        return scores.gather(1, flat[:, 2:3].to(scores.device)).squeeze(1).reshape(triples.shape[:-1])

    def negative_sampling_loss(self, positives, negative_entities, tail_corrupted, loss_fn):
        """Not supported: IMVIA trains with 1-N scoring (``training.loop: one_to_n``).

        :raises TypeError: always.
        """
        raise TypeError("IMVIA trains with training.loop 'one_to_n' (1-N BCE), not negative sampling")

    def write_diagnostics(self, run_dir, triples) -> dict:
        """Test metrics of every per-modality decoder and of the fused prediction (filtered, both directions,
        realistic / optimistic / pessimistic / random ties), written to ``run_dir/imvia_decoders.json``; also
        the decision weights when they are trainable.  Returns the MRR/Hits summary for ``metrics.json``."""
        from mmkgc.evaluation.metrics import evaluate

        if triples.test.shape[0] == 0:
            return {}
        was_training = self.training
        self.eval()
        policies = ("realistic", "optimistic", "pessimistic", "random")
        full: dict[str, Any] = {}
        summary: dict[str, Any] = {}
        fns = [(name, self.branch_score_fn(i, probabilities=False)) for i, name in enumerate(self.branch_names)]
        fns.append(("fused", self.branch_score_fn(None)))
        for name, fn in fns:
            result = evaluate(fn, triples, split="test", policies=policies, per_relation=False, distributed=False)
            full[name] = result.to_dict()
            summary[name] = {p: {k: result.get(k, side="both", policy=p) for k in ("mrr", "hits@1", "hits@3",
                                                                                 "hits@10")}
                             for p in ("realistic", "random")}
        out: dict[str, Any] = {"imvia_decoders": summary}
        if self.options.decision_fusion == "learned":
            out["decision_weights"] = dict(zip(self.branch_names,
                                               torch.softmax(self.decision_fusion.logits, 0).tolist()))
        if run_dir is not None:
            atomic_write_text(Path(run_dir) / "imvia_decoders.json", json.dumps({"branches": full, **out}, indent=2))
        self.train(was_training)
        return out


class CLUBEstimatorStep(AuxiliaryStep):
    """The estimator step of IMVIA's CLUB term: recompute the query entities' expert views under ``no_grad`` and
    minimise each branch estimator's negative log-likelihood (methods.md section 4.4, step 2); own Adam.

    :param model: the :class:`IMVIAModel` (with ``estimators``).
    :param lr: learning rate (published: the model's).
    """

    def __init__(self, model: IMVIAModel, lr: float):
        super().__init__("club_estimator", model.estimators.parameters(), lr)
        self.model = model

    def loss(self, entities, relations, predict_tail, labels) -> torch.Tensor:  # noqa: D102 (see class)
        model = self.model
        device = next(model.parameters()).device
        e = entities.to(device)
        r = relations.to(device)
        tail = predict_tail.to(device)
        r = torch.where(tail, r, r + model.num_relations)
        with torch.no_grad():
            views = model.query_views(e, r)
        for est in model.estimators:
            est.train()
        pairs = model.club_pairs([v.detach().float() for v in views])
        losses = [est.learning_loss(x, y) for est, (x, y) in zip(model.estimators, pairs)]
        return sum(losses) / len(losses)
