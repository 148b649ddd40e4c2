"""PyKEEN 1.11 and mmkgc side by side on DB15K: seconds per training epoch and seconds for the filtered test
evaluation, with identical model and hyper-parameters.

Model: RotatE, d = 250 (complex), 32 negatives per positive (uniform head-or-tail corruption, unfiltered:
PyKEEN's ``basic`` sampler), batch 1024, self-adversarial sigmoid loss (NSSA, temperature 1, margin 9),
Adam lr 1e-3, both sides of the test triples filtered against train + valid + test.

Differences that cannot be removed: PyKEEN's RotatE distance is the Euclidean norm of the complex difference
vector, mmkgc's (like OpenKE/AdaMF/NativE) the sum of the complex moduli; the cost of both is one pass over
the same numbers.

PyKEEN's full evaluation takes about half an hour on this machine (1,702 s in anchors.md), so by default it is
run on a random subset of test triples and extrapolated linearly (evaluation cost is linear in the number of
queries); ``--pykeen-eval-triples 0`` runs the full set.  mmkgc always evaluates the full test set.

Usage::

    python benchmarks/pykeen_compare.py --data-dir ../shared/datasets --epochs 3 --pykeen-eval-triples 500 \
        --output docs/benchmarks/pykeen_compare.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

DIM = 250
NEGATIVES = 32
BATCH = 1024
MARGIN = 9.0
LR = 1e-3


def mmkgc_side(triples, epochs: int, eval_batch: int) -> dict:
    from mmkgc.evaluation.metrics import evaluate
    from mmkgc.models.kge import EmbeddingRepresentation, KGEModel
    from mmkgc.nn.scorers import build_scorer
    from mmkgc.losses import build_loss
    from mmkgc.training.sampling import TripleBatcher, UniformNegativeSampler

    torch.manual_seed(0)
    scorer = build_scorer("rotate", DIM, margin=MARGIN)
    rep = EmbeddingRepresentation(triples.num_entities, scorer.entity_dim, init=scorer.init_entity_)
    model = KGEModel(triples.num_entities, triples.num_relations, scorer, rep)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    gen = torch.Generator().manual_seed(0)
    batcher = TripleBatcher(triples.train, BATCH, generator=gen)
    sampler = UniformNegativeSampler(triples.num_entities, NEGATIVES, filtered_by=None, generator=gen)
    loss_fn = build_loss("nssa", adversarial_temperature=1.0)
    epoch_seconds = []
    for _ in range(epochs):
        model.train()
        start = time.perf_counter()
        for pos in batcher:
            sample = sampler.sample(pos)
            pos_scores, neg_scores = model.score_positives_and_negatives(pos, sample.entities, sample.tail_corrupted)
            loss = loss_fn(pos_scores, neg_scores)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        epoch_seconds.append(time.perf_counter() - start)
    model.eval()
    start = time.perf_counter()
    result = evaluate(model.score_fn(), triples, split="test", batch_size=eval_batch)
    eval_seconds = time.perf_counter() - start
    return {
        "epoch_seconds": epoch_seconds,
        "epoch_seconds_median": statistics.median(epoch_seconds),
        "eval_seconds": eval_seconds,
        "eval_queries": 2 * triples.test.shape[0],
        "test_mrr_realistic": result.get("mrr", side="both", policy="realistic"),
    }


def pykeen_side(triples, epochs: int, eval_triples: int, eval_batch: int) -> dict:
    from pykeen.evaluation import RankBasedEvaluator
    from pykeen.losses import NSSALoss
    from pykeen.models import RotatE
    from pykeen.training import SLCWATrainingLoop
    from pykeen.triples import CoreTriplesFactory

    def factory(x: torch.Tensor) -> CoreTriplesFactory:
        # PyKEEN stores (h, r, t) like mmkgc.
        return CoreTriplesFactory(mapped_triples=x, num_entities=triples.num_entities,
                                  num_relations=triples.num_relations)

    train = factory(triples.train)
    torch.manual_seed(0)
    model = RotatE(triples_factory=train, embedding_dim=DIM,
                   loss=NSSALoss(margin=MARGIN, adversarial_temperature=1.0), random_seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loop = SLCWATrainingLoop(model=model, triples_factory=train, optimizer=opt, negative_sampler="basic",
                             negative_sampler_kwargs={"num_negs_per_pos": NEGATIVES})
    epoch_seconds = []
    for i in range(epochs):
        start = time.perf_counter()
        # PyKEEN counts epochs across calls: without continue_training a second call with num_epochs=1 trains
        # nothing; with it, num_epochs is the total to reach.
        losses = loop.train(triples_factory=train, num_epochs=i + 1, batch_size=BATCH, use_tqdm=False,
                            use_tqdm_batch=False, continue_training=i > 0)
        epoch_seconds.append(time.perf_counter() - start)
        if len(losses) != i + 1:
            raise RuntimeError(f"PyKEEN trained {len(losses)} epochs in total, expected {i + 1}")
    test = triples.test
    if eval_triples and eval_triples < test.shape[0]:
        idx = torch.randperm(test.shape[0], generator=torch.Generator().manual_seed(0))[:eval_triples]
        test = test[idx]
    evaluator = RankBasedEvaluator(filtered=True)
    model.eval()
    start = time.perf_counter()
    evaluator.evaluate(model, mapped_triples=test, additional_filter_triples=[triples.train, triples.valid,
                                                                                triples.test],
                       batch_size=eval_batch, use_tqdm=False)
    measured = time.perf_counter() - start
    scale = triples.test.shape[0] / test.shape[0]
    return {
        "epoch_seconds": epoch_seconds,
        "epoch_seconds_median": statistics.median(epoch_seconds),
        "eval_seconds_measured": measured,
        "eval_triples_measured": int(test.shape[0]),
        "eval_seconds_full_estimate": measured * scale,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/datasets")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs timed per library (median reported)")
    parser.add_argument("--pykeen-eval-triples", type=int, default=500,
                        help="test triples PyKEEN evaluates (0 = all 9,902); its full time is extrapolated")
    parser.add_argument("--eval-batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from mmkgc.data.registry import load_dataset

    triples = load_dataset("DB15K", data_dir=args.data_dir)
    ours = mmkgc_side(triples, args.epochs, args.eval_batch)
    print(f"mmkgc : epoch {ours['epoch_seconds_median']:.2f} s (median of {args.epochs}), "
          f"full filtered test evaluation {ours['eval_seconds']:.2f} s", flush=True)
    theirs = pykeen_side(triples, args.epochs, args.pykeen_eval_triples, args.eval_batch)
    print(f"pykeen: epoch {theirs['epoch_seconds_median']:.2f} s (median of {args.epochs}), evaluation "
          f"{theirs['eval_seconds_measured']:.1f} s for {theirs['eval_triples_measured']} triples -> "
          f"{theirs['eval_seconds_full_estimate']:.0f} s estimated for all", flush=True)
    report = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "torch": torch.__version__, "threads": torch.get_num_threads()},
        "settings": {"dim": DIM, "negatives": NEGATIVES, "batch": BATCH, "margin": MARGIN, "lr": LR,
                     "epochs": args.epochs, "pykeen_eval_triples": args.pykeen_eval_triples},
        "mmkgc": ours,
        "pykeen": theirs,
        "ratios": {
            "training_epoch_pykeen_over_mmkgc": theirs["epoch_seconds_median"] / ours["epoch_seconds_median"],
            "evaluation_pykeen_over_mmkgc": theirs["eval_seconds_full_estimate"] / ours["eval_seconds"],
        },
    }
    print(json.dumps(report["ratios"], indent=2))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
