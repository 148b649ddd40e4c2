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
