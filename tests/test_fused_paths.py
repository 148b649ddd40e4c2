"""The fast fused paths (mixtures of per-entity / per-pair components, the gathered mixture-distance kernel, the
per-relation evaluation tables, the row-weighted L2 term) against direct per-occurrence computations in float64."""

from __future__ import annotations

import copy

import pytest
import torch

from mmkgc.config import parse_config
from mmkgc.nn.scorers import gathered_mixture_l1_distance, scorer_kernel_available
from mmkgc.pipeline import build_model, load_data

BASE = {
    "dataset": {"synthetic": {"num_entities": 60, "num_relations": 5, "seed": 1, "missing_text": 0.3,
                              "missing_visual": 0.4}},
    "model": {"scorer": "rotate", "dim": 6, "representation": "fused", "scorer_options": {"margin": 6.0},
              "modalities": [{"name": "text"}, {"name": "visual"}], "fusion": {"kind": "attention"}},
    "training": {"epochs": 1, "batch_size": 16, "num_negatives": 3},
}
VARIANTS = {
    "adamf": ({"trainable_features": True}, {}),
    "native": ({"adapter": "mlp"}, {"relation_temperature": True}),
    "afme_full": ({"adapter": "mlp"}, {"relation_temperature": True, "confidence": "l2", "relation_gate": True}),
    "afme_low_rank": ({"adapter": "mlp"}, {"relation_temperature": True, "confidence": "l2", "relation_gate": True,
                                           "gate_rank": 3}),
}


def build(variant: str, scorer: str = "rotate", **training):
    model_opts, fusion = VARIANTS[variant]
    d = copy.deepcopy(BASE)
    d["model"].update(model_opts)
    d["model"]["fusion"].update(fusion)
    d["model"]["scorer"] = scorer
    if scorer != "rotate":
        d["model"]["scorer_options"] = {"margin": 6.0} if scorer == "transe" else {}
    d["training"].update(training)
    cfg = parse_config(d)
    data = load_data(cfg)
    torch.manual_seed(0)
    model = build_model(cfg, data)
    with torch.no_grad():  # move the gate / temperatures away from their near-identity start
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return cfg, data, model


def reference_entity(model, e: int, r: int) -> torch.Tensor:
    """The fused vector of entity ``e`` in a triple of relation ``r``, written out for one occurrence (methods.md
    §5.2, §6.2, §7): optional gate ``σ(W_g(x_m ⊙ c_r) + b) ⊙ x_m``, logits ``α_m wᵀtanh(x_m) / τ_r`` over the present
    modalities, ``Σ_m β_m x_m``."""
    rep = model.entities
    x, present = rep.components(torch.tensor([e]))
    x, present = x[0], present[0]
    if rep.gate is not None:
        x = torch.sigmoid(rep.gate.linear(x * rep.gate.context[r])) * x
    fusion = rep.fusion
    logits = torch.stack([torch.dot(fusion.w, torch.tanh(x[m])) for m in range(x.shape[0])])
    if fusion.confidence == "l2":
        logits = logits * torch.stack([torch.sqrt((x[m] ** 2).sum()) for m in range(x.shape[0])])
    if fusion.relation_temperature:
        logits = logits / torch.sigmoid(fusion.g[r])
    logits = torch.where(present, logits, torch.tensor(float("-inf"), dtype=logits.dtype))
    beta = torch.exp(logits - logits.max())
    beta = beta / beta.sum()
    return sum(beta[m] * x[m] for m in range(x.shape[0]))


def reference_scores(model, positives, negatives, tail_corrupted):
    """Scores of every positive and every corrupted triple, one triple at a time."""
    relation_aware = model.entities.relation_aware

    def score(h, r, t):
        rr = r if relation_aware else 0
        hv = reference_entity(model, h, rr) if relation_aware else model.entities(torch.tensor([h]))[0]
        tv = reference_entity(model, t, rr) if relation_aware else model.entities(torch.tensor([t]))[0]
        return model.scorer.score_hrt(hv, model.relations.weight[r], tv)

    pos, neg = [], []
    for b, (h, r, t) in enumerate(positives.tolist()):
        pos.append(score(h, r, t))
        row = []
        for k, e in enumerate(negatives[b].tolist()):
            row.append(score(h, r, e) if tail_corrupted[b, k] else score(e, r, t))
        neg.append(torch.stack(row))
    return torch.stack(pos), torch.stack(neg)


def batch(data, b: int = 10, k: int = 4, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    positives = data.triples.train[torch.randperm(data.triples.train.shape[0], generator=g)[:b]]
    negatives = torch.randint(0, data.triples.num_entities, (b, k), generator=g)
    negatives[0, 0] = positives[0, 2]  # a repeated entity among the negatives and positives
    tail = torch.rand(b, k, generator=g) < 0.5
    return positives, negatives, tail


def grads(model, pos, neg, wp, wn):
    model.zero_grad(set_to_none=True)
    ((pos * wp).sum() + (neg * wn).sum()).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("path", ["kernel", "pytorch"])
def test_training_scores_and_gradients_equal_per_occurrence_reference(variant, path, monkeypatch):
    if path == "kernel" and not scorer_kernel_available():
        pytest.skip("no C compiler")
    if path == "pytorch":
        monkeypatch.setenv("MMKGC_NO_COMPILE", "1")
    _, data, model = build(variant)
    positives, negatives, tail = batch(data)
    g = torch.Generator().manual_seed(5)
    wp, wn = torch.randn(positives.shape[0], generator=g), torch.randn(*negatives.shape, generator=g)

    ref_model = copy.deepcopy(model).double()
    ref_pos, ref_neg = reference_scores(ref_model, positives, negatives, tail)
    ref_grads = grads(ref_model, ref_pos, ref_neg, wp.double(), wn.double())

    pos, neg = model.score_positives_and_negatives(positives, negatives, tail)
    assert torch.allclose(pos.double(), ref_pos, atol=2e-5, rtol=1e-5)
    assert torch.allclose(neg.double(), ref_neg, atol=2e-5, rtol=1e-5)
    got = grads(model, pos, neg, wp, wn)
    assert set(got) == set(ref_grads)
    if variant == "adamf":
        assert any("values" in n for n in got)  # the fine-tuned feature tables receive gradients
    for name, grad in got.items():
        assert torch.allclose(grad.double(), ref_grads[name], atol=2e-5, rtol=1e-4), name

    # float64 (PyTorch path) agrees with the reference to rounding
    pos64, neg64 = ref_model.score_positives_and_negatives(positives, negatives, tail)
    assert torch.allclose(pos64, ref_pos, atol=1e-10) and torch.allclose(neg64, ref_neg, atol=1e-10)
    got64 = grads(ref_model, pos64, neg64, wp.double(), wn.double())
    for name, grad in got64.items():
        assert torch.allclose(grad, ref_grads[name], atol=1e-10), name


@pytest.mark.parametrize("scorer", ["transe", "distmult"])
def test_other_scorers_on_the_mixture_path(scorer):
    _, data, model = build("afme_low_rank", scorer=scorer)
    positives, negatives, tail = batch(data)
    ref = copy.deepcopy(model).double()
    ref_pos, ref_neg = reference_scores(ref, positives, negatives, tail)
    pos, neg = model.score_positives_and_negatives(positives, negatives, tail)
    assert torch.allclose(pos.double(), ref_pos, atol=2e-5) and torch.allclose(neg.double(), ref_neg, atol=2e-5)


@pytest.mark.parametrize("complex_layout", [True, False])
def test_gathered_mixture_kernel_matches_pytorch(complex_layout, monkeypatch):
    if not scorer_kernel_available():
        pytest.skip("no C compiler")
    g = torch.Generator().manual_seed(0)
    q = torch.randn(7, 10, generator=g, requires_grad=True)
    x = torch.randn(5, 3, 10, generator=g, requires_grad=True)
    beta = torch.rand(40, 3, generator=g, requires_grad=True)
    qi, ei = torch.randint(0, 7, (40,), generator=g), torch.randint(0, 5, (40,), generator=g)
    x.data[0, :, :5] = 0.0
    q.data[0, :5] = 0.0  # exact zero differences: zero subgradient on both paths
    w = torch.randn(40, generator=g)
    out = gathered_mixture_l1_distance(q, qi, x, beta, ei, complex_layout)
    grads_kernel = torch.autograd.grad((out * w).sum(), [q, x, beta])
    monkeypatch.setenv("MMKGC_NO_COMPILE", "1")
    ref = gathered_mixture_l1_distance(q, qi, x, beta, ei, complex_layout)
    grads_ref = torch.autograd.grad((ref * w).sum(), [q, x, beta])
    assert torch.allclose(out, ref, atol=1e-5)
    for a, b in zip(grads_kernel, grads_ref):
        assert torch.allclose(a, b, atol=1e-5)
    # value by hand for one row
    e = sum(beta[3, m] * x[ei[3], m] for m in range(3))
    d = q[qi[3]] - e
    want = torch.hypot(d[:5], d[5:]).sum() if complex_layout else d.abs().sum()
    assert torch.allclose(out[3], want, atol=1e-5)
    with pytest.raises(ValueError):
        gathered_mixture_l1_distance(q, qi, x, beta[:, :2], ei, complex_layout)


@pytest.mark.parametrize("path", ["kernel", "pytorch"])
@pytest.mark.parametrize("variant", ["native", "afme_full", "afme_low_rank"])
def test_evaluation_tables_and_both_sides_equal_per_occurrence_reference(variant, path, monkeypatch):
    from mmkgc.evaluation.ranking import compute_ranks

    if path == "kernel" and not scorer_kernel_available():
        pytest.skip("no C compiler")
    if path == "pytorch":
        monkeypatch.setenv("MMKGC_NO_COMPILE", "1")
    _, data, model = build(variant)
    model.eval()
    fn = model.score_fn()
    with torch.no_grad():
        table = model.scoring_context()[0].table(int(data.triples.test[0, 1]))
    # the kernel path writes the table in the all-entity kernels' transposed layout (a [N, D] view of [D, N])
    assert table.t().is_contiguous() == (path == "kernel")
    queries = data.triples.test[:12]
    both = fn.score_sides(queries, ("head", "tail"))
    ref = copy.deepcopy(model).double()
    with torch.no_grad():
        for i, (h, r, t) in enumerate(queries.tolist()):
            table = torch.stack([reference_entity(ref, e, r) for e in range(data.triples.num_entities)])
            rv = ref.relations.weight[r]
            tail = ref.scorer.score_hrt(table[h].expand_as(table), rv.expand(table.shape[0], -1), table)
            head = ref.scorer.score_hrt(table, rv.expand(table.shape[0], -1), table[t].expand_as(table))
            assert torch.allclose(both["tail"][i].double(), tail, atol=2e-5)
            assert torch.allclose(both["head"][i].double(), head, atol=2e-5)
            assert torch.allclose(fn(queries[i:i + 1], "tail")[0].double(), tail, atol=2e-5)
    # the evaluator asks for both sides of a chunk at once; ranks equal those of side-by-side scoring
    calls = []

    def one_side(q, side):
        calls.append(side)
        return fn(q, side)

    grouped = compute_ranks(fn, queries, batch_size=5, filter_index=data.triples.filter_index)
    plain = compute_ranks(one_side, queries, batch_size=5, filter_index=data.triples.filter_index)
    assert calls  # the plain function was used side by side
    for side in ("head", "tail"):
        assert torch.equal(grouped.sides[side].optimistic, plain.sides[side].optimistic)
        assert torch.equal(grouped.sides[side].pessimistic, plain.sides[side].pessimistic)


def test_each_relation_table_is_built_once_per_evaluation(monkeypatch):
    from mmkgc.evaluation.metrics import evaluate
    from mmkgc.models.fused import FusedRepresentation

    _, data, model = build("afme_low_rank")
    model.eval()
    built = []
    original = FusedRepresentation.relation_table

    def counting(self, x, present, relation, base=None):
        built.append(int(relation))
        return original(self, x, present, relation, base)

    monkeypatch.setattr(FusedRepresentation, "relation_table", counting)
    evaluate(model.score_fn(), data.triples, split="test", batch_size=7)
    relations = sorted(set(data.triples.test[:, 1].tolist()))
    assert sorted(built) == relations


def reference_l2(model, positives, negatives, tail):
    """OpenKE's ``(mean h² + mean t² + mean r²) / 3`` over the explicit rows (positive, then its K corruptions)."""
    heads, tails, rels = [], [], []
    for b, (h, r, t) in enumerate(positives.tolist()):
        heads.append(h), tails.append(t), rels.append(r)
        for k, e in enumerate(negatives[b].tolist()):
            heads.append(h if tail[b, k] else e)
            tails.append(e if tail[b, k] else t)
            rels.append(r)
    table = model.entities.structure.embedding.weight if hasattr(model.entities, "structure") \
        else model.entities.embedding.weight
    h, t = table[torch.tensor(heads)], table[torch.tensor(tails)]
    r = model.relations.weight[torch.tensor(rels)]
    return ((h ** 2).mean() + (t ** 2).mean() + (r ** 2).mean()) / 3


@pytest.mark.parametrize("variant", ["native", "afme_low_rank"])
def test_l2_regularizer_is_openke_over_all_rows_of_structural_embeddings(variant):
    cfg, data, model = build(variant, regularizer="l2", regularizer_weight=0.5)
    positives, negatives, tail = batch(data)
    got = model.l2_regularization(positives, negatives, tail)
    assert torch.allclose(got, reference_l2(model, positives, negatives, tail), rtol=1e-5)
    # its gradient reaches the structural table only where the batch's rows are
    model.zero_grad(set_to_none=True)
    got.backward()
    touched = model.entities.structure.embedding.weight.grad.abs().sum(1) > 0
    ids = set(positives[:, 0].tolist()) | set(positives[:, 2].tolist()) | set(negatives.reshape(-1).tolist())
    assert set(touched.nonzero().reshape(-1).tolist()) == ids

    # the trainer adds weight * the term to the main loss
    from mmkgc.training.trainer import Trainer

    trainer = Trainer(model, data.triples, cfg.training, cfg.evaluation, seed=0)
    with torch.no_grad():
        total = trainer._negative_sampling_step(positives, negatives, tail)
        main, _ = model.negative_sampling_loss(positives, negatives, tail, trainer.loss)
        assert torch.allclose(total, main + 0.5 * reference_l2(model, positives, negatives, tail), rtol=1e-5)


@pytest.mark.parametrize("path", ["kernel", "pytorch"])
@pytest.mark.parametrize("variant", ["afme_full", "afme_low_rank"])
def test_gate_backward_in_chunks_equals_one_chunk(variant, path, monkeypatch):
    from mmkgc.nn.fusion import _GatedPairs, _GatedPairsKernel

    if path == "kernel" and not scorer_kernel_available():
        pytest.skip("no C compiler")
    if path == "pytorch":
        monkeypatch.setenv("MMKGC_NO_COMPILE", "1")
    _, data, model = build(variant)
    positives, negatives, tail = batch(data, b=12, k=6)
    results = []
    for chunk in (1 << 20, 5):
        monkeypatch.setattr(_GatedPairs, "CHUNK", chunk)
        monkeypatch.setattr(_GatedPairsKernel, "CHUNK", chunk)
        pos, neg = model.score_positives_and_negatives(positives, negatives, tail)
        results.append(grads(model, pos, neg, torch.ones(12), torch.linspace(-1, 1, 72).reshape(12, 6)))
    for name, grad in results[0].items():
        assert torch.allclose(results[1][name], grad, atol=1e-6), name


def reference_gated_pairs(gate, fusion, x, ent, rel):
    """``x̃`` and the logits ``α_m wᵀtanh(x̃_m)`` of each pair, written out one pair and one modality at a time:
    ``x̃ = σ(W_g (x ⊙ c_r) + b) ⊙ x`` with ``W_g`` the full matrix or the product of the two factors."""
    lin = gate.linear
    out, logits = [], []
    for e, r in zip(ent.tolist(), rel.tolist()):
        rows, lg = [], []
        for m in range(x.shape[1]):
            a = x[e, m] * gate.context[r]
            z = lin.weight @ a + lin.bias if isinstance(lin, torch.nn.Linear) else lin[1].weight @ (lin[0].weight @ a) \
                + lin[1].bias
            xt = torch.sigmoid(z) * x[e, m]
            value = torch.dot(fusion.w, torch.tanh(xt))
            if fusion.confidence == "l2":
                value = value * torch.linalg.vector_norm(xt)  # zero subgradient at x̃ = 0
            rows.append(xt)
            lg.append(value)
        out.append(torch.stack(rows))
        logits.append(torch.stack(lg))
    return torch.stack(out), torch.stack(logits)


@pytest.mark.parametrize("rank", [None, 3])
@pytest.mark.parametrize("confidence", ["l2", "none"])
@pytest.mark.parametrize("path", ["kernel", "pytorch"])
def test_gated_pairs_equal_float64_per_pair_reference(rank, confidence, path, monkeypatch):
    """The gate node of AFME's training path (compiled kernels in chunks, or the PyTorch node) against the float64
    loop: values, and gradients to the components, the context, the gate matrices and bias, and w."""
    from mmkgc.nn.fusion import RelationGate, TanhAttentionFusion, _GatedPairsKernel, gated_pair_logits

    if path == "kernel" and not scorer_kernel_available():
        pytest.skip("no C compiler")
    if path == "pytorch":
        monkeypatch.setenv("MMKGC_NO_COMPILE", "1")
    monkeypatch.setattr(_GatedPairsKernel, "CHUNK", 4)  # several chunks, the last one partial
    torch.manual_seed(0)
    gate = RelationGate(7, 4, bias_init=0.5, rank=rank)
    fusion = TanhAttentionFusion(7, 3, relation_temperature=True, num_relations=4, confidence=confidence)
    with torch.no_grad():
        for p in [*gate.parameters(), *fusion.parameters()]:
            p.add_(0.5 * torch.randn_like(p))
    x = torch.randn(5, 3, 7)
    x[1, 2] = 0.0  # a zero component: ‖x̃‖ = 0, the zero subgradient of the L2 confidence
    x[3, 0, :3] = 40.0  # saturated gate and tanh
    x.requires_grad_(True)
    ent = torch.tensor([0, 1, 1, 2, 3, 4, 0, 1, 3, 2, 4])
    rel = torch.tensor([0, 0, 1, 2, 3, 1, 3, 2, 2, 0, 1])
    g = torch.Generator().manual_seed(1)
    w_xt, w_lg = torch.randn(11, 3, 7, generator=g), torch.randn(11, 3, generator=g)

    xt, lg = gated_pair_logits(gate, fusion, x, ent, rel)
    kind = type(xt.grad_fn).__name__
    assert kind == ("_GatedPairsKernelBackward" if path == "kernel" else "_GatedPairsBackward")
    params = [x, *gate.parameters(), fusion.w]
    got = torch.autograd.grad((xt * w_xt).sum() + (lg * w_lg).sum(), params)

    gate64, fusion64 = copy.deepcopy(gate).double(), copy.deepcopy(fusion).double()
    x64 = x.detach().double().requires_grad_(True)
    ref_xt, ref_lg = reference_gated_pairs(gate64, fusion64, x64, ent, rel)
    ref = torch.autograd.grad((ref_xt * w_xt.double()).sum() + (ref_lg * w_lg.double()).sum(),
                              [x64, *gate64.parameters(), fusion64.w])
    assert torch.allclose(xt.double(), ref_xt, atol=1e-5, rtol=1e-5)
    assert torch.allclose(lg.double(), ref_lg, atol=1e-5, rtol=1e-5)
    for a, b in zip(got, ref):
        assert torch.allclose(a.double(), b, atol=1e-4, rtol=1e-4)
    # only the first output used (the other gradient arrives as None)
    (gx,) = torch.autograd.grad((gated_pair_logits(gate, fusion, x, ent, rel)[0] * w_xt).sum(), [x])
    (rx,) = torch.autograd.grad((reference_gated_pairs(gate64, fusion64, x64, ent, rel)[0] * w_xt.double()).sum(),
                                [x64])
    assert torch.allclose(gx.double(), rx, atol=1e-4, rtol=1e-4)


def test_mixture_table_transposed_matches_pytorch(monkeypatch):
    from mmkgc.nn.scorers import mixture_table_transposed

    g = torch.Generator().manual_seed(0)
    x, beta = torch.randn(131, 3, 9, generator=g), torch.rand(131, 3, generator=g)
    want = torch.stack([sum(beta[n, m].double() * x[n, m].double() for m in range(3)) for n in range(131)]).t()
    got = mixture_table_transposed(x, beta)
    assert got.shape == (9, 131) and got.is_contiguous()
    assert torch.allclose(got.double(), want, atol=1e-6)
    monkeypatch.setenv("MMKGC_NO_COMPILE", "1")
    assert torch.allclose(mixture_table_transposed(x, beta).double(), want, atol=1e-6)
    with pytest.raises(ValueError):
        mixture_table_transposed(x, beta[:, :2])


@pytest.mark.parametrize("length", [2, 3])
def test_self_attention_equals_multihead_attention_module(length):
    """The modality attentions' self-attention (nn/fusion.py) against torch's own MultiheadAttention forward, with
    padded keys: outputs, head-averaged weights and gradients to the input and every parameter."""
    from torch import nn

    from mmkgc.nn.fusion import self_attention

    torch.manual_seed(0)
    attn = nn.MultiheadAttention(20, 4, batch_first=True)
    with torch.no_grad():
        attn.in_proj_bias.normal_()
        attn.out_proj.bias.normal_()
    h = torch.randn(7, length, 20, requires_grad=True)
    mask = torch.zeros(7, length, dtype=torch.bool)
    mask[2, 1] = mask[4, 0] = True
    want, want_w = attn(h, h, h, key_padding_mask=mask, need_weights=True, average_attn_weights=True)
    got, got_w = self_attention(attn, h, mask)
    assert torch.allclose(got, want, atol=1e-6) and torch.allclose(got_w, want_w, atol=1e-6)
    assert torch.all(got_w[2, :, 1] == 0) and torch.all(got_w[4, :, 0] == 0)  # padded keys get no attention
    g = torch.randn_like(want)
    params = [h, *attn.parameters()]
    ref = torch.autograd.grad((want * g).sum() + (want_w ** 2).sum(), params)
    mine = torch.autograd.grad((got * g).sum() + (got_w ** 2).sum(), params)
    for a, b in zip(mine, ref):
        assert torch.allclose(a, b, atol=1e-5)
    # attention dropout while training: the module itself
    drop = nn.MultiheadAttention(20, 4, dropout=0.5, batch_first=True).train()
    torch.manual_seed(1)
    a1 = self_attention(drop, h, mask)[0]
    torch.manual_seed(1)
    a2 = drop(h, h, h, key_padding_mask=mask, need_weights=True, average_attn_weights=True)[0]
    assert torch.equal(a1, a2)


@pytest.mark.parametrize("kind", ["wgan_gp", "moien"])
def test_main_step_fake_term_reuses_the_scoring_components(kind):
    """NativE / AFME main step: the fake term takes the positives' real components from the scoring path instead of
    computing them again; loss and every gradient equal those of the recomputation (same random draws)."""
    from test_adversarial import ADVERSARIAL, _batch, adversarial_raw

    from mmkgc.models.adversarial import AdversarialFusedModel
    from mmkgc.training.losses import SelfAdversarialSigmoidLoss

    assert kind in ADVERSARIAL
    raw = adversarial_raw(kind)
    raw["training"]["adversarial"]["gp_target"] = "modality"  # a penalty that depends on the components
    cfg = parse_config(raw)
    data = load_data(cfg)
    torch.manual_seed(0)
    model = build_model(cfg, data)
    batch = _batch(data)
    seen = []
    original = AdversarialFusedModel.positive_and_fake_scores

    def recording(self, positives, generated, critic_grad=True, components=None):
        seen.append(components is not None)
        return original(self, positives, generated, critic_grad, None if self.recompute else components)

    results = []
    for recompute in (False, True):
        model.recompute = recompute
        model.positive_and_fake_scores = recording.__get__(model)
        torch.manual_seed(7)
        model.zero_grad(set_to_none=True)
        loss, terms = model.negative_sampling_loss(*batch, SelfAdversarialSigmoidLoss(1.0))
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    assert seen == [True, True]  # the scoring path's components were offered both times
    assert model.batch_components is None  # and not kept beyond the step
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert torch.allclose(loss_a, loss_b, rtol=1e-6)
    assert grads_a.keys() == grads_b.keys()
    for name, grad in grads_a.items():
        assert torch.allclose(grad, grads_b[name], atol=1e-6, rtol=1e-5), name


@pytest.mark.parametrize("rank", [None, 3])
@pytest.mark.parametrize("path", ["kernel", "pytorch"])
def test_gated_pair_mixtures_equal_float64_per_pair_reference(rank, path, monkeypatch):
    """AFME's fused pair vectors (gate, temperature softmax over the present modalities, mixture) against the float64
    loop: values and gradients to the components, the gate, w and the relation temperatures."""
    from mmkgc.nn.fusion import RelationGate, TanhAttentionFusion, _GatedPairsKernel, gated_pair_mixtures

    if path == "kernel" and not scorer_kernel_available():
        pytest.skip("no C compiler")
    if path == "pytorch":
        monkeypatch.setenv("MMKGC_NO_COMPILE", "1")
    monkeypatch.setattr(_GatedPairsKernel, "CHUNK", 4)
    torch.manual_seed(0)
    gate = RelationGate(7, 4, bias_init=0.5, rank=rank)
    fusion = TanhAttentionFusion(7, 3, relation_temperature=True, num_relations=4, confidence="l2")
    with torch.no_grad():
        for p in [*gate.parameters(), *fusion.parameters()]:
            p.add_(0.5 * torch.randn_like(p))
    x = torch.randn(5, 3, 7)
    x[1, 2] = 0.0
    x.requires_grad_(True)
    ent = torch.tensor([0, 1, 1, 2, 3, 4, 0, 1, 3, 2, 4])
    rel = torch.tensor([0, 0, 1, 2, 3, 1, 3, 2, 2, 0, 1])
    present = torch.ones(11, 3, dtype=torch.bool)
    present[2, 1] = present[7, 2] = False
    w_e = torch.randn(11, 7, generator=torch.Generator().manual_seed(1))

    e, beta = gated_pair_mixtures(gate, fusion, x, ent, rel, present)
    params = [x, *gate.parameters(), fusion.w, fusion.g]
    got = torch.autograd.grad((e * w_e).sum(), params)

    gate64, fusion64 = copy.deepcopy(gate).double(), copy.deepcopy(fusion).double()
    x64 = x.detach().double().requires_grad_(True)
    xt, lg = reference_gated_pairs(gate64, fusion64, x64, ent, rel)
    lg = lg / torch.sigmoid(fusion64.g[rel]).unsqueeze(-1)
    lg = torch.where(present, lg, torch.tensor(float("-inf"), dtype=lg.dtype))
    ref_beta = torch.softmax(lg, -1)
    ref_e = (ref_beta.unsqueeze(-1) * xt).sum(1)
    ref = torch.autograd.grad((ref_e * w_e.double()).sum(), [x64, *gate64.parameters(), fusion64.w, fusion64.g])
    assert torch.allclose(e.double(), ref_e, atol=1e-5) and torch.allclose(beta.double(), ref_beta, atol=1e-6)
    assert torch.all(beta[2, 1] == 0) and torch.all(beta[7, 2] == 0)
    for a, b in zip(got, ref):
        assert torch.allclose(a.double(), b, atol=1e-4, rtol=1e-4)
