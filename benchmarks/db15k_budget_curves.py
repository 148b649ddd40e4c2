"""Equal-epoch and equal-CPU-time validation curves of DB15K method runs: why a method wins or loses a CPU budget.

Reads the ``metrics.jsonl`` of finished ``mmkgc train`` run directories (runs made with
``training.time_budget_clock: process_cpu``, so each epoch record's ``training_seconds`` is the CPU seconds the
training process has used so far, and ``cpu_seconds`` that of the epoch) and prints three Markdown tables:

* **cost**: median CPU seconds of a full (not budget-cut) epoch, and that over the first run's (the reference,
  normally structure-only RotatE);
* **equal epochs**: the validation MRR (percent) at each epoch of ``--epochs`` that the run validated (``-`` where it
  did not, or never got there);
* **equal CPU time**: the best validation MRR (percent) among the validations the run had made within each budget
  of ``--seconds`` CPU seconds (what selection on the validation split would keep if training stopped there), and
  at the end of the run (the validation after the budget-cut last epoch counts there, not in the 600 s column).

``--out PNG`` draws validation MRR against epoch and against CPU seconds (two panels, the selected epoch circled);
``--json FILE`` writes the same numbers.

Usage (the runs of docs/benchmarks.md, "DB15K method table"; the labels are the run directory names)::

    python benchmarks/db15k_budget_curves.py /work/table/runs/{rotate,rotate_text,adamf_text,adamf_mat_text,native_text,afme_text,imvia_text_budget} \\
        --out docs/results/db15k_budget_curves.png --json docs/results/db15k_budget_curves.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_EPOCHS = (2, 4, 5, 6, 8, 10, 12, 15, 20, 30, 40)
DEFAULT_SECONDS = (100, 200, 300, 400, 500, 600)


@dataclass
class RunCurve:
    """One run's epoch records.

    :param name: label (the run directory's name).
    :param epochs: every logged epoch, ascending.
    :param seconds: cumulative training CPU seconds at the end of each epoch (``training_seconds``).
    :param epoch_cpu: CPU seconds of each full epoch (budget-cut epochs left out).
    :param valid: ``epoch -> (cumulative seconds, validation MRR in percent)`` for the validated epochs.
    """

    name: str
    epochs: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    epoch_cpu: list[float] = field(default_factory=list)
    valid: dict[int, tuple[float, float]] = field(default_factory=dict)

    @property
    def cpu_per_epoch(self) -> float | None:
        """Median CPU seconds of a full epoch (``None`` when no epoch was completed)."""
        return statistics.median(self.epoch_cpu) if self.epoch_cpu else None

    def mrr_at_epoch(self, epoch: int) -> float | None:
        """Validation MRR (percent) at ``epoch``, ``None`` when that epoch was not validated."""
        return self.valid[epoch][1] if epoch in self.valid else None

    def best_within(self, seconds: float) -> float | None:
        """Best validation MRR (percent) among the validations made within ``seconds`` of training CPU time;
        ``None`` when none was."""
        values = [mrr for at, mrr in self.valid.values() if at <= seconds]
        return max(values) if values else None


def read_run(run_dir: Path, name: str | None = None) -> RunCurve:
    """The :class:`RunCurve` of a run directory.

    :raises SystemExit: no ``metrics.jsonl``, or a run whose records have no ``cpu_seconds`` (not a
        ``process_cpu`` run: its seconds would be wall-clock seconds).
    """
    log = run_dir / "metrics.jsonl"
    if not log.is_file():
        raise SystemExit(f"{run_dir}: no metrics.jsonl")
    run = RunCurve(name or run_dir.name)
    for line in log.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if "epoch" not in record or "training_seconds" not in record:
            continue
        if "cpu_seconds" not in record:
            raise SystemExit(f"{log}: epoch {record['epoch']} has no cpu_seconds: not a "
                             "training.time_budget_clock: process_cpu run")
        run.epochs.append(int(record["epoch"]))
        run.seconds.append(float(record["training_seconds"]))
        if not record.get("partial"):
            run.epoch_cpu.append(float(record["cpu_seconds"]))
        if isinstance(record.get("valid"), dict) and "mrr" in record["valid"]:
            run.valid[int(record["epoch"])] = (float(record["training_seconds"]), 100.0 * record["valid"]["mrr"])
    return run


def _cell(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def tables(runs: list[RunCurve], epochs: list[int], seconds: list[float]) -> str:
    """The three Markdown tables (cost, equal epochs, equal CPU time) of ``runs``; the first run is the reference
    of the cost ratio."""
    ref = runs[0].cpu_per_epoch
    out = ["| run | epochs | CPU s / full epoch | x " + runs[0].name + " |", "|---|---:|---:|---:|"]
    for r in runs:
        cost = r.cpu_per_epoch
        ratio = cost / ref if cost is not None and ref else None
        out.append(f"| {r.name} | {max(r.epochs, default=0)} | {_cell(cost)} | {_cell(ratio, '.2f')} |")
    out += ["", "Validation MRR (%) at equal epochs:", "",
            "| run | " + " | ".join(f"ep {e}" for e in epochs) + " |", "|---|" + "---:|" * len(epochs)]
    out += [f"| {r.name} | " + " | ".join(_cell(r.mrr_at_epoch(e)) for e in epochs) + " |" for r in runs]
    out += ["", "Best validation MRR (%) within equal CPU time:", "",
            "| run | " + " | ".join(f"{s:g} s" for s in seconds) + " | end |", "|---|" + "---:|" * (len(seconds) + 1)]
    out += [f"| {r.name} | " + " | ".join(_cell(r.best_within(s)) for s in seconds)
            + f" | {_cell(r.best_within(float('inf')))} |" for r in runs]
    return "\n".join(out)


def plot(runs: list[RunCurve], out: Path, title: str) -> None:
    """Validation MRR against epoch and against CPU seconds, one line per run, the best validation circled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mmkgc.plotting import save_figure

    fig, (by_epoch, by_time) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=100, sharey=True)
    for r in runs:
        eps = sorted(r.valid)
        if not eps:
            continue
        secs, mrr = [r.valid[e][0] for e in eps], [r.valid[e][1] for e in eps]
        best = max(range(len(mrr)), key=mrr.__getitem__)
        line, = by_epoch.plot(eps, mrr, marker=".", label=r.name)
        by_epoch.plot([eps[best]], [mrr[best]], "o", color=line.get_color(), markersize=9, fillstyle="none")
        by_time.plot(secs, mrr, marker=".", color=line.get_color(), label=r.name)
        by_time.plot([secs[best]], [mrr[best]], "o", color=line.get_color(), markersize=9, fillstyle="none")
    by_epoch.set_xlabel("epoch")
    by_time.set_xlabel("CPU seconds of training (one thread)")
    by_epoch.set_ylabel("validation MRR (%, valid_clean, realistic ties)")
    by_epoch.legend(fontsize=7)
    by_epoch.grid(alpha=0.3)
    by_time.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run directories; the first is the cost reference")
    ap.add_argument("--labels", nargs="*", help="one label per run (default: the directory names)")
    ap.add_argument("--epochs", type=int, nargs="*", default=list(DEFAULT_EPOCHS))
    ap.add_argument("--seconds", type=float, nargs="*", default=list(DEFAULT_SECONDS))
    ap.add_argument("--out", type=Path, help="write the two-panel PNG here")
    ap.add_argument("--json", type=Path, help="write the numbers here")
    ap.add_argument("--title", default="DB15K, 10 CPU minutes: validation MRR; circles: best validation")
    args = ap.parse_args(argv)
    if args.labels and len(args.labels) != len(args.runs):
        print("error: --labels needs one label per run directory", file=sys.stderr)
        return 2
    runs = [read_run(d, args.labels[i] if args.labels else None) for i, d in enumerate(args.runs)]
    print(tables(runs, args.epochs, args.seconds))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([
            {"run": r.name, "epochs": max(r.epochs, default=0), "cpu_seconds_per_full_epoch": r.cpu_per_epoch,
             "valid_mrr_at_epoch": {str(e): r.mrr_at_epoch(e) for e in args.epochs if e in r.valid},
             "best_valid_mrr_within_cpu_seconds": {f"{s:g}": r.best_within(s) for s in args.seconds},
             "best_valid_mrr": r.best_within(float("inf")),
             "valid_curve": [{"epoch": e, "cpu_seconds": r.valid[e][0], "mrr": r.valid[e][1]} for e in sorted(r.valid)]}
            for r in runs], indent=2) + "\n", encoding="utf-8")
    if args.out:
        plot(runs, args.out, args.title)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
