"""Training speed and peak memory of every DB15K method config, optionally side by side with another commit.

For each config of ``configs/db15k/`` (default: rotate, rotate_text, adamf_text, adamf_mat_text, native_text,
afme_text, imvia_text) a fresh subprocess builds the data, model and trainer exactly as ``mmkgc train`` does
(:func:`mmkgc.pipeline.load_data`, :func:`mmkgc.pipeline.build_model`, :class:`mmkgc.training.trainer.Trainer`) and
runs ``--warmup`` + ``--steps`` training steps of the trainer's own batches (main step, backward, optimiser step and
the auxiliary generator/estimator steps), with ``--threads`` torch threads (default 1).  It reports

* ``s_per_batch``: median wall seconds of the timed steps (and min / max);
* ``cpu_s_per_batch``: median CPU seconds (``time.process_time``) of the timed steps: with one thread, what a step
  costs without the time the process waited for a core on a loaded machine; ``cpu_s_per_phase``: the same split
  into main forward, backward, optimiser step and each auxiliary step;
* ``s_per_epoch``: ``s_per_batch`` x batches per epoch;
* ``peak_rss_gib``: ``ru_maxrss`` of the subprocess (data + features + model + training);
* ``test_eval_s`` / ``test_eval_cpu_s`` (``--eval``: rotate, native_text and afme_text; ``--eval-all``: every
  config): wall / CPU seconds of the filtered test evaluation (``mmkgc.evaluation.metrics.evaluate`` on ``model.score_fn()``) after the timed steps.

Each worker first applies what the ``mmkgc`` command line sets for its process (:func:`apply_cli_process_settings`:
``keep_freed_memory`` where the tree has it), so it measures what ``mmkgc train`` does with that tree.

``--baseline-commit C`` extracts commit ``C`` under ``/tmp`` (``git archive``, reused if present) and runs the
same worker there (this file, with ``PYTHONPATH=<extracted tree>/src``, the current tree's configs), interleaved
config by config with the current tree so both see the same machine load; it prints both and the speed-up.

Text features are encoded once (all-MiniLM-L6-v2 over the entity names) and read from the mmkgc feature cache
afterwards.  Example (the run in docs/results/method_speed.json)::

    OMP_NUM_THREADS=1 python benchmarks/method_speed.py --steps 8 --eval --baseline-commit 50898de \\
        --output docs/results/method_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIGS = ["rotate", "rotate_text", "adamf_text", "adamf_mat_text", "native_text", "afme_text", "imvia_text"]
EVAL_DEFAULT = {"rotate", "native_text", "afme_text"}


def apply_cli_process_settings() -> bool | None:
    """What the ``mmkgc`` command line sets for its process before any work, applied to this worker so that it
    measures what ``mmkgc train`` does with the tree under test: :func:`mmkgc.allocator.keep_freed_memory` where the
    tree has it (large per-batch temporaries stay in the heap).  Returns whether the allocator setting was applied,
    ``None`` for a tree without it (its command line used glibc's defaults; e.g. commit 50898de)."""
    try:
        from mmkgc.allocator import keep_freed_memory
    except ImportError:
        return None
    return keep_freed_memory()


def worker(config: Path, steps: int, warmup: int, threads: int, run_eval: bool) -> dict:
    """Measure one config in this process; returns the JSON record."""
    allocator = apply_cli_process_settings()
    import torch

    torch.set_num_threads(threads)
    from mmkgc.config import load_config
    from mmkgc.pipeline import build_model, load_data
    from mmkgc.training.trainer import Trainer

    cfg = load_config(config)
    t0 = time.perf_counter()
    data = load_data(cfg)
    model = build_model(cfg, data)
    build_s = time.perf_counter() - t0
    trainer = Trainer(model, data.triples, cfg.training, cfg.evaluation, seed=cfg.seed, device="cpu")
    model.train()
    times, cpu_times = [], []
    phases: dict[str, list[float]] = {}
    batches = trainer._local_batches()
    for i in range(warmup + steps):
        tensors, factor = next(batches)
        start, cpu_start = time.perf_counter(), time.process_time()
        marks = [("start", cpu_start)]
        trainer.optimizer.zero_grad(set_to_none=True)
        loss = trainer._step_loss(*tensors)
        marks.append(("forward", time.process_time()))
        (loss * factor).backward()
        marks.append(("backward", time.process_time()))
        trainer.optimizer.step()
        marks.append(("optimizer", time.process_time()))
        for aux in trainer.aux_steps:
            aux.step(*tensors)
            marks.append((f"aux_{getattr(aux, 'name', 'step')}", time.process_time()))
        trainer._terms = {}
        if i >= warmup:
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
            for (_, t0), (name, t1) in zip(marks, marks[1:]):
                phases.setdefault(name, []).append(t1 - t0)
    record = {
        "config": config.stem,
        "s_per_batch": statistics.median(times),
        "s_per_batch_min": min(times),
        "s_per_batch_max": max(times),
        "cpu_s_per_batch": statistics.median(cpu_times),
        "cpu_s_per_phase": {name: statistics.median(v) for name, v in phases.items()},
        "batches_per_epoch": len(trainer.batcher),
        "build_s": build_s,
        "loss": float(loss.detach()),
        "keep_freed_memory": allocator,
    }
    record["s_per_epoch"] = record["s_per_batch"] * record["batches_per_epoch"]
    if run_eval:
        from mmkgc.evaluation.metrics import evaluate

        model.eval()
        start, cpu_start = time.perf_counter(), time.process_time()
        result = evaluate(model.score_fn(), data.triples, split="test")
        record["test_eval_s"] = time.perf_counter() - start
        record["test_eval_cpu_s"] = time.process_time() - cpu_start
        metrics = result.to_dict()["metrics"]
        record["test_mrr_after_steps"] = metrics.get("realistic", {}).get("both", {}).get("mrr")
    record["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    record["load_average_1min_at_end"] = os.getloadavg()[0]
    return record


def ensure_worktree(commit: str) -> Path:
    """The files of ``commit`` under /tmp (``git archive``, extracted once and reused; the repository's worktree list
    is not touched)."""
    full = subprocess.run(["git", "-C", str(ROOT), "rev-parse", commit], capture_output=True, text=True,
                          check=True).stdout.strip()
    path = Path("/tmp") / f"mmkgc-baseline-{full[:12]}"
    if not (path / "src" / "mmkgc").exists():
        tmp = Path(tempfile.mkdtemp(prefix=path.name + ".", dir="/tmp"))
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", full], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
        if path.exists():  # a half-extracted earlier attempt
            shutil.rmtree(path)
        tmp.rename(path)
    return path


def default_data_dir() -> str | None:
    """``MMKGC_DATA_DIR`` if set, else ``shared/datasets`` beside the repository (or beside its main checkout when
    this is a git worktree), else ``None`` (the registry's cache)."""
    if os.environ.get("MMKGC_DATA_DIR"):
        return os.environ["MMKGC_DATA_DIR"]
    candidates = [ROOT.parent / "shared" / "datasets"]
    try:
        common = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--path-format=absolute", "--git-common-dir"],
                                capture_output=True, text=True, check=True).stdout.strip()
        candidates.append(Path(common).parent.parent / "shared" / "datasets")
    except (OSError, subprocess.CalledProcessError):
        pass
    return next((str(c) for c in candidates if c.is_dir()), None)


def run_one(src: Path, config: Path, args, run_eval: bool) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    if args.data_dir:
        env["MMKGC_DATA_DIR"] = args.data_dir
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(config), "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--threads", str(args.threads)] + (["--eval"] if run_eval else [])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"config": config.stem, "error": proc.stderr.strip()[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fmt(rec: dict | None, key: str, spec: str) -> str:
    if rec is None or key not in rec or rec[key] is None:
        return "-"
    return format(rec[key], spec)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", nargs="*", default=DEFAULT_CONFIGS, help="names in configs/db15k/")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--eval", action="store_true", help="also time the test evaluation of rotate/native/afme")
    p.add_argument("--eval-all", action="store_true", help="time the test evaluation of every config")
    p.add_argument("--baseline-commit", default=None)
    p.add_argument("--output", default=None, help="write the JSON records here")
    p.add_argument("--data-dir", default=None, help="local dataset copies (default: MMKGC_DATA_DIR or "
                   "shared/datasets beside the repository)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(Path(args.worker), args.steps, args.warmup, args.threads, args.eval)))
        return 0

    args.data_dir = args.data_dir or default_data_dir()
    trees = {"current": ROOT / "src"}
    if args.baseline_commit:
        trees["baseline"] = ensure_worktree(args.baseline_commit) / "src"
    records: dict[str, dict[str, dict]] = {name: {} for name in trees}
    for name in args.configs:
        config = ROOT / "configs" / "db15k" / f"{name}.yaml"
        run_eval = args.eval_all or (args.eval and name in EVAL_DEFAULT)
        for tree, src in trees.items():
            rec = run_one(src, config, args, run_eval)
            records[tree][name] = rec
            print(f"{tree:8s} {name:15s} " + (rec["error"].splitlines()[-1] if "error" in rec else
                  f"{rec['s_per_batch']:.3f} s/batch  {rec.get('cpu_s_per_batch', float('nan')):.3f} CPU s/batch  "
                  f"{rec['peak_rss_gib']:.2f} GiB"
                  + (f"  eval {rec['test_eval_s']:.1f} s ({rec.get('test_eval_cpu_s', float('nan')):.1f} CPU s)"
                     if "test_eval_s" in rec else "") + f"  load {rec['load_average_1min_at_end']:.1f}"), flush=True)

    print()
    header = "| config | s/batch | CPU s/batch | s/epoch | x rotate | peak RSS GiB | test eval s |"
    if "baseline" in records:
        header += (" baseline s/batch | baseline CPU s/batch | speed-up | CPU speed-up | baseline RSS GiB | "
                   "baseline eval s |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    rotate = records["current"].get("rotate", {}).get("s_per_batch")
    for name in args.configs:
        cur = records["current"][name]
        ratio = f"{cur['s_per_batch'] / rotate:.1f}" if rotate and "s_per_batch" in cur else "-"
        row = (f"| {name} | {fmt(cur, 's_per_batch', '.3f')} | {fmt(cur, 'cpu_s_per_batch', '.3f')} | "
               f"{fmt(cur, 's_per_epoch', '.0f')} | {ratio} | "
               f"{fmt(cur, 'peak_rss_gib', '.2f')} | {fmt(cur, 'test_eval_s', '.1f')} |")
        if "baseline" in records:
            base = records["baseline"][name]
            speed = (f"{base['s_per_batch'] / cur['s_per_batch']:.2f}"
                     if "s_per_batch" in base and "s_per_batch" in cur else "-")
            cpu_speed = (f"{base['cpu_s_per_batch'] / cur['cpu_s_per_batch']:.2f}"
                         if "cpu_s_per_batch" in base and "cpu_s_per_batch" in cur else "-")
            row += (f" {fmt(base, 's_per_batch', '.3f')} | {fmt(base, 'cpu_s_per_batch', '.3f')} | {speed} | "
                    f"{cpu_speed} | {fmt(base, 'peak_rss_gib', '.2f')} | {fmt(base, 'test_eval_s', '.1f')} |")
        print(row)
    if args.output:
        out = {
            "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
            "machine": {"platform": platform.platform(), "processor": platform.processor(),
                        "cpus": os.cpu_count(), "load_average_at_end": os.getloadavg()},
            "threads": args.threads, "steps": args.steps, "warmup": args.warmup,
            "baseline_commit": args.baseline_commit,
            "records": records,
        }
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(args.output).with_suffix(".tmp")
        tmp.write_text(json.dumps(out, indent=2))
        tmp.replace(args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
