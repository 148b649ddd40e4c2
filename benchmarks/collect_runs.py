"""Collect finished run directories into one results table (markdown on stdout, JSON with --json).

Usage::

    python benchmarks/collect_runs.py runs/db15k-rotate runs/db15k-adamf-text ... [--json docs/results/x.json]

Each row: run name, epochs trained, the selection value, and the test metrics (MRR, MR, Hits@1/3/10, in percent
except MR) under realistic ties, plus MRR under optimistic ties (the OpenKE rule of the published numbers).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def row(run_dir: Path) -> dict:
    """The table row of one run directory.

    :raises SystemExit: the directory has no ``metrics.json`` (the run did not finish).
    """
    path = run_dir / "metrics.json"
    if not path.is_file():
        raise SystemExit(f"{run_dir}: no metrics.json (run not finished?)")
    m = json.loads(path.read_text(encoding="utf-8"))
    test = m.get("summary", {}).get("test", {})
    real, opt = test.get("realistic", {}), test.get("optimistic", {})
    training = m.get("training", {})
    return {
        "run": m.get("name", run_dir.name),
        "dir": str(run_dir),
        "epochs": training.get("epochs"),
        "best_epoch": training.get("best_epoch"),
        "training_seconds": training.get("training_seconds"),
        "valid_metric": training.get("best_valid_metric"),
        "mrr": real.get("mrr"),
        "mr": real.get("mr"),
        "hits@1": real.get("hits@1"),
        "hits@3": real.get("hits@3"),
        "hits@10": real.get("hits@10"),
        "mrr_optimistic": opt.get("mrr"),
    }


def markdown(rows: list[dict]) -> str:
    """Rows as a markdown table (percent, two decimals; MR as a number)."""

    def pct(v):
        return "-" if v is None else f"{100 * v:.2f}"

    lines = ["| run | epochs (best) | MRR | MR | H@1 | H@3 | H@10 | MRR (optimistic) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        mr = "-" if r["mr"] is None else f"{r['mr']:.0f}"
        lines.append(f"| {r['run']} | {r['epochs']} ({r['best_epoch']}) | {pct(r['mrr'])} | {mr} | {pct(r['hits@1'])} | "
                     f"{pct(r['hits@3'])} | {pct(r['hits@10'])} | {pct(r['mrr_optimistic'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    rows = [row(r) for r in args.runs]
    print(markdown(rows))
    if args.json is not None:
        from mmkgc.fileio import atomic_write_text

        atomic_write_text(args.json, json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
