"""CPU seconds of one model step alone (``score_positives_and_negatives`` + backward) for a config, with the code on
``PYTHONPATH``: a narrower, less noisy check than ``method_speed.py`` when only the model's scoring code changed.

Random batches of the config's size (``training.batch_size`` positives drawn from train, ``training.num_negatives``
uniform negatives, head or tail corrupted with probability 1/2; fixed seed, so two trees see the same batches), one
torch thread; prints one JSON line with the median and minimum CPU seconds (``time.process_time``) of ``--steps``
steps after one warm-up step.  Interleave two trees on a loaded machine, e.g.::

    for round in 1 2 3; do for tree in $PWD /tmp/base; do
        PYTHONPATH=$tree/src python benchmarks/model_step_speed.py configs/db15k/native_text.yaml --steps 8
    done; done
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config")
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from mmkgc.config import load_config
    from mmkgc.pipeline import build_model, load_data

    cfg = load_config(args.config)
    data = load_data(cfg)
    torch.manual_seed(0)
    model = build_model(cfg, data).train()
    g = torch.Generator().manual_seed(0)
    train = data.triples.train
    b, k, n = cfg.training.batch_size, cfg.training.num_negatives, data.triples.num_entities
    times = []
    for i in range(args.steps + 1):
        pos = train[torch.randint(0, train.shape[0], (b,), generator=g)]
        neg = torch.randint(0, n, (b, k), generator=g)
        tail = torch.rand(b, k, generator=g) < 0.5
        t0 = time.process_time()
        p, q = model.score_positives_and_negatives(pos, neg, tail)
        (p.sum() - q.mean()).backward()
        model.zero_grad(set_to_none=True)
        if i:  # the first step warms caches and compiles kernels
            times.append(time.process_time() - t0)
    times.sort()
    print(json.dumps({"config": args.config, "median": times[len(times) // 2], "min": times[0],
                      "steps": args.steps}))


if __name__ == "__main__":
    main()
