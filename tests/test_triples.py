"""TripleSet, FilterIndex and relation categories against brute force."""

import pytest
import torch

from mmkgc.data.triples import FilterIndex, KeyValueIndex, TripleSet, relation_categories, relation_statistics


def _brute(triples, queries, side):
    out = []
    for i, (h, r, t) in enumerate(queries.tolist()):
        for a, b, c in triples.tolist():
            if b == r and ((side == "tail" and a == h) or (side == "head" and c == t)):
                out.append((i, c if side == "tail" else a))
    return sorted(set(out))


def test_filter_index_matches_brute_force_both_sides():
    gen = torch.Generator().manual_seed(0)
    triples = torch.stack([torch.randint(15, (120,), generator=gen), torch.randint(3, (120,), generator=gen),
                           torch.randint(15, (120,), generator=gen)], 1)
    index = FilterIndex(triples, 15, 3)
    queries = torch.cat([triples[:20], torch.tensor([[14, 2, 14], [0, 0, 0]])])
    for side in ("head", "tail"):
        rows, ents = index.known(queries, side)
        assert sorted(set(zip(rows.tolist(), ents.tolist()))) == _brute(triples, queries, side)
        assert len(rows) == len(set(zip(rows.tolist(), ents.tolist())))  # no duplicates
        counts = index.num_known(queries, side)
        assert counts.tolist() == [sum(1 for q, _ in _brute(triples, queries, side) if q == i)
                                   for i in range(len(queries))]
    assert index.contains(triples).all()
    absent = [t for t in ([h, r, x] for h in range(15) for r in range(3) for x in range(15))
              if not (triples == torch.tensor(t)).all(1).any()][:10]
    assert not index.contains(torch.tensor(absent)).any()


def test_numpy_and_torch_lookups_agree():
    gen = torch.Generator().manual_seed(1)
    keys = torch.randint(50, (400,), generator=gen)
    values = torch.randint(30, (400,), generator=gen)
    index = KeyValueIndex(keys, values, 30)
    q = torch.randint(60, (80,), generator=gen)
    a = index.lookup(q)
    b = index._lookup_torch(q)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_relation_categories_follow_the_tph_hpt_rule():
    # r0: 1-1; r1: one head, many tails (1-N); r2: many heads, one tail (N-1); r3: N-N
    t = [(0, 0, 1), (2, 0, 3),
         (0, 1, 1), (0, 1, 2), (0, 1, 3),
         (1, 2, 0), (2, 2, 0), (3, 2, 0),
         (0, 3, 1), (0, 3, 2), (1, 3, 1), (1, 3, 2)]
    triples = torch.tensor(t)
    tph, hpt = relation_statistics(triples, 4)
    assert tph.tolist() == [1.0, 3.0, 1.0, 2.0] and hpt.tolist() == [1.0, 1.0, 3.0, 2.0]
    assert relation_categories(triples, 4).tolist() == [0, 1, 2, 3]


def test_triple_set_validation_clean_valid_and_reciprocals():
    labels = [f"e{i}" for i in range(5)]
    train = torch.tensor([[0, 0, 1], [1, 0, 2]])
    valid = torch.tensor([[0, 0, 1], [2, 0, 3], [2, 0, 3], [3, 0, 4]])
    test = torch.tensor([[3, 0, 4]])
    ts = TripleSet(train, valid, test, labels, ["r"], name="toy")
    assert ts.valid_clean.tolist() == [[2, 0, 3]]
    assert ts.with_reciprocal(train).tolist() == [[0, 0, 1], [1, 0, 2], [1, 1, 0], [2, 1, 1]]
    assert ts.tail_corruption_probability.shape == (1,)
    with pytest.raises(ValueError, match="tail id out of range"):
        TripleSet(torch.tensor([[0, 0, 5]]), None, None, labels, ["r"], name="bad")
    with pytest.raises(ValueError, match=r"shape \[n, 3\]"):
        TripleSet(torch.tensor([[0, 0]]), None, None, labels, ["r"])
