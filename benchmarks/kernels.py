"""Speed of the compiled CPU kernels (``src/mmkgc/nn/kernels``) on DB15K shapes, each call through its public function.

One torch thread, CPU seconds (``time.process_time``), median of ``--repeats`` after one warm-up call (which also
builds the kernels).  Parts:

* ``rotate_all``: RotatE all-entity tail scores, 256 queries x 12,842 entities, d = 250 complex coordinates
  (``pairwise_complex_l1_distance``, the evaluation hot path);
* ``transe_l1_all``: TransE-L1 all-entity scores, 256 x 12,842, d = 500 (``pairwise_l1_distance``);
* ``gathered_mixture``: distances of 65,536 negatives to relation-conditioned mixtures of 2 modality vectors,
  forward + backward (``gathered_mixture_l1_distance``, NativE training);
* ``gated_pairs``: AFME's rank-32 gate + attention over 61,000 distinct (entity, relation) pairs x 2 modalities,
  forward + backward (``gated_pair_mixtures``, AFME training);
* ``mixture_table``: the fused table of 12,842 entities in the transposed layout (``mixture_table_transposed``).

The functions exist under the same names before and after the kernels moved to real source files, so the same script
compares two checkouts side by side::

    for src in /work/main/src src; do OMP_NUM_THREADS=1 PYTHONPATH=$src python benchmarks/kernels.py; done
"""

from __future__ import annotations

import argparse
import json

import torch
from fused_floors import timed  # same timing: median CPU seconds after a warm-up run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--entities", type=int, default=12842)
    p.add_argument("--pairs", type=int, default=61000)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from mmkgc.nn.fusion import RelationGate, TanhAttentionFusion, gated_pair_mixtures
    from mmkgc.nn.scorers import (
        gathered_mixture_l1_distance,
        mixture_table_transposed,
        pairwise_complex_l1_distance,
        pairwise_l1_distance,
        scorer_kernel_available,
    )

    if not scorer_kernel_available():
        raise SystemExit("the compiled kernels are not available (MMKGC_NO_COMPILE set, or no compiler)")
    torch.manual_seed(0)
    n, d = args.entities, 500
    results = {}
    with torch.no_grad():
        q, x = torch.randn(256, d), torch.randn(n, d)
        results["rotate_all"] = timed(lambda: pairwise_complex_l1_distance(q, x, 12.0), args.repeats)
        results["transe_l1_all"] = timed(lambda: pairwise_l1_distance(q, x, 0.0), args.repeats)
        comp, beta = torch.randn(n, 2, d), torch.softmax(torch.randn(n, 2), -1)
        results["mixture_table"] = timed(lambda: mixture_table_transposed(comp, beta), args.repeats)

    queries = torch.randn(2048, d, requires_grad=True)
    mixtures = torch.randn(n, 2, d, requires_grad=True)
    weights = torch.softmax(torch.randn(65536, 2), -1).requires_grad_(True)
    qi, ei = torch.randint(0, 2048, (65536,)), torch.randint(0, n, (65536,))
    results["gathered_mixture"] = timed(
        lambda: gathered_mixture_l1_distance(queries, qi, mixtures, weights, ei, True).sum().backward(), args.repeats)

    gate = RelationGate(d, 237, rank=32)
    fusion = TanhAttentionFusion(d, 2, relation_temperature=True, num_relations=237, confidence="l2")
    comp = torch.randn(n, 2, d, requires_grad=True)
    ent, rel = torch.randint(0, n, (args.pairs,)), torch.randint(0, 237, (args.pairs,))
    present = torch.ones(args.pairs, 2, dtype=torch.bool)
    results["gated_pairs"] = timed(
        lambda: gated_pair_mixtures(gate, fusion, comp, ent, rel, present)[0].sum().backward(), args.repeats)
    for name, value in results.items():
        print(f"{name:18s} {value:.4f} CPU s")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
