"""Arithmetic floors of the fused methods' training step on DB15K: the unavoidable dense work, timed alone.

Each part is the arithmetic a step of ``configs/db15k/native_text.yaml`` / ``afme_text.yaml`` cannot skip without
changing the method, run on random tensors of the sizes a DB15K batch has (1,024 positives x 64 negatives, one torch
thread, CPU seconds = ``time.process_time``, median of ``--repeats``):

* ``adapter``: the text MLP adapter (384 -> 500 -> 500, ReLU) forward + backward (weights only: the features are
  frozen) over the ~12.8k distinct entities of a batch (NativE and AFME);
* ``gate_gemms``: the seven products of AFME's rank-32 gate over the ~61k distinct (entity, relation) pairs x 2
  modalities of a batch (forward ``V a``, ``U h``; backward recomputation of ``U h``, ``g_zᵀ h``, ``g_z U``,
  ``g_hᵀ a``, ``g_h V``), in row chunks of 1,024 as the training path runs them -- the gate without its
  element-wise work;
* ``self_attention``: one modality self-attention layer (D = 500, 4 heads) forward + backward over the ~1.6k
  distinct entities x 2 tokens of a batch; an AFME step runs about five such layers (MoIEn generator: 2 layers
  forward in the main step and backward in its own step; discriminator: real + fake in its step, fake in the
  generator's);
* ``gathered_distance``: RotatE's distances of the 65,536 negatives to their queries, forward + backward (the
  gathered kernel every sLCWA RotatE step runs).

Example (the run in docs/benchmarks.md)::

    OMP_NUM_THREADS=1 python benchmarks/fused_floors.py --repeats 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn


def timed(fn, repeats: int) -> float:
    """Median CPU seconds of ``fn()`` over ``repeats`` runs after one warm-up run."""
    fn()
    out = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        out.append(time.process_time() - start)
    return statistics.median(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--entities", type=int, default=12767, help="distinct entities of a batch")
    p.add_argument("--pairs", type=int, default=61000, help="distinct (entity, relation) pairs of a batch (AFME)")
    p.add_argument("--positives", type=int, default=1567, help="distinct heads/tails of a batch (MoIEn)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from mmkgc.allocator import keep_freed_memory
    from mmkgc.nn.fusion import self_attention
    from mmkgc.nn.scorers import gathered_l1_distance

    keep_freed_memory()
    torch.manual_seed(0)
    d, k = 500, 32
    results = {}

    adapter = nn.Sequential(nn.Linear(384, d), nn.ReLU(), nn.Linear(d, d))
    feats = torch.randn(args.entities, 384)
    results["adapter"] = timed(lambda: adapter(feats).sum().backward(), args.repeats)

    rows = 2 * args.pairs
    a = torch.randn(rows, d)
    first, second = torch.randn(k, d), torch.randn(d, k)
    h = torch.randn(rows, k)
    gz = torch.randn(rows, d)
    out_k, out_d = torch.empty(1024, k), torch.empty(1024, d)
    g_first, g_second = torch.zeros(k, d), torch.zeros(d, k)

    def gemms():
        for s in range(0, rows, 1024):
            ab, hb, gb = a[s:s + 1024], h[s:s + 1024], gz[s:s + 1024]
            n = ab.shape[0]
            torch.mm(ab, first.t(), out=out_k[:n])
            torch.mm(hb, second.t(), out=out_d[:n])
            torch.mm(hb, second.t(), out=out_d[:n])
            g_second.addmm_(gb.t(), hb)
            torch.mm(gb, second, out=out_k[:n])
            g_first.addmm_(out_k[:n].t(), ab)
            torch.mm(out_k[:n], first, out=out_d[:n])

    results["gate_gemms"] = timed(gemms, args.repeats)

    attn = nn.MultiheadAttention(d, 4, batch_first=True)
    tokens = torch.randn(args.positives, 2, d, requires_grad=True)
    mask = torch.zeros(args.positives, 2, dtype=torch.bool)
    results["self_attention"] = timed(lambda: self_attention(attn, tokens, mask)[0].sum().backward(), args.repeats)

    q = torch.randn(2048, d, requires_grad=True)
    e = torch.randn(args.entities, d, requires_grad=True)
    qi = torch.randint(0, 2048, (65536,))
    ei = torch.randint(0, args.entities, (65536,))
    results["gathered_distance"] = timed(lambda: gathered_l1_distance(q, qi, e, ei, True).sum().backward(),
                                         args.repeats)
    for name, value in results.items():
        print(f"{name:18s} {value:.3f} CPU s")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
