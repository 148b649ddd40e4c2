"""IMVIA (methods.md section 4): MoE adapter, TuckER 1-N decoder, CLUB estimator, decision fusion, imvia_256
pooling, presets, and a short synthetic run that trains, resumes and writes per-decoder metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mmkgc.config import ImviaConfig, load_config, parse_config
from mmkgc.errors import ConfigError
from mmkgc.features.pooling import imvia_pool_256
from mmkgc.models.imvia import IMVIAModel
from mmkgc.features.store import FeatureTable
from mmkgc.nn.adapters import MoEAdapter
from mmkgc.nn.fusion import DecisionFusion
from mmkgc.nn.mutual_information import CLUBEstimator
from mmkgc.nn.scorers import TuckER

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------ MoE adapter
def test_moe_shapes_and_expert_formula():
    torch.manual_seed(0)
    moe = MoEAdapter(6, 5, num_experts=3, num_relations=4).eval()
    with torch.no_grad():
        moe.expert_bias.normal_()
    x = torch.randn(7, 6)
    mixed, views, gates = moe(x)
    assert mixed.shape == (7, 5) and views.shape == (7, 3, 5) and gates.shape == (7, 3)
    for k in range(3):
        torch.testing.assert_close(views[:, k], (x - moe.expert_bias[k]) @ moe.expert_weight[k])
    torch.testing.assert_close(mixed, (gates.unsqueeze(-1) * views).sum(1))
    with pytest.raises(ValueError, match="expected x"):
        moe(torch.randn(7, 4))


def test_moe_identity_init_is_the_published_draw_plus_the_identity_and_starts_each_view_at_its_input():
    torch.manual_seed(3)
    published = MoEAdapter(6, 6, num_experts=3)
    torch.manual_seed(3)
    identity = MoEAdapter(6, 6, num_experts=3, expert_init="identity").eval()
    # the same random draw (so ``normal`` is unchanged), shifted by I in every expert
    torch.testing.assert_close(identity.expert_weight, published.expert_weight + torch.eye(6))
    x = torch.randn(5, 6)
    mixed, views, gates = identity(x)
    for k in range(3):  # v_k = x (I + N_k) with b_k = 0
        torch.testing.assert_close(views[:, k], x + x @ published.expert_weight[k])
    torch.testing.assert_close(mixed, x + x @ published.expert_weight.mean(0))  # uniform gates at the start
    assert (views - x.unsqueeze(1)).abs().max() < 0.25 * x.abs().max()
    with pytest.raises(ValueError, match="in_dim == out_dim"):
        MoEAdapter(6, 5, expert_init="identity")
    with pytest.raises(ValueError, match="expert_init"):
        MoEAdapter(6, 6, expert_init="eye")


def test_imvia_expert_init_reaches_every_branch_adapter():
    for init, offset in (("normal", 0.0), ("identity", 1.0)):
        model = _model(expert_init=init)
        for adapter in model.adapters:
            w = adapter.expert_weight.detach()
            torch.testing.assert_close(torch.diagonal(w, dim1=1, dim2=2).mean(), torch.tensor(offset), atol=0.03,
                                       rtol=0)
            assert (w - offset * torch.eye(8)).std() < 0.03


def test_moe_zero_initialised_gates_are_uniform_and_noise_only_in_training():
    torch.manual_seed(0)
    moe = MoEAdapter(6, 5, num_experts=3, num_relations=4)
    x = torch.randn(9, 6)
    r = torch.randint(4, (9,))
    moe.eval()
    torch.testing.assert_close(moe.gates(x), torch.full((9, 3), 1 / 3))
    torch.testing.assert_close(moe.gates(x, r), torch.full((9, 3), 1 / 3))  # zero logits: any temperature
    moe.train()
    noisy = moe.gates(x)
    assert not torch.allclose(noisy, torch.full((9, 3), 1 / 3))  # noise std softplus(0) + 0.01 in training
    quiet = MoEAdapter(6, 5, num_experts=3, noisy_gating=False).train()
    torch.testing.assert_close(quiet.gates(x), torch.full((9, 3), 1 / 3))
    moe.eval()
    torch.testing.assert_close(moe(x)[0], moe(x)[0])  # deterministic in eval mode


def test_moe_relation_temperature_only_for_queries():
    torch.manual_seed(0)
    moe = MoEAdapter(6, 5, num_experts=3, num_relations=4).eval()
    with torch.no_grad():
        moe.gate.normal_()
    x = torch.randn(5, 6)
    r = torch.tensor([0, 1, 2, 3, 1])
    logits = x @ moe.gate
    torch.testing.assert_close(moe.gates(x), torch.softmax(logits, -1))
    temp = torch.sigmoid(moe.relation_gate.weight[r])
    torch.testing.assert_close(moe.gates(x, r), torch.softmax(logits / temp, -1))
    assert not torch.allclose(moe.gates(x, r), moe.gates(x))
    with pytest.raises(ValueError, match="num_relations=0"):
        MoEAdapter(6, 5, 3, num_relations=0).gates(x, r)


def test_moe_shared_relation_gate_values():
    torch.manual_seed(0)
    moe = MoEAdapter(6, 5, num_experts=3).eval()
    with torch.no_grad():
        moe.gate.normal_()
    x = torch.randn(4, 6)
    g = torch.tensor([-1.0, 0.0, 0.5, 2.0])
    expected = torch.softmax((x @ moe.gate) / torch.sigmoid(g).unsqueeze(1), -1)
    torch.testing.assert_close(moe.gates(x, relation_gate=g), expected)
    torch.testing.assert_close(moe(x, relation_gate=g.unsqueeze(1))[2], expected)
    with pytest.raises(ValueError, match="not both"):
        MoEAdapter(6, 5, 3, num_relations=4).gates(x, torch.zeros(4, dtype=torch.long), g)


# ------------------------------------------------------------------------------------------------ TuckER
def _tucker(dim=6, rdim=4, seed=0):
    torch.manual_seed(seed)
    sc = TuckER(dim, rdim)
    with torch.no_grad():  # non-trivial eval-mode batch norms
        for bn in (sc.bn0, sc.bn1):
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.normal_()
            bn.bias.normal_()
    return sc.eval()


def test_tucker_one_to_n_equals_pointwise_and_formula():
    sc = _tucker()
    h, r, ent = torch.randn(5, 6), torch.randn(5, 4), torch.randn(11, 6)
    all_t = sc.score_t(h, r, ent)
    point = sc.score_hrt(h[:, None], r[:, None], ent[None])
    torch.testing.assert_close(all_t, point, rtol=1e-5, atol=1e-5)
    # the formula of methods.md 4.2 written out (eval mode: dropouts are the identity)
    w = (r @ sc.core.reshape(4, -1)).reshape(5, 6, 6)
    q = sc.bn1(torch.bmm(sc.bn0(h).unsqueeze(1), w).squeeze(1))
    torch.testing.assert_close(all_t, q @ ent.T, rtol=1e-5, atol=1e-5)
    # native head mode (eval-mode factorisation of the batch norms) equals pointwise scoring
    all_h = sc.score_h(ent, r, h)
    torch.testing.assert_close(all_h, sc.score_hrt(ent[None], r[:, None], h[:, None]), rtol=1e-4, atol=1e-4)
    sc.train()
    with pytest.raises(ValueError, match="eval mode"):
        sc.score_h(ent, r, h)
    assert sc.score_t(h, r, ent).shape == (5, 11)


def test_tucker_needs_one_to_n_in_config():
    base = {"dataset": {"synthetic": {}}, "model": {"scorer": "tucker", "dim": 8, "reciprocal": True}}
    with pytest.raises(ConfigError, match="tucker"):
        parse_config(base)
    cfg = parse_config({**base, "training": {"loop": "one_to_n", "loss": "bce"}})
    assert cfg.model.scorer == "tucker"


# ------------------------------------------------------------------------------------------------ CLUB
def test_club_indexing_correct_vs_legacy():
    views = torch.randn(8, 3, 4)
    g = torch.Generator().manual_seed(5)
    a, b = torch.randperm(3, generator=g)[:2].tolist()
    x, y = CLUBEstimator(4).pair(views, torch.Generator().manual_seed(5))
    assert x.shape == (8, 4)
    torch.testing.assert_close(x, views[:, a])
    torch.testing.assert_close(y, views[:, b])
    lx, ly = CLUBEstimator(4, legacy_indexing=True).pair(views, torch.Generator().manual_seed(5))
    assert lx.shape == (3, 4)  # the 3 expert outputs of batch elements a and b
    torch.testing.assert_close(lx, views[a])
    torch.testing.assert_close(ly, views[b])
    with pytest.raises(ValueError, match="n >= 2"):
        CLUBEstimator(4).pair(torch.randn(8, 1, 4))


def test_club_bound_and_logvar_term():
    torch.manual_seed(0)
    est = CLUBEstimator(4)
    x, y = torch.randn(10, 4), torch.randn(10, 4)
    mu, logvar = est.mu(x), est.logvar(x)
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(3))
    expected = 0.5 * (-((mu - y) ** 2 / logvar.exp()).sum(-1) + ((mu - y[perm]) ** 2 / logvar.exp()).sum(-1)).mean()
    torch.testing.assert_close(est.upper_bound(x, y, torch.Generator().manual_seed(3)), expected)
    with_logvar = est.learning_loss(x, y)
    est.include_logvar = False
    without = est.learning_loss(x, y)
    torch.testing.assert_close(with_logvar - without, (logvar / 2).sum(-1).mean())
    torch.testing.assert_close(without, ((mu - y) ** 2 / (2 * logvar.exp())).sum(-1).mean())


# ------------------------------------------------------------------------------------------------ fusion
def test_decision_fusion_mean_learned_relation():
    p = torch.rand(4, 3, 7)
    fused, w = DecisionFusion(3, "mean")(p)
    torch.testing.assert_close(fused, (p[:, 0] + p[:, 1] + p[:, 2]) / 3)
    learned = DecisionFusion(3, "learned")
    torch.testing.assert_close(learned(p)[0], fused)  # zero init = mean
    with torch.no_grad():
        learned.logits.copy_(torch.tensor([1.0, 0.0, -1.0]))
    ws = torch.softmax(torch.tensor([1.0, 0.0, -1.0]), 0)
    torch.testing.assert_close(learned(p)[0], (ws[None, :, None] * p).sum(1))
    rel = DecisionFusion(3, "relation", num_relations=2)
    with torch.no_grad():
        rel.relation_logits.weight[1] = torch.tensor([5.0, 0.0, 0.0])
    out, wr = rel(p, torch.tensor([0, 1, 0, 1]))
    torch.testing.assert_close(out[0], fused[0])
    assert wr[1, 0] > 0.9 and torch.allclose(wr.sum(1), torch.ones(4))
    with pytest.raises(ValueError, match="relations"):
        rel(p)


# ------------------------------------------------------------------------------------------------ pooling
def test_imvia_pooling_rules():
    x = torch.randn(2, 4096)
    pooled = imvia_pool_256(x)
    torch.testing.assert_close(pooled[:, 0], x.view(2, 64, 64)[:, :4, :4].mean((1, 2)))
    t = torch.randn(2, 768)
    torch.testing.assert_close(imvia_pool_256(t)[:, :64], t.view(2, 12, 64)[:, :3].mean(1))
    assert imvia_pool_256(torch.randn(3, 384)).shape == (3, 256)
    with pytest.raises(ConfigError, match="no published rule"):
        imvia_pool_256(torch.randn(2, 100), "audio")


# ------------------------------------------------------------------------------------------------ model
def _model(**options):
    torch.manual_seed(0)
    n, r = 20, 3
    feats = [FeatureTable(torch.randn(n, 12), "text", torch.rand(n) > 0.2)]
    opts = ImviaConfig(relation_dim=4, **options)
    return IMVIAModel(n, r, 8, feats, opts)


@pytest.mark.parametrize("branch_loss", ["softmax_ce", "bce"])
def test_imvia_log_probability_decision_space_is_the_mean_of_log_probabilities(branch_loss):
    model = _model(branch_loss=branch_loss, decision_space="log_probability").eval()
    published = _model(branch_loss=branch_loss).eval()  # same seed: same weights
    q = torch.tensor([[0, 1, 5], [3, 2, 7], [4, 0, 4]])
    for side in ("tail", "head"):
        logits = [model.branch_score_fn(i, probabilities=False)(q, side).double() for i in range(2)]
        if branch_loss == "softmax_ce":
            probs = [torch.softmax(x, -1) for x in logits]
        else:
            probs = [torch.sigmoid(x) for x in logits]
        expected = (probs[0].log() + probs[1].log()) / 2  # log of the geometric mean, computed independently
        torch.testing.assert_close(model.score_fn()(q, side).double(), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(published.score_fn()(q, side).double(), (probs[0] + probs[1]) / 2,
                                   atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="decision_space"):
        ImviaConfig(decision_fusion="learned", decision_space="log_probability")


def test_imvia_head_side_is_the_reciprocal_tail_query_and_fusion_is_mean_of_probabilities():
    model = _model().eval()
    fn = model.score_fn()
    q = torch.tensor([[0, 1, 5], [3, 2, 7]])
    head = fn(q, "head")
    inverse = torch.stack([q[:, 2], q[:, 1] + 3, q[:, 0]], 1)
    torch.testing.assert_close(head, fn(inverse, "tail"))
    per = [model.branch_score_fn(i)(q, "tail") for i in range(model.num_branches)]
    torch.testing.assert_close(fn(q, "tail"), sum(per) / len(per))
    assert model.branch_names == ["structure", "text"]


def test_imvia_loss_terms_and_estimator_step_own_group():
    model = _model(decision_fusion="learned").train()
    q = torch.tensor([[0, 1, 0], [3, 4, 0], [5, 2, 0], [6, 0, 0]])
    labels = (torch.rand(4, 20) < 0.1).float()
    loss, terms, ents = model.one_to_n_loss(q, torch.ones(4, dtype=torch.bool), labels, None)
    assert set(terms) == {"bce_structure", "bce_text", "bce_fused", "align", "mi"}
    assert ents.shape == (20, 8) and torch.isfinite(loss)
    loss.backward()
    assert model.decision_fusion.logits.grad is not None
    (step,) = model.auxiliary_steps(type("T", (), {"lr": 0.01})())
    before = [p.detach().clone() for p in model.estimators.parameters()]
    others = {n: p.detach().clone() for n, p in model.named_parameters() if not n.startswith("estimators")}
    step.step(q[:, 0], q[:, 1], torch.ones(4, dtype=torch.bool), labels)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.estimators.parameters()))
    for n, p in model.named_parameters():
        if not n.startswith("estimators"):
            assert torch.equal(p, others[n]), n
    assert _model(mi_weight=0.0).auxiliary_steps(None) == []


def _three_branch_model(**options):
    torch.manual_seed(0)
    n = 20
    feats = [FeatureTable(torch.randn(n, 12), "visual", torch.ones(n, dtype=torch.bool)),
             FeatureTable(torch.randn(n, 10), "text", torch.ones(n, dtype=torch.bool))]
    return IMVIAModel(n, 3, 8, feats, ImviaConfig(relation_dim=4, **options))


def test_imvia_relation_temperature_table_shared_as_published_or_per_branch():
    shared = _three_branch_model().eval()
    assert shared.relation_gate.weight.shape == (6, 1)
    assert all(a.relation_gate is None for a in shared.adapters)
    e, r = torch.tensor([1, 2, 3]), torch.tensor([0, 4, 5])
    x = shared.branch(1)[0](e)
    with torch.no_grad():
        shared.adapters[1].gate.normal_()
    expected = torch.softmax((x @ shared.adapters[1].gate) / torch.sigmoid(shared.relation_gate.weight[r]), -1)
    torch.testing.assert_close(shared._query(1, x, r)[2], expected)
    # one table: changing it changes every branch's query gates
    with torch.no_grad():
        for a in shared.adapters:
            a.gate.normal_()
        before = [shared._query(i, shared.branch(i)[0](e), r)[2] for i in range(3)]
        shared.relation_gate.weight.add_(3.0)
    after = [shared._query(i, shared.branch(i)[0](e), r)[2] for i in range(3)]
    assert all(not torch.allclose(b, a) for b, a in zip(before, after))
    per = _three_branch_model(relation_temperature_table="per_branch")
    assert per.relation_gate is None and all(a.relation_gate.weight.shape == (6, 1) for a in per.adapters)
    assert _three_branch_model(relation_temperature=False).relation_gate is None


def test_imvia_club_pair_shared_by_the_branches_or_drawn_per_branch():
    # view k of every branch is the constant k, so a pair (x, y) reveals the expert indices it was drawn from
    views = [torch.arange(3.0).view(1, 3, 1).expand(4, 3, 8) for _ in range(3)]
    shared = _three_branch_model()
    per = _three_branch_model(club_pair="per_branch")
    differs = False
    for seed in range(20):
        torch.manual_seed(seed)
        pairs = [(int(x[0, 0]), int(y[0, 0])) for x, y in shared.club_pairs(views)]
        torch.manual_seed(seed)
        a, b = torch.randperm(3)[:2].tolist()
        assert pairs == [(a, b)] * 3
        pairs = {(int(x[0, 0]), int(y[0, 0])) for x, y in per.club_pairs(views)}
        differs |= len(pairs) > 1
    assert differs


def test_imvia_loss_composition_and_weights_by_hand():
    # Σ_m BCE_m + align_weight Σ_{m<m'} InfoNCE(u_m, u_m') + mi_weight mean_m CLUB_m (published: 0.01 and mu),
    # recomputed from the branch outputs with explicit formulas; eval mode makes everything but CLUB deterministic
    # and the CLUB draws (one shared expert pair, then one batch permutation per branch) are replayed by seed.
    model = _three_branch_model(align_weight=0.37, mi_weight=0.5).eval()
    with torch.no_grad():  # experts of unit scale, so the CLUB term is not negligible
        for adapter in model.adapters:
            adapter.expert_weight.normal_()
    n = 20
    q = torch.tensor([[0, 1, 0], [3, 4, 0], [5, 2, 0], [6, 0, 0], [9, 1, 0]])
    tail = torch.tensor([True, True, False, True, False])
    labels = (torch.rand(5, n, generator=torch.Generator().manual_seed(1)) < 0.2).float()
    torch.manual_seed(12)
    loss, terms, _ = model.one_to_n_loss(q, tail, labels, None)

    e = torch.where(tail, q[:, 0], q[:, 2])
    r = torch.where(tail, q[:, 1], q[:, 1] + 3)
    smooth = 0.9 * labels + 1.0 / n
    with torch.no_grad():
        outs = [model.branch_logits(i, e, r) for i in range(3)]
        bce = []
        for logits, _, _ in outs:
            p = torch.sigmoid(logits.double())
            bce.append(float(-(smooth * p.log() + (1 - smooth) * (1 - p).log()).mean()))
        u = [model.align_heads[i](outs[i][2]).double() for i in range(3)]

        def info_nce(a, b):
            s = a @ b.T / 0.07
            diag = s.diagonal()
            return float(0.5 * ((s.logsumexp(1) - diag).mean() + (s.logsumexp(0) - diag).mean()))

        align = info_nce(u[0], u[1]) + info_nce(u[0], u[2]) + info_nce(u[1], u[2])
        torch.manual_seed(12)
        ia, ib = torch.randperm(3)[:2].tolist()
        club = []
        for est, (_, views, _) in zip(model.estimators, outs):
            x, y = views[:, ia], views[:, ib]
            perm = torch.randperm(5)
            mu, inv = est.mu(x), torch.exp(-est.logvar(x))
            club.append(float(0.5 * ((-((mu - y) ** 2) * inv).sum(1) + ((mu - y[perm]) ** 2 * inv).sum(1)).mean()))
    for name, value in zip(("structure", "visual", "text"), bce):
        assert float(terms[f"bce_{name}"]) == pytest.approx(value, rel=1e-5)
    assert float(terms["align"]) == pytest.approx(align, rel=1e-5)
    assert float(terms["mi"]) == pytest.approx(sum(club) / 3, rel=1e-4, abs=1e-6)
    assert float(loss.detach()) == pytest.approx(sum(bce) + 0.37 * align + 0.5 * sum(club) / 3, rel=1e-5)
    assert set(terms) == {"bce_structure", "bce_visual", "bce_text", "align", "mi"}
    assert abs(sum(club)) > 0.05 and align > 1.0


def test_imvia_published_temperature_options_reach_the_loss():
    model = _three_branch_model(align_temperature_parameterization="raw", align_min_temperature=None)
    assert model.align_loss.parameterization == "raw" and model.align_loss.max_temperature is None
    assert model.align_loss.min_temperature is None
    assert float(model.align_loss.raw_temperature) == pytest.approx(0.07)
    default = _three_branch_model()
    assert default.align_loss.parameterization == "log" and default.align_loss.min_temperature == 0.01


def test_imvia_table_input_needs_matching_width():
    with pytest.raises(ValueError, match="width"):
        _model(modality_input="table")


# ------------------------------------------------------------------------------------------------ config / presets
def test_imvia_config_validation():
    base = {"dataset": {"synthetic": {}}, "training": {"loop": "one_to_n", "loss": "bce"}}
    with pytest.raises(ConfigError, match="reciprocal"):
        parse_config({**base, "model": {"method": "imvia"}})
    with pytest.raises(ConfigError, match="num_experts"):
        parse_config({**base, "model": {"method": "imvia", "reciprocal": True, "imvia": {"num_experts": 1}}})
    with pytest.raises(ConfigError, match="unknown key"):
        parse_config({**base, "model": {"method": "imvia", "reciprocal": True, "imvia": {"mi_wieght": 1}}})
    with pytest.raises(ConfigError, match="method: imvia"):
        parse_config({**base, "model": {"reciprocal": True, "imvia": {}}})
    cfg = parse_config({**base, "model": {"method": "imvia", "reciprocal": True}})
    assert cfg.evaluation.report == "selected"  # the legacy best-test-per-metric report is never the default


@pytest.mark.parametrize("name", ["db15k", "mkg-w", "mkg-y", "tiva", "kuai16k"])
def test_presets_validate(name):
    cfg = load_config(ROOT / "configs" / "imvia" / f"{name}.yaml")
    assert cfg.model.method == "imvia" and cfg.evaluation.tie_policy == "random"
    assert cfg.evaluation.report == "selected" and cfg.evaluation.split == "valid_clean"
    assert cfg.model.imvia.num_experts == 3 and cfg.model.imvia.mi_weight == 1e-4


def test_runnable_db15k_variant_validates():
    cfg = load_config(ROOT / "configs" / "db15k" / "imvia_text.yaml")
    ref = load_config(ROOT / "configs" / "db15k" / "complex_text.yaml")
    assert cfg.training.time_budget_minutes == ref.training.time_budget_minutes
    assert cfg.evaluation.split == ref.evaluation.split == "valid_clean"
    assert cfg.model.modalities[0].encoder == ref.model.modalities[0].encoder


# ------------------------------------------------------------------------------------------------ end to end
def _synthetic_config(tmp_path, epochs, report="selected"):
    return parse_config({
        "name": "imvia-syn", "seed": 1,
        "dataset": {"synthetic": {"num_entities": 150, "num_relations": 3, "seed": 0, "text_dim": 16,
                                  "visual_dim": 16}},
        "model": {"method": "imvia", "dim": 8, "reciprocal": True,
                  "modalities": [{"name": "text"}, {"name": "visual"}], "imvia": {"relation_dim": 4}},
        "training": {"loop": "one_to_n", "loss": "bce", "epochs": epochs, "batch_size": 64, "lr": 0.01},
        "evaluation": {"every": 1, "patience": None, "tie_policy": "random", "report": report},
    })


def test_synthetic_run_trains_resumes_and_writes_decoder_metrics(tmp_path):
    from mmkgc.pipeline import run_experiment

    run = tmp_path / "run"
    run_experiment(_synthetic_config(tmp_path, 1), run, device="cpu", log=lambda line: None)
    metrics = run_experiment(_synthetic_config(tmp_path, 2), run, resume=True, device="cpu",
                             log=lambda line: None)
    assert metrics["training"]["epochs"] == 2
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2]
    assert {"bce_structure", "bce_text", "bce_visual", "align", "mi", "club_estimator"} <= set(lines[-1]["terms"])
    assert "random" in metrics["summary"]["test"] and "(random)" in metrics["training"]["selection"]
    decoders = metrics["diagnostics"]["imvia_decoders"]
    assert set(decoders) == {"structure", "text", "visual", "fused"}
    from rank_check import brute_force_mrr

    from mmkgc.pipeline import load_run

    _, loaded, trained = load_run(run, device="cpu")
    trained.eval()
    for i, name in enumerate(trained.branch_names):  # each decoder's realistic MRR, recomputed by loops
        assert decoders[name]["realistic"]["mrr"] == pytest.approx(
            brute_force_mrr(trained.branch_score_fn(i, probabilities=False), loaded.triples), rel=1e-9)
    assert decoders["fused"]["realistic"]["mrr"] == pytest.approx(
        brute_force_mrr(trained.score_fn(), loaded.triples), rel=1e-9)
    # the fused decoder metrics are the run's test metrics under the same random policy and seed
    assert decoders["fused"]["random"]["mrr"] == pytest.approx(metrics["summary"]["test"]["random"]["mrr"])
    assert set(json.loads((run / "imvia_decoders.json").read_text())["branches"]) == set(decoders)
    assert "legacy_best_test_per_metric" not in metrics


def test_legacy_report_is_labelled(tmp_path):
    from mmkgc.pipeline import run_experiment

    lines: list[str] = []
    metrics = run_experiment(_synthetic_config(tmp_path, 2, "legacy_best_test_per_metric"), tmp_path / "run",
                             device="cpu", log=lines.append)
    legacy = metrics["legacy_best_test_per_metric"]
    assert "test set" in legacy["warning"] and legacy["tie_policy"] == "random"
    assert set(legacy["metrics"]) == {"mrr", "mr", "hits@1", "hits@3", "hits@10"}
    per_epoch = [json.loads(x)["legacy_test"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert legacy["metrics"]["mrr"]["value"] == max(e["mrr"] for e in per_epoch)
    assert legacy["metrics"]["mr"]["value"] == min(e["mr"] for e in per_epoch)
    assert any("WARNING" in line and "TEST" in line for line in lines)


def test_imvia_pointwise_scores_match_one_to_n():
    model = _model().eval()
    q = torch.tensor([[0, 1, 5], [3, 2, 7], [4, 0, 4]])
    full = model.score_fn()(q, "tail")
    torch.testing.assert_close(model.score_hrt(q), full[torch.arange(3), q[:, 2]])
    with pytest.raises(TypeError, match="one_to_n"):
        model.negative_sampling_loss(q, q[:, :1], torch.ones(3, 1, dtype=torch.bool), None)


def test_imvia_softmax_ce_budget_variant_loss_and_probabilities_by_hand():
    # branch_loss: softmax_ce: each decoder's loss is -Σ_n y'_n log softmax(s)_n with y' = (1 - ε) y/|y| + ε/N,
    # and the decision fusion averages softmax (not sigmoid) probabilities
    model = _three_branch_model(branch_loss="softmax_ce", align_weight=0.0, mi_weight=0.0,
                                label_smoothing=0.2).eval()
    n = 20
    q = torch.tensor([[0, 1, 0], [0, 2, 3], [5, 2, 0]])
    tail = torch.tensor([True, False, True])
    labels = torch.zeros(3, n)
    labels[0, [2, 7]] = 1.0
    labels[1, 4] = 1.0
    labels[2, [0, 1, 19]] = 1.0
    loss, terms, _ = model.one_to_n_loss(q, tail, labels, None)
    e = torch.where(tail, q[:, 0], q[:, 2])
    r = torch.where(tail, q[:, 1], q[:, 1] + 3)
    target = 0.8 * labels / labels.sum(1, keepdim=True) + 0.2 / n
    expected = []
    with torch.no_grad():
        for i in range(3):
            logits = model.branch_logits(i, e, r)[0].double()
            expected.append(float(-(target * torch.log_softmax(logits, 1)).sum(1).mean()))
        for name, value in zip(("structure", "visual", "text"), expected):
            assert float(terms[f"bce_{name}"]) == pytest.approx(value, rel=1e-5)
        assert float(loss) == pytest.approx(sum(expected), rel=1e-5)
        fused = model.score_fn()(torch.tensor([[0, 1, 0]]), "tail")
        probs = [torch.softmax(model.branch_logits(i, e[:1], r[:1])[0], 1) for i in range(3)]
        torch.testing.assert_close(fused, sum(probs) / 3)
        torch.testing.assert_close(fused.sum(), torch.tensor(1.0))  # a distribution over the N entities


def test_imvia_shared_alignment_head_is_one_projection_applied_to_every_branch():
    """``align_head: shared`` (the published single conv/bn head): one Linear + BatchNorm1d, the alignment term
    computed from it equals an independent computation, and its batch norm is updated once per branch in branch
    order."""
    model = _three_branch_model(align_head="shared", mi_weight=0.0, noisy_gating=False).train()
    assert len(model.align_heads) == 1
    per_branch = _three_branch_model(mi_weight=0.0)
    assert len(per_branch.align_heads) == 3
    head = model.align_heads[0]
    with torch.no_grad():
        head[0].weight.normal_()
    q = torch.tensor([[0, 1, 0], [3, 4, 0], [5, 2, 0], [6, 0, 0], [7, 3, 0]])
    labels = (torch.rand(5, 20) < 0.1).float()
    e, r = q[:, 0], q[:, 1]
    state = {k: v.clone() for k, v in head[1].state_dict().items()}
    loss, terms, _ = model.one_to_n_loss(q, torch.ones(5, dtype=torch.bool), labels, None)
    # the branches' query vectors (deterministic: no gate noise)
    queries = [model._query(i, model.branch(i)[0](e), r)[0] for i in range(3)]
    # independent recomputation of the alignment term with the one head in batch (training) mode
    w = head[0].weight
    feats = []
    mean, var = state["running_mean"].clone(), state["running_var"].clone()
    for qv in queries:
        z = qv @ w.T
        m, v = z.mean(0), z.var(0, unbiased=False)
        feats.append((z - m) / torch.sqrt(v + head[1].eps) * head[1].weight + head[1].bias)
        mean = (1 - head[1].momentum) * mean + head[1].momentum * m
        var = (1 - head[1].momentum) * var + head[1].momentum * z.var(0, unbiased=True)
    def clip(a, b):  # symmetric InfoNCE, unnormalised rows, tau 0.07 (the published ClipLoss at its start)
        s = a @ b.T / 0.07
        target = torch.arange(a.shape[0])
        return 0.5 * (torch.nn.functional.cross_entropy(s, target) + torch.nn.functional.cross_entropy(s.T, target))

    expected = sum(clip(feats[a], feats[b]) for a, b in [(0, 1), (0, 2), (1, 2)])
    torch.testing.assert_close(terms["align"], expected.detach(), rtol=1e-5, atol=1e-6)
    # the running statistics saw the three branches, in order
    torch.testing.assert_close(head[1].running_mean, mean.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(head[1].running_var, var.detach(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="align_head"):
        parse_config({"dataset": {"synthetic": {"num_entities": 30}}, "model": {
            "method": "imvia", "reciprocal": True, "dim": 8, "imvia": {"align_head": "tied"}}})


def test_align_head_at_its_default_keeps_an_imvia_run_resumable():
    """A run started before ``align_head`` existed resumes: the option is hashed only when set."""
    from mmkgc.pipeline import build_model, load_data, run_fingerprint

    raw = {"dataset": {"synthetic": {"num_entities": 40, "seed": 1}}, "model": {
        "method": "imvia", "reciprocal": True, "dim": 8, "modalities": [{"name": "text"}]},
        "training": {"loop": "one_to_n", "loss": "bce"}}
    cfg = parse_config(raw)
    model = build_model(cfg, load_data(cfg))
    default = run_fingerprint(cfg, model)["config"]
    raw["model"]["imvia"] = {"align_head": "per_branch"}
    assert run_fingerprint(parse_config(raw), model)["config"] == default
    raw["model"]["imvia"] = {"align_head": "shared"}
    assert run_fingerprint(parse_config(raw), model)["config"] != default
