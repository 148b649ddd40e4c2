"""Negative samplers (train-filtered, Bernoulli rates, determinism), positive batching and 1-N label batches."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmkgc.data.triples import TripleSet
from mmkgc.training.sampling import (
    BernoulliNegativeSampler,
    NegativeSampler,
    OneToNBatcher,
    TripleBatcher,
    UniformNegativeSampler,
)

DATASETS = Path(__file__).parents[2] / "shared" / "datasets"


def _toy(num_entities=30, seed=0) -> TripleSet:
    """Relations with different shapes: 0 one-to-many, 1 many-to-one, 2 dense, 3 one-to-one."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for h in range(5):  # 1-N: each head has 6 tails
        rows += [(h, 0, int(t)) for t in torch.randperm(num_entities, generator=g)[:6]]
    for t in range(5):  # N-1
        rows += [(int(h), 1, t) for h in torch.randperm(num_entities, generator=g)[:6]]
    for h in range(4):  # dense block: (h, 2, *) links h to 25 of the 30 entities
        rows += [(h, 2, int(t)) for t in torch.randperm(num_entities, generator=g)[:25]]
    rows += [(i, 3, (i + 1) % num_entities) for i in range(num_entities)]
    train = torch.tensor(rows)
    return TripleSet(train, train[:3], train[3:6], [f"e{i}" for i in range(num_entities)],
                     ["one_many", "many_one", "dense", "one_one"], name="toy")


def _train_set(ts: TripleSet) -> set:
    return {tuple(x) for x in ts.train.tolist()}


@pytest.mark.parametrize("max_rounds", [10, 0])  # 0 forces the exact complement draw for every collision
def test_filtered_negatives_are_never_training_triples(max_rounds):
    ts = _toy()
    sampler = UniformNegativeSampler(ts.num_entities, 16, "both", ts.train_index,
                                     torch.Generator().manual_seed(0), max_rounds=max_rounds)
    pos = ts.train
    neg = sampler.sample(pos)
    assert neg.triples.shape == (pos.shape[0], 16, 3) and neg.triples.dtype == torch.long
    assert neg.tail_corrupted.shape == (pos.shape[0], 16) and neg.tail_corrupted.dtype == torch.bool
    train = _train_set(ts)
    assert not any(tuple(x) in train for x in neg.triples.reshape(-1, 3).tolist())
    # the kept side and the relation are the positive's
    kept_h = neg.triples[..., 0] == pos[:, None, 0]
    kept_t = neg.triples[..., 2] == pos[:, None, 2]
    assert (neg.triples[..., 1] == pos[:, None, 1]).all()
    assert kept_h[neg.tail_corrupted].all() and kept_t[~neg.tail_corrupted].all()
    torch.testing.assert_close(neg.entities, torch.where(neg.tail_corrupted, neg.triples[..., 2], neg.triples[..., 0]))


def test_exact_fallback_is_uniform_over_the_complement():
    ts = _toy()
    pos = torch.tensor([[0, 2, int(ts.train[(ts.train[:, 0] == 0) & (ts.train[:, 1] == 2)][0, 2])]])
    allowed = sorted(set(range(30)) - {t for h, r, t in _train_set(ts) if h == 0 and r == 2})
    assert len(allowed) == 5
    sampler = UniformNegativeSampler(30, 6000, "tail", ts.train_index, torch.Generator().manual_seed(3),
                                     max_rounds=0)
    tails = sampler.sample(pos).triples[0, :, 2]
    counts = torch.bincount(tails, minlength=30)
    assert sorted(torch.nonzero(counts).flatten().tolist()) == allowed
    freq = counts[allowed].double() / 6000
    assert (freq - 0.2).abs().max() < 0.03


def test_same_seed_same_negatives():
    ts = _toy()
    a = BernoulliNegativeSampler.from_triples(ts, 8, generator=torch.Generator().manual_seed(7)).sample(ts.train)
    b = BernoulliNegativeSampler.from_triples(ts, 8, generator=torch.Generator().manual_seed(7)).sample(ts.train)
    c = BernoulliNegativeSampler.from_triples(ts, 8, generator=torch.Generator().manual_seed(8)).sample(ts.train)
    assert torch.equal(a.triples, b.triples) and torch.equal(a.tail_corrupted, b.tail_corrupted)
    assert not torch.equal(a.triples, c.triples)


def test_bernoulli_tail_rate_per_relation():
    ts = _toy()
    p = ts.tail_corruption_probability
    assert p[0] < 0.5 < p[1]  # 1-N: mostly heads replaced; N-1: mostly tails
    sampler = BernoulliNegativeSampler.from_triples(ts, 400, generator=torch.Generator().manual_seed(1))
    neg = sampler.sample(ts.train)
    for rel in range(ts.num_relations):
        rate = neg.tail_corrupted[ts.train[:, 1] == rel].float().mean()
        assert abs(float(rate) - float(p[rel])) < 0.02


def test_uniform_sides_and_argument_errors():
    ts = _toy()
    for corruption, expected in (("head", False), ("tail", True)):
        neg = UniformNegativeSampler(30, 4, corruption, generator=torch.Generator().manual_seed(0)).sample(ts.train)
        assert (neg.tail_corrupted == expected).all()
    neg = UniformNegativeSampler(30, 200, "both", generator=torch.Generator().manual_seed(0)).sample(ts.train)
    assert abs(neg.tail_corrupted.float().mean().item() - 0.5) < 0.02
    with pytest.raises(ValueError, match="corruption"):
        UniformNegativeSampler(30, 4, "middle")
    with pytest.raises(ValueError, match="num_negatives"):
        NegativeSampler(30, 0)
    with pytest.raises(ValueError, match="out of range"):
        BernoulliNegativeSampler(30, 2, torch.full((2,), 0.5)).sample(torch.tensor([[0, 5, 1]]))
    with pytest.raises(ValueError, match=r"\[n, 3\]"):
        NegativeSampler(30, 2).sample(torch.zeros(4, 2, dtype=torch.long))


@pytest.mark.shared_data
def test_db15k_bernoulli_filtered_batch():
    path = DATASETS / "DB15K" / "train2id.txt"
    if not path.exists():
        pytest.skip(f"{path} not available")
    lines = path.read_text().split("\n")
    rows = [tuple(int(x) for x in line.split()) for line in lines[1:int(lines[0]) + 1]]
    htr = torch.tensor(rows)
    train = torch.unique(htr[:, [0, 2, 1]], dim=0)
    n, r = int(train[:, [0, 2]].max()) + 1, int(train[:, 1].max()) + 1
    ts = TripleSet(train, None, None, [str(i) for i in range(n)], [str(i) for i in range(r)], name="DB15K")
    g = torch.Generator().manual_seed(0)
    sampler = BernoulliNegativeSampler.from_triples(ts, 128, generator=g)
    pos = next(iter(TripleBatcher(ts.train, 1024, "with_replacement", g)))
    neg = sampler.sample(pos)
    assert neg.triples.shape == (1024, 128, 3)
    assert not ts.train_index.contains(neg.triples.reshape(-1, 3)).any()
    expected = ts.tail_corruption_probability[pos[:, 1]].mean()
    assert abs(neg.tail_corrupted.float().mean().item() - float(expected)) < 0.01


def test_triple_batcher_modes():
    triples = torch.stack([torch.arange(103), torch.zeros(103, dtype=torch.long), torch.arange(103)], 1)
    batcher = TripleBatcher(triples, 10, "permutation", torch.Generator().manual_seed(0))
    batches = list(batcher)
    assert len(batcher) == len(batches) == 11 and batches[-1].shape == (3, 3)
    assert torch.equal(torch.cat(batches)[:, 0].sort().values, torch.arange(103))
    assert len(TripleBatcher(triples, 10, drop_last=True)) == 10
    again = list(TripleBatcher(triples, 10, "permutation", torch.Generator().manual_seed(0)))
    assert all(torch.equal(a, b) for a, b in zip(batches, again))
    wr = list(TripleBatcher(triples, 10, "with_replacement", torch.Generator().manual_seed(0)))
    assert len(wr) == 10 and all(b.shape == (10, 3) for b in wr)
    ids = torch.cat(wr)[:, 0]
    assert len(set(ids.tolist())) < 100  # drawn with replacement: 100 draws from 103 repeat some triples
    with pytest.raises(ValueError, match="mode"):
        TripleBatcher(triples, 10, "shuffle")
    with pytest.raises(ValueError, match="empty"):
        TripleBatcher(torch.empty(0, 3, dtype=torch.long), 10)


@pytest.mark.parametrize("reciprocal", [True, False])
def test_one_to_n_batches(reciprocal):
    ts = _toy()
    batcher = OneToNBatcher(ts, 7, reciprocal=reciprocal, generator=torch.Generator().manual_seed(0))
    train = _train_set(ts)
    tails = {(h, r) for h, r, t in train}
    heads = {(t, r) for h, r, t in train}
    seen = []
    for batch in batcher:
        assert batch.labels.shape == (batch.entities.shape[0], 30) and batch.labels.dtype == torch.float32
        for e, r, tail, row in zip(batch.entities.tolist(), batch.relations.tolist(),
                                   batch.predict_tail.tolist(), batch.labels):
            if reciprocal:
                assert tail
            if r >= ts.num_relations:
                expected = {h for h, rr, t in train if rr == r - ts.num_relations and t == e}
                seen.append(("head", e, r - ts.num_relations))
            elif tail:
                expected = {t for h, rr, t in train if rr == r and h == e}
                seen.append(("tail", e, r))
            else:
                expected = {h for h, rr, t in train if rr == r and t == e}
                seen.append(("head", e, r))
            assert set(torch.nonzero(row).flatten().tolist()) == expected
    assert len(batcher) == -(-len(seen) // 7)
    assert sorted(seen) == sorted([("tail", h, r) for h, r in tails] + [("head", t, r) for t, r in heads])


def test_one_to_n_labels_of_reciprocal_head_query():
    ts = _toy()
    batcher = OneToNBatcher(ts, 4)
    # (?, r + R, e) asks for the tails of (e, r, ?)
    labels = batcher.labels(torch.tensor([0]), torch.tensor([ts.num_relations + 2]), torch.tensor([False]))
    expected = {t for h, r, t in _train_set(ts) if h == 0 and r == 2}
    assert set(torch.nonzero(labels[0]).flatten().tolist()) == expected


def test_openke_rounding_of_the_tail_probability():
    """OpenKE corrupts the tail when ``randd % 1000 < 1000 p``: p rounded up to a multiple of 1/1000."""
    from mmkgc.data.sampling import openke_tail_probability

    p = torch.tensor([0.99904, 0.5, 0.1234, 0.0, 1.0, 0.9991, 2 / 5])
    # 2/5: OpenKE's float 1000 * 2 / 5 is exactly 400, so P(tail) stays 0.4 (not 0.401)
    assert openke_tail_probability(p).tolist() == pytest.approx([1.0, 0.5, 0.124, 0.0, 1.0, 1.0, 0.4], abs=1e-7)


def test_openke_bernoulli_never_corrupts_rdf_type_heads_on_db15k():
    """``training.sampler: openke_bernoulli`` reproduces the official samplers' rounding: on DB15K the heads of
    ``rdf:type`` triples (p_tail = 0.99904) are never corrupted, which the exact rule does about once per
    thousand; every other relation keeps (nearly) its exact probability."""
    from types import SimpleNamespace

    from mmkgc.data.registry import resolve_dataset
    from mmkgc.data.sampling import openke_tail_probability
    from mmkgc.training.loops import NegativeSamplingLoop

    if not (DATASETS / "DB15K" / "train2id.txt").exists():
        pytest.skip("DB15K not available")
    ts = resolve_dataset("DB15K", data_dir=DATASETS)
    rdf_type = ts.relation_labels.index("<http://www.w3.org/1999/02/22-rdf-syntax-ns#type>")
    exact = ts.tail_corruption_probability
    assert float(exact[rdf_type]) == pytest.approx(0.99904, abs=1e-5)
    training = SimpleNamespace(batch_size=1024, positives="with_replacement", filtered_negatives=True,
                               sampler="openke_bernoulli", num_negatives=64, loss="nssa", adversarial_temperature=1.0)
    loops = {}
    for sampler in ("bernoulli", "openke_bernoulli"):
        training.sampler = sampler
        loops[sampler] = NegativeSamplingLoop.__new__(NegativeSamplingLoop)
        NegativeSamplingLoop.__init__(loops[sampler], torch.nn.Linear(1, 1), ts, training,
                                      torch.Generator().manual_seed(0), torch.device("cpu"))
    rounded = loops["openke_bernoulli"].sampler.tail_probability
    assert torch.equal(rounded, openke_tail_probability(exact)) and float(rounded[rdf_type]) == 1.0
    assert torch.equal(loops["bernoulli"].sampler.tail_probability, exact)
    assert float((rounded - exact).abs().max()) <= 1e-3
    rows = ts.train[ts.train[:, 1] == rdf_type]
    g = torch.Generator().manual_seed(3)
    heads_exact = int((~loops["bernoulli"].sampler.sample(rows, generator=g).tail_corrupted).sum())
    heads_rounded = int((~loops["openke_bernoulli"].sampler.sample(rows, generator=g).tail_corrupted).sum())
    assert heads_rounded == 0 and heads_exact > 0   # ~0.00096 x 10,422 x 64 = ~640 expected
