"""KGEModel: positive/negative scoring equals pointwise scoring; gathered kernels equal the eager path."""

import pytest
import torch

from mmkgc.features.store import FeatureTable
from mmkgc.models.kge import EmbeddingRepresentation, KGEModel, MultimodalRepresentation
from mmkgc.nn.scorers import build_scorer, gathered_l1_distance

SCORERS = [("transe", {"p": 1}), ("transe", {"p": 2}), ("distmult", {}), ("complex", {}),
           ("rotate", {"margin": 6.0})]


def _model(name, options, multimodal=False, reciprocal=False, n=30, r=4):
    torch.manual_seed(0)
    scorer = build_scorer(name, 8, **options)
    if multimodal:
        feats = [FeatureTable(torch.randn(n, 5), "text", torch.rand(n) > 0.3)]
        rep = MultimodalRepresentation(n, scorer.entity_dim, feats, init=scorer.init_entity_)
    else:
        rep = EmbeddingRepresentation(n, scorer.entity_dim, init=scorer.init_entity_)
    return KGEModel(n, r, scorer, rep, reciprocal=reciprocal)


@pytest.mark.parametrize("name,options", SCORERS)
@pytest.mark.parametrize("multimodal", [False, True])
def test_positive_negative_scores_equal_pointwise_scores(name, options, multimodal):
    model = _model(name, options, multimodal)
    gen = torch.Generator().manual_seed(1)
    pos = torch.stack([torch.randint(30, (6,), generator=gen), torch.randint(4, (6,), generator=gen),
                       torch.randint(30, (6,), generator=gen)], 1)
    ents = torch.randint(30, (6, 5), generator=gen)
    tail = torch.rand(6, 5, generator=gen) < 0.5
    p, n = model.score_positives_and_negatives(pos, ents, tail)
    neg_triples = pos[:, None, :].repeat(1, 5, 1)
    neg_triples[..., 2] = torch.where(tail, ents, neg_triples[..., 2])
    neg_triples[..., 0] = torch.where(tail, neg_triples[..., 0], ents)
    torch.testing.assert_close(p, model.score_hrt(pos), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(n, model.score_hrt(neg_triples), rtol=1e-5, atol=1e-5)
    # gradients agree with the pointwise path too
    (p.sum() + n.sum()).backward()
    fast = [x.grad.clone() for x in model.parameters() if x.grad is not None]
    model.zero_grad()
    (model.score_hrt(pos).sum() + model.score_hrt(neg_triples).sum()).backward()
    slow = [x.grad.clone() for x in model.parameters() if x.grad is not None]
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("complex_layout", [True, False])
def test_gathered_kernel_matches_eager(complex_layout, monkeypatch):
    gen = torch.Generator().manual_seed(2)
    q = torch.randn(7, 12, generator=gen, requires_grad=True)
    e = torch.randn(9, 12, generator=gen, requires_grad=True)
    qi = torch.randint(7, (40,), generator=gen)
    ei = torch.randint(9, (40,), generator=gen)
    ei[0], qi[0] = 0, 0
    with torch.no_grad():
        e[0] = q[0]  # a zero difference: zero subgradient on both paths
    g = torch.randn(40, generator=gen)
    fast = gathered_l1_distance(q, qi, e, ei, complex_layout)
    gq, ge = torch.autograd.grad(fast, (q, e), g)
    monkeypatch.setenv("MMKGC_NO_COMPILE", "1")
    slow = gathered_l1_distance(q, qi, e, ei, complex_layout)
    sq, se = torch.autograd.grad(slow, (q, e), g)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gq, sq, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ge, se, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name,options", SCORERS)
def test_reciprocal_head_scores_use_inverse_relation(name, options):
    model = _model(name, options, reciprocal=True)
    queries = torch.tensor([[3, 1, 5], [7, 2, 9]])
    heads = model.score_h(queries)
    inverse = torch.stack([queries[:, 2], queries[:, 1] + 4, queries[:, 0]], 1)
    torch.testing.assert_close(heads, model.score_t(inverse))
    assert model.relations.weight.shape[0] == 8


def test_missing_modality_rows_use_the_fill():
    n = 10
    present = torch.ones(n, dtype=torch.bool)
    present[[2, 5]] = False
    values = torch.randn(n, 4)
    rep = MultimodalRepresentation(n, 6, [FeatureTable(values, "img", present)], with_structure=False,
                                   missing="zeros")
    out = rep(torch.arange(n))
    assert torch.count_nonzero(out[2]) == 0 and torch.count_nonzero(out[5]) == 0
    changed = values.clone()
    changed[[2, 5]] = 1e6  # whatever sits in a missing row must not leak into the representation
    rep2 = MultimodalRepresentation(n, 6, [FeatureTable(changed, "img", present)], with_structure=False,
                                    missing="zeros")
    rep2.load_state_dict(rep.state_dict())
    torch.testing.assert_close(rep2(torch.arange(n)), out)


def test_feature_rows_must_match_entities():
    with pytest.raises(ValueError, match="rows but the dataset has"):
        MultimodalRepresentation(10, 4, [FeatureTable(torch.randn(9, 3), "t", torch.ones(9, dtype=torch.bool))])
