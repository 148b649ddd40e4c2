"""Values of the modality-adversarial objectives (AdaMF-MAT, NativE WGAN-GP, AFME MoIEn) against hand computations,
the MoIEn generator's dependence on noise and structure, the one-generator-pass-per-batch schedule, and the
published hyper-parameters of every preset."""

from __future__ import annotations

import copy
import math
import re
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from mmkgc.config import load_config, parse_config
from mmkgc.models.adversarial import _BatchGeneration
from mmkgc.models.fused import FusedKGEModel
from mmkgc.nn.adversarial import ModalityGenerator, MoIEnGenerator, SharedModalityGenerator
from mmkgc.nn.scorers import RotatE
from mmkgc.pipeline import build_model, load_data
from mmkgc.losses import SelfAdversarialSigmoidLoss

from test_adversarial import _batch, adversarial_raw

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _log_sigmoid(v: float) -> float:
    return -math.log1p(math.exp(-v))


def _softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def _model(kind: str, temperature: float = 2.0, **adv):
    raw = adversarial_raw(kind, adversarial_temperature=temperature)
    raw["training"]["adversarial"].update(adv)
    cfg = parse_config(raw)
    data = load_data(cfg)
    with warnings.catch_warnings():  # the RotatE gradient-penalty warning has its own test
        warnings.simplefilter("ignore", UserWarning)
        model = build_model(cfg, data)
    return model, data


# fixed scores of B = 2 positives and the three fake types (head, tail, both)
POS = [1.0, -2.0]
FAKES = [[0.5, 1.0], [-1.0, 3.0], [2.0, 0.0]]


def _stub_scores(model):
    """Replace the scoring of positives/fakes by the fixed values above (the objectives are what is tested)."""
    pos = torch.tensor(POS)
    fakes = [torch.tensor(f) for f in FAKES]
    model.positive_and_fake_scores = lambda positives, generated, critic_grad=True, components=None: (pos, fakes, {})
    model.batch_generation = lambda positives, need_graph=False: SimpleNamespace(
        generated=torch.zeros(4, 2, 1, requires_grad=True), inverse=torch.arange(4))


def _adversarial_term(model, data):
    batch = _batch(data, b=2)
    loss, terms = model.negative_sampling_loss(*batch, SelfAdversarialSigmoidLoss(1.0))
    kgc, _ = FusedKGEModel.negative_sampling_loss(model, *batch, SelfAdversarialSigmoidLoss(1.0))
    assert loss.item() == pytest.approx(kgc.item() + model.adv.mu * terms["adversarial"].item(), rel=1e-6)
    return float(terms["adversarial"])


@pytest.mark.parametrize("weighting", ["per_positive", "across_batch"])
def test_mat_main_step_fake_term_and_generator_loss(weighting):
    model, data = _model("mat", temperature=2.0, mu=0.5, fake_weighting=weighting)
    _stub_scores(model)
    pos_term = sum(_log_sigmoid(p) for p in POS) / 2
    expected = 0.0
    for f in FAKES:
        if weighting == "per_positive":  # each fake against its own positive, weight 1
            neg_term = sum(_log_sigmoid(-v) for v in f) / 2
        else:  # the released code: one softmax (temperature 2) over the batch's fake scores
            w = [math.exp(2.0 * v) for v in f]
            neg_term = sum(wi / sum(w) * _log_sigmoid(-v) for wi, v in zip(w, f))
        expected += -0.5 * (pos_term + neg_term)
    assert _adversarial_term(model, data) == pytest.approx(expected, rel=1e-6)
    # generator step: Σ_fakes L_sig(f_fake, f+), the positives as one negative each whatever the weighting (the
    # released G step passes p_score of shape [B, 1]: AdaMF-MAT mmkgc/config/AdvMixTrainer.py:123 with
    # mmkgc/module/strategy/NegativeSampling.py:17)
    expected_g = sum(-0.5 * (sum(_log_sigmoid(v) for v in f) / 2 + sum(_log_sigmoid(-p) for p in POS) / 2)
                     for f in FAKES)
    assert model.generator_loss(_batch(data, b=2)[0]).item() == pytest.approx(expected_g, rel=1e-6)


def test_wgan_critic_terms_and_generator_loss():
    model, data = _model("wgan_gp", mu=0.5, gp_weight=0.0)
    _stub_scores(model)
    # μ Σ_fakes (mean f_fake − mean f+): the adversarial term before μ
    expected = sum(sum(f) / 2 - sum(POS) / 2 for f in FAKES)
    assert _adversarial_term(model, data) == pytest.approx(expected, rel=1e-6)
    gamma = model.scorer.margin
    expected_g = sum(sum(gamma - v for v in f) / 2 for f in FAKES) / 3  # Σ mean(γ − f_fake) / |fakes|
    assert model.generator_loss(_batch(data, b=2)[0]).item() == pytest.approx(expected_g, rel=1e-6)


def test_moien_generator_step_adds_mu_times_the_critic_term():
    model, data = _model("moien", mu=0.25)
    _stub_scores(model)
    model._moien_generator_terms = lambda gen: torch.tensor(0.0)
    gamma = model.scorer.margin
    expected = 0.25 * sum(sum(gamma - v for v in f) / 2 for f in FAKES) / 3
    assert model.generator_loss(_batch(data, b=2)[0]).item() == pytest.approx(expected, rel=1e-6)


class _LinearCritic(nn.Module):
    """A stand-in discriminator with a known logit: ``Σ candidate − Σ structure + 0.1 m``."""

    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(()))

    def forward(self, candidate, structure, modality):
        return candidate.sum(-1) - structure.sum(-1) + 0.1 * modality + self.p


def test_moien_reconstruction_bce_and_discriminator_values():
    model, data = _model("moien", mu=0.0, reconstruction_weight=0.7, adversarial_weight=0.3)
    model.discriminator = _LinearCritic()
    positives = _batch(data, b=2)[0]
    # 3 entities, M = 3 (structure, text, visual), D = 2; entity 1 lacks text, entity 2 lacks visual
    x = torch.tensor([[[0.1, 0.2], [0.5, -0.5], [1.0, 0.0]],
                      [[0.0, 0.3], [9.0, 9.0], [0.2, 0.4]],
                      [[-0.2, 0.1], [0.3, 0.3], [9.0, 9.0]]])
    present = torch.tensor([[True, True, True], [True, False, True], [True, True, False]])
    generated = torch.tensor([[[0.4, -0.1], [0.8, 0.3]],
                              [[0.0, 0.0], [0.1, 0.1]],
                              [[0.6, 0.2], [5.0, 5.0]]], requires_grad=True)
    gen = _BatchGeneration(positives.clone(), torch.zeros(4, dtype=torch.long), x, present, generated)

    def logit(c, s, m):
        return sum(c) - sum(s) + 0.1 * m

    exp_g = exp_d = 0.0
    for j in range(2):
        rows = [u for u in range(3) if bool(present[u, j + 1])]
        rec = sum(sum((generated[u, j, k].item() - x[u, j + 1, k].item()) ** 2 for k in range(2))
                  for u in rows) / len(rows)
        fake_logits = [logit(generated[u, j].tolist(), x[u, 0].tolist(), j) for u in rows]
        real_logits = [logit(x[u, j + 1].tolist(), x[u, 0].tolist(), j) for u in rows]
        exp_g += 0.7 * rec + 0.3 * sum(_softplus(-v) for v in fake_logits) / len(rows)
        exp_d += sum(_softplus(-v) for v in real_logits) / len(rows) + sum(_softplus(v) for v in fake_logits) \
            / len(rows)
    model._generation.value = gen
    assert model.discriminator_loss(positives).item() == pytest.approx(exp_d, rel=1e-6)
    assert model._generation.value is gen  # the discriminator step reuses the batch's generation ...
    assert model.generator_loss(positives).item() == pytest.approx(exp_g, rel=1e-6)
    assert model._generation.value is None  # ... and the generator step drops it


# ------------------------------------------------------------------------------------------ gradient penalty
def test_rotate_head_gradient_norm_is_sqrt_d_so_the_entity_penalty_is_constant():
    torch.manual_seed(0)
    d = 7
    scorer = RotatE(d, margin=6.0)
    h = torch.randn(5, 2 * d, requires_grad=True)
    r, t = torch.randn(5, d), torch.randn(5, 2 * d)
    (grad,) = torch.autograd.grad(scorer.score_hrt(h, r, t).sum(), h)
    assert torch.allclose(grad.norm(dim=-1), torch.full((5,), math.sqrt(d)), atol=1e-5)

    model, data = _model("wgan_gp", mu=0.5)  # warns: gp_weight > 0 with gp_target entity and RotatE
    gen = model.batch_generation(_batch(data)[0])
    _, _, vecs = model.positive_and_fake_scores(_batch(data)[0], gen.generated.detach()[gen.inverse])
    gp = model.gradient_penalty(vecs)
    d = model.scorer.relation_dim
    assert float(gp) == pytest.approx((math.sqrt(d) - 1) ** 2, rel=1e-5)
    grads = torch.autograd.grad(gp, [p for p in model.parameters() if p.requires_grad], allow_unused=True)
    assert max(float(g.abs().max()) for g in grads if g is not None) < 1e-4


def test_modality_gradient_penalty_matches_finite_differences_and_reaches_the_critic():
    model, data = _model("wgan_gp", mu=0.5, gp_target="modality")
    model.double()
    positives = _batch(data, b=4)[0]
    gen = model.batch_generation(positives)
    generated = gen.generated.detach().double()[gen.inverse]
    _, _, vecs = model.positive_and_fake_scores(positives, generated)
    alpha = torch.tensor([0.0, 0.3, 0.7, 1.0], dtype=torch.float64)
    gp = model.gradient_penalty(vecs, alpha)
    # independent: central differences of f(fuse([e_s, α x + (1 − α) G]), r, t) per modality coordinate
    x = vecs["x_h"].detach()
    inter = alpha.view(-1, 1, 1) * x[:, 1:] + (1 - alpha.view(-1, 1, 1)) * vecs["generated_h"]

    def f(v):
        tokens = torch.cat([x[:, :1], v], 1)
        fused, _ = model.entities.fuse(tokens, torch.ones(tokens.shape[:2], dtype=torch.bool),
                                       vecs["relation_h"])
        return model.scorer.score_hrt(fused, vecs["r"], vecs["t"]).detach()

    eps, grad = 1e-6, torch.zeros_like(inter)
    with torch.no_grad():
        for m in range(inter.shape[1]):
            for k in range(inter.shape[2]):
                step = torch.zeros_like(inter)
                step[:, m, k] = eps
                grad[:, m, k] = (f(inter + step) - f(inter - step)) / (2 * eps)
    expected = ((grad.flatten(1).norm(dim=-1) - 1) ** 2).mean()
    assert float(gp) == pytest.approx(float(expected), rel=1e-5)
    critic = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("generator.")]
    grads = torch.autograd.grad(gp, critic, allow_unused=True)
    assert max(float(g.abs().max()) for g in grads if g is not None) > 1e-6  # the penalty constrains the critic


def test_rotate_entity_penalty_warns_once_at_construction_and_modality_does_not():
    raw = adversarial_raw("wgan_gp")
    cfg, data = parse_config(raw), load_data(parse_config(raw))
    with pytest.warns(UserWarning, match="gp_weight has no effect"):
        build_model(cfg, data)
    for adv in ({"gp_target": "modality"}, {"gp_weight": 0.0}):
        raw = adversarial_raw("wgan_gp")
        raw["training"]["adversarial"].update(adv)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            build_model(parse_config(raw), data)


# ------------------------------------------------------------------------------------------ generators
def test_generator_mlps_use_leaky_relu_slope_0_01():
    for gen in (ModalityGenerator(4, 3, 2, 8), SharedModalityGenerator(4, 3, 2, 8)):
        slopes = [m.negative_slope for m in gen.modules() if isinstance(m, nn.LeakyReLU)]
        assert slopes and all(s == 0.01 for s in slopes)


@pytest.mark.parametrize("m", [2, 3])
def test_moien_output_depends_on_noise_and_structure_for_every_entity(m):
    torch.manual_seed(0)
    gen = MoIEnGenerator(dim=8, num_modalities=m, noise_dim=4, layers=2, heads=2)
    x = torch.randn(5, m, 8)
    present = torch.ones(5, m, dtype=torch.bool)
    torch.manual_seed(1)
    a = gen(x, present, noise=True)
    torch.manual_seed(2)
    b = gen(x, present, noise=True)
    assert float((a - b).abs().min()) > 1e-6  # every entity, every modality: two noise draws differ
    x2 = x.clone()
    x2[:, 0] = torch.randn(5, 8)  # the structure informs every generated modality
    assert float((gen(x2, present, noise=False) - gen(x, present, noise=False)).abs().min()) > 1e-6


def test_moien_single_modality_gradients_reach_condition_modality_in_and_noise():
    torch.manual_seed(0)
    gen = MoIEnGenerator(dim=8, num_modalities=2, noise_dim=4, layers=1, heads=2)
    x = torch.randn(6, 2, 8)
    z = torch.randn(6, 4, requires_grad=True)
    gen._z = lambda x_, noise: z
    out = gen(x, torch.ones(6, 2, dtype=torch.bool))
    (out ** 2).sum().backward()
    assert float(gen.condition.weight.grad.abs().sum()) > 0  # W_e
    assert float(gen.modality_in.weight.grad.abs().sum()) > 0  # W_d
    assert float(z.grad.abs().min()) > 0  # the noise path, for every entity


# ------------------------------------------------------------------------------------------ one pass per batch
def _count_noisy_passes(model):
    calls = []

    def hook(module, args, kwargs):
        if kwargs.get("noise", True):
            calls.append(args[0].shape[0])

    model.generator.register_forward_pre_hook(hook, with_kwargs=True)
    return calls


@pytest.mark.parametrize("kind,mu", [("mat", 0.1), ("mat", 0.0), ("wgan_gp", 0.1), ("moien", 0.1), ("moien", 0.0)])
def test_one_generator_pass_per_batch(kind, mu):
    model, data = _model(kind, mu=mu)
    steps = model.auxiliary_steps(parse_config(adversarial_raw(kind)).training)
    calls = _count_noisy_passes(model)
    for seed in range(2):
        batch = _batch(data, b=16, seed=seed)
        loss, _ = model.negative_sampling_loss(*batch, SelfAdversarialSigmoidLoss(1.0))
        loss.backward()
        for step in steps:
            step.step(*batch)
        assert model._generation.value is None  # dropped after the generator step
        distinct = torch.unique(torch.cat([batch[0][:, 0], batch[0][:, 2]])).numel()
        assert calls == [distinct] * (seed + 1)  # one noisy pass, over the batch's distinct entities


def test_generator_step_reuses_the_main_step_inputs_and_rescoring_uses_updated_parameters():
    model, data = _model("wgan_gp", mu=0.5, gp_weight=0.0)
    positives, negs, tail = _batch(data, b=8)
    main = [p for n, p in model.named_parameters() if not n.startswith("generator.")]
    opt = torch.optim.SGD(main, lr=1.0)
    loss, _ = model.negative_sampling_loss(positives, negs, tail, SelfAdversarialSigmoidLoss(1.0))
    gen = model._generation.value
    ids = torch.unique(torch.cat([positives[:, 0], positives[:, 2]]))
    before, _ = model.entities.raw_components(ids)
    loss.backward()
    opt.step()  # the main step's update
    after, _ = model.entities.raw_components(ids)
    assert not torch.allclose(before[:, 0], after[:, 0])
    # documented difference: the generator's inputs are those of the main step (before its update)
    assert torch.equal(gen.x[:, 0], before[:, 0].detach())
    # exact: the generator loss is Σ mean(γ − f_fake)/3 of the cached fakes scored with the updated parameters
    with torch.no_grad():
        x, present = model.entities.components(torch.cat([positives[:, 0], positives[:, 2]]))
        relation = positives[:, 1].repeat(2)
        real, _ = model.entities.fuse(x, present, relation)
        fake_x = torch.cat([x[:, :1], gen.generated[gen.inverse]], 1)
        fake, _ = model.entities.fuse(fake_x, torch.ones_like(present), relation)
        r = model.relations(positives[:, 1])
        b, score = positives.shape[0], model.scorer.score_hrt
        fakes = [score(fake[:b], r, real[b:]), score(real[:b], r, fake[b:]), score(fake[:b], r, fake[b:])]
        expected = sum((model.scorer.margin - f).mean() for f in fakes) / 3
    assert model.generator_loss(positives).item() == pytest.approx(float(expected), rel=1e-5)


def test_generation_cache_is_keyed_on_the_batch_and_never_copied():
    model, data = _model("mat", mu=0.1)
    calls = _count_noisy_passes(model)
    batch = _batch(data, b=8)
    model.negative_sampling_loss(*batch, SelfAdversarialSigmoidLoss(1.0))
    assert copy.deepcopy(model)._generation.value is None and model._generation.value is not None
    model.generator_loss(data.triples.train[8:16])  # another batch: generated anew, not the cached one
    assert len(calls) == 2
    model.negative_sampling_loss(*batch, SelfAdversarialSigmoidLoss(1.0))
    model.negative_sampling_loss(*batch, SelfAdversarialSigmoidLoss(1.0))  # a main step always regenerates
    assert len(calls) == 4


# ------------------------------------------------------------------------------------------ presets
# Published hyper-parameters (zjukg/AdaMF-MAT @ main: scripts/run_{db15k,mkgw,mkgy}.sh lines 2-7 and 14 (-mu=0);
# args.py:15 lrg 1e-4, args.py:16 adv_temp 2.0; run_adamf_mat.py:41 epsilon 2.0, :54 noise_dim 64, :25 bern_flag 1.
# zjukg/NATIVE @ main: scripts/run_{db15k,mkgw,mkgy,tiva,kvc16k}.sh lines 2-9; args.py:17 adv_temp 2.0;
# run_adv_wgan_gp.py:39 epsilon 2.0, :49 regul_rate 1e-5 (MKG-W/MKG-Y), run_adv_wgan_gp_4modal.py:53 regul_rate
# 1e-5 (TIVA, Kuai16K), run_adv_wgan_gp_3modal.py (DB15K) has none; mmkgc/config/WCGTrainerGP.py:59 beta 0.1
# (the GP weight; WCGTrainerDB15KGP.py:60, WCGTrainerKuai16KGP.py:63 likewise).  AFME publishes none: its presets
# take NativE's values for the same dataset (docs/methods.md).)
#            dim  margin  lr     lrg    K    mu     L2
ADAMF_MAT = {"db15k": (250, 12.0, 2e-5, 1e-4, 128, None, None),
             "mkg-w": (200, 12.0, 2e-5, 1e-4, 128, None, None),
             "mkg-y": (200, 4.0, 2e-5, 1e-4, 128, None, None)}
NATIVE = {"db15k": (250, 12.0, 1e-4, 1e-4, 128, 1e-4, None),
          "mkg-w": (250, 4.0, 1e-4, 1e-4, 128, 1e-4, 1e-5),
          "mkg-y": (250, 4.0, 1e-4, 1e-4, 128, 1e-4, 1e-5),
          "tiva": (150, 4.0, 2e-5, 2e-5, 64, 1e-4, 1e-5),
          "kuai16k": (250, 4.0, 2e-5, 2e-5, 32, 1e-5, 1e-5)}


def _published_presets():
    rows = []
    for path in sorted((CONFIGS / "adamf_mat").glob("*.yaml")):
        rows.append((path, ADAMF_MAT[path.stem.split("_")[0]]))
    for method in ("native", "afme"):
        for path in sorted((CONFIGS / method).glob("*.yaml")):
            rows.append((path, NATIVE[path.stem.split("_")[0]]))
    return rows


@pytest.mark.parametrize("path,published", _published_presets(), ids=lambda v: getattr(v, "stem", ""))
def test_preset_hyper_parameters_equal_the_published_scripts(path, published):
    dim, margin, lr, lrg, k, mu, l2 = published
    cfg = load_config(path)
    t, adv = cfg.training, cfg.training.adversarial
    assert (cfg.model.dim, cfg.model.scorer_options["margin"], cfg.model.scorer_options["epsilon"]) == \
        (dim, margin, 2.0)
    assert (t.lr, adv.generator_lr, t.num_negatives, t.batch_size, t.epochs) == (lr, lrg, k, 1024, 1000)
    assert (t.adversarial_temperature, adv.noise_dim, t.sampler) == (2.0, 64, "bernoulli")
    if path.parent.name == "adamf_mat":
        assert adv.kind == "mat" and adv.hidden_dim == 512
        if "released" in path.stem:
            assert adv.mu == 0.0 and adv.fake_weighting == "across_batch"
        else:  # paper: the term on (value not published: NativE's)
            assert adv.mu == 1e-4 and adv.fake_weighting == "per_positive"
    else:
        assert adv.mu == mu
        if path.parent.name == "native":
            assert adv.kind == "wgan_gp" and adv.gp_weight == 0.1 and adv.hidden_dim == 512
        else:
            assert adv.kind == "moien"
    if l2 is None:
        assert t.regularizer == "none" or t.regularizer_weight == 0
    else:
        assert t.regularizer == "l2" and t.regularizer_weight == l2


def _import_presence(path: Path) -> set[str]:
    return set(re.findall(r"--presence (\w+)", path.read_text()))


def test_released_presets_import_every_row_as_present_and_masking_presets_do_not():
    # the released AdaMF-MAT and NativE code project whatever a feature row holds (a zero row gives the adapter's
    # bias); with '--presence all' no row is masked, so the preset is that model (fidelity review A1/N6)
    for path in sorted((CONFIGS / "adamf_mat").glob("*_released*.yaml")) + sorted((CONFIGS / "native").glob("*")):
        presence = _import_presence(path)
        assert presence in (set(), {"all"}), path
        assert "nonzero" not in path.read_text(), path
    for path in sorted((CONFIGS / "adamf_mat").glob("*_paper.yaml")) + sorted((CONFIGS / "afme").glob("*")):
        assert _import_presence(path) <= {"nonzero"}, path


@pytest.mark.parametrize("kind", ["mat", "wgan_gp", "moien"])
def test_generation_under_bf16_autocast_stays_in_the_parameters_precision(kind):
    model, data = _model(kind, mu=0.1)
    steps = model.auxiliary_steps(parse_config(adversarial_raw(kind)).training)
    batch = _batch(data, b=16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = model.negative_sampling_loss(*batch, SelfAdversarialSigmoidLoss(1.0))
    assert model._generation.value.generated.dtype == torch.float32
    loss.backward()
    for step in steps:  # the trainer runs the auxiliary steps outside autocast
        assert math.isfinite(step.step(*batch)[step.name])


def test_completion_generates_only_rows_with_an_absent_modality_and_fills_the_noise_free_output():
    model, data = _model("moien")
    ids = torch.arange(data.triples.num_entities)
    raw, present = model.entities.raw_components(ids)
    calls = []
    model.generator.register_forward_pre_hook(lambda mod, args, kwargs: calls.append(args[0].shape[0]),
                                              with_kwargs=True)
    x, mask = model.entities.components(ids)
    incomplete = (~present[:, 1:]).any(-1)
    assert calls == [int(incomplete.sum())] and bool(mask.all())
    with torch.no_grad():
        expected = torch.cat([raw[:, :1], model.generator(raw, present, noise=False)], 1)  # every row at once
    assert torch.allclose(x[~present], expected[~present], atol=1e-5)
    assert torch.equal(x[present], raw[present])
