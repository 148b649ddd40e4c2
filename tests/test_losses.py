"""Losses and regularisers: hand-computed values, detached self-adversarial weights, label smoothing, registry."""

from __future__ import annotations

import math

import pytest
import torch

from mmkgc.errors import ConfigError, UnknownNameError
from mmkgc.losses import (
    BCEWithLabelSmoothing,
    MarginRankingLoss,
    SelfAdversarialSigmoidLoss,
    SoftplusLoss,
    build_loss,
    l2_regularizer,
    n3_regularizer,
)


def _sp(x: float) -> float:
    return math.log1p(math.exp(x))


def _logsig(x: float) -> float:
    return -_sp(-x)


POS = [2.0, -1.0]
NEG = [[1.5, 0.0, 3.0], [-4.0, -0.5, -2.0]]


def test_margin_ranking_known_values_and_zero_when_separated():
    loss = MarginRankingLoss(margin=1.0)
    expected = sum(max(0.0, 1.0 - p + n) for p, row in zip(POS, NEG) for n in row) / 6
    assert loss(torch.tensor(POS), torch.tensor(NEG)).item() == pytest.approx(expected)
    separated = loss(torch.tensor([5.0, 3.0]), torch.tensor([[3.9, 1.0], [2.0, -7.0]]))
    assert separated.item() == 0.0
    one = loss(torch.tensor([1.0]), torch.tensor([1.5]))  # 1-D negatives: one per positive
    assert one.item() == pytest.approx(1.5)
    with pytest.raises(ValueError, match="negative scores"):
        loss(torch.tensor(POS), torch.zeros(3, 2))
    with pytest.raises(ConfigError):
        MarginRankingLoss(-1.0)


def test_softplus_known_values():
    pos, neg = torch.tensor(POS), torch.tensor(NEG)
    lp = [_sp(-p) for p in POS]
    ln = [_sp(n) for row in NEG for n in row]
    balanced = 0.5 * (sum(lp) / 2 + sum(ln) / 6)
    flat = (sum(lp) + sum(ln)) / 8
    assert SoftplusLoss()(pos, neg).item() == pytest.approx(balanced, rel=1e-6)
    assert SoftplusLoss(balanced=False)(pos, neg).item() == pytest.approx(flat, rel=1e-6)


@pytest.mark.parametrize("alpha", [None, 0.0, 2.0])
def test_self_adversarial_sigmoid_known_values(alpha):
    pos_term = sum(_logsig(p) for p in POS) / 2
    neg_terms = []
    for row in NEG:
        if alpha:
            z = [math.exp(alpha * n) for n in row]
            w = [x / sum(z) for x in z]
        else:
            w = [1 / 3] * 3
        neg_terms.append(sum(wi * _logsig(-n) for wi, n in zip(w, row)))
    expected = -0.5 * (pos_term + sum(neg_terms) / 2)
    got = SelfAdversarialSigmoidLoss(alpha)(torch.tensor(POS), torch.tensor(NEG))
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_self_adversarial_weights_are_detached():
    loss = SelfAdversarialSigmoidLoss(2.0)
    neg = torch.tensor(NEG, requires_grad=True)
    loss(torch.tensor(POS), neg).backward()
    # gradient with the weights held constant: d/dn [-(1/2B) w log σ(-n)] = (1/2B) w σ(n)
    w = torch.softmax(2.0 * torch.tensor(NEG), -1)
    expected = w * torch.sigmoid(torch.tensor(NEG)) / (2 * 2)
    torch.testing.assert_close(neg.grad, expected)
    # ... which differs from the gradient when the weights are not detached
    neg2 = torch.tensor(NEG, requires_grad=True)
    attached = -0.5 * (torch.nn.functional.logsigmoid(torch.tensor(POS)).mean()
                       + (torch.softmax(2.0 * neg2, -1) * torch.nn.functional.logsigmoid(-neg2)).sum(-1).mean())
    attached.backward()
    assert not torch.allclose(neg2.grad, neg.grad)
    assert not loss.weights(neg).requires_grad


def test_self_adversarial_accepts_across_batch_negatives():
    loss = SelfAdversarialSigmoidLoss(2.0)
    fake = torch.tensor([0.5, -1.0, 2.0])
    got = loss(torch.tensor(POS), fake.reshape(1, -1))
    w = torch.softmax(2.0 * fake, 0)
    expected = -0.5 * (sum(_logsig(p) for p in POS) / 2 + float((w * torch.nn.functional.logsigmoid(-fake)).sum()))
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_bce_label_smoothing_equals_hand_formula():
    scores = torch.tensor([[2.0, -1.0, 0.5, 0.0], [-3.0, 1.0, 0.0, 4.0]])
    targets = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0]])
    n, eps = 4, 0.1

    def bce(s, y):
        p = 1 / (1 + math.exp(-s))
        return -(y * math.log(p) + (1 - y) * math.log(1 - p))

    for variant, smooth in (("standard", lambda y: y * (1 - eps) + eps / n),
                            ("conve", lambda y: y * (1 - eps) + 1 / n),
                            ("imvia", lambda y: 0.9 * y + 1 / n)):
        expected = sum(bce(s, smooth(y)) for srow, yrow in zip(scores.tolist(), targets.tolist())
                       for s, y in zip(srow, yrow)) / 8
        loss = BCEWithLabelSmoothing(eps, variant)
        assert loss(scores, targets).item() == pytest.approx(expected, rel=1e-5)
        probs = BCEWithLabelSmoothing(eps, variant, from_logits=False)(torch.sigmoid(scores), targets)
        assert probs.item() == pytest.approx(expected, rel=1e-4)
    assert BCEWithLabelSmoothing(0.0)(scores, targets).item() == pytest.approx(
        sum(bce(s, y) for srow, yrow in zip(scores.tolist(), targets.tolist()) for s, y in zip(srow, yrow)) / 8,
        rel=1e-5)
    with pytest.raises(ValueError, match=r"\[B, N\]"):
        BCEWithLabelSmoothing(0.1)(scores, targets[:, :3])
    with pytest.raises(ConfigError):
        BCEWithLabelSmoothing(1.0)


def test_regularisers_known_values():
    h = torch.tensor([[1.0, -2.0], [0.5, 0.0]])
    r = torch.tensor([[3.0, 0.0], [0.0, -1.0]])
    # N3: (1 + 8 + 0.125 + 27 + 1) / B=2
    assert n3_regularizer(h, r, weight=0.5).item() == pytest.approx(0.5 * 37.125 / 2)
    # complex: coordinates (1 - 2i) and (0.5 + 0i) -> |.|^3 = 5^1.5 + 0.125
    assert n3_regularizer(h, weight=1.0, complex_layout=True).item() == pytest.approx((5 ** 1.5 + 0.125) / 2)
    # L2 (OpenKE): mean of the per-tensor mean squares
    assert l2_regularizer(h, r, weight=1e-5).item() == pytest.approx(1e-5 * ((5.25 / 4) + (10 / 4)) / 2)
    with pytest.raises(ValueError):
        l2_regularizer()


def test_build_loss_registry():
    assert isinstance(build_loss("NSSA", adversarial_temperature=2.0), SelfAdversarialSigmoidLoss)
    assert isinstance(build_loss("margin", margin=2.0), MarginRankingLoss)
    assert isinstance(build_loss("bce", label_smoothing=0.1, variant="imvia"), BCEWithLabelSmoothing)
    with pytest.raises(UnknownNameError, match="known losses"):
        build_loss("hinge2")
    with pytest.raises(ConfigError, match="unknown option"):
        build_loss("softplus", margin=1.0)


def test_symmetric_infonce_matches_manual_and_masks_duplicates():
    import torch.nn.functional as F

    from mmkgc.losses import SymmetricInfoNCE

    torch.manual_seed(0)
    a, b = torch.randn(6, 5), torch.randn(6, 5)
    loss = SymmetricInfoNCE(temperature=0.5, normalize=False)
    s = a @ b.T / 0.5
    target = torch.arange(6)
    expected = 0.5 * (F.cross_entropy(s, target) + F.cross_entropy(s.T, target))
    assert torch.allclose(loss(a, b), expected)
    # perfectly aligned, normalised pairs give a lower loss than random pairs
    assert SymmetricInfoNCE()(a, a) < SymmetricInfoNCE()(a, b)
    # masking a duplicate row removes its pair from the negatives
    ids = torch.tensor([0, 0, 1, 2, 3, 4])
    masked = loss(a, b, ids=ids)
    s2 = s.clone()
    s2[0, 1] = s2[1, 0] = float("-inf")
    expected2 = 0.5 * (F.cross_entropy(s2, target) + F.cross_entropy(s2.T, target))
    assert torch.allclose(masked, expected2)


def test_symmetric_infonce_learnable_temperature_is_clamped():
    from mmkgc.losses import SymmetricInfoNCE

    loss = SymmetricInfoNCE(temperature=0.07, learnable=True, min_temperature=0.05)
    with torch.no_grad():
        loss.log_temperature.fill_(-20.0)
    assert float(loss.temperature.detach()) == pytest.approx(0.05)
    with pytest.raises(Exception, match="temperature"):
        SymmetricInfoNCE(temperature=0.0)


def test_symmetric_infonce_raw_temperature_is_the_published_cliploss_parameter():
    # IMVIA's ClipLoss learns tau itself: Adam's first step moves it by exactly lr (sign of the gradient), with no
    # upper clamp; the log parameterisation moves it by a factor exp(-lr) instead.
    from mmkgc.losses import SymmetricInfoNCE

    torch.manual_seed(0)
    a, b = torch.randn(6, 5), torch.randn(6, 5)
    raw = SymmetricInfoNCE(0.07, learnable=True, min_temperature=None, max_temperature=None, normalize=False,
                           parameterization="raw")
    assert [n for n, _ in raw.named_parameters()] == ["raw_temperature"]
    logp = SymmetricInfoNCE(0.07, learnable=True, min_temperature=None, normalize=False)
    torch.testing.assert_close(raw(a, b), logp(a, b))
    for module in (raw, logp):
        opt = torch.optim.Adam(module.parameters(), lr=0.01)
        module(a, b).backward()
        grad_sign = float(next(module.parameters()).grad.sign())
        opt.step()
    assert float(raw.temperature.detach()) == pytest.approx(0.07 - 0.01 * grad_sign, abs=1e-7)
    assert float(logp.temperature.detach()) == pytest.approx(0.07 * math.exp(-0.01 * grad_sign), rel=1e-6)
    with torch.no_grad():
        raw.raw_temperature.fill_(150.0)
        logp.log_temperature.fill_(math.log(150.0))
    assert float(raw.temperature.detach()) == 150.0  # no upper clamp
    assert float(logp.temperature.detach()) == pytest.approx(100.0)  # the log form keeps its clamp at 100
    with pytest.raises(Exception, match="parameterization"):
        SymmetricInfoNCE(learnable=True, parameterization="softplus")


def test_loss_resolver_knows_every_loss_name_and_builds_the_same_loss():
    """Every LOSSES name (in any case, '-' for '_') resolves to its class, and a resolved loss computes what the
    class constructed directly computes."""
    import torch

    from mmkgc.losses import LOSSES, MarginRankingLoss, loss_resolver

    for name, cls in LOSSES.items():
        assert loss_resolver.lookup(name.upper().replace("_", "-")) is cls
    pos, neg = torch.tensor([1.0, -2.0]), torch.tensor([[0.5, 3.0], [-1.0, -4.0]])
    made = loss_resolver.make("margin", {"margin": 2.0})
    # hand value: mean over pairs of max(0, 2 - pos + neg) = mean(1.5, 4, 3, 0) = 2.125
    assert float(made(pos, neg)) == pytest.approx(2.125) == float(MarginRankingLoss(2.0)(pos, neg))
