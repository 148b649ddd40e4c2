"""Distributed (DDP, gloo, 2 CPU processes) training and evaluation against a single process; scale options.

Tolerance of the training comparison: with ``distributed_negatives: replicated`` both runs see the same global
positive batches and the same negatives, each rank scales its mean loss by ``n_rank * world / n`` and DDP
averages the gradients, so the update is mathematically the single-process one.  What differs is floating-point
summation order (two per-rank means combined by an all-reduce instead of one mean over the batch, and embedding
gradients accumulated in another order), about 1e-7 relative per step.  Adam amplifies such differences only
slowly over the few dozen steps here: per-epoch losses are compared with a relative tolerance of 1e-5 and the
final filtered metrics with an absolute tolerance of 1e-3 (observed: loss differences ~1e-8, identical metrics).
Ranks of the distributed *evaluation* are integer counts and must be identical, bit for bit.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch

from mmkgc.config import parse_config
from mmkgc.errors import ConfigError

BASE = {
    "seed": 3,
    "dataset": {"synthetic": {"num_entities": 300, "num_relations": 6, "seed": 1}},
    "model": {"scorer": "distmult", "dim": 16},
    "training": {"epochs": 3, "batch_size": 257, "num_negatives": 8, "lr": 0.05,
                 "distributed_negatives": "replicated"},
    "evaluation": {"every": 1, "patience": None, "batch_size": 50},
}
SAMPLED_BLOCK = 32  # small blocks so both ranks get queries in the sampled evaluation


def _config(epochs: int = 3, **training):
    data = json.loads(json.dumps(BASE))
    data["training"].update(epochs=epochs, **training)
    return parse_config(data)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ranks_payload(result) -> dict[str, torch.Tensor]:
    ranks = result.ranks
    return {f"{side}_{what}": getattr(ranks.side(side), what).clone()
            for side in ("head", "tail") for what in ("optimistic", "pessimistic", "num_candidates")}


def _worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    import mmkgc.evaluation.sampled as sampled
    from mmkgc.evaluation.metrics import evaluate
    from mmkgc.pipeline import build_model, load_data, run_experiment

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    sampled.SAMPLE_BLOCK = SAMPLED_BLOCK
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        cfg = _config()
        data = load_data(cfg)
        model = build_model(cfg, data).eval()
        full = evaluate(model.score_fn(), data.triples, split="test", batch_size=17)
        samp = evaluate(model.score_fn(), data.triples, split="test", sampled_candidates=20, seed=5)
        if rank == 0:
            torch.save({"full": _ranks_payload(full), "sampled": _ranks_payload(samp)}, Path(out) / "ranks.pt")
        # DDP training for 2 of the 3 epochs; the parent resumes it in a single process
        run_experiment(_config(epochs=2), Path(out) / "ddp", device="cpu", log=lambda line: None)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    return out


def test_distributed_evaluation_gives_the_single_process_ranks(ddp_run, monkeypatch):
    import mmkgc.evaluation.sampled as sampled
    from mmkgc.evaluation.metrics import evaluate
    from mmkgc.pipeline import build_model, load_data

    monkeypatch.setattr(sampled, "SAMPLE_BLOCK", SAMPLED_BLOCK)
    cfg = _config()
    data = load_data(cfg)
    model = build_model(cfg, data).eval()
    gathered = torch.load(ddp_run / "ranks.pt", weights_only=True)
    full = evaluate(model.score_fn(), data.triples, split="test", batch_size=64)
    samp = evaluate(model.score_fn(), data.triples, split="test", sampled_candidates=20, seed=5)
    assert samp.protocol == "sampled" and full.protocol == "full"
    for name, single in (("full", full), ("sampled", samp)):
        expected = _ranks_payload(single)
        assert expected.keys() == gathered[name].keys()
        for key, value in expected.items():
            assert torch.equal(value, gathered[name][key]), f"{name} {key} differs"
    assert int(samp.ranks.side("tail").num_candidates.max()) == 21


def test_ddp_training_matches_single_process_and_resumes_in_one_process(ddp_run, tmp_path):
    from mmkgc.pipeline import run_experiment

    single = run_experiment(_config(epochs=3), tmp_path / "single", device="cpu", log=lambda line: None)
    single_log = [json.loads(line) for line in (tmp_path / "single" / "metrics.jsonl").read_text().splitlines()]
    ddp_log = [json.loads(line) for line in (ddp_run / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in ddp_log] == [1, 2]  # rank 0 alone wrote the log
    assert json.loads((ddp_run / "ddp" / "checkpoints" / "last" / "state.json").read_text())["world_size"] == 2
    for a, b in zip(single_log, ddp_log):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        for k, v in a["valid"].items():
            assert b["valid"][k] == pytest.approx(v, abs=1e-3)
    # the model learnt something, so the comparison is not between two untrained models
    assert single_log[-1]["loss"] < single_log[0]["loss"] - 0.05

    # a checkpoint written by 2 processes continues in 1 process to the same result as 3 single-process epochs
    resumed = run_experiment(_config(epochs=3), ddp_run / "ddp", resume=True, device="cpu", log=lambda line: None)
    resumed_log = [json.loads(line) for line in (ddp_run / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in resumed_log] == [1, 2, 3]
    assert resumed_log[-1]["loss"] == pytest.approx(single_log[-1]["loss"], rel=1e-5)
    for split in ("valid", "test"):
        for metric, value in single["summary"][split]["realistic"].items():
            assert resumed["summary"][split]["realistic"][metric] == pytest.approx(value, abs=1e-3), (split, metric)


# ------------------------------------------------------------------------------------------ single-process parts
def test_shard_bounds_cover_the_queries_once():
    from mmkgc.distributed import batch_shard, shard_bounds

    for n in (0, 1, 5, 17, 1024, 1500):
        for world in (1, 2, 3, 4):
            for align in (1, 4, 32):
                parts = [shard_bounds(n, r, world, align) for r in range(world)]
                covered = [i for start, stop in parts for i in range(start, stop)]
                assert covered == list(range(n))
                assert all(start % align == 0 for start, stop in parts if stop > start)
    # loss factors: factor / world == n_rank / n, so the DDP average of the scaled means is the global mean
    for n, world in ((257, 2), (10, 3), (1, 2)):
        shards = [batch_shard(n, r, world) for r in range(world)]
        real = [(start, stop, factor) for start, stop, factor in shards if factor > 0]
        assert sum(stop - start for start, stop, _ in real) == n
        for start, stop, factor in real:
            assert factor / world == pytest.approx((stop - start) / n)
        assert all(stop > start for start, stop, _ in shards)  # every rank has a row to run (padding has factor 0)
    with pytest.raises(ValueError):
        shard_bounds(10, 2, 2)


def test_sampled_ranks_are_never_mixed_with_full_ranks():
    from mmkgc.evaluation.ranking import RankResult, SideRanks

    q = torch.tensor([[0, 0, 1]])
    side = SideRanks(torch.tensor([1]), torch.tensor([1]), torch.tensor([5]))
    full = RankResult(q, {"tail": side}, num_entities=10)
    sampled = RankResult(q, {"tail": side}, num_entities=10, sampled_candidates=4)
    with pytest.raises(ValueError, match="different protocols"):
        RankResult.concatenate([full, sampled])


def test_sampled_evaluation_is_reported_as_sampled_and_excludes_known_answers():
    from mmkgc.evaluation.metrics import evaluate
    from mmkgc.evaluation.sampled import sample_candidates
    from mmkgc.pipeline import build_model, load_data

    cfg = _config()
    data = load_data(cfg)
    triples = data.triples
    model = build_model(cfg, data).eval()
    result = evaluate(model.score_fn(), triples, split="test", sampled_candidates=7)
    assert result.to_dict()["protocol"] == "sampled" and result.to_dict()["sampled_candidates"] == 7
    assert "SAMPLED" in result.to_markdown()
    drawn = sample_candidates(triples.test, "tail", 50, triples.num_entities, triples.filter_index,
                              torch.Generator().manual_seed(0))
    candidates = torch.stack([triples.test[:, 0:1].expand_as(drawn), triples.test[:, 1:2].expand_as(drawn), drawn], -1)
    assert not bool(triples.filter_index.contains(candidates.reshape(-1, 3)).any())
    # the candidate scores are the model's scores of those triples
    scores = model.score_fn().score_candidates(triples.test[:4], "head", drawn[:4])
    heads = torch.stack([drawn[:4], triples.test[:4, 1:2].expand(4, 50), triples.test[:4, 2:3].expand(4, 50)], -1)
    assert torch.allclose(scores, model.score_hrt(heads).detach(), atol=1e-5)


def test_auto_chunking_gives_the_same_ranks():
    from mmkgc.evaluation.metrics import evaluate
    from mmkgc.evaluation.ranking import auto_max_memory_bytes
    from mmkgc.pipeline import build_model, load_data

    assert auto_max_memory_bytes("cpu") >= 16 * 2**20
    cfg = _config()
    data = load_data(cfg)
    model = build_model(cfg, data).eval()
    a = evaluate(model.score_fn(), data.triples, split="test", batch_size="auto")
    b = evaluate(model.score_fn(), data.triples, split="test", batch_size=7)
    assert torch.equal(a.ranks.side("head").optimistic, b.ranks.side("head").optimistic)
    assert torch.equal(a.ranks.side("tail").pessimistic, b.ranks.side("tail").pessimistic)


def test_sparse_updates_touch_only_the_batch_rows(tmp_path):
    from mmkgc.pipeline import build_model, load_data
    from mmkgc.training.sparse import SparseDenseOptimizer
    from mmkgc.training.trainer import Trainer

    cfg = _config(epochs=1, sparse=True, batch_size=64)
    data = load_data(cfg)
    model = build_model(cfg, data)
    trainer = Trainer(model, data.triples, cfg.training, cfg.evaluation, seed=cfg.seed, run_dir=tmp_path)
    assert isinstance(trainer.optimizer, SparseDenseOptimizer)
    before = model.entities.embedding.weight.detach().clone()
    positives = next(iter(trainer.batcher))
    loss = trainer._negative_sampling_step(positives)
    trainer.optimizer.zero_grad()
    loss.backward()
    assert model.entities.embedding.weight.grad.is_sparse
    trainer.optimizer.step()
    changed = (model.entities.embedding.weight.detach() != before).any(1)
    assert bool(changed.any()) and not bool(changed.all())
    summary = trainer.train()
    assert summary.epochs_completed == 1
    trainer2 = Trainer(build_model(cfg, data), data.triples, cfg.training, cfg.evaluation, seed=cfg.seed,
                       run_dir=tmp_path)
    assert trainer2.resume()  # the two-optimiser state round-trips through the checkpoint


def test_precision_options(tmp_path):
    from mmkgc.pipeline import build_model, load_data
    from mmkgc.training.trainer import Trainer

    cfg = _config(epochs=1, precision="fp16")
    data = load_data(cfg)
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        Trainer(build_model(cfg, data), data.triples, cfg.training, cfg.evaluation, device="cpu")
    cfg = _config(epochs=2, precision="bf16")
    model = build_model(cfg, data)
    summary = Trainer(model, data.triples, cfg.training, cfg.evaluation, device="cpu").train()
    assert summary.history[-1]["loss"] < summary.history[0]["loss"]
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast never changes the weights


def test_sparse_config_errors():
    data = json.loads(json.dumps(BASE))
    data["training"]["sparse"] = True
    data["model"].update(representation="concat", modalities=[{"name": "text"}])
    with pytest.raises(ConfigError, match="sparse"):
        parse_config(data)
    data = json.loads(json.dumps(BASE))
    data["training"].update(sparse=True, weight_decay=0.1)
    with pytest.raises(ConfigError, match="weight_decay"):
        parse_config(data)


# ------------------------------------------------------------------------------------------ auxiliary steps under DDP
#
# AdaMF-MAT, NativE and AFME (generator / discriminator steps) and IMVIA (CLUB estimator step) train under DDP: the
# main step through DDP, every auxiliary step with its loss scaled by the rank's share of the global batch and its
# gradients averaged over the ranks (mmkgc.distributed.average_gradients).  With ``distributed_negatives:
# replicated`` two processes then take the single-process updates, up to floating-point summation order.
#
# What the comparison needs from the data and the models: every loss must be a mean over the rows of the batch, and
# no random draw may depend on the batch size (each rank draws from its own copy of the global stream).  So both runs
# (1 and 2 processes) turn off the random draws that do: the generators' noise z (zeros, as in their noise-free
# completion), IMVIA's gate noise, dropout, batch norm, the InfoNCE alignment term, and the random permutation of
# the CLUB bound (the identity: the bound is then exactly 0 and only the estimator step trains; the expert pair is
# still drawn, the same number of times in both runs).  AFME's generator and discriminator terms are means over the
# batch's *distinct* entities; they equal row means when every training triple has two entities no other triple
# has and every entity has every modality, so the adversarial runs train on such a matching of the synthetic train
# split.  Tolerances: losses relative 1e-5, parameters and the auxiliary Adam moments absolute 1e-5 (see ADAM_EPS).

AUX_EPOCHS = 2
#: Adam's epsilon in both runs.  Some gradients are zero in exact arithmetic but not in floating point (the key
#: biases of attention: softmax ignores a shift of the logits), and Adam's first steps move such an entry by
#: ``lr * g / (|g| + eps)``, about ``lr`` whatever its size: a rounding difference then becomes a difference of
#: ``lr``.  With ``eps = 1e-3`` a gradient at rounding level (< 1e-7) moves its parameter by < ``1e-4 lr``, while
#: real gradients still train every group.
ADAM_EPS = 1e-3
AUX_METHODS = ("mat", "wgan_gp", "moien", "imvia")


def _aux_config(method: str):
    if method == "imvia":
        return parse_config({
            "seed": 1,
            "dataset": {"synthetic": {"num_entities": 150, "num_relations": 3, "seed": 0, "text_dim": 16,
                                      "visual_dim": 16}},
            "model": {"method": "imvia", "dim": 8, "reciprocal": True,
                      "modalities": [{"name": "text"}, {"name": "visual"}],
                      "imvia": {"relation_dim": 4, "input_dropout": 0.0, "hidden_dropout1": 0.0,
                                "hidden_dropout2": 0.0, "batch_norm": False, "noisy_gating": False,
                                "align_weight": 0.0, "mi_weight": 0.1}},
            "training": {"loop": "one_to_n", "loss": "bce", "epochs": AUX_EPOCHS, "batch_size": 64, "lr": 0.01},
            "evaluation": {"every": 1, "patience": None, "batch_size": 64},
        })
    from test_adversarial import adversarial_raw

    raw = adversarial_raw(method, epochs=AUX_EPOCHS, batch_size=16, lr=0.01, distributed_negatives="replicated")
    raw["dataset"]["synthetic"].update(missing_text=0.0, missing_visual=0.0)
    raw["training"]["adversarial"].update(generator_lr=0.01)
    if method == "wgan_gp":
        raw["training"]["adversarial"]["gp_weight"] = 0.0  # interpolation weights are per-rank draws
    raw["evaluation"]["batch_size"] = 64
    return parse_config(raw)


def _deterministic_auxiliaries() -> None:
    """Turn off the random draws whose values depend on the rank's batch size (see the comment above)."""
    from mmkgc.nn import adversarial, mutual_information

    adversarial._Generator._z = lambda self, x, noise: x.new_zeros((x.shape[0], self.noise_dim))

    def upper_bound(self, x, y, generator=None):
        mu, logvar = self._moments(x)
        inv = torch.exp(-logvar)
        positive = -((mu - y) ** 2 * inv).sum(-1)
        return 0.5 * (positive - positive).mean()

    mutual_information.CLUBEstimator.upper_bound = upper_bound


def _matching(train: torch.Tensor) -> torch.Tensor:
    """The train triples, in order, whose two entities differ and appear in no earlier kept triple."""
    seen: set[int] = set()
    keep = []
    for i, (h, _, t) in enumerate(train.tolist()):
        if h != t and h not in seen and t not in seen:
            seen.update((h, t))
            keep.append(i)
    return train[torch.tensor(keep)]


def _aux_train(method: str) -> dict[str, torch.Tensor]:
    """Train ``method`` for AUX_EPOCHS epochs in this process (group) and return its losses and parameters."""
    import dataclasses

    from mmkgc.pipeline import build_model, load_data
    from mmkgc.training.trainer import Trainer

    cfg = _aux_config(method)
    data = load_data(cfg)
    triples = data.triples
    if method != "imvia":
        triples = dataclasses.replace(triples, train=_matching(triples.train))
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, data)
    trainer = Trainer(model, triples, cfg.training, cfg.evaluation, seed=cfg.seed, device="cpu")
    assert trainer.aux_steps, method
    for optimizer in (trainer.optimizer, *(step.optimizer for step in trainer.aux_steps)):
        for group in optimizer.param_groups:
            group["eps"] = ADAM_EPS
    trainer.train()
    out = {"loss": torch.tensor([r["loss"] for r in trainer.history], dtype=torch.float64),
           "batches": torch.tensor(len(trainer.batcher))}
    out.update({f"param.{k}": v.detach().clone() for k, v in model.named_parameters()})
    for step in trainer.aux_steps:  # the auxiliary optimisers' moments, which only the averaged gradients give
        for i, state in step.optimizer.state_dict()["state"].items():
            out[f"aux.{step.name}.{i}.exp_avg"] = state["exp_avg"].clone()
    return out


def _aux_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    _deterministic_auxiliaries()
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for method in AUX_METHODS:
            result = _aux_train(method)
            if rank == 0:
                torch.save(result, Path(out) / f"{method}.pt")
        # the whole pipeline under DDP, diagnostics included (rank 0 evaluates the decoders alone)
        from mmkgc.pipeline import run_experiment

        run_experiment(_aux_config("imvia").model_copy(update={"name": "imvia-ddp"}), Path(out) / "imvia-run",
                       device="cpu", log=lambda line: None)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_aux_run(tmp_path_factory):
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("ddp_aux")
    mp.spawn(_aux_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    return out


@pytest.mark.parametrize("method", AUX_METHODS)
def test_auxiliary_steps_under_ddp_match_one_process(ddp_aux_run, method, monkeypatch):
    from mmkgc.nn import adversarial, mutual_information

    monkeypatch.setattr(adversarial._Generator, "_z", adversarial._Generator._z)
    monkeypatch.setattr(mutual_information.CLUBEstimator, "upper_bound", mutual_information.CLUBEstimator.upper_bound)
    _deterministic_auxiliaries()  # undone by monkeypatch after the test
    torch.set_num_threads(1)
    single = _aux_train(method)
    ddp = torch.load(ddp_aux_run / f"{method}.pt", weights_only=True)
    assert single.keys() == ddp.keys()
    assert int(single["batches"]) >= 3  # several optimisation steps per epoch
    assert torch.allclose(ddp["loss"], single["loss"], rtol=1e-5, atol=0), (ddp["loss"], single["loss"])
    aux_keys = [k for k in single if k.startswith("aux.")]
    assert aux_keys, "no auxiliary optimiser state"
    for key in (k for k in single if k.startswith(("param.", "aux."))):
        diff = (ddp[key] - single[key]).abs().max().item()
        assert diff <= 1e-5, (method, key, diff)
    # the auxiliary groups did train (their Adam moments are not zero), so the comparison is not vacuous
    assert max(single[k].abs().max().item() for k in aux_keys) > 1e-6


def test_imvia_pipeline_under_ddp_writes_the_one_process_decoder_metrics(ddp_aux_run):
    """Rank 0 writes the per-decoder diagnostics of a 2-process run; they are the metrics one process computes
    for the saved model (the diagnostics' evaluation is not sharded: the other rank does not take part)."""
    from mmkgc.evaluation.metrics import evaluate
    from mmkgc.pipeline import load_run

    run = ddp_aux_run / "imvia-run"
    decoders = json.loads((run / "imvia_decoders.json").read_text())["branches"]
    assert json.loads((run / "metrics.json").read_text())["name"] == "imvia-ddp"
    _, data, model = load_run(run, device="cpu")
    model.eval()
    for i, name in enumerate([*model.branch_names, "fused"]):
        fn = model.branch_score_fn(None if name == "fused" else i, probabilities=name == "fused")
        single = evaluate(fn, data.triples, split="test", policies=("realistic",), per_relation=False)
        for metric in ("mrr", "hits@1", "hits@10"):
            saved = decoders[name]["metrics"]["realistic"]["both"][metric]
            assert saved == pytest.approx(single.get(metric, side="both", policy="realistic"), abs=1e-6), (name, metric)


def test_imvia_ddp_checkpoint_resumes_in_one_process_like_one_process_epochs(ddp_aux_run, tmp_path, monkeypatch):
    """The 2-process IMVIA run's checkpoint (main and CLUB-estimator optimiser states, written by rank 0) continues
    in one process to the loss of the same number of single-process epochs."""
    import shutil

    from mmkgc.nn import adversarial, mutual_information
    from mmkgc.pipeline import run_experiment

    monkeypatch.setattr(adversarial._Generator, "_z", adversarial._Generator._z)
    monkeypatch.setattr(mutual_information.CLUBEstimator, "upper_bound", mutual_information.CLUBEstimator.upper_bound)
    _deterministic_auxiliaries()
    torch.set_num_threads(1)
    cfg = _aux_config("imvia").model_copy(update={"name": "imvia-ddp"})
    longer = cfg.model_copy(update={"training": cfg.training.model_copy(update={"epochs": AUX_EPOCHS + 1})})
    run = tmp_path / "resumed"
    shutil.copytree(ddp_aux_run / "imvia-run", run)
    assert "club_estimator" in (run / "checkpoints" / "last" / "state.json").read_text()
    run_experiment(longer, run, resume=True, device="cpu", log=lambda line: None)
    run_experiment(longer, tmp_path / "single", device="cpu", log=lambda line: None)
    resumed = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    single = [json.loads(line) for line in (tmp_path / "single" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in resumed] == [1, 2, 3]
    for a, b in zip(single, resumed):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
    # logged terms are the mean over the ranks under DDP (test_ddp_agreement); the resumed epoch ran in one process
    assert resumed[-1]["terms"]["club_estimator"] == pytest.approx(single[-1]["terms"]["club_estimator"], rel=1e-5)
    assert resumed[-1]["terms"]["club_estimator"] != single[0]["terms"]["club_estimator"]
