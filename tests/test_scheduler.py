"""Learning-rate schedulers from torch.optim.lr_scheduler: config validation, the rates applied, checkpoint/resume."""

import json
from pathlib import Path

import pytest
import torch

from mmkgc.config import LR_SCHEDULERS, parse_config
from mmkgc.errors import ConfigError
from mmkgc.pipeline import run_experiment
from mmkgc.training.checkpoint import read_scheduler_state

SMALL = {"num_entities": 160, "num_relations": 5, "num_types": 5}


def _raw(epochs: int, scheduler: dict | None, **training) -> dict:
    return {
        "name": "sched", "seed": 5,
        "dataset": {"synthetic": {"seed": 2, **SMALL}},
        "model": {"scorer": "distmult", "dim": 8},
        "training": {"epochs": epochs, "batch_size": 128, "num_negatives": 4, "lr": 0.04, "scheduler": scheduler,
                     **training},
        "evaluation": {"every": 1, "patience": None, "batch_size": 64, "test": False},
    }


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_step_lr_rates_per_epoch_and_bit_identical_resume(tmp_path: Path):
    sched = {"name": "StepLR", "kwargs": {"step_size": 1, "gamma": 0.5}}
    run_experiment(parse_config(_raw(4, sched)), tmp_path / "full", device="cpu", log=lambda line: None)
    full = _records(tmp_path / "full")
    # the rate each epoch trained with: 0.04 halved after every epoch
    assert [r["lr"] for r in full] == pytest.approx([0.04, 0.02, 0.01, 0.005], rel=1e-12)

    run_experiment(parse_config(_raw(2, sched)), tmp_path / "split", device="cpu", log=lambda line: None)
    assert read_scheduler_state(tmp_path / "split" / "checkpoints" / "last")["last_epoch"] == 2
    run_experiment(parse_config(_raw(4, sched)), tmp_path / "split", resume=True, device="cpu", log=lambda line: None)
    split = _records(tmp_path / "split")
    assert [r["lr"] for r in split] == [r["lr"] for r in full]  # the schedule continued, not restarted
    assert [r["loss"] for r in split] == [r["loss"] for r in full]  # bit-identical
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "full" / "checkpoints" / "last" / "model.safetensors"))
    b = load_file(str(tmp_path / "split" / "checkpoints" / "last" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_unscheduled_run_is_unchanged_by_the_feature(tmp_path: Path):
    """No scheduler: no ``lr`` key, constant rate; a constant-factor scheduler (ConstantLR factor 1) trains the
    same weights as none, so the scheduler plumbing itself changes nothing."""
    run_experiment(parse_config(_raw(2, None)), tmp_path / "none", device="cpu", log=lambda line: None)
    same = {"name": "ConstantLR", "kwargs": {"factor": 1.0, "total_iters": 1}}
    run_experiment(parse_config(_raw(2, same)), tmp_path / "const", device="cpu", log=lambda line: None)
    none, const = _records(tmp_path / "none"), _records(tmp_path / "const")
    assert "lr" not in none[0] and [r["lr"] for r in const] == [0.04, 0.04]
    assert [r["loss"] for r in none] == [r["loss"] for r in const]


def test_step_interval_and_plateau(tmp_path: Path):
    # per-step LinearLR from factor 1 to 0 over 12 optimisation steps; ``lr`` is the rate an epoch starts with, so
    # epoch 2 starts after one epoch of steps: 0.04 * (1 - steps / 12)
    lin = {"name": "LinearLR", "kwargs": {"start_factor": 1.0, "end_factor": 0.0, "total_iters": 12},
           "interval": "step"}
    cfg = parse_config(_raw(2, lin, batch_size=256))
    run_experiment(cfg, tmp_path / "lin", device="cpu", log=lambda line: None)
    from mmkgc.pipeline import load_data

    steps = -(-load_data(cfg).triples.train.shape[0] // 256)
    assert 1 < steps < 12  # inside the schedule, so the value below is neither 0.04 nor 0
    records = _records(tmp_path / "lin")
    assert records[0]["lr"] == 0.04 and records[1]["lr"] == pytest.approx(0.04 * (1 - steps / 12), abs=1e-12)

    # ReduceLROnPlateau steps on the validation MRR (mode max by default): the first validation sets its best;
    # with patience 0 and an impossible threshold (+1000 %) every later one cuts the rate by 10
    plat = {"name": "ReduceLROnPlateau", "kwargs": {"factor": 0.1, "patience": 0, "threshold": 10.0}}
    run_experiment(parse_config(_raw(4, plat)), tmp_path / "plat", device="cpu", log=lambda line: None)
    assert [r["lr"] for r in _records(tmp_path / "plat")] == pytest.approx([0.04, 0.04, 0.004, 0.0004], rel=1e-9)


@pytest.mark.parametrize("name", LR_SCHEDULERS)
def test_every_listed_scheduler_checkpoints_without_pickle(tmp_path: Path, name: str):
    kwargs = {"ConstantLR": {}, "CosineAnnealingLR": {"T_max": 4}, "CosineAnnealingWarmRestarts": {"T_0": 2},
              "CyclicLR": {"base_lr": 0.01, "max_lr": 0.05, "cycle_momentum": False}, "ExponentialLR": {"gamma": 0.9},
              "LinearLR": {}, "MultiStepLR": {"milestones": [1]}, "OneCycleLR": {"max_lr": 0.05, "total_steps": 10},
              "PolynomialLR": {}, "ReduceLROnPlateau": {}, "StepLR": {"step_size": 1}}[name]
    interval = "step" if name in ("CyclicLR", "OneCycleLR") else "epoch"
    cfg = parse_config(_raw(1, {"name": name, "kwargs": kwargs, "interval": interval}))
    run_experiment(cfg, tmp_path / "r", device="cpu", log=lambda line: None)
    assert read_scheduler_state(tmp_path / "r" / "checkpoints" / "last") is not None  # read with weights_only


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="training.scheduler.*unknown scheduler 'StepLr'"):
        parse_config(_raw(1, {"name": "StepLr"}))
    with pytest.raises(ConfigError, match="StepLR has no argument.*step"):
        parse_config(_raw(1, {"name": "StepLR", "kwargs": {"step": 3}}))
    with pytest.raises(ConfigError, match="interval must be 'epoch'"):
        parse_config(_raw(1, {"name": "ReduceLROnPlateau", "interval": "step"}))
    cfg = parse_config(_raw(1, {"name": "MultiStepLR", "kwargs": {"milestones": 5}}))  # not a list
    from mmkgc.pipeline import build_model, load_data
    from mmkgc.training.trainer import Trainer

    data = load_data(cfg)
    with pytest.raises(ConfigError, match="training.scheduler: MultiStepLR"):
        Trainer(build_model(cfg, data), data.triples, cfg.training, cfg.evaluation)
