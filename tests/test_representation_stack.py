"""Every model kind through the one representation interface (:class:`~mmkgc.models.kge.EntityRepresentation`:
``forward``, ``occurrences``, ``tables``) and :class:`~mmkgc.models.kge.KGEModel`'s single scoring code, against a
direct computation one entity occurrence at a time in float64: batch scores and gradients, all-entity scores of
both sides (the evaluator's ``score_fn``, also ``score_sides``), sampled-candidate scores and the 1-N logits."""

from __future__ import annotations

import copy

import pytest
import torch
from test_fused_paths import reference_entity

from mmkgc.config import parse_config
from mmkgc.models.kge import EntityTables, KGEModel, Occurrences
from mmkgc.pipeline import build_model, load_data

BASE = {
    "dataset": {"synthetic": {"num_entities": 40, "num_relations": 4, "seed": 1, "missing_text": 0.3,
                              "missing_visual": 0.4, "unseen_entity_share": 0.1}},
    "model": {"scorer": "rotate", "dim": 6, "scorer_options": {"margin": 6.0}},
    "training": {"epochs": 1, "batch_size": 16, "num_negatives": 3},
}
MODS = [{"name": "text"}, {"name": "visual"}]
ATT = {"kind": "attention"}
KINDS = {
    "structure_rotate": {},
    "structure_transe_l1": {"scorer": "transe", "scorer_options": {"p": 1, "margin": 6.0}},
    "structure_distmult": {"scorer": "distmult", "scorer_options": {}},
    "structure_complex_reciprocal": {"scorer": "complex", "scorer_options": {}, "reciprocal": True},
    "concat": {"representation": "concat", "modalities": MODS},
    "concat_unseen": {"representation": "concat", "modalities": MODS, "unseen": {"mode": "modality"}},
    "modality_only": {"representation": "modality_only", "modalities": [{"name": "text"}]},
    "rgcn": {"representation": "rgcn", "scorer": "distmult", "scorer_options": {}, "gnn": {"hidden_dims": [8]}},
    "adamf": {"representation": "fused", "modalities": MODS, "trainable_features": True, "fusion": ATT},
    "adamf_distmult": {"representation": "fused", "modalities": MODS, "trainable_features": True, "fusion": ATT,
                       "scorer": "distmult", "scorer_options": {}},
    "native": {"representation": "fused", "modalities": MODS, "adapter": "mlp",
               "fusion": {**ATT, "relation_temperature": True}},
    "native_distmult_unseen": {"representation": "fused", "modalities": MODS, "adapter": "mlp",
                               "fusion": {**ATT, "relation_temperature": True}, "scorer": "distmult",
                               "scorer_options": {}, "unseen": {"mode": "modality"}},
    "afme": {"representation": "fused", "modalities": MODS, "adapter": "mlp",
             "fusion": {**ATT, "relation_temperature": True, "confidence": "l2", "relation_gate": True}},
    "afme_transe_low_rank": {"representation": "fused", "modalities": MODS, "adapter": "mlp", "scorer": "transe",
                             "scorer_options": {"p": 1, "margin": 6.0},
                             "fusion": {**ATT, "relation_temperature": True, "confidence": "l2",
                                        "relation_gate": True, "gate_rank": 2}},
}


def build(kind: str) -> KGEModel:
    d = copy.deepcopy(BASE)
    d["model"].update(copy.deepcopy(KINDS[kind]))
    cfg = parse_config(d)
    data = load_data(cfg)
    torch.manual_seed(0)
    model = build_model(cfg, data)
    with torch.no_grad():  # away from zero-initialised layers and near-identity gates
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model, data.triples


def entity_vector(model: KGEModel, e: int, r: int) -> torch.Tensor:
    """The vector of entity ``e`` in a triple of relation ``r``, for this one occurrence: the hand-written fusion
    formula of a relation-conditioned representation, else ``forward`` of the single id."""
    if model.entities.relation_aware:
        return reference_entity(model, e, r)
    return model.entities(torch.tensor([e]))[0]


def triple_score(model: KGEModel, h: int, r: int, t: int) -> torch.Tensor:
    return model.scorer.score_hrt(entity_vector(model, h, r), model.relations.weight[r], entity_vector(model, t, r))


def all_entity_reference(model: KGEModel, queries: torch.Tensor, side: str) -> torch.Tensor:
    """``[B, N]`` scores of every candidate, one triple at a time (reciprocal head queries: ``(t, r + R, e)``)."""
    n = model.num_entities
    rows = []
    for h, r, t in queries.tolist():
        if side == "tail":
            rows.append(torch.stack([triple_score(model, h, r, e) for e in range(n)]))
        elif model.reciprocal:
            rows.append(torch.stack([triple_score(model, t, r + model.num_relations, e) for e in range(n)]))
        else:
            rows.append(torch.stack([triple_score(model, e, r, t) for e in range(n)]))
    return torch.stack(rows)


def batch(triples, b: int = 6, k: int = 3):
    g = torch.Generator().manual_seed(4)
    positives = triples.train[torch.randperm(triples.train.shape[0], generator=g)[:b]]
    negatives = torch.randint(0, triples.num_entities, (b, k), generator=g)
    negatives[0, 0] = positives[0, 2]  # an entity both a positive's tail and a negative
    tail = torch.rand(b, k, generator=g) < 0.5
    return positives, negatives, tail


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_model_kind_through_the_single_interface_equals_per_row_computation(kind):
    model, triples = build(kind)
    assert isinstance(model, KGEModel)
    for name in ("score_t", "score_h", "score_hrt", "score_fn", "score_positives_and_negatives", "one_to_n_loss",
                 "score_candidates", "scoring_context", "embed"):
        assert getattr(type(model), name) is getattr(KGEModel, name), name  # no method-by-method override
    positives, negatives, tail = batch(triples)
    b, k = negatives.shape
    g = torch.Generator().manual_seed(5)
    wp, wn = torch.randn(b, generator=g), torch.randn(b, k, generator=g)
    model.eval()  # no dropout / structure-dropout draws: the per-row reference sees the same function

    ref = copy.deepcopy(model).double()
    ref_pos = torch.stack([triple_score(ref, h, r, t) for h, r, t in positives.tolist()])
    ref_neg = torch.stack([torch.stack([triple_score(ref, h, r, e) if tail[i, j] else triple_score(ref, e, r, t)
                                        for j, e in enumerate(negatives[i].tolist())])
                           for i, (h, r, t) in enumerate(positives.tolist())])
    ref.zero_grad()
    ((ref_pos * wp.double()).sum() + (ref_neg * wn.double()).sum()).backward()
    ref_grads = {n: p.grad for n, p in ref.named_parameters() if p.grad is not None}

    # (c) occurrences: the first groups materialised, the rest in gathered form, all equal to the per-row vectors
    ids = torch.cat([positives[:, 0], negatives.reshape(-1)])
    rels = torch.cat([positives[:, 1], positives[:, 1].repeat_interleave(k)])
    occ = model.entities.occurrences(ids, rels if model.relation_aware else None, first=(2, b - 2))
    assert isinstance(occ, Occurrences) and [f.shape[0] for f in occ.first] == [2, b - 2]
    expected = torch.stack([entity_vector(ref, e, r) for e, r in zip(ids.tolist(), rels.tolist())])
    got = torch.cat([*occ.first, occ.rest()])
    assert torch.allclose(got.double(), expected, atol=2e-6), (got.double() - expected).abs().max()

    pos, neg = model.score_positives_and_negatives(positives, negatives, tail)
    assert torch.allclose(pos.double(), ref_pos, atol=2e-5) and torch.allclose(neg.double(), ref_neg, atol=2e-5)
    assert torch.allclose(model.score_hrt(positives).double(), ref_pos, atol=2e-5)
    model.zero_grad()
    ((pos * wp).sum() + (neg * wn).sum()).backward()
    got_grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert set(got_grads) == set(ref_grads)
    for name, grad in got_grads.items():
        assert torch.allclose(grad.double(), ref_grads[name], atol=2e-5, rtol=1e-4), name

    # (a) all entities: the evaluator's score function, both sides, and sampled candidates
    queries = triples.test[:5]
    with torch.no_grad():
        ref_tail = all_entity_reference(ref, queries, "tail")
        ref_head = all_entity_reference(ref, queries, "head")
        fn = model.score_fn()
        assert torch.allclose(fn(queries, "tail").double(), ref_tail, atol=2e-5)
        assert torch.allclose(fn(queries, "head").double(), ref_head, atol=2e-5)
        assert hasattr(fn, "score_sides") == model.relation_aware
        both = model.score_sides(queries, ("head", "tail"), model.scoring_context()[0])
        assert torch.allclose(both["tail"].double(), ref_tail, atol=2e-5)
        assert torch.allclose(both["head"].double(), ref_head, atol=2e-5)
        cand = torch.randint(0, triples.num_entities, (queries.shape[0], 4), generator=g)
        for side, full in (("tail", ref_tail), ("head", ref_head)):
            assert torch.allclose(fn.score_candidates(queries, side, cand).double(), full.gather(1, cand), atol=2e-5)
            direct = model.score_candidates(queries, side, cand)  # no session: embeds only what it needs
            assert torch.allclose(direct.double(), full.gather(1, cand), atol=2e-5)

    # the 1-N loss sees the same all-entity logits (with gradients), tail and head queries mixed
    predict_tail = torch.tensor([True, False, True, False, False])
    seen = []
    model.one_to_n_loss(queries, predict_tail, torch.zeros(5, model.num_entities),
                        lambda logits, labels: seen.append(logits) or logits.sum())
    expected_1n = torch.where(predict_tail.unsqueeze(1), ref_tail, ref_head)
    assert seen[0].requires_grad and torch.allclose(seen[0].double(), expected_1n, atol=2e-5)


def test_entity_tables_interface():
    table = torch.randn(5, 3)
    session = EntityTables(table)
    assert session.table(None) is table and session.table(2) is table and not session.relation_aware
    model, _ = build("native")
    with torch.no_grad():
        tables = model.entities.tables()
    assert tables.relation_aware
    with pytest.raises(ValueError, match="pass the relation"):
        tables.table(None)
    with pytest.raises(ValueError, match="depends on the relation"):
        model.entities.occurrences(torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="reciprocal"):
        KGEModel(model.num_entities, model.num_relations, model.scorer, model.entities, reciprocal=True)


@pytest.mark.parametrize("kind, exportable", [("structure_distmult", True), ("adamf_distmult", True),
                                              ("native_distmult_unseen", False)])
def test_pykeen_export_refuses_exactly_the_relation_conditioned_representations(kind, exportable):
    """With one scoring code for every representation, export decides by ``relation_aware``: a relation-agnostic
    fused representation gives one fixed vector per entity (exportable), a relation-conditioned one does not."""
    from types import SimpleNamespace

    from mmkgc.errors import ConfigError
    from mmkgc.interop.pykeen import check_exportable

    d = copy.deepcopy(BASE)
    d["model"].update(copy.deepcopy(KINDS[kind]))
    model, _ = build(kind)
    trained = SimpleNamespace(config=parse_config(d), module=model)
    if exportable:
        assert check_exportable(trained) == "DistMult"
    else:
        with pytest.raises(ConfigError, match="one fixed vector per entity"):
            check_exportable(trained)
