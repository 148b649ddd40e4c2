"""Tests of mmkgc.evaluation.metrics: MR/MRR/Hits@k/AMRI, EvaluationResult, evaluate().

Ground truth: PyKEEN 1.11.1's metric classes and its ``RankBasedEvaluator`` run end to end on the same model.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from mmkgc.data.triples import CATEGORY_NAMES, TripleSet
from mmkgc.evaluation.metrics import EvaluationResult, evaluate, rank_metrics
from mmkgc.evaluation.ranking import compute_ranks


def random_triples(generator: torch.Generator, n: int, num_entities: int, num_relations: int) -> torch.Tensor:
    return torch.stack(
        [
            torch.randint(0, num_entities, (n,), generator=generator),
            torch.randint(0, num_relations, (n,), generator=generator),
            torch.randint(0, num_entities, (n,), generator=generator),
        ],
        1,
    )


def toy_tripleset(seed: int = 0, num_entities: int = 25, num_relations: int = 4) -> TripleSet:
    g = torch.Generator().manual_seed(seed)
    train = random_triples(g, 90, num_entities, num_relations)
    # make relation 0 clearly 1-N and relation 1 N-1 so several categories occur
    train = torch.cat([train, torch.tensor([[0, 0, e] for e in range(1, 8)] + [[e, 1, 0] for e in range(1, 8)])])
    return TripleSet(
        train=train,
        valid=random_triples(g, 15, num_entities, num_relations),
        test=random_triples(g, 24, num_entities, num_relations),
        entity_labels=[f"e{i}" for i in range(num_entities)],
        relation_labels=[f"r{i}" for i in range(num_relations)],
        name="toy",
    )


class EmbeddingScorer:
    """DistMult-like integer scores (many ties): ``<e_h, w_r, e_t>`` with entries in {-1, 0, 1}."""

    def __init__(self, num_entities: int, num_relations: int, dim: int = 3, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.entity = torch.randint(-1, 2, (num_entities, dim), generator=g).float()
        self.relation = torch.randint(0, 2, (num_relations, dim), generator=g).float()

    def __call__(self, queries: torch.Tensor, side: str) -> torch.Tensor:
        w = self.relation[queries[:, 1]]
        anchor = self.entity[queries[:, 0]] if side == "tail" else self.entity[queries[:, 2]]
        return (anchor * w) @ self.entity.T


# ---------------------------------------------------------------------------------------------- rank_metrics
@pytest.mark.parametrize("seed", [0, 1])
def test_rank_metrics_match_pykeen_metric_classes(seed):
    ranking = pytest.importorskip("pykeen.metrics.ranking")
    g = torch.Generator().manual_seed(seed)
    num_candidates = torch.randint(2, 60, (500,), generator=g)
    opt = (torch.rand(500, generator=g) * num_candidates).long() + 1
    pess = torch.minimum(opt + torch.randint(0, 4, (500,), generator=g), num_candidates)
    realistic = (opt + pess).double() / 2
    for ranks in (opt, pess, realistic):
        ours = rank_metrics(ranks, ks=(1, 3, 10), num_candidates=num_candidates)
        r, c = ranks.numpy(), num_candidates.numpy()
        assert ours["count"] == 500
        assert ours["mr"] == pytest.approx(ranking.ArithmeticMeanRank()(r), rel=1e-12)
        assert ours["mrr"] == pytest.approx(ranking.InverseHarmonicMeanRank()(r), rel=1e-12)
        for k in (1, 3, 10):
            assert ours[f"hits@{k}"] == pytest.approx(ranking.HitsAtK(k=k)(r), rel=1e-12)
        expected_amri = ranking.AdjustedArithmeticMeanRankIndex()(r, num_candidates=c)
        assert ours["amri"] == pytest.approx(expected_amri, rel=1e-9, abs=1e-12)


def test_rank_metrics_hand_values_and_errors():
    out = rank_metrics(torch.tensor([1, 2, 4, 20]), ks=(1, 3))
    assert out == {"count": 4, "mr": 6.75, "mrr": (1 + 0.5 + 0.25 + 0.05) / 4, "hits@1": 0.25, "hits@3": 0.5}
    assert "amri" not in out
    # a constant scorer's realistic rank is (n + 1) / 2: AMRI 0; a perfect one: AMRI 1
    n = torch.tensor([5, 9, 13])
    assert rank_metrics((n + 1).double() / 2, num_candidates=n)["amri"] == pytest.approx(0.0, abs=1e-15)
    assert rank_metrics(torch.ones(3), num_candidates=n)["amri"] == 1.0
    assert math.isnan(rank_metrics(torch.ones(3), num_candidates=torch.ones(3))["amri"])
    with pytest.raises(ValueError, match="at least one"):
        rank_metrics(torch.tensor([]))
    with pytest.raises(ValueError, match=">= 1"):
        rank_metrics(torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="positive"):
        rank_metrics(torch.tensor([1]), ks=(0,))
    with pytest.raises(ValueError, match="num_candidates"):
        rank_metrics(torch.tensor([1, 2]), num_candidates=torch.tensor([3]))


# ---------------------------------------------------------------------------------------------- end to end vs PyKEEN
def test_evaluate_matches_pykeen_rank_based_evaluator():
    pytest.importorskip("pykeen")
    from pykeen.evaluation import RankBasedEvaluator
    from pykeen.models import DistMult
    from pykeen.triples import CoreTriplesFactory

    triples = toy_tripleset(3)
    g = torch.Generator().manual_seed(3)
    factory = CoreTriplesFactory(
        mapped_triples=triples.train, num_entities=triples.num_entities, num_relations=triples.num_relations
    )
    model = DistMult(triples_factory=factory, embedding_dim=3, random_seed=0)
    with torch.no_grad():  # integer-valued embeddings: integer scores with many ties
        model.entity_representations[0]._embeddings.weight.copy_(
            torch.randint(-1, 2, (triples.num_entities, 3), generator=g).float()
        )
        model.relation_representations[0]._embeddings.weight.copy_(
            torch.randint(0, 2, (triples.num_relations, 3), generator=g).float()
        )
    model.eval()

    evaluator = RankBasedEvaluator(filtered=True, clear_on_finalize=False)
    theirs = evaluator.evaluate(
        model,
        triples.test,
        additional_filter_triples=[triples.train, triples.valid],
        batch_size=5,
        use_tqdm=False,
    )

    def score_fn(queries, side):
        with torch.no_grad():
            if side == "tail":
                return model.score_t(queries[:, :2])
            return model.score_h(queries[:, 1:])

    ours = evaluate(score_fn, triples, batch_size=4)
    assert float(ours.ranks.side("tail").pessimistic.double().mean()) > float(
        ours.ranks.side("tail").optimistic.double().mean()
    ), "the test model must produce ties"
    # per-query ranks, in query order
    for side in ("head", "tail"):
        for policy in ("optimistic", "realistic", "pessimistic"):
            expected = torch.as_tensor(
                [x for batch in evaluator.ranks[side, policy] for x in batch.tolist()], dtype=torch.float64
            )
            assert torch.equal(ours.ranks.ranks(side, policy).double(), expected)
    names = {
        "mrr": "inverse_harmonic_mean_rank",
        "mr": "arithmetic_mean_rank",
        "hits@1": "hits_at_1",
        "hits@3": "hits_at_3",
        "hits@10": "hits_at_10",
        "amri": "adjusted_arithmetic_mean_rank_index",
    }
    for side in ("head", "tail", "both"):
        for policy in ("optimistic", "realistic", "pessimistic"):
            for metric, theirs_name in names.items():
                if metric == "amri" and policy != "realistic":
                    continue  # PyKEEN defines AMRI for realistic ranks only
                expected = theirs.get_metric(f"{side}.{policy}.{theirs_name}")
                assert ours.get(metric, side=side, policy=policy) == pytest.approx(expected, rel=1e-6, abs=1e-9)


# ---------------------------------------------------------------------------------------------- EvaluationResult
@pytest.fixture(scope="module")
def toy_result():
    # 40 entities: the OpenKE categories (train + valid + test) then cover 1-1, N-1 and N-N among the test rows
    triples = toy_tripleset(0, num_entities=40)
    scorer = EmbeddingScorer(triples.num_entities, triples.num_relations, seed=0)
    modality = ["image" if e % 3 else "none" for e in range(triples.num_entities)]
    groups = {
        "head": [modality[h] for h in triples.test[:, 0].tolist()],
        "tail": [modality[t] for t in triples.test[:, 2].tolist()],
    }
    result = evaluate(
        scorer,
        triples,
        policies=("realistic", "optimistic", "pessimistic", "random"),
        group_labels=groups,
        seed=5,
    )
    return triples, scorer, result, groups


def test_defaults_and_accessors(toy_result):
    triples, _, result, _ = toy_result
    assert result.primary_policy == "realistic"
    assert result.policies == ("realistic", "optimistic", "pessimistic", "random")
    assert result.sides == ("head", "tail", "both")
    assert result.get("mrr") == result.get("mrr", side="both", policy="realistic")
    assert result.get("Hits@10") == result.get("hits_at_10") == result.get("h@10") == result.metrics["realistic"][
        "both"
    ]["hits@10"]
    assert result.get("count", side="both") == 2 * triples.test.shape[0]
    assert result.num_queries == triples.test.shape[0] and result.num_entities == triples.num_entities
    assert result.split == "test" and result.dataset == "toy" and result.filtered
    with pytest.raises(KeyError, match="metric"):
        result.get("hits@100")
    with pytest.raises(KeyError, match="policy"):
        result.get("mrr", policy="mean")
    with pytest.raises(KeyError, match="category"):
        result.get("mrr", category="M-M")
    with pytest.raises(ValueError, match="at most one"):
        result.get("mrr", category="1-1", relation=0)


def test_both_is_openke_average_of_sides(toy_result):
    _, _, result, _ = toy_result
    for policy in result.policies:
        for metric in ("mr", "mrr", "hits@1", "hits@3", "hits@10"):
            head = result.get(metric, side="head", policy=policy)
            tail = result.get(metric, side="tail", policy=policy)
            assert result.get(metric, side="both", policy=policy) == pytest.approx((head + tail) / 2, rel=1e-12)


def test_policy_ordering_and_random_consistency(toy_result):
    _, _, result, _ = toy_result
    for side in result.sides:
        opt = result.get("mrr", side=side, policy="optimistic")
        real = result.get("mrr", side=side, policy="realistic")
        pess = result.get("mrr", side=side, policy="pessimistic")
        assert opt >= real >= pess
        assert result.get("mr", side=side, policy="realistic") == pytest.approx(
            (result.get("mr", side=side, policy="optimistic") + result.get("mr", side=side, policy="pessimistic")) / 2
        )
        rnd = result.get("mr", side=side, policy="random")
        low = result.get("mr", side=side, policy="optimistic")
        assert low <= rnd <= result.get("mr", side=side, policy="pessimistic")
    # the random policy is reproducible from the seed stored in the result
    again = EvaluationResult.from_ranks(result.ranks, policies=("random",), seed=result.seed)
    assert again.metrics["random"] == result.metrics["random"]


def _weighted(tree, key_metric, policy, side):
    total = sum(v[policy][side]["count"] for v in tree.values() if side in v.get(policy, {}))
    value = sum(
        v[policy][side]["count"] * v[policy][side][key_metric] for v in tree.values() if side in v.get(policy, {})
    )
    return total, value / total


def test_breakdowns_are_consistent_with_overall(toy_result):
    triples, _, result, groups = toy_result
    categories = triples.relation_categories[triples.test[:, 1]]
    assert set(result.by_category) == {CATEGORY_NAMES[c] for c in categories.tolist()}
    assert len(result.by_category) >= 2
    assert set(result.by_relation) == {str(r) for r in triples.test[:, 1].tolist()}
    assert set(result.by_group) == set(groups["head"]) | set(groups["tail"])
    for tree in (result.by_category, result.by_relation, result.by_group):
        for policy in ("realistic", "optimistic"):
            for side in ("head", "tail", "both"):
                for metric in ("mr", "mrr", "hits@10"):
                    total, value = _weighted(tree, metric, policy, side)
                    overall = result.metrics[policy][side]
                    assert total == overall["count"]
                    assert value == pytest.approx(overall[metric], rel=1e-12)
    # per-category counts equal the number of test triples in that category
    for code, name in enumerate(CATEGORY_NAMES):
        if name in result.by_category:
            assert result.get("count", side="head", category=name) == int((categories == code).sum())
    # per-side group labels: the head side of group "none" is exactly the queries whose head has no image
    n_none_heads = sum(x == "none" for x in groups["head"])
    if n_none_heads:
        assert result.get("count", side="head", group="none") == n_none_heads
    # per relation: recompute one relation's tail MRR by hand from the ranks
    rel = int(triples.test[0, 1])
    mask = triples.test[:, 1] == rel
    expected = float(result.ranks.ranks("tail", "realistic")[mask].reciprocal().mean())
    assert result.get("mrr", side="tail", relation=rel) == pytest.approx(expected, rel=1e-12)


def test_to_dict_is_json_safe_and_markdown(toy_result):
    _, _, result, _ = toy_result
    payload = result.to_dict()
    text = json.dumps(payload, allow_nan=False)
    back = json.loads(text)
    assert back["metrics"]["realistic"]["both"]["mrr"] == pytest.approx(result.get("mrr"))
    assert back["primary_policy"] == "realistic" and back["ks"] == [1, 3, 10]
    assert "N-N" in back["by_category"] or "1-N" in back["by_category"]
    md = result.to_markdown()
    assert "| realistic | both |" in md and "By relation category" in md and "By group" in md
    header = result.table()[0]
    assert header == ["policy", "side", "Count", "MR", "MRR", "Hits@1", "Hits@3", "Hits@10", "AMRI"]
    assert len(result.table()) == 1 + 4 * 3
    assert "By relation category" not in str(result)


def test_non_finite_amri_serialises_as_null():
    ranks = compute_ranks(
        lambda q, s: torch.zeros(q.shape[0], 1), torch.zeros(3, 3, dtype=torch.long), None, sides=("tail",)
    )
    result = EvaluationResult.from_ranks(ranks, policies=("optimistic",))
    assert result.sides == ("tail",) and result.default_side == "tail"
    payload = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert payload["metrics"]["optimistic"]["tail"]["amri"] is None
    assert "n/a" in result.to_markdown()


def test_constant_and_perfect_scorers():
    triples = toy_tripleset(4)
    constant = evaluate(lambda q, s: torch.zeros(q.shape[0], triples.num_entities), triples)
    assert constant.get("mrr", policy="optimistic") == 1.0  # OpenKE's rule rewards a constant model
    assert constant.get("amri", policy="realistic") == pytest.approx(0.0, abs=1e-12)
    for side in ("head", "tail"):
        assert torch.equal(constant.ranks.side(side).pessimistic, constant.ranks.side(side).num_candidates)

    def perfect(queries, side):
        scores = torch.zeros(queries.shape[0], triples.num_entities)
        target = queries[:, 0] if side == "head" else queries[:, 2]
        scores[torch.arange(queries.shape[0]), target] = 1.0
        return scores

    best = evaluate(perfect, triples, split="valid_clean")
    assert best.split == "valid_clean"
    assert best.get("count", side="tail") == triples.valid_clean.shape[0]
    for policy in best.policies:
        assert best.get("mrr", policy=policy) == 1.0 and best.get("mr", policy=policy) == 1.0
        assert best.get("amri", policy=policy) == 1.0


def test_raw_setting_and_argument_errors():
    triples = toy_tripleset(2)
    scorer = EmbeddingScorer(triples.num_entities, triples.num_relations, seed=2)
    raw = evaluate(scorer, triples, filtered=False, per_relation=False, ks=(1, 5))
    filtered = evaluate(scorer, triples, ks=(1, 5))
    assert not raw.filtered and raw.by_relation == {}
    assert raw.get("mrr") <= filtered.get("mrr")
    assert "hits@5" in raw.metrics["realistic"]["both"]
    with pytest.raises(ValueError, match="unknown split"):
        evaluate(scorer, triples, split="dev")
    empty = TripleSet(triples.train, None, triples.test, triples.entity_labels, triples.relation_labels)
    with pytest.raises(ValueError, match="no triples"):
        evaluate(scorer, empty, split="valid")
    with pytest.raises(ValueError, match="tie policy"):
        evaluate(scorer, triples, policies=("mean",))
    with pytest.raises(ValueError, match="labels"):
        evaluate(scorer, triples, group_labels=["a", "b"])
    with pytest.raises(ValueError, match="side"):
        evaluate(scorer, triples, group_labels={"tail": ["a"] * triples.test.shape[0]})


def test_group_present_on_one_side_only():
    triples = toy_tripleset(6)
    scorer = EmbeddingScorer(triples.num_entities, triples.num_relations, seed=6)
    q = triples.test.shape[0]
    labels = {"head": ["only-head"] * 3 + ["shared"] * (q - 3), "tail": ["shared"] * q}
    result = evaluate(scorer, triples, group_labels=labels, per_relation=False)
    only = result.by_group["only-head"]["realistic"]
    assert set(only) == {"head", "both"} and only["both"] == only["head"]
    assert result.get("count", side="both", group="shared") == 2 * q - 3
    expected = float(result.ranks.ranks("head", "realistic")[:3].reciprocal().mean())
    assert result.get("mrr", side="both", group="only-head") == pytest.approx(expected, rel=1e-12)


def test_score_fn_runs_without_autograd():
    triples = toy_tripleset(7)
    weight = torch.randn(triples.num_entities, triples.num_entities, requires_grad=True)
    seen = []

    def score_fn(queries, side):
        scores = weight[queries[:, 0] if side == "tail" else queries[:, 2]]
        seen.append(scores.requires_grad)
        return scores

    result = evaluate(score_fn, triples, policies=("optimistic",))
    assert seen and not any(seen)
    assert result.get("count") == 2 * triples.test.shape[0]


def test_seen_unseen_breakdown_by_hand():
    # 6 entities; entity 5 is in no training triple, entity 4 only in valid. Scores are fixed per candidate:
    # score(e) = -e for every query, so with the filter the rank of answer a is 1 + #(non-filtered e < a).
    train = torch.tensor([[0, 0, 1], [1, 0, 2], [2, 0, 3], [3, 0, 0]])
    test = torch.tensor([[0, 0, 2], [1, 0, 5], [4, 0, 3]])  # seen, unseen (tail 5), unseen (head 4)
    triples = TripleSet(train, torch.tensor([[4, 0, 0]]), test, [f"e{i}" for i in range(6)], ["r"], name="t")

    def score_fn(queries, side):
        return -torch.arange(6, dtype=torch.float32).expand(queries.shape[0], 6).clone()

    result = evaluate(score_fn, triples, "test", per_relation=False, policies=("realistic",))
    # tail ranks: (0,0,2): filter removes 1 (train (0,0,1)) -> candidates 0 < 2 -> rank 2;
    #   (1,0,5): filter removes 2 -> 0,1,3,4 < 5 -> rank 5;  (4,0,3): filter removes 0 (valid (4,0,0)) -> 1,2 -> 3
    # head ranks: (0,0,2): filter removes 1 ((1,0,2)) -> rank 1;  (1,0,5): nothing else has tail 5 -> 0 < 1 -> 2;
    #   (4,0,3): filter removes 2 ((2,0,3)) -> 0,1,3 < 4 -> rank 4
    assert result.get("count", seen="seen") == 2 and result.get("count", seen="unseen") == 4
    assert result.get("mrr", seen="seen") == pytest.approx((1 / 2 + 1 / 1) / 2)
    assert result.get("mrr", seen="unseen") == pytest.approx((1 / 5 + 1 / 3 + 1 / 2 + 1 / 4) / 4)
    assert result.get("mrr", side="tail", seen="unseen") == pytest.approx((1 / 5 + 1 / 3) / 2)
    assert result.to_dict()["by_seen"]["unseen"]["realistic"]["both"]["count"] == 4
    assert "entities seen in training" in result.to_markdown()
    # every test entity seen in training: only the "seen" group exists
    seen_only = TripleSet(train, torch.empty(0, 3, dtype=torch.long), test[:1], [f"e{i}" for i in range(6)], ["r"])
    assert set(evaluate(score_fn, seen_only, "test", per_relation=False).by_seen) == {"seen"}


def test_answer_seen_labels_by_hand():
    from mmkgc.evaluation.metrics import answer_seen_labels

    # the triples of the by_seen test: entity 5 is in no training triple, entity 4 only in valid
    train = torch.tensor([[0, 0, 1], [1, 0, 2], [2, 0, 3], [3, 0, 0]])
    test = torch.tensor([[0, 0, 2], [1, 0, 5], [4, 0, 3]])
    triples = TripleSet(train, torch.tensor([[4, 0, 0]]), test, [f"e{i}" for i in range(6)], ["r"], name="t")
    labels = answer_seen_labels(triples)
    # head task of (1, 0, 5) predicts 1 from the unseen 5; tail task predicts the unseen 5
    assert labels == {"head": ["seen", "query_unseen", "answer_unseen"],
                      "tail": ["seen", "answer_unseen", "query_unseen"]}

    def score_fn(queries, side):
        return -torch.arange(6, dtype=torch.float32).expand(queries.shape[0], 6).clone()

    result = evaluate(score_fn, triples, "test", per_relation=False, policies=("realistic",), group_labels=labels)
    # ranks from test_seen_unseen_breakdown_by_hand: answer unseen = tail of (1,0,5) rank 5 and head of (4,0,3) 4
    assert result.get("mrr", group="answer_unseen") == pytest.approx((1 / 5 + 1 / 4) / 2)
    assert result.get("mrr", group="query_unseen") == pytest.approx((1 / 2 + 1 / 3) / 2)
    assert answer_seen_labels(triples, "valid") == {"head": ["answer_unseen"], "tail": ["query_unseen"]}
