"""Training speed of RotatE on DB15K with ``OMP_WAIT_POLICY`` unset (the OpenMP runtime's default), ``ACTIVE``
and ``PASSIVE`` (docs/usage.md, "Threads on a shared machine"; results in docs/benchmarks.md, "OpenMP wait
policy").

Each run is ``mmkgc train configs/db15k/rotate.yaml`` with ``training.num_threads`` torch threads for a fixed
training-time budget (``--budget-seconds``; no test evaluation), started as a fresh process (the OpenMP wait
policy is read once, when the OpenMP runtime starts).  The speed is the number of optimisation steps divided by
the training seconds, both read from the run's last checkpoint, and is reported as seconds per full epoch
(``ceil(79,222 / batch_size)`` steps), so that a busy machine, where one epoch can take minutes, still gives a
number in a bounded time.  The three settings alternate ``--repeats`` times, so a change in the machine's load
affects all alike.  ``mmkgc`` sets ``GOMP_SPINCOUNT=10000`` itself unless ``OMP_WAIT_POLICY`` or
``GOMP_SPINCOUNT`` is set (give ``GOMP_SPINCOUNT`` in the environment to compare spin counts); an empty
``OMP_WAIT_POLICY`` gives the runtime's default.

Usage::

    python benchmarks/omp_wait_policy.py --data-dir ../shared/datasets --threads 2 --budget-seconds 45 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def one_run(policy: str, args: argparse.Namespace, work: Path, index: int) -> float:
    """Seconds per DB15K epoch (from steps per training second) of one fresh ``mmkgc train`` process."""
    run_dir = work / f"{policy}-{index}"
    # "default": an empty value, which mmkgc turns into an unset variable (the OpenMP runtime's default)
    env = dict(os.environ, OMP_WAIT_POLICY="" if policy == "default" else policy, OMP_NUM_THREADS=str(args.threads),
               MMKGC_HOME=str(work / "home"), CI="1")
    cmd = [sys.executable, "-m", "mmkgc", "train", str(REPO / "configs/db15k/rotate.yaml"), "--run-dir",
           str(run_dir), "--data-dir", str(args.data_dir), "--device", "cpu",
           "--set", "training.epochs=1000", "--set", f"training.num_threads={args.threads}",
           "--set", f"training.time_budget_minutes={args.budget_seconds / 60}",
           "--set", "evaluation.test=false", "--set", "evaluation.every=100000"]
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env)
    state = json.loads((run_dir / "checkpoints" / "last" / "state.json").read_text())
    config = (run_dir / "config.yaml").read_text()
    batch = int(next(line.split(":")[1] for line in config.splitlines() if line.strip().startswith("batch_size:")))
    steps_per_epoch = -(-79222 // batch)
    return steps_per_epoch * state["training_seconds"] / state["step"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True, help="directory holding DB15K/")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budget-seconds", type=float, default=60.0, help="training seconds per run")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--policies", nargs="+", default=["default", "ACTIVE", "PASSIVE"],
                        choices=["default", "ACTIVE", "PASSIVE"], help="settings to compare (alternating)")
    args = parser.parse_args()
    args.data_dir = args.data_dir.resolve()
    seconds: dict[str, list[float]] = {policy: [] for policy in args.policies}
    with tempfile.TemporaryDirectory(prefix="omp-wait-") as tmp:
        for i in range(args.repeats):
            for policy in seconds:
                value = one_run(policy, args, Path(tmp), i)
                seconds[policy].append(value)
                print(f"{policy:8s} run {i}: {value:.1f} s/epoch (load average {os.getloadavg()[0]:.1f})", flush=True)
    for policy, values in seconds.items():
        print(f"{policy:8s} median {statistics.median(values):.1f} s/epoch (min {min(values):.1f}, "
              f"max {max(values):.1f}, {len(values)} runs)")


if __name__ == "__main__":
    main()
