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


def test_relation_statistics_count_repeated_rows_as_openke_n_n_py():
    # r0: pairs (0,r0)->{1,1 (repeat)}, (2,r0)->{3}: 3 rows over 2 (h,r) pairs and 2 (r,t) pairs.
    # OpenKE's n-n.py appends every row, so tph = hpt = 3/2 = 1.5 -> N-N; counted once both are 1 -> 1-1.
    # r1: (0,r1,1), (0,r1,2), (3,r1,4): tph = 3/2 = 1.5 (1-N), hpt = 3/3 = 1.
    triples = torch.tensor([(0, 0, 1), (0, 0, 1), (2, 0, 3), (0, 1, 1), (0, 1, 2), (3, 1, 4)])
    tph, hpt = relation_statistics(triples, 3, count_duplicates=True)
    assert tph.tolist() == [1.5, 1.5, 1.0] and hpt.tolist() == [1.5, 1.0, 1.0]
    tph, hpt = relation_statistics(triples, 3, count_duplicates=False)
    assert tph.tolist() == [1.0, 1.5, 1.0] and hpt.tolist() == [1.0, 1.0, 1.0]
    assert relation_categories(triples, 3).tolist() == [3, 1, 0]
    assert relation_categories(triples, 3, count_duplicates=False).tolist() == [0, 1, 0]


def test_triple_set_categories_use_all_splits_with_repeats():
    # r0 is 1-1 on train alone; the valid row (0,r0,3) gives head 0 two tails: tph = 3/2 -> 1-N.
    # r1 is 1-1 on train alone; the test row repeats a train row: tph = hpt = 2/1 -> N-N.
    labels = [f"e{i}" for i in range(5)]
    train = torch.tensor([[0, 0, 1], [2, 0, 4], [1, 1, 2]])
    valid = torch.tensor([[0, 0, 3]])
    test = torch.tensor([[1, 1, 2]])
    ts = TripleSet(train, valid, test, labels, ["r0", "r1"], name="toy")
    assert relation_categories(ts.train, 2).tolist() == [0, 0]
    assert ts.relation_categories.tolist() == [1, 3]


def test_compare_openke_categories_counts_and_mismatches(tmp_path):
    from mmkgc.data.formats import compare_openke_categories
    from mmkgc.errors import DataFormatError

    labels = [f"e{i}" for i in range(5)]
    ts = TripleSet(torch.tensor([[0, 0, 1], [2, 0, 4], [1, 1, 2]]), torch.tensor([[0, 0, 3]]),
                   torch.tensor([[1, 1, 2], [2, 0, 4]]), labels, ["r0", "r1"], name="toy")
    # categories are r0 -> 1 (1-N), r1 -> 3 (N-N); the file claims 3 for r1 (agrees) and 0 for r0 (disagrees).
    f = tmp_path / "test2id_all.txt"
    f.write_text("2\n3\t1 2 1\n0\t2 4 0\n")
    cmp = compare_openke_categories(ts, f)
    assert (cmp.rows, cmp.mismatches, cmp.mismatched_relations, cmp.same_triples) == (2, 1, [0], True)
    assert cmp.ours == {"1-1": 0, "1-N": 1, "N-1": 0, "N-N": 1}
    assert cmp.reference == {"1-1": 1, "1-N": 0, "N-1": 0, "N-N": 1}
    f.write_text("2\n3\t1 2 1\n7\t2 4 0\n")
    with pytest.raises(DataFormatError, match=r"test2id_all.txt:3: category code 7"):
        compare_openke_categories(ts, f)


# Counts per category of the test rows in NativE's shipped OpenKE category files, zjukg/NATIVE commit
# c72291c3d571b36c754897935d21718aa4568fe7, benchmarks/<name>/{1-1,1-n,n-1,n-n}.txt (first line of each), and
# the SHA-256 of the concatenated first column of benchmarks/<name>/test2id_all.txt (one code per test row,
# in test2id.txt order; `tail -n +2 test2id_all.txt | cut -f1 | tr -d '\n' | sha256sum`).
OPENKE_CATEGORY_COUNTS = {
    "DB15K": ({"1-1": 385, "1-N": 195, "N-1": 3887, "N-N": 5435},
              "82da79ea739cdb64596867525a475bb10b69d364d6a7daaddde72774be5e32d2"),
    "MKG-W": ({"1-1": 247, "1-N": 18, "N-1": 2991, "N-N": 1018},
              "028dea85299a1ec08e4181fdf39e6aac4c0c7672b657871430d8bae9eb7e3d3d"),
}


@pytest.mark.parametrize("name", sorted(OPENKE_CATEGORY_COUNTS))
def test_categories_equal_openke_shipped_files(name, shared_dataset_dir):
    import hashlib

    from mmkgc.data.formats import read_openke
    from mmkgc.data.triples import CATEGORY_NAMES

    ts = read_openke(shared_dataset_dir(name), name=name)
    codes = ts.relation_categories[ts.test[:, 1]]
    counts, digest = OPENKE_CATEGORY_COUNTS[name]
    assert dict(zip(CATEGORY_NAMES, torch.bincount(codes, minlength=4).tolist())) == counts
    assert hashlib.sha256("".join(map(str, codes.tolist())).encode()).hexdigest() == digest


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
