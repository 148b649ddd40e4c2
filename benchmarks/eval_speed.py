"""Filtered test evaluation of DB15K configs, CPU seconds, side by side with another commit (issue 13's evaluation
targets: NativE <= 20 s, AFME <= 45 s, one thread).

For each config a fresh subprocess builds the data and the model exactly as ``mmkgc train`` does
(:func:`mmkgc.pipeline.load_data`, :func:`mmkgc.pipeline.build_model`, seed of the config, no training: the cost of
evaluation does not depend on the parameters' values), applies what the command line sets for its process
(``keep_freed_memory``), sets ``--threads`` torch threads and times
``mmkgc.evaluation.metrics.evaluate(model.score_fn(), triples, split="test")``: wall seconds and CPU seconds
(``time.process_time``; with one thread, the cost without the time spent waiting for a core).  It writes the
optimistic and pessimistic ranks of both sides to a ``.npy`` file, and the parent counts the ranks that differ
between the two trees.

``--baseline-commit C`` runs the same worker on the files of commit ``C`` (``git archive`` under ``/tmp``, as
``benchmarks/method_speed.py`` does), interleaved with the current tree round by round (``--rounds``, default 3), and
prints medians and the ratio.  Example (docs/benchmarks.md, "Test evaluation of NativE and AFME")::

    OMP_NUM_THREADS=1 python benchmarks/eval_speed.py --configs native_text afme_text rotate --rounds 3 \\
        --baseline-commit f633bf6 --output docs/results/eval_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from method_speed import ROOT, apply_cli_process_settings, default_data_dir, ensure_worktree  # noqa: E402


def worker(config: Path, threads: int, ranks_path: str | None) -> dict:
    """Build ``config``'s model and time its filtered test evaluation in this process; returns the JSON record."""
    allocator = apply_cli_process_settings()
    import torch

    torch.set_num_threads(threads)
    from mmkgc.config import load_config
    from mmkgc.evaluation.metrics import evaluate
    from mmkgc.pipeline import build_model, load_data

    cfg = load_config(config)
    data = load_data(cfg)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, data)
    model.eval()
    start, cpu_start = time.perf_counter(), time.process_time()
    result = evaluate(model.score_fn(), data.triples, split="test")
    record = {"config": config.stem, "eval_s": time.perf_counter() - start,
              "eval_cpu_s": time.process_time() - cpu_start, "keep_freed_memory": allocator,
              "load_average_1min_at_end": os.getloadavg()[0]}
    record["test_mrr"] = result.to_dict()["metrics"]["realistic"]["both"]["mrr"]
    if ranks_path:
        ranks = result.ranks
        np.save(ranks_path, np.stack([ranks.sides[s].optimistic.numpy() for s in ("head", "tail")]
                                     + [ranks.sides[s].pessimistic.numpy() for s in ("head", "tail")]))
    return record


def run_one(src: Path, config: Path, threads: int, data_dir: str | None, ranks_path: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if data_dir:
        env["MMKGC_DATA_DIR"] = data_dir
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(config), "--threads", str(threads),
           "--ranks", ranks_path]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"config": config.stem, "error": proc.stderr.strip()[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", nargs="*", default=["native_text", "afme_text", "rotate"],
                   help="names in configs/db15k/")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--baseline-commit", default=None)
    p.add_argument("--output", default=None, help="write the JSON records here")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--ranks", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(Path(args.worker), args.threads, args.ranks)))
        return 0
    data_dir = args.data_dir or default_data_dir()
    trees = {"current": ROOT / "src"}
    if args.baseline_commit:
        trees["baseline"] = ensure_worktree(args.baseline_commit) / "src"
    records: dict[str, dict[str, list[dict]]] = {t: {c: [] for c in args.configs} for t in trees}
    differing: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(args.rounds):
            for name in args.configs:
                config = ROOT / "configs" / "db15k" / f"{name}.yaml"
                for tree, src in trees.items():
                    rec = run_one(src, config, args.threads, data_dir, f"{tmp}/{tree}-{name}.npy")
                    records[tree][name].append(rec)
                    print(f"round {rnd + 1} {tree:8s} {name:12s} " + (rec["error"].splitlines()[-1] if "error" in rec
                          else f"{rec['eval_cpu_s']:.1f} CPU s  {rec['eval_s']:.1f} s wall  MRR {rec['test_mrr']:.6f}  "
                               f"load {rec['load_average_1min_at_end']:.1f}"), flush=True)
                if rnd == 0 and len(trees) == 2 and all(Path(f"{tmp}/{t}-{name}.npy").exists() for t in trees):
                    a, b = (np.load(f"{tmp}/{t}-{name}.npy", allow_pickle=False) for t in trees)
                    differing[name] = int((a != b).sum())
    print()
    print("| config | eval CPU s (median) | eval wall s | baseline CPU s | baseline wall s | CPU speed-up | "
          "ranks differing |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    summary = {}
    def med(tree: str, name: str, key: str) -> float | None:
        values = [r[key] for r in records.get(tree, {}).get(name, []) if key in r]
        return statistics.median(values) if values else None

    for name in args.configs:
        cur_cpu, cur_wall, base_cpu, base_wall = (med("current", name, "eval_cpu_s"), med("current", name, "eval_s"),
                                                  med("baseline", name, "eval_cpu_s"), med("baseline", name, "eval_s"))
        summary[name] = {"cpu_s": cur_cpu, "wall_s": cur_wall, "baseline_cpu_s": base_cpu, "baseline_wall_s": base_wall,
                         "ranks_differing": differing.get(name)}
        fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
        ratio = f"{base_cpu / cur_cpu:.2f}" if cur_cpu and base_cpu else "-"
        print(f"| {name} | {fmt(cur_cpu)} | {fmt(cur_wall)} | {fmt(base_cpu)} | {fmt(base_wall)} | {ratio} | "
              f"{differing.get(name, '-')} |")
    if args.output:
        Path(args.output).write_text(json.dumps({"command": " ".join(sys.argv), "baseline_commit": args.baseline_commit,
                                                 "summary": summary, "records": records}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
