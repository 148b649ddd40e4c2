"""Synthetic scale benchmark: a 1M-entity, 10M-triple KG with a 64-d text feature table, on the CPU.

The graph is generated here (not by :func:`mmkgc.data.synthetic.make_synthetic_mmkg`, whose nearest-neighbour
construction is meant for thousands of entities): every entity has one of ``C`` hidden clusters; a triple
``(h, r, t)`` draws ``h`` and ``r`` uniformly and ``t`` uniformly from cluster ``(a_r * c_h + b_r) mod C``, so the
links are predictable from the clusters; the text feature of an entity is its cluster's random 64-d centroid plus
Gaussian noise (the "random but correlated" table).  Valid and test triples are held out at random.

What it runs (one process, CPU):

1. one training epoch (or the first ``--train-fraction`` of the epoch's batches) of DistMult with the ``concat``
   representation (structural table + projected text), 16 Bernoulli negatives per positive filtered against
   train, self-adversarial loss, Adam;
2. sampled-candidate evaluation (``--sampled`` candidates per query, filtered) on the ``--eval-queries`` test
   triples (the validation after the epoch is sampled the same way on the ``--valid`` triples);
3. full filtered ranking against all entities, chunked by :func:`auto_max_memory_bytes` (``batch_size: auto``),
   on the first ``--full-queries`` test triples.

It prints and writes (``--output``) a JSON record: sizes, seconds per phase, training throughput (positive
triples per second), and the peak resident memory from ``resource.getrusage(RUSAGE_SELF).ru_maxrss``.

Example (the run reported in docs/benchmarks_scale.md)::

    nice -n 19 python benchmarks/scale.py --output scale.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time

import numpy as np
import torch


def peak_rss_gib() -> float:
    """Peak resident set size of this process so far (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def make_graph(num_entities: int, num_triples: int, num_relations: int, num_clusters: int, text_dim: int,
               num_valid: int, num_test: int, seed: int):
    """``(TripleSet, text features [N, d] float32)`` of the clustered synthetic graph described above."""
    from mmkgc.data.triples import TripleSet

    rng = np.random.default_rng(seed)
    cluster = rng.integers(num_clusters, size=num_entities)
    members = np.argsort(cluster, kind="stable")
    counts = np.bincount(cluster, minlength=num_clusters)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    a = rng.integers(1, num_clusters, size=num_relations)
    b = rng.integers(num_clusters, size=num_relations)
    h = rng.integers(num_entities, size=num_triples)
    r = rng.integers(num_relations, size=num_triples)
    target = (a[r] * cluster[h] + b[r]) % num_clusters
    t = members[starts[target] + (rng.random(num_triples) * counts[target]).astype(np.int64)]
    triples = torch.from_numpy(np.stack([h, r, t], 1).astype(np.int64))
    del h, r, t, target
    perm = torch.from_numpy(rng.permutation(num_triples))
    valid, test, train = perm[:num_valid], perm[num_valid:num_valid + num_test], perm[num_valid + num_test:]
    centroids = rng.standard_normal((num_clusters, text_dim)).astype(np.float32)
    text = centroids[cluster] + 0.5 * rng.standard_normal((num_entities, text_dim)).astype(np.float32)
    kg = TripleSet(triples[train], triples[valid], triples[test],
                   entity_labels=[f"e{i}" for i in range(num_entities)],
                   relation_labels=[f"r{i}" for i in range(num_relations)], name="scale-synthetic")
    return kg, torch.from_numpy(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entities", type=int, default=1_000_000)
    parser.add_argument("--triples", type=int, default=10_000_000)
    parser.add_argument("--relations", type=int, default=200)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--text-dim", type=int, default=64)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8192)
    parser.add_argument("--negatives", type=int, default=16)
    parser.add_argument("--train-fraction", type=float, default=1.0,
                        help="train on the first fraction of the epoch's batches (1.0 = the whole epoch)")
    parser.add_argument("--valid", type=int, default=1000, help="valid triples (sampled validation after the epoch)")
    parser.add_argument("--eval-queries", type=int, default=5000, help="test triples (sampled evaluation)")
    parser.add_argument("--sampled", type=int, default=1000)
    parser.add_argument("--full-queries", type=int, default=200)
    parser.add_argument("--representation", choices=("concat", "structure"), default="concat")
    parser.add_argument("--sparse", action="store_true", help="training.sparse (structure representation only)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from mmkgc.config import EvaluationConfig, TrainingConfig
    from mmkgc.evaluation.metrics import EvaluationResult, evaluate
    from mmkgc.evaluation.ranking import auto_max_memory_bytes, batch_size_for_memory, compute_ranks
    from mmkgc.features.store import FeatureTable
    from mmkgc.models.kge import EmbeddingRepresentation, KGEModel, MultimodalRepresentation
    from mmkgc.nn.scorers import build_scorer
    from mmkgc.training.sampling import TripleBatcher
    from mmkgc.training.trainer import Trainer

    record: dict = {"args": vars(args), "machine": {"cpus": torch.get_num_threads(), "platform": platform.platform(),
                                                    "python": platform.python_version(), "torch": torch.__version__}}
    t0 = time.perf_counter()
    kg, text = make_graph(args.entities, args.triples, args.relations, args.clusters, args.text_dim, args.valid,
                          args.eval_queries, args.seed)
    record["generate_seconds"] = time.perf_counter() - t0
    record["graph"] = {"entities": kg.num_entities, "relations": kg.num_relations, "train": int(kg.train.shape[0]),
                       "valid": int(kg.valid.shape[0]), "test": int(kg.test.shape[0])}
    print("graph", record["graph"], f"{record['generate_seconds']:.1f} s", flush=True)

    torch.manual_seed(args.seed)
    scorer = build_scorer("distmult", args.dim)
    if args.representation == "structure":
        rep = EmbeddingRepresentation(kg.num_entities, scorer.entity_dim, init=scorer.init_entity_, sparse=args.sparse)
    else:
        rep = MultimodalRepresentation(kg.num_entities, scorer.entity_dim,
                                       [FeatureTable(text, "text", torch.ones(kg.num_entities, dtype=torch.bool))],
                                       with_structure=True, init=scorer.init_entity_)
    model = KGEModel(kg.num_entities, kg.num_relations, scorer, rep)
    training = TrainingConfig(epochs=1, batch_size=args.batch_size, num_negatives=args.negatives, lr=1e-3,
                              loss="nssa", sparse=args.sparse)
    # validation of the training loop itself is sampled too (full ranking of 1M entities per epoch is the slow part)
    evaluation = EvaluationConfig(every=1, patience=None, split="valid", sampled_candidates=args.sampled)
    t0 = time.perf_counter()
    trainer = Trainer(model, kg, training, evaluation, seed=args.seed, log=lambda line: print(line, flush=True))
    num_batches = len(trainer.batcher)
    used = max(1, int(round(num_batches * args.train_fraction)))
    if used < num_batches:  # the first `used` batches of the same shuffled epoch
        order = torch.randperm(kg.train.shape[0], generator=torch.Generator().manual_seed(args.seed))
        trainer.batcher = TripleBatcher(kg.train[order[: used * args.batch_size]], args.batch_size,
                                        generator=trainer.generator)
    record["setup_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    summary = trainer.train()
    positives = min(used * args.batch_size, int(kg.train.shape[0]))
    epoch = summary.history[0]
    record["training"] = {"batches": used, "of_batches": num_batches, "positives": positives,
                          "epoch_seconds": epoch["seconds"], "triples_per_second": positives / epoch["seconds"],
                          "loss": epoch["loss"], "valid_sampled_mrr": epoch.get("valid", {}).get("mrr"),
                          "valid_seconds": epoch.get("valid_seconds"), "wall_seconds": time.perf_counter() - t0}
    record["peak_rss_gib_after_training"] = peak_rss_gib()
    print("training", record["training"], flush=True)

    model.eval()
    t0 = time.perf_counter()
    sampled = evaluate(model.score_fn(), kg, split="test", sampled_candidates=args.sampled, per_relation=False)
    record["sampled_eval"] = {"queries": args.eval_queries, "candidates": args.sampled, "protocol": sampled.protocol,
                              "mrr": sampled.get("mrr"), "hits@10": sampled.get("hits@10"),
                              "seconds": time.perf_counter() - t0}
    print("sampled evaluation", record["sampled_eval"], flush=True)
    t0 = time.perf_counter()
    score_fn = model.score_fn()
    budget = auto_max_memory_bytes(score_fn.device)
    ranks = compute_ranks(score_fn, kg.test[: args.full_queries], kg.filter_index, max_memory_bytes=budget)
    full = EvaluationResult.from_ranks(ranks, per_relation=False)
    record["full_eval"] = {"queries": args.full_queries, "protocol": full.protocol, "mrr": full.get("mrr"),
                           "chunk_rows": batch_size_for_memory(kg.num_entities, budget), "chunk_budget_bytes": budget,
                           "hits@10": full.get("hits@10"), "seconds": time.perf_counter() - t0}
    print("full evaluation", record["full_eval"], flush=True)
    record["peak_rss_gib"] = peak_rss_gib()
    print(json.dumps(record, indent=2))
    if args.output:
        from mmkgc.fileio import atomic_write_text

        atomic_write_text(args.output, json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
