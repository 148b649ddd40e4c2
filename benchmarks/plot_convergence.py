"""Validation MRR against epoch and against training seconds for several runs, side by side (one PNG).

Usage::

    python benchmarks/plot_convergence.py RUN_DIR [RUN_DIR ...] --out docs/results/convergence.png \
        [--labels rotate adamf-mat native] [--title "DB15K, H200"]

Each run directory needs its ``metrics.jsonl`` (one line per epoch: ``epoch``, ``training_seconds`` and, on
validated epochs, ``valid.mrr``).  The selected epoch (best validation MRR) is marked.

``--cpu-log FILE`` puts the CPU seconds of each training process on the second axis instead of its wall-clock
training seconds, for runs made on a loaded machine.  The file holds one sample per line,
``unix_time run_name pid cpu_seconds epochs_logged`` (what a loop over ``/proc/PID/stat`` every 30 s writes); a
run resumed in a new process continues the CPU count of the previous one.  An epoch's CPU time is that of the
first sample at which the epoch was logged, so it is late by at most one sampling interval; epochs logged before
the first sample are placed by a constant CPU time per epoch up to that sample.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def curve(run_dir: Path) -> tuple[list[int], list[float], list[float]]:
    """``(epochs, training seconds, validation MRR in percent)`` of the validated epochs of a run.

    :raises SystemExit: no ``metrics.jsonl`` or no validated epoch.
    """
    log = run_dir / "metrics.jsonl"
    if not log.is_file():
        raise SystemExit(f"{run_dir}: no metrics.jsonl")
    rows = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [r for r in rows if isinstance(r.get("valid"), dict) and "mrr" in r["valid"]]
    if not rows:
        raise SystemExit(f"{run_dir}: no validated epoch in metrics.jsonl")
    return ([r["epoch"] for r in rows], [r["training_seconds"] for r in rows],
            [100.0 * r["valid"]["mrr"] for r in rows])


def cpu_seconds_at_epochs(log: Path, run: str, epochs: list[int]) -> list[float]:
    """CPU seconds of run ``run`` when each of ``epochs`` had been logged, from a ``--cpu-log`` file.

    :raises SystemExit: the log has no sample for the run, or none after one of the epochs.
    """
    samples: list[tuple[float, int, float, int]] = []
    for line in log.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[1] == run:
            samples.append((float(parts[0]), int(parts[2]), float(parts[3]), int(parts[4])))
    if not samples:
        raise SystemExit(f"{log}: no CPU sample for run {run!r}")
    samples.sort()
    total, offset, last_pid, last_cpu = [], 0.0, samples[0][1], 0.0
    for _, pid, cpu, logged in samples:
        if pid != last_pid:  # resumed in a new process: its CPU count starts again at 0
            offset += last_cpu
            last_pid = pid
        last_cpu = cpu
        total.append((logged, offset + cpu))
    out = []
    first_logged, first_cpu = total[0]
    for epoch in epochs:
        if epoch < first_logged:  # logged before sampling began: CPU time per epoch taken as constant up to there
            out.append(first_cpu * epoch / first_logged)
            continue
        at = next((cpu for logged, cpu in total if logged >= epoch), None)
        if at is None:
            raise SystemExit(f"{log}: no CPU sample of run {run!r} after epoch {epoch}")
        out.append(at)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--labels", nargs="*")
    ap.add_argument("--title", default="")
    ap.add_argument("--cpu-log", type=Path, help="CPU seconds per process instead of wall-clock training seconds")
    args = ap.parse_args()
    if args.labels and len(args.labels) != len(args.runs):
        print("error: --labels needs one label per run directory", file=sys.stderr)
        return 2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_epoch, by_time) = plt.subplots(1, 2, figsize=(11, 4), dpi=100, sharey=True)
    for i, run in enumerate(args.runs):
        epochs, seconds, mrr = curve(run)
        if args.cpu_log:
            seconds = cpu_seconds_at_epochs(args.cpu_log, run.name, epochs)
        label = args.labels[i] if args.labels else run.name
        best = max(range(len(mrr)), key=mrr.__getitem__)
        line, = by_epoch.plot(epochs, mrr, marker=".", label=label)
        by_epoch.plot([epochs[best]], [mrr[best]], "o", color=line.get_color(), markersize=9, fillstyle="none")
        by_time.plot(seconds, mrr, marker=".", color=line.get_color(), label=label)
        by_time.plot([seconds[best]], [mrr[best]], "o", color=line.get_color(), markersize=9, fillstyle="none")
    by_epoch.set_xlabel("epoch")
    by_time.set_xlabel("CPU seconds of the training process" if args.cpu_log else "training seconds")
    by_epoch.set_ylabel("validation MRR (%, valid_clean, realistic ties)")
    by_epoch.legend(fontsize=8)
    by_epoch.grid(alpha=0.3)
    by_time.grid(alpha=0.3)
    fig.suptitle(args.title or "validation MRR; circles: selected epoch")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from mmkgc.plotting import save_figure

    save_figure(fig, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
