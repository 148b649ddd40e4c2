"""Auxiliary optimisation steps: own parameter group, excluded from the main optimiser, checkpointed, resumed."""

from __future__ import annotations

import torch
from torch import nn

from mmkgc.config import EvaluationConfig, TrainingConfig
from mmkgc.data.synthetic import make_synthetic_mmkg
from mmkgc.models.kge import EmbeddingRepresentation, KGEModel
from mmkgc.nn.scorers import build_scorer
from mmkgc.training.steps import AuxiliaryStep
from mmkgc.training.trainer import Trainer


class _Probe(AuxiliaryStep):
    """Pulls a small side network towards the (detached) mean entity vector of the batch's heads."""

    def __init__(self, model: "_ModelWithSide"):
        super().__init__("probe", model.side.parameters(), lr=0.05)
        self.model = model
        self.calls = 0

    def loss(self, positives, *rest):
        self.calls += 1
        h = self.model.entities(positives[:, 0]).detach()
        return ((self.model.side(h) - 1.0) ** 2).mean()


class _ModelWithSide(KGEModel):
    def __init__(self, n, r):
        scorer = build_scorer("distmult", 8)
        super().__init__(n, r, scorer, EmbeddingRepresentation(n, 8, init=scorer.init_entity_))
        self.side = nn.Linear(8, 1)
        self.probe: _Probe | None = None

    def negative_sampling_loss(self, positives, negative_entities, tail_corrupted, loss_fn):
        loss, terms = super().negative_sampling_loss(positives, negative_entities, tail_corrupted, loss_fn)
        # the side network also appears in the main loss: its gradient there must never be applied
        side = self.side(self.entities(positives[:, 0])).mean()
        return loss + 0.0 * side, {"side": side.detach()}

    def auxiliary_steps(self, training):
        self.probe = _Probe(self)
        return [self.probe]


def _trainer(tmp_path, model, triples, epochs):
    # validate every epoch: the run returns its best epoch, so both runs must see the same validations
    return Trainer(model, triples, TrainingConfig(epochs=epochs, batch_size=64, num_negatives=4),
                   EvaluationConfig(every=1, patience=None), seed=1, run_dir=tmp_path)


def test_auxiliary_step_owns_its_group_and_resumes(tmp_path):
    syn = make_synthetic_mmkg(num_entities=120, num_relations=3, seed=0)
    triples = syn.triples
    torch.manual_seed(0)
    model = _ModelWithSide(triples.num_entities, triples.num_relations)
    trainer = _trainer(tmp_path, model, triples, epochs=2)
    main_params = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert not main_params & {id(p) for p in model.side.parameters()}
    before = model.side.weight.detach().clone()
    trainer.train()
    assert model.probe.calls == len(trainer.batcher) * 2
    assert not torch.equal(before, model.side.weight)  # updated by its own step
    assert "probe" in trainer.history[-1]["terms"] and "side" in trainer.history[-1]["terms"]

    # resume restores the auxiliary optimiser state: continuing gives the same weights as an uninterrupted run
    torch.manual_seed(0)
    straight = _ModelWithSide(triples.num_entities, triples.num_relations)
    _trainer(tmp_path / "straight", straight, triples, epochs=3).train()
    torch.manual_seed(0)
    resumed = _ModelWithSide(triples.num_entities, triples.num_relations)
    _trainer(tmp_path, resumed, triples, epochs=3).train(resume=True)
    assert torch.allclose(straight.side.weight, resumed.side.weight, atol=1e-6)
    assert torch.allclose(straight.entities.embedding.weight, resumed.entities.embedding.weight, atol=1e-6)


def test_losses_read_in_groups_give_the_same_log_and_name_the_failing_step(tmp_path):
    """On a GPU the step losses are read every few steps (no host synchronisation per step): the epoch losses and
    terms must equal those read every step, and a non-finite loss must still name its step."""
    syn = make_synthetic_mmkg(num_entities=120, num_relations=3, seed=0)
    logs = []
    for every in (1, 3):
        torch.manual_seed(0)
        model = _ModelWithSide(syn.triples.num_entities, syn.triples.num_relations)
        trainer = _trainer(tmp_path / str(every), model, syn.triples, epochs=2)
        trainer.sync_every = every
        trainer.train()
        logs.append([(h["loss"], h["terms"]["side"], h["terms"]["probe"]) for h in trainer.history])
    assert logs[0] == logs[1]
    torch.manual_seed(0)
    model = _ModelWithSide(syn.triples.num_entities, syn.triples.num_relations)
    trainer = _trainer(tmp_path / "nan", model, syn.triples, epochs=1)
    trainer.sync_every = 4
    calls = {"n": 0}
    step_loss = trainer._step_loss

    def poisoned(*tensors):
        calls["n"] += 1
        loss = step_loss(*tensors)
        # the 6th step (index 5) reports an infinite loss (a constant: the parameters stay finite)
        return loss + float("inf") if calls["n"] == 6 else loss

    trainer._step_loss = poisoned
    import pytest

    with pytest.raises(FloatingPointError, match=r"loss became inf at epoch 1, step 5;"):
        trainer.train()


class _Quadratic(AuxiliaryStep):
    """``loss = sum((w - target)^2)`` over one parameter ``w [3]``: gradient ``2 (w - target)``."""

    def __init__(self):
        self.w = nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
        self.unused = nn.Parameter(torch.zeros(2))
        super().__init__("quadratic", [self.w, self.unused], lr=0.1)

    def loss(self, target):
        return ((self.w - target) ** 2).sum()


def test_step_scales_the_loss_and_applies_the_reduced_gradients():
    """``scale`` multiplies the gradient handed to ``reduce`` (DDP: the rank's share of the global batch), and the
    optimiser applies what ``reduce`` returns (DDP: the mean over ranks), not the local gradient."""
    step = _Quadratic()
    target = torch.tensor([0.0, 0.0, 1.0])
    seen = []

    def reduce(grads, params):
        seen.append([None if g is None else g.clone() for g in grads])
        assert [p is q for p, q in zip(params, step.params)] == [True, True]
        return [-grads[0], None]  # the opposite direction: Adam's first step then moves w by +lr * sign(g)

    before = step.w.detach().clone()
    out = step.step(target, scale=0.5, reduce=reduce)
    assert out == {"quadratic": 5.25}  # the unscaled loss: 1 + 4 + 0.25
    assert torch.allclose(seen[0][0], 0.5 * 2 * (before - target)) and seen[0][1] is None
    # Adam's first update is lr * g / (|g| + eps) per coordinate: w moves by +0.1 * sign(w - target)
    assert torch.allclose(step.w.detach(), before + 0.1 * torch.sign(before - target), atol=1e-6)
    assert torch.equal(step.unused.detach(), torch.zeros(2)) and step.w.grad is None
