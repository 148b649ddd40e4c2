"""What the ranks of a DDP run (gloo, 2 CPU processes) must agree on: a non-finite training loss (or auxiliary-step
loss) on one rank stops every rank promptly with the same error, and the logged per-epoch loss terms are the mean over the ranks.

Before this was fixed, the rank whose loss was NaN raised alone and the other one waited in the next gradient
all-reduce until the process group's timeout (30 minutes by default; 30 s in this test, whose run then fails the
"prompt" and "same error" checks), and the logged terms were rank 0's own.
"""

from __future__ import annotations

import json
import os
import socket
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch

#: the process group's collective timeout in the workers; a hang shows up as a RuntimeError after it
GROUP_TIMEOUT_S = 30
#: the poisoned runs must end well before that (each trains a few steps of a tiny model)
PROMPT_S = 15

BASE = {
    "seed": 3,
    "dataset": {"synthetic": {"num_entities": 120, "num_relations": 4, "seed": 1}},
    "model": {"scorer": "distmult", "dim": 8},
    "training": {"epochs": 1, "batch_size": 64, "num_negatives": 4, "lr": 0.05},
    "evaluation": {"every": 1, "patience": None, "batch_size": 50},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(fn, args: tuple, nprocs: int = 2, timeout: float = 240.0) -> None:
    """``torch.multiprocessing.spawn`` that gives up (killing the children) after ``timeout`` seconds."""
    import torch.multiprocessing as mp

    ctx = mp.spawn(fn, args=args, nprocs=nprocs, join=False)
    deadline = time.monotonic() + timeout
    try:
        while not ctx.join(timeout=max(0.1, deadline - time.monotonic())):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"the {nprocs} processes did not finish in {timeout} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()


def init_group(rank: int, world: int, port: int) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=GROUP_TIMEOUT_S))


def _trainer(raw: dict, **kwargs):
    from mmkgc.config import parse_config
    from mmkgc.pipeline import build_model, load_data
    from mmkgc.training.trainer import Trainer

    cfg = parse_config(raw)
    data = load_data(cfg)
    torch.manual_seed(cfg.seed)
    return Trainer(build_model(cfg, data), data.triples, cfg.training, cfg.evaluation, seed=cfg.seed,
                   device="cpu", **kwargs)


def _poisoned_run(rank: int, sync_every: int) -> dict:
    """Train BASE with rank 1's second batch loss NaN (a constant added: the parameters stay finite)."""
    trainer = _trainer(json.loads(json.dumps(BASE)))
    trainer.sync_every = sync_every
    calls = {"n": 0}
    batch_loss = trainer.loop.batch_loss

    def poisoned(*tensors):
        calls["n"] += 1
        loss, terms = batch_loss(*tensors)
        return (loss + float("nan"), terms) if rank == 1 and calls["n"] == 2 else (loss, terms)

    trainer.loop.batch_loss = poisoned
    start = time.monotonic()
    try:
        trainer.train()
        outcome = {"error": None, "message": None}
    except Exception as err:  # noqa: BLE001 - the test compares what each rank raised
        outcome = {"error": type(err).__name__, "message": str(err)}
    return {**outcome, "seconds": time.monotonic() - start, "batches": len(trainer.batcher)}


def _poisoned_aux_run(rank: int) -> dict:
    """One epoch of a tiny IMVIA with rank 1's second CLUB-estimator loss NaN (the auxiliary step, whose
    gradients are averaged outside DDP)."""
    from test_distributed import _aux_config

    cfg = _aux_config("imvia")
    cfg = cfg.model_copy(update={"training": cfg.training.model_copy(update={"epochs": 1})})
    from mmkgc.pipeline import build_model, load_data
    from mmkgc.training.trainer import Trainer

    data = load_data(cfg)
    torch.manual_seed(cfg.seed)
    trainer = Trainer(build_model(cfg, data), data.triples, cfg.training, cfg.evaluation, seed=cfg.seed,
                      device="cpu")
    (aux,) = trainer.aux_steps
    calls = {"n": 0}
    loss = aux.loss

    def poisoned(*tensors):
        calls["n"] += 1
        value = loss(*tensors)
        return value + float("nan") if rank == 1 and calls["n"] == 2 else value

    aux.loss = poisoned
    start = time.monotonic()
    try:
        trainer.train()
        outcome = {"error": None, "message": None}
    except Exception as err:  # noqa: BLE001 - the test compares what each rank raised
        outcome = {"error": type(err).__name__, "message": str(err)}
    return {**outcome, "seconds": time.monotonic() - start, "batches": len(trainer.batcher), "name": aux.name}


def _imvia_terms_run(out: Path, rank: int) -> None:
    """2 epochs of a tiny IMVIA (terms of the main loss and of the CLUB-estimator step); records the terms each
    rank computed, step by step, independently of the trainer's epoch reduction."""
    from test_distributed import _aux_config

    cfg = _aux_config("imvia")
    from mmkgc.pipeline import build_model, load_data
    from mmkgc.training.trainer import Trainer

    data = load_data(cfg)
    torch.manual_seed(cfg.seed)
    trainer = Trainer(build_model(cfg, data), data.triples, cfg.training, cfg.evaluation, seed=cfg.seed,
                      device="cpu")
    seen: list[tuple[int, str, float]] = []  # (epoch, term, value) of every step of this rank
    batch_loss = trainer.loop.batch_loss

    def recording(*tensors):
        loss, terms = batch_loss(*tensors)
        seen.extend((trainer.epoch, k, float(v)) for k, v in terms.items())
        return loss, terms

    trainer.loop.batch_loss = recording
    for aux in trainer.aux_steps:
        def aux_recording(*tensors, _step=aux.step, **kw):
            values = _step(*tensors, **kw)
            seen.extend((trainer.epoch, k, float(v)) for k, v in values.items())
            return values
        aux.step = aux_recording
    trainer.train()
    (out / f"terms{rank}.json").write_text(json.dumps({"seen": seen, "history": trainer.history,
                                                       "batches": len(trainer.batcher)}))


def _worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    init_group(rank, world, port)
    try:
        results = {f"sync{k}": _poisoned_run(rank, k) for k in (1, 3)}
        results["aux"] = _poisoned_aux_run(rank)
        (Path(out) / f"poison{rank}.json").write_text(json.dumps(results))
        _imvia_terms_run(Path(out), rank)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_agreement(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp_agree")
    spawn(_worker, (2, free_port(), str(out)), timeout=4 * GROUP_TIMEOUT_S + 120)
    return out


def _assert_every_rank_stopped_with(ranks: list[dict], expected: str) -> None:
    """Every rank raised FloatingPointError with ``expected`` as its message, promptly."""
    for rank, result in enumerate(ranks):
        assert result["error"] == "FloatingPointError", (rank, result)
        assert result["message"] == expected, (rank, result)
        assert result["seconds"] < PROMPT_S, (rank, result)


@pytest.mark.parametrize("sync_every", [1, 3])
def test_a_nan_loss_on_one_rank_stops_every_rank_with_the_same_error(ddp_agreement, sync_every):
    """sync_every 1 (the CPU default): checked before the step is applied; 3 (as on a GPU, every 25): checked when
    the pending losses are read, two steps later, naming the step that went bad."""
    ranks = [json.loads((ddp_agreement / f"poison{r}.json").read_text())[f"sync{sync_every}"] for r in (0, 1)]
    assert ranks[0]["batches"] >= 3  # the poisoned step (index 1) is not the last one
    expected = ("training loss became nan on rank 1 of 2 at epoch 1, step 1; lower the learning rate or check "
                "the features")
    _assert_every_rank_stopped_with(ranks, expected)


def test_a_nan_auxiliary_loss_on_one_rank_stops_every_rank(ddp_agreement):
    """The auxiliary step's loss is read with every rank after the step (one process reads it before)."""
    ranks = [json.loads((ddp_agreement / f"poison{r}.json").read_text())["aux"] for r in (0, 1)]
    assert ranks[0]["batches"] >= 3
    expected = (f"auxiliary step {ranks[0]['name']!r}: loss became nan on rank 1 of 2 at epoch 1, step 1; lower "
                "the learning rate or check the features")
    _assert_every_rank_stopped_with(ranks, expected)


def test_logged_terms_are_the_mean_over_ranks(ddp_agreement):
    runs = [json.loads((ddp_agreement / f"terms{r}.json").read_text()) for r in (0, 1)]
    batches = runs[0]["batches"]
    assert batches >= 2
    logged = runs[0]["history"]
    assert [r["epoch"] for r in logged] == [1, 2]
    assert [r["terms"] for r in runs[1]["history"]] == [r["terms"] for r in logged]  # the same on every rank
    for epoch, record in enumerate(logged):
        per_rank = []
        for run in runs:  # each rank's own epoch mean of every term: sum over its steps / steps
            sums: dict[str, float] = {}
            for e, key, value in run["seen"]:
                if e == epoch:
                    sums[key] = sums.get(key, 0.0) + value
            per_rank.append({k: v / batches for k, v in sums.items()})
        assert set(record["terms"]) == set(per_rank[0]) == set(per_rank[1])
        assert {"club_estimator", "mi"} <= set(record["terms"])  # an auxiliary step's term and a main-loss term
        for key, value in record["terms"].items():
            mean = (per_rank[0][key] + per_rank[1][key]) / 2
            assert value == pytest.approx(mean, rel=1e-9, abs=1e-12), (epoch, key)
            # the ranks' own values differ, so the mean is not rank 0's value by accident
            a, b = per_rank[0][key], per_rank[1][key]  # (1e3 times the comparison's tolerance apart)
            assert abs(a - b) > 1e-6 * max(abs(a), abs(b)), (epoch, key, a, b)


# ------------------------------------------------------------------------------------------ single process
def test_single_process_helpers_leave_values_alone():
    from mmkgc.distributed import mean_over_ranks, raise_if_nonfinite

    assert mean_over_ranks({"b": 2.0, "a": 1}) == {"b": 2.0, "a": 1.0}
    raise_if_nonfinite([0.5, 1e30], 1, 0)  # finite: nothing happens
    with pytest.raises(FloatingPointError, match=r"^training loss became -inf at epoch 2, step 7; lower"):
        raise_if_nonfinite([0.5, float("-inf"), float("nan")], 2, 6)
