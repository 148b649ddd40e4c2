"""Fusion operators (AdaMF / NativE / AFME) and the relation-aware fused KGE model."""

from __future__ import annotations

import copy

import pytest
import torch

from mmkgc.config import parse_config
from mmkgc.nn.fusion import ModalitySelfAttention, RelationGate, TanhAttentionFusion
from mmkgc.pipeline import build_model, load_data

BASE = {
    "dataset": {"synthetic": {"num_entities": 150, "num_relations": 4, "seed": 0, "missing_text": 0.3,
                              "missing_visual": 0.3}},
    "model": {"scorer": "rotate", "dim": 8, "representation": "fused", "scorer_options": {"margin": 6.0},
              "modalities": [{"name": "text"}, {"name": "visual"}], "fusion": {"kind": "attention"}},
    "training": {"epochs": 1, "batch_size": 64, "num_negatives": 4},
}
METHODS = {
    "adamf": ({"trainable_features": True}, {}, None),
    "native": ({"adapter": "mlp"}, {"relation_temperature": True}, {"kind": "wgan_gp", "mu": 0.1}),
    "afme": ({"adapter": "mlp"}, {"relation_temperature": True, "confidence": "l2", "relation_gate": True},
             {"kind": "moien", "mu": 0.1}),
}


def method_config(name: str, **training):
    model, fusion, adv = METHODS[name]
    d = copy.deepcopy(BASE)
    d["model"].update(model)
    d["model"]["fusion"].update(fusion)
    if adv is not None:
        d["training"]["adversarial"] = dict(adv)
    d["training"].update(training)
    return parse_config(d)


@pytest.mark.parametrize("relation_temperature,confidence", [(False, "none"), (True, "none"), (True, "l2")])
def test_attention_weights_sum_to_one_over_present_and_ignore_absent(relation_temperature, confidence):
    torch.manual_seed(0)
    fusion = TanhAttentionFusion(6, 3, relation_temperature, num_relations=5, confidence=confidence, init_range=2.0)
    x = torch.randn(10, 3, 6)
    present = torch.rand(10, 3) > 0.4
    present[:, 0] = True
    rel = torch.randint(0, 5, (10,))
    fused, w = fusion(x, present, rel)
    assert fused.shape == (10, 6) and w.shape == (10, 3)
    assert torch.allclose(w.sum(-1), torch.ones(10))
    assert torch.all(w[~present] == 0)
    assert torch.all(w[present] > 0)
    # an absent slot's content never matters (no zero vector averaged in)
    x2 = x.clone()
    x2[~present] = 100.0
    assert torch.allclose(fusion(x2, present, rel)[0], fused)
    assert torch.allclose(fused, (w.unsqueeze(-1) * x).sum(1))


def test_attention_formula_adamf_and_native():
    torch.manual_seed(1)
    fusion = TanhAttentionFusion(4, 2, relation_temperature=True, num_relations=3, init_range=1.0)
    x = torch.randn(5, 2, 4)
    rel = torch.tensor([0, 1, 2, 0, 1])
    tau = torch.sigmoid(fusion.g[rel])
    expected = torch.softmax((torch.tanh(x) @ fusion.w) / tau[:, None], -1)
    assert torch.allclose(fusion(x, None, rel)[1], expected, atol=1e-6)
    with pytest.raises(ValueError, match="relation"):
        fusion(x, None, None)
    l2 = TanhAttentionFusion(4, 2, confidence="l2")
    expected = torch.softmax(x.norm(dim=-1) * (torch.tanh(x) @ l2.w), -1)
    assert torch.allclose(l2(x)[1], expected, atol=1e-6)


def test_relation_gate_and_self_attention_masks():
    torch.manual_seed(2)
    gate = RelationGate(8, 3)
    x = torch.randn(4, 3, 8)
    gated, g = gate(x, None, torch.tensor([0, 1, 2, 1]))
    assert gated.shape == x.shape and g.shape == (4, 3) and torch.all((g > 0) & (g < 1))
    with pytest.raises(ValueError):
        gate(x)
    attn = ModalitySelfAttention(8, layers=2, heads=2).eval()
    present = torch.tensor([[True, True, False], [True, False, True], [True, True, True], [True, False, False]])
    fused, w = attn(x, present)
    assert fused.shape == (4, 8) and torch.all(w[~present] == 0)
    x2 = x.clone()
    x2[~present] = 50.0
    assert torch.allclose(attn(x2, present)[0], fused, atol=1e-5)
    with pytest.raises(ValueError):
        ModalitySelfAttention(10, heads=3)


@pytest.mark.parametrize("method", ["adamf", "native", "afme"])
def test_all_entity_scoring_equals_pointwise(method):
    cfg = method_config(method)
    data = load_data(cfg)
    model = build_model(cfg, data).eval()
    assert model.entities.relation_aware == (method != "adamf")
    triples = torch.cat([data.triples.train[:20], data.triples.test[:10]])
    with torch.no_grad():
        pointwise = model.score_hrt(triples)
        fn = model.score_fn()
        idx = torch.arange(triples.shape[0])
        assert torch.allclose(fn(triples, "tail")[idx, triples[:, 2]], pointwise, atol=1e-5)
        assert torch.allclose(fn(triples, "head")[idx, triples[:, 0]], pointwise, atol=1e-5)
        cand = torch.stack([triples[:, 2], (triples[:, 2] + 1) % 150], 1)
        assert torch.allclose(fn.score_candidates(triples, "tail", cand)[:, 0], pointwise, atol=1e-5)
        # negatives: corrupting with the true entity reproduces the positive score
        negs = torch.stack([triples[:, 2], triples[:, 0]], 1)
        tail = torch.tensor([[True, False]]).expand(triples.shape[0], 2)
        pos, neg = model.score_positives_and_negatives(triples, negs, tail)
        assert torch.allclose(pos, pointwise, atol=1e-5)
        assert torch.allclose(neg, pointwise[:, None].expand(-1, 2), atol=1e-5)


def test_relation_ordered_evaluation_reports_ranks_in_query_order():
    from mmkgc.evaluation.ranking import compute_ranks

    cfg = method_config("afme")
    data = load_data(cfg)
    model = build_model(cfg, data).eval()
    fn = model.score_fn()
    assert fn.query_order == "relation"
    queries = data.triples.test[:40]
    seen = []

    def plain(q, side):  # no query_order: scored in the given order
        seen.append(q[:, 1].clone())
        return fn(q, side)

    grouped = compute_ranks(fn, queries, batch_size=7, filter_index=data.triples.filter_index)
    given = compute_ranks(plain, queries, batch_size=7, filter_index=data.triples.filter_index)
    assert torch.equal(grouped.queries, queries)
    for side in ("head", "tail"):
        assert torch.equal(grouped.sides[side].optimistic, given.sides[side].optimistic)
        assert torch.equal(grouped.sides[side].pessimistic, given.sides[side].pessimistic)


def test_low_rank_gate():
    full, low = RelationGate(16, 3), RelationGate(16, 3, rank=2)
    assert sum(p.numel() for p in low.linear.parameters()) == 16 * 2 + 2 * 16 + 16
    x = torch.randn(5, 2, 16)
    rel = torch.tensor([0, 1, 2, 0, 1])
    assert low(x, None, rel)[0].shape == full(x, None, rel)[0].shape == x.shape
    cfg = method_config("afme")
    raw = cfg.model_dump(mode="json")
    raw["model"]["fusion"]["gate_rank"] = 4
    model = build_model(parse_config(raw), load_data(cfg))
    assert model.entities.gate.linear[0].weight.shape == (4, model.entities.dim)
