"""Tests of mmkgc.evaluation.ranking: filtered ranks, tie policies, chunking, NaN guard.

Ground truths: PyKEEN 1.11.1's ``Ranks.from_scores`` (filtered entries set to NaN, as PyKEEN's evaluator
does) and a plain-Python transcription of OpenKE ``base/Test.h``'s filtered rule.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmkgc.data.triples import FilterIndex, TripleSet
from mmkgc.evaluation.metrics import evaluate
from mmkgc.evaluation.ranking import (
    RankResult,
    batch_size_for_memory,
    compute_ranks,
    rank_targets,
    tie_break,
)


# ---------------------------------------------------------------------------------------------- helpers
def random_triples(generator: torch.Generator, n: int, num_entities: int, num_relations: int) -> torch.Tensor:
    return torch.stack(
        [
            torch.randint(0, num_entities, (n,), generator=generator),
            torch.randint(0, num_relations, (n,), generator=generator),
            torch.randint(0, num_entities, (n,), generator=generator),
        ],
        1,
    )


def toy_tripleset(seed: int = 0, num_entities: int = 15, num_relations: int = 3) -> TripleSet:
    g = torch.Generator().manual_seed(seed)
    return TripleSet(
        train=random_triples(g, 60, num_entities, num_relations),
        valid=random_triples(g, 12, num_entities, num_relations),
        test=random_triples(g, 20, num_entities, num_relations),
        entity_labels=[f"e{i}" for i in range(num_entities)],
        relation_labels=[f"r{i}" for i in range(num_relations)],
        name="toy",
    )


class TableScorer:
    """Deterministic integer-valued score function with many ties: a lookup table per (entity, relation)."""

    def __init__(self, num_entities: int, num_relations: int, seed: int = 0, levels: int = 3):
        g = torch.Generator().manual_seed(seed)
        self.num_entities = num_entities
        self.entity = torch.randint(0, levels, (num_entities, num_entities), generator=g).float()
        self.relation = torch.randint(0, levels, (2, num_relations, num_entities), generator=g).float()
        self.calls: list[int] = []

    def __call__(self, queries: torch.Tensor, side: str) -> torch.Tensor:
        self.calls.append(int(queries.shape[0]))
        if side == "tail":
            return self.entity[queries[:, 0]] + self.relation[0, queries[:, 1]]
        return self.entity[queries[:, 2]] + self.relation[1, queries[:, 1]]


def pykeen_ranks(scores: torch.Tensor, targets: torch.Tensor, rows, cols):
    """PyKEEN's filtered ranks: other known answers' scores become NaN, then ``Ranks.from_scores``."""
    ranks_module = pytest.importorskip("pykeen.evaluation.ranks")
    masked = scores.clone()
    if rows is not None:
        keep = cols != targets[rows]
        masked[rows[keep], cols[keep]] = float("nan")
    true_score = scores.gather(1, targets.unsqueeze(1))
    return ranks_module.Ranks.from_scores(true_score=true_score, all_scores=masked)


def openke_filtered_ranks(distance_rows, queries, side, all_triples):
    """Direct transcription of OpenKE ``Test.h`` ``testHead`` / ``testTail`` (filtered part).

    For each test triple: ``l_filter_s`` counts candidates ``j != target`` with ``value < minimal`` (strict,
    lower distance = better) whose triple is not in train+valid+test (``_find``); the rank is
    ``l_filter_s + 1``.
    """
    known = {tuple(int(x) for x in triple) for triple in all_triples.tolist()}
    ranks = []
    for (h, r, t), con in zip(queries.tolist(), distance_rows):
        target = h if side == "head" else t
        minimal = con[target]
        l_filter_s = 0
        for j in range(len(con)):
            if j == target:
                continue
            value = con[j]
            if value < minimal:
                candidate = (j, r, t) if side == "head" else (h, r, j)
                if candidate not in known:
                    l_filter_s += 1
        ranks.append(l_filter_s + 1)
    return ranks


# ---------------------------------------------------------------------------------------------- rank_targets
def test_rank_targets_hand_example():
    scores = torch.tensor([[1.0, 2.0, 2.0, 3.0, 2.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    targets = torch.tensor([1, 4])
    opt, pess, n = rank_targets(scores, targets)
    assert opt.tolist() == [2, 1]  # one strictly better (3.0); nothing strictly better
    assert pess.tolist() == [4, 5]  # 3.0 and two ties ahead; all four ties ahead
    assert n.tolist() == [5, 5]
    # filter entity 3 (and the target itself, which must be ignored) of row 0, entity 0 of row 1 (twice)
    rows = torch.tensor([0, 0, 1, 1])
    cols = torch.tensor([3, 1, 0, 0])
    opt, pess, n = rank_targets(scores, targets, rows, cols)
    assert opt.tolist() == [1, 1]
    assert pess.tolist() == [3, 4]
    assert n.tolist() == [4, 4]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("trial", range(6))
def test_rank_targets_matches_pykeen(trial, dtype):
    """float32/float64 take the blocked NumPy path on CPU, float16/bfloat16 the plain torch path."""
    g = torch.Generator().manual_seed(100 + trial)
    num_rows, num_entities = 64, 37
    scores = torch.randint(0, 4 + trial, (num_rows, num_entities), generator=g).to(dtype)
    targets = torch.randint(0, num_entities, (num_rows,), generator=g)
    num_pairs = 150
    rows = torch.randint(0, num_rows, (num_pairs,), generator=g)
    cols = torch.randint(0, num_entities, (num_pairs,), generator=g)
    # make sure some pairs hit the target itself
    rows = torch.cat([rows, torch.arange(10)])
    cols = torch.cat([cols, targets[:10]])
    for filt in (None, (rows, cols)):
        r, c = filt if filt is not None else (None, None)
        opt, pess, n = rank_targets(scores, targets, r, c)
        expected = pykeen_ranks(scores.float(), targets, r, c)
        assert torch.equal(opt, expected.optimistic.long())
        assert torch.equal(pess, expected.pessimistic.long())
        assert torch.equal(tie_break(opt, pess, "realistic"), expected.realistic.double())
        assert torch.equal(n, expected.number_of_options.long())
        assert bool((opt >= 1).all()) and bool((opt <= pess).all()) and bool((pess <= n).all())


def test_rank_targets_small_cpu_blocks(monkeypatch):
    """Row blocks of one row in the CPU path give the same counts, and a NaN in a late block is found."""
    import mmkgc.evaluation.ranking as ranking

    g = torch.Generator().manual_seed(42)
    scores = torch.randint(0, 3, (9, 11), generator=g).float()
    targets = torch.randint(0, 11, (9,), generator=g)
    expected = rank_targets(scores, targets)
    monkeypatch.setattr(ranking, "_CPU_BLOCK_BYTES", 1)
    got = rank_targets(scores, targets)
    for a, b in zip(expected, got):
        assert torch.equal(a, b)
    scores[8, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN in 1 of 9 rows .first such row: 8"):
        rank_targets(scores, targets)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_rank_targets_plus_and_minus_inf_in_one_row_is_not_nan(dtype):
    scores = torch.tensor([[float("inf"), 1.0, float("-inf"), 1.0]], dtype=dtype)
    opt, pess, n = rank_targets(scores, torch.tensor([1]))
    assert (opt.item(), pess.item(), n.item()) == (2, 3, 4)
    scores[0, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN in 1 of 1 rows"):
        rank_targets(scores, torch.tensor([1]))


def test_rank_targets_does_not_mutate_scores():
    g = torch.Generator().manual_seed(3)
    scores = torch.randint(0, 3, (8, 10), generator=g).float()
    before = scores.clone()
    rank_targets(scores, torch.zeros(8, dtype=torch.long), torch.tensor([0, 1, 2]), torch.tensor([4, 5, 6]))
    assert torch.equal(scores, before)


def test_rank_targets_infinities_are_ordered_values():
    scores = torch.tensor([[float("inf"), 1.0, float("inf"), float("-inf")], [float("-inf"), float("-inf"), 0.0, 2.0]])
    opt, pess, n = rank_targets(scores, torch.tensor([0, 0]))
    assert opt.tolist() == [1, 3]
    assert pess.tolist() == [2, 4]
    assert n.tolist() == [4, 4]


def test_rank_targets_nan_raises_with_row_count():
    scores = torch.zeros(5, 6)
    scores[1, 3] = float("nan")
    scores[4, 0] = float("nan")
    with pytest.raises(ValueError, match=r"NaN in 2 of 5 rows"):
        rank_targets(scores, torch.zeros(5, dtype=torch.long))
    # a NaN in a filtered entry is still an error, and a NaN target too
    scores = torch.zeros(2, 3)
    scores[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN in 1 of 2 rows"):
        rank_targets(scores, torch.tensor([1, 1]), torch.tensor([0]), torch.tensor([0]))
    with pytest.raises(ValueError, match="NaN"):
        rank_targets(scores, torch.tensor([0, 1]))


def test_rank_targets_bad_input():
    scores = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="target ids"):
        rank_targets(scores, torch.tensor([0, 4, 1]))
    with pytest.raises(ValueError, match="shape"):
        rank_targets(scores, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="floating-point"):
        rank_targets(torch.zeros(3, 4, dtype=torch.long), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="both"):
        rank_targets(scores, torch.tensor([0, 1, 2]), torch.tensor([0]), None)
    with pytest.raises(ValueError, match="filter_cols"):
        rank_targets(scores, torch.tensor([0, 1, 2]), torch.tensor([0]), torch.tensor([9]))


# ---------------------------------------------------------------------------------------------- tie policies
def test_tie_break_policies():
    opt = torch.tensor([1, 2, 5])
    pess = torch.tensor([1, 4, 9])
    assert tie_break(opt, pess, "optimistic").tolist() == [1, 2, 5]
    assert tie_break(opt, pess, "pessimistic").tolist() == [1, 4, 9]
    assert tie_break(opt, pess, "realistic").tolist() == [1.0, 3.0, 7.0]
    with pytest.raises(ValueError, match="unknown tie policy"):
        tie_break(opt, pess, "mean")


def test_random_policy_is_seeded_bounded_and_unbiased():
    g = torch.Generator().manual_seed(7)
    opt = torch.randint(1, 20, (300,), generator=g)
    pess = opt + torch.randint(0, 6, (300,), generator=g)
    first = tie_break(opt, pess, "random", seed=11)
    assert torch.equal(first, tie_break(opt, pess, "random", seed=11))
    assert not torch.equal(first, tie_break(opt, pess, "random", seed=12))
    draws = torch.stack([tie_break(opt, pess, "random", seed=s) for s in range(400)]).double()
    assert bool((draws >= opt).all()) and bool((draws <= pess).all())
    realistic = tie_break(opt, pess, "realistic")
    # mean over 400 seeds: standard error per element <= 2.5 / 20 = 0.125; overall far smaller
    assert float((draws.mean(0) - realistic).abs().max()) < 0.75
    assert abs(float(draws.mean() - realistic.mean())) < 0.03
    # uniform over the tie block: ranks 1, 2, 3 each about a third of the time
    block = tie_break(torch.ones(30000, dtype=torch.long), torch.full((30000,), 3), "random", seed=0)
    freq = torch.bincount(block, minlength=4)[1:].double() / 30000
    assert float((freq - 1 / 3).abs().max()) < 0.02


# ---------------------------------------------------------------------------------------------- OpenKE parity
HAND_TRIPLES = dict(
    train=torch.tensor([[0, 0, 1], [0, 0, 2], [3, 1, 4], [5, 0, 1], [2, 0, 5]]),
    valid=torch.tensor([[0, 0, 3], [1, 1, 4]]),
    test=torch.tensor([[0, 0, 4], [2, 1, 4], [1, 0, 5]]),
)
# distances (lower = better) of the 6 candidates, per test triple and side
HAND_DISTANCES = {
    ("tail", (0, 0, 4)): [1.0, 0.5, 2.0, 0.5, 2.0, 2.0],
    ("head", (0, 0, 4)): [3.0, 3.0, 1.0, 3.0, 0.0, 3.0],
    ("tail", (2, 1, 4)): [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    ("head", (2, 1, 4)): [0.1, 0.1, 0.3, 0.2, 0.3, 0.4],
    ("tail", (1, 0, 5)): [2.0, 1.0, 1.0, 1.0, 1.0, 1.0],
    ("head", (1, 0, 5)): [0.0, 1.0, 0.0, 1.0, 2.0, 1.0],
}


def hand_score_fn(queries, side):
    return -torch.tensor([HAND_DISTANCES[(side, tuple(q))] for q in queries.tolist()])


def test_openke_parity_hand_made():
    triples = TripleSet(**HAND_TRIPLES, entity_labels=[f"e{i}" for i in range(6)], relation_labels=["a", "b"])
    result = compute_ranks(hand_score_fn, triples.test, triples.filter_index, batch_size=2)
    for side in ("head", "tail"):
        rows = [HAND_DISTANCES[(side, tuple(q))] for q in triples.test.tolist()]
        expected = openke_filtered_ranks(rows, triples.test, side, triples.all_triples)
        assert result.side(side).optimistic.tolist() == expected
    # worked by hand: tail of (0,0,4): e0 strictly better and unfiltered; 1, 3 filtered; 5 ties.
    assert result.side("tail").optimistic[0] == 2
    assert result.side("tail").pessimistic[0] == 3
    assert result.side("tail").num_candidates[0] == 3
    # all-equal tail distances of (2,1,4): OpenKE says rank 1; pessimistic counts every unfiltered candidate
    assert result.side("tail").optimistic[1] == 1
    assert result.side("tail").pessimistic[1] == result.side("tail").num_candidates[1] == 6
    # head of (2,1,4): e0 strictly better and unknown; e1 (valid) and e3 (train) better but filtered;
    # e4 ties and is unknown
    assert result.side("head").optimistic[1] == 2
    assert result.side("head").pessimistic[1] == 3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_openke_parity_random_with_ties(seed):
    triples = toy_tripleset(seed)
    g = torch.Generator().manual_seed(seed)
    n = triples.num_entities
    distances = {
        side: torch.randint(0, 4, (triples.test.shape[0], n), generator=g).float() for side in ("head", "tail")
    }
    row_of = {}
    for i, q in enumerate(triples.test.tolist()):
        row_of.setdefault(tuple(q), i)

    def score_fn(queries, side):
        return -distances[side][[row_of[tuple(q)] for q in queries.tolist()]]

    result = compute_ranks(score_fn, triples.test, triples.filter_index, batch_size=3)
    for side in ("head", "tail"):
        rows = [distances[side][row_of[tuple(q)]].tolist() for q in triples.test.tolist()]
        expected = openke_filtered_ranks(rows, triples.test, side, triples.all_triples)
        assert result.side(side).optimistic.tolist() == expected

    # OpenKE's reported numbers: each side averaged over the test triples, then the plain mean of the two
    ev = evaluate(score_fn, triples, policies=("optimistic",), batch_size=5)
    side_values = {}
    for side in ("head", "tail"):
        rows = [distances[side][row_of[tuple(q)]].tolist() for q in triples.test.tolist()]
        ranks = openke_filtered_ranks(rows, triples.test, side, triples.all_triples)
        side_values[side] = {
            "mrr": sum(1 / r for r in ranks) / len(ranks),
            "mr": sum(ranks) / len(ranks),
            "hits@10": sum((r - 1) < 10 for r in ranks) / len(ranks),
            "hits@3": sum((r - 1) < 3 for r in ranks) / len(ranks),
            "hits@1": sum((r - 1) < 1 for r in ranks) / len(ranks),
        }
    for metric in ("mrr", "mr", "hits@10", "hits@3", "hits@1"):
        for side in ("head", "tail"):
            assert ev.get(metric, side=side, policy="optimistic") == pytest.approx(side_values[side][metric], abs=1e-12)
        both = (side_values["head"][metric] + side_values["tail"][metric]) / 2
        assert ev.get(metric, side="both", policy="optimistic") == pytest.approx(both, abs=1e-12)


# ---------------------------------------------------------------------------------------------- compute_ranks
def test_filtering_removes_exactly_the_other_known_answers():
    triples = toy_tripleset(5)
    scorer = TableScorer(triples.num_entities, triples.num_relations, seed=5)
    filtered = compute_ranks(scorer, triples.test, triples.filter_index)
    raw = compute_ranks(scorer, triples.test, None)
    assert filtered.filtered and not raw.filtered
    for side in ("head", "tail"):
        known = triples.filter_index.num_known(triples.test, side)
        # the target is itself a known answer (test is part of the filter), so N - known + 1 candidates remain
        assert torch.equal(filtered.side(side).num_candidates, triples.num_entities - known + 1)
        assert torch.equal(raw.side(side).num_candidates, torch.full_like(known, triples.num_entities))
        assert bool((filtered.side(side).optimistic <= raw.side(side).optimistic).all())
        assert bool((filtered.side(side).pessimistic <= raw.side(side).pessimistic).all())
    # brute force: remove the other known answers by hand and count
    known_set = {tuple(x) for x in triples.all_triples.tolist()}
    for side, col in (("head", 0), ("tail", 2)):
        scores = scorer(triples.test, side)
        for i, q in enumerate(triples.test.tolist()):
            target = q[col]
            s = scores[i]
            keep = []
            for e in range(triples.num_entities):
                cand = list(q)
                cand[col] = e
                if e == target or tuple(cand) not in known_set:
                    keep.append(e)
            others = [e for e in keep if e != target]
            assert filtered.side(side).optimistic[i] == 1 + sum(bool(s[e] > s[target]) for e in others)
            assert filtered.side(side).pessimistic[i] == 1 + sum(bool(s[e] >= s[target]) for e in others)
            assert filtered.side(side).num_candidates[i] == len(keep)


def test_chunking_invariance():
    triples = toy_tripleset(9)
    scorer = TableScorer(triples.num_entities, triples.num_relations, seed=9)
    queries = triples.test
    reference = compute_ranks(scorer, queries, triples.filter_index, batch_size=queries.shape[0])
    variants = [
        compute_ranks(scorer, queries, triples.filter_index, batch_size=1),
        compute_ranks(scorer, queries, triples.filter_index, batch_size=7),
        compute_ranks(scorer, queries, triples.filter_index, batch_size=1000),
        compute_ranks(scorer, queries, triples.filter_index),
        compute_ranks(scorer, queries, triples.filter_index, max_memory_bytes=3 * triples.num_entities * 6),
    ]
    for variant in variants:
        for side in ("head", "tail"):
            a, b = reference.side(side), variant.side(side)
            assert torch.equal(a.optimistic, b.optimistic)
            assert torch.equal(a.pessimistic, b.pessimistic)
            assert torch.equal(a.num_candidates, b.num_candidates)
            assert torch.equal(reference.ranks(side, "random", 3), variant.ranks(side, "random", 3))
    # the memory budget really bounds the chunk: 3 rows per chunk
    scorer.calls.clear()
    compute_ranks(scorer, queries, triples.filter_index, max_memory_bytes=3 * triples.num_entities * 6)
    assert max(scorer.calls) == 3


@pytest.mark.parametrize("variant", ["bfloat16", "float64", "transposed", "transposed_half"])
def test_torch_and_numpy_paths_agree_with_filter_index(variant):
    """CPU float32/64 scores are counted with NumPy, other dtypes with PyTorch ops (the CUDA code path);
    non-contiguous score matrices work on both."""
    triples = toy_tripleset(11)
    scorer = TableScorer(triples.num_entities, triples.num_relations, seed=11, levels=4)

    def other(queries, side):
        scores = scorer(queries, side)
        if variant == "bfloat16":
            return scores.bfloat16()
        if variant == "float64":
            return scores.double()
        dtype = torch.float16 if variant == "transposed_half" else torch.float32
        return scores.to(dtype).T.contiguous().T  # same values, column-major storage

    reference = compute_ranks(scorer, triples.test, triples.filter_index, batch_size=6)
    result = compute_ranks(other, triples.test, triples.filter_index, batch_size=6)
    for side in ("head", "tail"):
        for name in ("optimistic", "pessimistic", "num_candidates"):
            assert torch.equal(getattr(reference.side(side), name), getattr(result.side(side), name))


def test_unknown_width_is_learnt_from_first_query():
    triples = toy_tripleset(2)
    scorer = TableScorer(triples.num_entities, triples.num_relations, seed=2)
    ranks = compute_ranks(scorer, triples.test, None, sides=("tail",))
    assert scorer.calls[0] == 1 and len(scorer.calls) == 2
    assert ranks.num_entities == triples.num_entities
    assert set(ranks.sides) == {"tail"}
    with pytest.raises(KeyError, match="head"):
        ranks.side("head")


def test_batch_size_for_memory():
    assert batch_size_for_memory(1000, 6000 * 7) == 7
    assert batch_size_for_memory(1000, 1) == 1
    assert batch_size_for_memory(1000, 10 * 1000 * 10, element_size=8) == 10
    with pytest.raises(ValueError):
        batch_size_for_memory(0, 100)


def test_compute_ranks_nan_names_side_and_range():
    triples = toy_tripleset(1)
    scorer = TableScorer(triples.num_entities, triples.num_relations, seed=1)

    def nan_scorer(queries, side):
        scores = scorer(queries, side)
        if side == "tail":
            scores[0, 1] = float("nan")
        return scores

    with pytest.raises(ValueError, match=r"tail queries 0\.\.3: scores contain NaN in 1 of 4 rows"):
        compute_ranks(nan_scorer, triples.test, triples.filter_index, batch_size=4)


def test_compute_ranks_checks_score_fn_output():
    triples = toy_tripleset(1)
    with pytest.raises(ValueError, match="expected"):
        compute_ranks(lambda q, s: torch.zeros(q.shape[0] + 1, triples.num_entities), triples.test, None)
    with pytest.raises(ValueError, match="filter index"):
        compute_ranks(lambda q, s: torch.zeros(q.shape[0], 4), triples.test, triples.filter_index)
    with pytest.raises(ValueError, match="side"):
        compute_ranks(lambda q, s: torch.zeros(q.shape[0], 4), triples.test, None, sides=("both",))
    with pytest.raises(ValueError, match="at most one"):
        compute_ranks(lambda q, s: torch.zeros(q.shape[0], 4), triples.test, None, batch_size=2, max_memory_bytes=10)
    with pytest.raises(ValueError, match=r"\[Q, 3\]"):
        compute_ranks(lambda q, s: torch.zeros(q.shape[0], 4), triples.test[:, :2], None)

    widths = iter([15, 14])
    with pytest.raises(ValueError, match="but 15 before"):
        compute_ranks(lambda q, s: torch.zeros(q.shape[0], next(widths)), triples.test, None, batch_size=10)


def test_compute_ranks_empty_queries_and_progress():
    triples = toy_tripleset(4)
    scorer = TableScorer(triples.num_entities, triples.num_relations, seed=4)
    empty = compute_ranks(scorer, torch.empty(0, 3, dtype=torch.long), triples.filter_index)
    assert len(empty) == 0 and empty.side("head").optimistic.numel() == 0
    with_bar = compute_ranks(scorer, triples.test, triples.filter_index, progress=True, device="cpu")
    without = compute_ranks(scorer, triples.test, triples.filter_index)
    assert torch.equal(with_bar.side("tail").pessimistic, without.side("tail").pessimistic)


def test_concatenate_shards_equals_whole():
    triples = toy_tripleset(6)
    scorer = TableScorer(triples.num_entities, triples.num_relations, seed=6)
    whole = compute_ranks(scorer, triples.test, triples.filter_index)
    shards = [compute_ranks(scorer, part, triples.filter_index) for part in torch.split(triples.test, 6)]
    joined = RankResult.concatenate(shards)
    assert torch.equal(joined.queries, whole.queries)
    for side in ("head", "tail"):
        assert torch.equal(joined.ranks(side, "realistic"), whole.ranks(side, "realistic"))
        assert torch.equal(joined.side(side).num_candidates, whole.side(side).num_candidates)
    with pytest.raises(ValueError):
        RankResult.concatenate([whole, compute_ranks(scorer, triples.test, None)])


def test_filter_index_from_other_source():
    """Any FilterIndex works, e.g. one over train only."""
    triples = toy_tripleset(8)
    scorer = TableScorer(triples.num_entities, triples.num_relations, seed=8)
    train_only = FilterIndex(triples.train, triples.num_entities, triples.num_relations)
    ranks = compute_ranks(scorer, triples.test, train_only, sides=("tail",))
    known = train_only.known(triples.test, "tail")
    rows, cols = known
    expected = rank_targets(scorer(triples.test, "tail"), triples.test[:, 2], rows, cols)
    assert torch.equal(ranks.side("tail").optimistic, expected[0])
    assert torch.equal(ranks.side("tail").num_candidates, expected[2])


DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def read_openke(path: Path) -> torch.Tensor:
    """OpenKE ``*2id.txt``: a count line, then ``head tail relation`` rows; returned as (h, r, t)."""
    lines = path.read_text().split("\n")
    rows = [list(map(int, line.split())) for line in lines[1 : 1 + int(lines[0])]]
    return torch.tensor(rows)[:, [0, 2, 1]]


@pytest.mark.shared_data
@pytest.mark.skipif(not (DATASETS / "DB15K" / "test2id.txt").exists(), reason="needs ../shared/datasets/DB15K")
def test_db15k_filtered_ranks_match_masked_brute_force():
    """Real filter sizes (some head queries have thousands of known answers): our ranks equal PyKEEN's rule
    applied to a score matrix whose other known answers are masked out by brute force."""
    root = DATASETS / "DB15K"
    num_entities = int((root / "entity2id.txt").read_text().split("\n")[0])
    num_relations = int((root / "relation2id.txt").read_text().split("\n")[0])
    triples = TripleSet(
        read_openke(root / "train2id.txt"),
        read_openke(root / "valid2id.txt"),
        read_openke(root / "test2id.txt"),
        [str(i) for i in range(num_entities)],
        [str(i) for i in range(num_relations)],
        name="DB15K",
    )
    g = torch.Generator().manual_seed(0)
    entity = torch.randint(-1, 2, (num_entities, 4), generator=g).float()
    relation = torch.randint(0, 2, (num_relations, 4), generator=g).float()

    def score_fn(queries, side):
        anchor = entity[queries[:, 0]] if side == "tail" else entity[queries[:, 2]]
        return (anchor * relation[queries[:, 1]]) @ entity.T

    queries = triples.test[:300]
    result = compute_ranks(score_fn, queries, triples.filter_index, batch_size=128)
    # known answers from plain Python dictionaries, independent of FilterIndex
    answers: dict[tuple[str, int, int], set[int]] = {}
    for h, r, t in triples.all_triples.tolist():
        answers.setdefault(("tail", h, r), set()).add(t)
        answers.setdefault(("head", r, t), set()).add(h)
    for side, col in (("head", 0), ("tail", 2)):
        scores = score_fn(queries, side)
        rows, cols = [], []
        for i, (h, r, t) in enumerate(queries.tolist()):
            found = answers[("tail", h, r)] if side == "tail" else answers[("head", r, t)]
            rows += [i] * len(found)
            cols += sorted(found)
        expected = pykeen_ranks(scores, queries[:, col], torch.tensor(rows), torch.tensor(cols))
        assert torch.equal(result.side(side).optimistic, expected.optimistic.long())
        assert torch.equal(result.side(side).pessimistic, expected.pessimistic.long())
        assert torch.equal(result.side(side).num_candidates, expected.number_of_options.long())
    assert int(result.side("head").num_candidates.min()) < num_entities - 1000  # large filter sets occur


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_scores_give_cpu_ranks_equal_to_cpu():
    triples = toy_tripleset(3)
    scorer = TableScorer(triples.num_entities, triples.num_relations, seed=3)

    def cuda_scorer(queries, side):
        return scorer(queries.cpu(), side).cuda()

    on_gpu = compute_ranks(cuda_scorer, triples.test, triples.filter_index, batch_size=4)
    on_cpu = compute_ranks(scorer, triples.test, triples.filter_index, batch_size=4)
    for side in ("head", "tail"):
        assert on_gpu.side(side).optimistic.device.type == "cpu"
        assert torch.equal(on_gpu.side(side).optimistic, on_cpu.side(side).optimistic)
        assert torch.equal(on_gpu.side(side).pessimistic, on_cpu.side(side).pessimistic)
