"""Measure a defect of OpenKE's C++ negative sampler (``mmkgc/base/Random.h`` + ``Base.cpp``, used unchanged by
AdaMF-MAT and NativE): run in a prepared copy of the official checkout (``benchmarks/parity.py --check-sampler``
prepares it and runs this script there, in its own process, because the official package is also called
``mmkgc``).

OpenKE draws every random number as ``randd(id) % x`` from a per-thread 64-bit linear congruential generator
(``s <- s * 25214903917 + 11 mod 2^64``), whose lowest bit alternates at every call.  Each thread makes an odd
number of calls per positive (1 + 2K), so the positive's index ``i`` in the sorted, de-duplicated train list and
the "gap index" ``tmp`` of each of its corrupting entities (the rank of the entity among the entities that are not
a known answer of the kept pair; ``corrupt_head``/``corrupt_tail`` draw ``tmp = rand_max(id, N - n_known)``) come
from calls of the same parity.  When both ``trainTotal`` and ``N - n_known`` are even, ``tmp`` therefore always has
the parity of ``i``: that positive only ever sees half of its candidate negatives, the same half for the whole run.

Prints one JSON object: counts of negatives by (modulus even/odd, tmp parity equal to i's parity or not).
"""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    batches = int(argv[0]) if argv else 20
    negatives = int(argv[1]) if len(argv) > 1 else 16
    sys.path.insert(0, str(Path.cwd()))
    from mmkgc.data.TrainDataLoader import TrainDataLoader  # the official package (cwd is the official copy)

    path = "./benchmarks/DB15K/"
    loader = TrainDataLoader(in_path=path, batch_size=1024, threads=8, sampling_mode="normal", bern_flag=1,
                             filter_flag=1, neg_ent=negatives, neg_rel=0)
    rows = [tuple(map(int, line.split())) for line in Path(path, "train2id.txt").read_text().splitlines()[1:]]
    train = sorted({(h, r, t) for h, t, r in rows})  # OpenKE: sort by (h, r, t), then de-duplicate
    index = {x: i for i, x in enumerate(train)}
    tails: dict[tuple[int, int], list[int]] = collections.defaultdict(list)
    heads: dict[tuple[int, int], list[int]] = collections.defaultdict(list)
    for h, r, t in train:
        tails[(h, r)].append(t)
        heads[(r, t)].append(h)
    n, b = loader.get_ent_tot(), loader.get_batch_size()
    counts = collections.Counter()
    batch_iter = iter(loader)
    for _ in range(batches):
        d = next(batch_iter)
        bh, bt, br = d["batch_h"], d["batch_t"], d["batch_r"]
        for p in range(b):
            h, r, t = int(bh[p]), int(br[p]), int(bt[p])
            i = index[(h, r, t)]
            for k in range(negatives):
                j = b * (k + 1) + p
                if int(bh[j]) == h and int(bt[j]) != t:
                    known, e = tails[(h, r)], int(bt[j])
                else:
                    known, e = heads[(r, t)], int(bh[j])
                tmp = e - sum(1 for x in known if x < e)
                key = ("modulus_even" if (n - len(known)) % 2 == 0 else "modulus_odd",
                       "same_parity" if tmp % 2 == i % 2 else "other_parity")
                counts["/".join(key)] += 1
    print(json.dumps({"train_triples": len(train), "entities": n, "batches": batches, "negatives": negatives,
                      "counts": dict(sorted(counts.items()))}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
