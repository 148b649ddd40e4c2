"""Training loops (mmkgc.training.loops) and callbacks (mmkgc.training.callbacks): resolution by name, the loss a
loop computes against a hand computation, each callback's decisions on hand-made sequences, and the order in which
a trainer calls a user's callback."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from mmkgc.config import parse_config
from mmkgc.training.callbacks import EarlyStopping, TimeBudget, TrainingCallback
from mmkgc.training.loops import (
    NegativeSamplingLoop,
    OneToNLoop,
    TrainingLoop,
    loop_resolver,
)
from mmkgc.training.tracking import (
    FileTracker,
    MLflowTracker,
    TensorBoardTracker,
    WandbTracker,
    tracker_resolver,
)

SYNTHETIC = {"synthetic": {"num_entities": 60, "num_relations": 3, "seed": 2}}


def _config(**training):
    return parse_config({"seed": 4, "dataset": SYNTHETIC, "model": {"scorer": "distmult", "dim": 8},
                         "training": {"epochs": 3, "batch_size": 97, "lr": 0.05, **training},
                         "evaluation": {"every": 1, "patience": None, "batch_size": 64}})


def test_resolvers_map_config_names_to_classes():
    assert loop_resolver.lookup("negative_sampling") is NegativeSamplingLoop
    assert loop_resolver.lookup("one_to_n") is OneToNLoop
    assert all(issubclass(cls, TrainingLoop) for cls in loop_resolver)
    from mmkgc.training.loops import LinkBCELoop

    assert loop_resolver.lookup("link_bce") is LinkBCELoop
    with pytest.raises(KeyError):
        loop_resolver.lookup("link_bce_typo")
    assert [tracker_resolver.lookup(n) for n in ("file", "tensorboard", "mlflow", "wandb")] == [
        FileTracker, TensorBoardTracker, MLflowTracker, WandbTracker]


def test_one_to_n_loop_loss_is_the_hand_computed_bce():
    """The 1-N loop's batch loss equals mean BCE-with-logits of ``score_t`` over all entities (reciprocal
    relations, no smoothing) plus N3 computed by hand: ``w * sum |x|^3`` over the query entities and relations."""
    from mmkgc.pipeline import build_model, load_data

    weight = 0.01
    cfg = parse_config({"seed": 4, "dataset": SYNTHETIC,
                        "model": {"scorer": "distmult", "dim": 8, "reciprocal": True},
                        "training": {"loop": "one_to_n", "loss": "bce", "label_smoothing": 0.0, "batch_size": 32,
                                     "regularizer": "n3", "regularizer_weight": weight}})
    data = load_data(cfg)
    model = build_model(cfg, data)
    loop = loop_resolver.make(cfg.training.loop, model=model, triples=data.triples, training=cfg.training,
                              generator=torch.Generator().manual_seed(0), device=torch.device("cpu"))
    (entities, relations, tail, labels), factor = next(iter(loop.local_batches()))
    assert factor == 1.0 and bool(tail.all())  # reciprocal: every query is a tail query
    loss, terms = loop.batch_loss(entities, relations, tail, labels)
    queries = torch.stack([entities, relations, torch.zeros_like(entities)], 1)
    logits = model.score_t(queries, model.entities(None))
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.float())
    ents, rels = model.entities(None)[entities], model.relations(relations)
    n3 = weight * (ents.abs() ** 3).sum() / entities.shape[0] + weight * (rels.abs() ** 3).sum() / entities.shape[0]
    assert terms == {}
    assert float(loss.detach()) == pytest.approx(float((bce + n3).detach()), rel=1e-5)
    assert float(n3.detach()) > 1e-4 * float(bce.detach())  # the regulariser is part of the comparison


def _fake_trainer(**state):
    saved = []
    model = torch.nn.Linear(1, 1)
    trainer = SimpleNamespace(best_metric=None, best_epoch=None, bad_validations=0, epoch=0, _best_state=None,
                              training_seconds=0.0, model=model, save=saved.append, **state)
    return trainer, saved


def test_early_stopping_selects_the_best_and_stops_after_patience():
    trainer, saved = _fake_trainer()
    stopper = EarlyStopping(patience=2)
    decisions = []
    for epoch, value in enumerate([0.1, 0.3, 0.3, 0.25, 0.2], start=1):
        trainer.epoch = epoch
        stopper.on_validation(trainer, None, value, {})
        decisions.append(stopper.stop_after_epoch(trainer, {}))
    # 0.3 at epoch 2 is best; an equal value is no improvement; two bad validations (3, 4) stop after epoch 4
    assert (trainer.best_metric, trainer.best_epoch) == (0.3, 2)
    assert saved == ["best", "best"]
    assert decisions == [None, None, None, "early_stopping", "early_stopping"]
    assert EarlyStopping(patience=None).stop_after_epoch(SimpleNamespace(bad_validations=99), {}) is None


def test_time_budget_deadline_and_stops():
    budget = TimeBudget(minutes=2)  # 120 s
    trainer = SimpleNamespace(training_seconds=100.0)
    assert budget.stop_before_epoch(trainer) is None
    assert budget.epoch_deadline(trainer, clock_start=1000.0) == pytest.approx(1020.0)
    assert budget.stop_after_epoch(trainer, {"partial": False}) is None
    assert budget.stop_after_epoch(trainer, {"partial": True}) == "time_budget"
    trainer.training_seconds = 120.0
    assert budget.stop_before_epoch(trainer) == "time_budget"


class Recorder(TrainingCallback):
    """Records the hooks called; stops the run after epoch ``stop_at``."""

    def __init__(self, stop_at: int):
        self.events: list[tuple] = []
        self.stop_at = stop_at

    def on_epoch_start(self, trainer, num_batches):
        self.events.append(("start", trainer.epoch, num_batches))

    def on_batch_end(self, trainer, batches_done, mean_loss):
        self.events.append(("batch", batches_done))

    def on_validation(self, trainer, result, value, record):
        self.events.append(("valid", trainer.epoch, round(value, 6), trainer.best_epoch))

    def on_epoch_end(self, trainer, record):
        self.events.append(("end", record["epoch"], len(trainer.history)))

    def stop_after_epoch(self, trainer, record):
        return "custom" if trainer.epoch >= self.stop_at else None


def test_user_callback_sees_every_hook_in_order_and_can_stop(tmp_path):
    from mmkgc.pipeline import build_model, load_data
    from mmkgc.training.trainer import Trainer

    cfg = _config(epochs=5)
    data = load_data(cfg)
    recorder = Recorder(stop_at=2)
    trainer = Trainer(build_model(cfg, data), data.triples, cfg.training, cfg.evaluation, seed=cfg.seed,
                      run_dir=tmp_path, callbacks=[recorder])
    summary = trainer.train()
    n = len(trainer.batcher)
    assert n >= 2
    assert summary.stopped_because == "custom" and summary.epochs_completed == 2
    values = [trainer.history[i]["valid"][cfg.evaluation.metric] for i in range(2)]
    expected = []
    for epoch in (1, 2):
        expected += [("start", epoch - 1, n)] + [("batch", i) for i in range(1, n + 1)]
        best = 1 if epoch == 1 or values[1] <= values[0] else 2
        # the user's callback runs after the default ones: selection has already happened
        expected += [("valid", epoch, round(values[epoch - 1], 6), best), ("end", epoch, epoch)]
    assert recorder.events == expected
    # the default checkpoint callback wrote "last" for the final epoch before the stop
    import json

    assert json.loads((tmp_path / "checkpoints" / "last" / "state.json").read_text())["epoch"] == 2
