"""Evaluation of relation-conditioned fusion (NativE / AFME): the streaming per-relation tables, both sides of a
relation scored in one kernel call written straight into the output rows, and the all-entity kernels whose scores do
not depend on the batch -- all equal bit for bit to the side-by-side path, ties included."""

from __future__ import annotations

import pytest
import torch

from mmkgc.evaluation.ranking import compute_ranks
from mmkgc.models.kge import relation_groups
from mmkgc.nn.distances import (
    mixture_columns,
    mixture_table_transposed,
    pairwise_complex_l1_distance,
    pairwise_l1_distance,
    scorer_kernel_available,
)
from test_fused_paths import build

needs_kernels = pytest.mark.skipif(not scorer_kernel_available(), reason="no C compiler")


@needs_kernels
@pytest.mark.parametrize("fn", [pairwise_l1_distance, pairwise_complex_l1_distance])
def test_all_entity_kernel_scores_do_not_depend_on_the_batch(fn):
    # 37 candidates: two full 16-wide blocks and a partial one; 11 queries: two full 4-query blocks and a partial
    g = torch.Generator().manual_seed(0)
    x = torch.randn(37, 20, generator=g)
    q = torch.randn(11, 20, generator=g)
    full = fn(q, x, 3.0)
    for i in range(11):  # every query alone (a partial query block) gives its row of the batch, bit for bit
        assert torch.equal(fn(q[i:i + 1], x, 3.0)[0], full[i])
    assert torch.equal(fn(q.flip(0), x, 3.0).flip(0), full)  # positions in the batch do not matter
    assert torch.equal(fn(q, x[:16], 3.0), full[:, :16])  # nor the other candidates
    # the values: float64 reference
    diff = q.double()[:, None] - x.double()[None]
    if fn is pairwise_complex_l1_distance:
        re, im = diff.chunk(2, -1)
        ref = 3.0 - torch.hypot(re, im).sum(-1)
    else:
        ref = 3.0 - diff.abs().sum(-1)
    assert torch.allclose(full.double(), ref, atol=1e-5)


@pytest.mark.parametrize("compiled", [True, False])
def test_scores_written_into_output_rows(compiled, monkeypatch):
    if compiled and not scorer_kernel_available():
        pytest.skip("no C compiler")
    if not compiled:
        monkeypatch.setenv("MMKGC_NO_COMPILE", "1")
    g = torch.Generator().manual_seed(1)
    x, q = torch.randn(21, 8, generator=g), torch.randn(5, 8, generator=g)
    out = torch.full((9, 21), 7.0)
    rows = torch.tensor([8, 0, 3, 5, 1])
    got = pairwise_complex_l1_distance(q, x, 2.0, None, out, rows)
    assert got is out
    want = pairwise_complex_l1_distance(q, x, 2.0)
    assert torch.equal(out[rows], want)
    untouched = torch.ones(9, dtype=torch.bool)
    untouched[rows] = False
    assert (out[untouched] == 7.0).all()
    with pytest.raises(ValueError, match="both"):
        pairwise_complex_l1_distance(q, x, 2.0, None, out, None)
    if compiled:  # the kernel path checks what it writes into
        with pytest.raises(ValueError, match="out_rows must lie"):
            pairwise_l1_distance(q, x, 0.0, None, out, torch.tensor([0, 1, 2, 3, 9]))
        with pytest.raises(ValueError, match="contiguous"):
            pairwise_l1_distance(q, x, 0.0, None, out.t(), rows)


@needs_kernels
@pytest.mark.parametrize("m", [1, 2, 3])
def test_mixture_columns_equal_the_transposing_table_bit_for_bit(m):
    g = torch.Generator().manual_seed(m)
    x = torch.randn(53, m, 12, generator=g)
    beta = torch.softmax(torch.randn(53, m, generator=g), -1)
    want = mixture_table_transposed(x, beta)
    got = mixture_columns(x.permute(1, 2, 0).contiguous(), beta)
    assert torch.equal(got, want)
    ref = (x.double() * beta.double().unsqueeze(-1)).sum(1).t()
    assert torch.allclose(got.double(), ref, atol=1e-6)
    with pytest.raises(ValueError):
        mixture_columns(x.permute(1, 2, 0).contiguous(), beta[:10])


def test_relation_groups_equal_unique_and_nonzero():
    rels = torch.tensor([4, 1, 4, 0, 1, 1, 7, 4])
    groups = relation_groups(rels)
    assert [r for r, _ in groups] == torch.unique(rels).tolist()
    for r, idx in groups:
        assert torch.equal(idx, (rels == r).nonzero(as_tuple=True)[0])
    assert relation_groups(rels[:0]) == []


def side_by_side_scores(model, queries, tables):
    """The per-relation, per-side path of the fused evaluation before the stacked one: each relation's table from
    ``FusedRepresentation.relation_table`` and ``scorer.score_t`` / ``score_h`` for each side."""
    rep = tables.rep
    out = {"head": torch.empty(queries.shape[0], model.num_entities),
           "tail": torch.empty(queries.shape[0], model.num_entities)}
    for r in torch.unique(queries[:, 1]).tolist():
        idx = (queries[:, 1] == r).nonzero(as_tuple=True)[0]
        q = queries[idx]
        ents = rep.relation_table(tables.x, tables.present, r, base=tables.base)
        rv = model.relations(q[:, 1])
        out["tail"][idx] = model.scorer.score_t(ents[q[:, 0]], rv, ents)
        out["head"][idx] = model.scorer.score_h(ents, rv, ents[q[:, 2]])
    return out


@pytest.mark.parametrize("path", ["kernel", "pytorch"])
@pytest.mark.parametrize("variant", ["native", "afme_low_rank"])
def test_stacked_sides_equal_the_side_by_side_path_with_ties(variant, path, monkeypatch):
    if path == "kernel" and not scorer_kernel_available():
        pytest.skip("no C compiler")
    if path == "pytorch":
        monkeypatch.setenv("MMKGC_NO_COMPILE", "1")
    _, data, model = build(variant)
    rep = model.entities
    with torch.no_grad():  # entities 1 and 2 become copies of entity 0: exact ties in every relation's table
        for dup in (1, 2):
            rep.structure.embedding.weight[dup] = rep.structure.embedding.weight[0]
            for m in rep.inputs:
                m.values[dup] = m.values[0]
                m.present[dup] = m.present[0]
    model.eval()
    fn = model.score_fn()
    queries = data.triples.test
    # queries whose answer is one of the tied entities, in a relation shared with other queries
    extra = torch.tensor([[0, int(queries[0, 1]), 1], [2, int(queries[0, 1]), 0]])
    queries = torch.cat([queries, extra])
    with torch.no_grad():
        tables = model.scoring_context()[0]
        if path == "kernel" and variant == "native":
            assert tables.columns is not None  # the streaming tables are what is tested
        got = fn.score_sides(queries, ("head", "tail"))
        want = side_by_side_scores(model, queries, model.scoring_context()[0])
    for side in ("head", "tail"):
        assert torch.equal(got[side], want[side])
    tail = got["tail"][-2]
    assert tail[0] == tail[1] == tail[2]  # the ties are there

    def plain(q, side):
        with torch.no_grad():
            return side_by_side_scores(model, q, model.scoring_context()[0])[side]

    grouped = compute_ranks(fn, queries, batch_size=6, filter_index=data.triples.filter_index)
    reference = compute_ranks(plain, queries, batch_size=6, filter_index=data.triples.filter_index)
    for side in ("head", "tail"):
        assert torch.equal(grouped.sides[side].optimistic, reference.sides[side].optimistic)
        assert torch.equal(grouped.sides[side].pessimistic, reference.sides[side].pessimistic)
    assert (grouped.sides["tail"].pessimistic[-2:] > grouped.sides["tail"].optimistic[-2:]).any()


@needs_kernels
def test_complex_kernel_exact_cases_zero_and_infinite_differences():
    # a difference of exactly 0 or inf takes the kernel's exact branch (the rsqrt step would give NaN there)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(40, 16, generator=g)
    q = torch.randn(6, 16, generator=g)
    x[3] = q[1]  # every coordinate equal: distance exactly 0
    x[20, :8] = q[2, :8]  # half the coordinates equal
    x[33, 5] = float("inf")
    got = pairwise_complex_l1_distance(q, x, 4.0)
    assert got[1, 3] == 4.0
    assert torch.isneginf(got[:, 33]).all()
    re, im = (q.double()[:, None] - x.double()[None]).chunk(2, -1)
    ref = 4.0 - torch.hypot(re, im).sum(-1)
    finite = torch.isfinite(ref)
    assert torch.allclose(got.double()[finite], ref[finite], atol=1e-5)
    assert not torch.isnan(got).any()
