"""The seeded synthetic multi-modal KG (mmkgc.data.synthetic)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmkgc.data.health import health_report
from mmkgc.data.synthetic import PATTERNS, SyntheticMMKG, make_synthetic_mmkg


@pytest.fixture(scope="module")
def default() -> SyntheticMMKG:
    return make_synthetic_mmkg(seed=0)


@pytest.fixture(scope="module")
def small() -> SyntheticMMKG:
    return make_synthetic_mmkg(num_entities=480, num_relations=9, num_types=6, seed=3)


def as_set(x: torch.Tensor) -> set[tuple[int, int, int]]:
    return {tuple(row) for row in x.tolist()}


def test_default_size_shapes_and_dtypes(default):
    ts = default.triples
    assert ts.num_entities == 2000 and ts.num_relations == 20
    assert 20_000 <= len(ts.train) <= 32_000
    assert 500 <= len(ts.valid) <= 2_000 and 500 <= len(ts.test) <= 2_000
    assert ts.train.dtype == torch.long
    assert default.modalities == ["text", "visual"]
    for m, d in (("text", 64), ("visual", 64)):
        x, present = default.features[m], default.present[m]
        assert x.dtype == np.float32 and x.shape == (2000, d)
        assert present.dtype == np.bool_ and present.shape == (2000,)
        assert np.all(x[~present] == 0.0)
        assert np.all(np.abs(x[present]).sum(1) > 0)
        assert np.isfinite(x).all()
    assert abs((~default.present["text"]).mean() - 0.1) < 0.03
    assert abs((~default.present["visual"]).mean() - 0.2) < 0.03
    assert default.latent.dtype == np.float32 and default.latent.shape == (2000, 16)
    assert default.entity_types.shape == (2000,) and default.entity_types.max() == 7
    assert len(default.relation_patterns) == 20 and set(default.relation_patterns) == set(PATTERNS)


def test_deterministic_given_seed(small):
    again = make_synthetic_mmkg(num_entities=480, num_relations=9, num_types=6, seed=3)
    for split in ("train", "valid", "test"):
        assert torch.equal(small.triples.split(split), again.triples.split(split))
    for m in small.features:
        assert np.array_equal(small.features[m], again.features[m])
        assert np.array_equal(small.present[m], again.present[m])
    assert np.array_equal(small.sparse, again.sparse)
    other = make_synthetic_mmkg(num_entities=480, num_relations=9, num_types=6, seed=4)
    assert not torch.equal(small.triples.train[:100], other.triples.train[:100])


def test_splits_are_clean_and_evaluation_entities_seen_in_train(default, small):
    for g in (default, small):
        rep = health_report(g.triples)
        assert rep.warnings == [], rep.warnings
        assert rep.unseen["test"].triples_with_unseen_entity == 0
        assert rep.unseen["valid"].triples_with_unseen_entity == 0
        assert rep.overlaps == {"train&valid": 0, "train&test": 0, "valid&test": 0}
        assert rep.splits["train"].self_loops == 0
        assert rep.valid_clean == rep.splits["valid"].rows


def test_relation_patterns_hold(default):
    ts = default.triples
    full = as_set(ts.all_triples)
    train = as_set(ts.train)
    patterns = default.relation_patterns
    for r, p in enumerate(patterns):
        rows = [x for x in full if x[1] == r]
        assert rows, f"relation {r} ({p}) has no triples"
        if p == "symmetric":
            assert all((t, r, h) in full for h, _, t in rows)
    assert default.inverse_of and all(patterns[r] == "inverse" for r in default.inverse_of)
    for r, r_inv in default.inverse_of.items():
        assert all((t, r_inv, h) in full for h, rr, t in full if rr == r)
    assert default.compositions
    for r1, r2, r3 in default.compositions:
        f1 = {h: t for h, r, t in full if r == r1}
        f2 = {h: t for h, r, t in full if r == r2}
        f3 = {h: t for h, r, t in full if r == r3}
        checked = [h for h in f3 if h in f1 and f1[h] in f2]
        assert len(checked) > 50
        assert all(f3[h] == f2[f1[h]] for h in checked)
    # A fact goes to one split whole: the reverse of a held-out triple is never a training triple.
    for h, r, t in as_set(ts.test) | as_set(ts.valid):
        partner = r if patterns[r] == "symmetric" else default.inverse_of.get(r)
        if partner is not None:
            assert (t, partner, h) not in train
    # 1-N and N-1 relations come out as such under the OpenKE n-n.py rule.
    from mmkgc.data.triples import relation_categories

    cats = relation_categories(ts.all_triples, ts.num_relations).tolist()
    for r, p in enumerate(patterns):
        if p == "one_to_many":
            assert cats[r] == 1
        if p == "many_to_one":
            assert cats[r] == 2
        if p == "symmetric":
            assert cats[r] == 3


def test_sparse_entities_are_low_degree_and_dominate_held_out_triples(default):
    ts = default.triples
    sparse = default.sparse
    assert abs(sparse.mean() - 0.3) < 0.01
    train = ts.train.numpy()
    degree = np.bincount(np.r_[train[:, 0], train[:, 2]], minlength=ts.num_entities)
    assert degree[sparse].max() <= 2 * 4  # at most 4 facts of at most 2 triples each
    assert np.median(degree[sparse]) <= 4
    assert np.median(degree[~sparse]) >= 20
    test = ts.test.numpy()
    involves_sparse = sparse[test[:, 0]] | sparse[test[:, 2]]
    assert involves_sparse.mean() > 0.35
    assert (degree[test[:, [0, 2]]] >= 1).all()


def test_features_are_informative_about_the_hidden_structure(default):
    """Least squares from the features recovers the latent and the type on held-out entities."""
    x = np.concatenate([default.features["text"], default.features["visual"],
                        default.present["text"][:, None], default.present["visual"][:, None],
                        np.ones((2000, 1))], 1).astype(np.float64)
    both = default.present["text"] & default.present["visual"]
    fit, held = np.arange(2000) < 1400, np.arange(2000) >= 1400
    z = default.latent.astype(np.float64)
    w = np.linalg.lstsq(x[fit], z[fit], rcond=None)[0]
    resid = ((x[held & both] @ w - z[held & both]) ** 2).sum()
    total = ((z[held & both] - z[held & both].mean(0)) ** 2).sum()
    assert 1 - resid / total > 0.6
    onehot = np.eye(8)[default.entity_types]
    wt = np.linalg.lstsq(x[fit], onehot[fit], rcond=None)[0]
    accuracy = ((x[held] @ wt).argmax(1) == default.entity_types[held]).mean()
    assert accuracy > 0.8  # chance is 1/8
    # Each modality alone carries information too.
    for m in ("text", "visual"):
        xm = np.c_[default.features[m], np.ones(2000)].astype(np.float64)
        ok = default.present[m]
        wm = np.linalg.lstsq(xm[fit & ok], onehot[fit & ok], rcond=None)[0]
        assert ((xm[held & ok] @ wm).argmax(1) == default.entity_types[held & ok]).mean() > 0.5


def test_options_and_argument_checks():
    g = make_synthetic_mmkg(num_entities=200, num_relations=2, num_types=4, seed=1, missing_text=0.0,
                            missing_visual=1.0, text_dim=8, visual_dim=5)
    assert g.relation_patterns == ["symmetric", "one_to_many"]
    assert g.present["text"].all() and not g.present["visual"].any()
    assert g.features["visual"].shape == (200, 5) and not g.features["visual"].any()
    assert g.triples.metadata["params"]["seed"] == 1
    with pytest.raises(ValueError, match="num_entities"):
        make_synthetic_mmkg(num_entities=10, num_types=8)
    with pytest.raises(ValueError, match="missing_text"):
        make_synthetic_mmkg(missing_text=1.5)
    with pytest.raises(ValueError, match="sparse_fraction"):
        make_synthetic_mmkg(sparse_fraction=1.0)
    with pytest.raises(ValueError, match="sparse_degree"):
        make_synthetic_mmkg(sparse_degree=(3, 2))


@pytest.fixture(scope="module")
def inductive() -> SyntheticMMKG:
    return make_synthetic_mmkg(seed=0, unseen_entity_share=0.15)


def test_inductive_split_keeps_the_chosen_entities_out_of_train(default, inductive):
    u = inductive.unseen
    assert u.dtype == np.bool_ and int(u.sum()) == 300  # round(0.15 * 2000)
    assert not (u & ~inductive.sparse).any()  # drawn among the sparse entities
    ts = inductive.triples
    train = ts.train.numpy()
    assert not u[train[:, 0]].any() and not u[train[:, 2]].any()  # never in train
    seen = np.zeros(ts.num_entities, dtype=bool)
    seen[train[:, 0]] = seen[train[:, 2]] = True
    held = np.concatenate([ts.valid.numpy(), ts.test.numpy()])
    ends = u[held[:, 0]].astype(int) + u[held[:, 2]]
    assert ends.max() == 1  # no held-out triple between two unseen entities
    # every other entity and every relation of valid/test occurs in train
    other = np.where(u[held[:, 0]], held[:, 2], held[:, 0])
    assert seen[other].all() and set(held[:, 1].tolist()) <= set(train[:, 1].tolist())
    assert (~seen == u).sum() >= ts.num_entities - 10  # besides U, at most a few entities lost every triple
    # a large share of the held-out triples is about unseen entities, in valid and in test alike
    for split in ("valid", "test"):
        x = ts.split(split).numpy()
        share = (u[x[:, 0]] | u[x[:, 2]]).mean()
        assert 0.35 < share < 0.75, (split, share)
    # most unseen entities keep at least one held-out triple
    touched = np.zeros(ts.num_entities, dtype=bool)
    touched[held[:, 0]] = touched[held[:, 2]] = True
    assert (touched & u).sum() >= 0.8 * u.sum()
    # the rest of the dataset is the default one: same features, train is the default train minus moved facts
    for m in default.features:
        assert np.array_equal(default.features[m], inductive.features[m])
    assert as_set(ts.train) <= as_set(default.triples.train)
    everything = as_set(default.triples.train) | as_set(default.triples.valid) | as_set(default.triples.test)
    assert as_set(ts.valid) | as_set(ts.test) <= everything
    rep = health_report(ts)
    x = ts.test.numpy()
    assert rep.unseen["test"].triples_with_unseen_entity == int((u[x[:, 0]] | u[x[:, 2]]).sum())
    assert rep.overlaps == {"train&valid": 0, "train&test": 0, "valid&test": 0}


def test_inductive_split_is_deterministic_and_checked():
    a = make_synthetic_mmkg(num_entities=480, num_relations=9, num_types=6, seed=3, unseen_entity_share=0.1)
    b = make_synthetic_mmkg(num_entities=480, num_relations=9, num_types=6, seed=3, unseen_entity_share=0.1)
    for split in ("train", "valid", "test"):
        assert torch.equal(a.triples.split(split), b.triples.split(split))
    assert np.array_equal(a.unseen, b.unseen) and int(a.unseen.sum()) == 48
    c = make_synthetic_mmkg(num_entities=480, num_relations=9, num_types=6, seed=4, unseen_entity_share=0.1)
    assert not np.array_equal(a.unseen, c.unseen)
    assert not make_synthetic_mmkg(num_entities=480, num_relations=9, num_types=6, seed=3).unseen.any()
    with pytest.raises(ValueError, match="unseen_entity_share"):
        make_synthetic_mmkg(num_entities=480, num_relations=9, num_types=6, seed=3, unseen_entity_share=0.5)
    with pytest.raises(ValueError, match="unseen_entity_share"):
        make_synthetic_mmkg(num_entities=480, num_relations=9, num_types=6, seed=3, unseen_entity_share=-0.1)
