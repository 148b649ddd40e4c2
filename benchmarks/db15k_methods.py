"""The DB15K method table: every method config under the same 10-minute CPU training budget, side by side.

Runs ``mmkgc train configs/db15k/<config>.yaml`` for each method (one torch thread each, ``--parallel`` runs at a
time; ``--clock process_cpu``, the default, counts the budget in CPU seconds of each run), then writes ``docs/results/db15k_methods.json``: a list of objects with ``config``, ``method``, ``epochs``
(completed epochs; a budget-cut last epoch counts, see ``partial_last_epoch``), ``training_seconds``,
``test_mrr``, ``test_hits1``, ``test_hits10`` (fractions, realistic ties, the checkpoint selected on the cleaned
validation split) and a few more fields (seconds per full epoch, the machine's load average while it ran).

Usage::

    MMKGC_DATA_DIR=../shared/datasets python benchmarks/db15k_methods.py --runs /tmp/db15k-runs \
        [--parallel 2] [--only rotate native_text] [--json docs/results/db15k_methods.json]

With ``--seed N`` every run uses seed ``N`` instead of its config's (run directories ``<config>-seed<N>``, rows with
``"seed": N``; the seed study of docs/benchmarks.md writes these rows to their own ``--json``).

With ``--collect`` the runs are not started again: finished run directories are read as they are.  With
``--append`` the rows are merged into the existing ``--json`` list instead of replacing it: a row of the same config
is kept, marked ``"current": false``, and the new row is added with ``"current": true`` (every row carries a
``variant`` string: batch size, negatives, learning rate and adversarial settings of its run).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from mmkgc.fileio import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]

METHODS = {
    "rotate": "RotatE, structure only",
    "rotate_text": "RotatE + name text, concat",
    "adamf_text": "AdaMF (tanh attention)",
    "adamf_mat_text": "AdaMF-MAT (mu 0.004)",
    "native_text": "NativE-style (relation temperature + WGAN-GP)",
    "afme_text": "AFME (gate + confidence + MoIEn)",
    "imvia_text": "IMVIA (published 1-N BCE)",
    "imvia_text_budget": "IMVIA budget variant (softmax cross-entropy)",
    # the CPU-budget variant (batch 4096, lr 4e-3, same 64 negatives), applied to every method alike
    "rotate_b4096": "RotatE, structure only [batch 4096]",
    "rotate_text_b4096": "RotatE + name text, concat [batch 4096]",
    "adamf_text_b4096": "AdaMF (tanh attention) [batch 4096]",
    "adamf_mat_text_b4096": "AdaMF-MAT (mu 0.004 every 4th batch) [batch 4096]",
    "native_text_b4096": "NativE-style (relation temperature + WGAN-GP) [batch 4096]",
    "afme_text_b4096": "AFME (gate + confidence + MoIEn) [batch 4096]",
    # the batch-1024 settings with the adversarial part on every 4th batch only (training.adversarial.every: 4)
    "native_text_every4": "NativE-style (relation temperature + WGAN-GP) [adversarial every 4th batch]",
    "adamf_mat_text_every4": "AdaMF-MAT (mu 0.004) [adversarial every 4th batch]",
    "afme_text_every4": "AFME (gate + confidence + MoIEn) [adversarial every 4th batch]",
    "imvia_text_budget_nodropout": "IMVIA budget variant without decoder dropout",
    # concat with the structural block of the projection kept the identity (ConcatFusion fixed_residual)
    "rotate_text_residual": "RotatE + name text, residual concat (s + W t)",
    # AdaMF with its feature table frozen instead of fine-tuned
    "adamf_text_frozen": "AdaMF (tanh attention) [frozen features]",
    "adamf_mat_text_every4_frozen": "AdaMF-MAT (mu 0.004) [adversarial every 4th batch, frozen features]",
    # AFME every 4 with 16 negatives (its gate is computed per distinct (entity, relation) pair, negatives included)
    "afme_text_every4_n16": "AFME [adversarial every 4th batch, 16 negatives]",
    # IMVIA's budget variant with the MoE experts started at the identity
    "imvia_text_budget_identity": "IMVIA budget variant without decoder dropout, identity-initialised experts",
    # ... and its decision fusion in log space (mean of the decoders' log-probabilities)
    "imvia_text_budget_identity_logp": "IMVIA budget variant, identity-initialised experts, log-probability fusion",
    # IMVIA's backbone alone: the 1-N TuckER-64 structure decoder, trained as imvia_text_budget_nodropout
    "tucker_budget": "TuckER, structure only (IMVIA's budget backbone)",
    # Adam lr 3e-3 instead of 1e-3: AFME with 16 negatives and its structure-only control
    "afme_text_every4_n16_lr3e3": "AFME [adversarial every 4th batch, 16 negatives, lr 3e-3]",
    "rotate_lr3e3": "RotatE, structure only [lr 3e-3]",
    # RotatE with AFME's 16 negatives
    "rotate_n16": "RotatE, structure only [16 negatives]",
    # AFME with 16 negatives and the adversarial part on every 16th batch
    "afme_text_n16_every16": "AFME [adversarial every 16th batch, 16 negatives]",
    "adamf_mat_text_frozen_every16": "AdaMF-MAT (mu 0.004) [adversarial every 16th batch, frozen features]",
}


def variant(run_config: dict) -> str:
    """What a row's run trained with, in words: ``batch B, K negatives, lr L`` (+ the adversarial ``mu`` and
    ``every`` when the run has an adversarial part), from the run directory's ``config.yaml``."""
    training = run_config["training"]
    parts = [f"batch {training['batch_size']}"]
    if training.get("loop", "negative_sampling") == "negative_sampling":
        parts.append(f"{training['num_negatives']} negatives")
    parts.append(f"lr {training['lr']:g}")
    adversarial = training.get("adversarial")
    if adversarial:
        parts.append(f"{adversarial['kind']} mu {adversarial['mu']:g} every {adversarial.get('every', 1)}")
    return ", ".join(parts)


def merge(previous: list[dict], rows: list[dict]) -> list[dict]:
    """``previous`` rows (a row of a config and seed in ``rows`` marked ``current: false``, the others keep their mark,
    ``current: true`` when they had none) followed by ``rows`` (each ``current: true``)."""
    new = {(r["config"], r.get("seed")) for r in rows}
    kept = [{**r, "current": False} if (r["config"], r.get("seed")) in new else {**r, "current": r.get("current", True)}
            for r in previous]
    return kept + [{**r, "current": True} for r in rows]


def _code_version() -> str | None:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def run_name(config: str, seed: int | None) -> str:
    """The run directory's name under ``--runs``: the config's stem, with ``-seed<N>`` for ``--seed N``."""
    return config if seed is None else f"{config}-seed{seed}"


def load_file(runs: Path, name: str) -> Path:
    """Where the 1-minute load averages sampled during run ``name`` are kept: ``RUNS/<name>.load.json``."""
    return runs / f"{name}.load.json"


def read_loads(runs: Path, names: list[str]) -> dict[str, list[float]]:
    """The load samples of ``names`` under ``runs``: each run's own file, else the shared ``load.json`` of older
    versions of this script (which two invocations on one ``--runs`` could read half-written)."""
    legacy = runs / "load.json"
    shared = json.loads(legacy.read_text(encoding="utf-8")) if legacy.is_file() else {}
    out = {}
    for name in names:
        path = load_file(runs, name)
        if path.is_file():
            out[name] = json.loads(path.read_text(encoding="utf-8"))
        elif name in shared:
            out[name] = shared[name]
    return out


def _row(config: str, run_dir: Path, load: list[float]) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    run_config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    test = metrics["summary"]["test"]["realistic"]
    training = metrics["training"]
    log = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    epochs = [r for r in log if "seconds" in r]
    full = [r["seconds"] for r in epochs if not r.get("partial")]
    return {
        "config": f"configs/db15k/{config}.yaml",
        "method": METHODS.get(config, config),
        "seed": run_config.get("seed"),
        "epochs": training["epochs"],
        "partial_last_epoch": bool(epochs and epochs[-1].get("partial")),
        "best_epoch": training["best_epoch"],
        "training_seconds": training["training_seconds"],
        "seconds_per_full_epoch": sum(full) / len(full) if full else None,
        "budget_clock": run_config["training"].get("time_budget_clock", "wall"),
        "variant": variant(run_config),
        "cpu_seconds_per_full_epoch": (sum(r["cpu_seconds"] for r in epochs if not r.get("partial"))
                                       / len(full) if full and "cpu_seconds" in epochs[0] else None),
        "valid_clean_mrr": training["best_valid_metric"],
        "test_mrr": test["mrr"],
        "test_mr": test["mr"],
        "test_hits1": test["hits@1"],
        "test_hits3": test["hits@3"],
        "test_hits10": test["hits@10"],
        "test_mrr_optimistic": metrics["summary"]["test"].get("optimistic", {}).get("mrr"),
        "test_seconds": metrics.get("test_seconds"),
        "load_average_1min": {"median": sorted(load)[len(load) // 2], "max": max(load)} if load else None,
        "date": datetime.datetime.fromtimestamp((run_dir / "metrics.json").stat().st_mtime,
                                                datetime.timezone.utc).date().isoformat(),
        "code": _code_version(),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=Path, required=True, help="directory for the run directories")
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--only", nargs="*", default=list(METHODS))
    ap.add_argument("--json", type=Path, default=ROOT / "docs" / "results" / "db15k_methods.json")
    ap.add_argument("--collect", action="store_true", help="only read finished runs")
    ap.add_argument("--append", action="store_true",
                    help="merge the rows into the existing --json list (same config: the old row is kept, "
                         "marked current: false)")
    ap.add_argument("--clock", choices=["wall", "process_cpu"], default="process_cpu",
                    help="what the 10-minute budget counts (training.time_budget_clock); process_cpu keeps the "
                         "budget fair when other jobs share the machine")
    ap.add_argument("--seed", type=int, help="train every run with this seed instead of its config's")
    args = ap.parse_args()
    unknown = [c for c in args.only if c not in METHODS]
    if unknown:
        print(f"error: unknown config(s) {unknown}; known: {list(METHODS)}", file=sys.stderr)
        return 2
    args.runs.mkdir(parents=True, exist_ok=True)
    names = {c: run_name(c, args.seed) for c in args.only}
    loads: dict[str, list[float]] = {names[c]: [] for c in args.only}
    if not args.collect:
        pending, running = list(args.only), {}
        while pending or running:
            while pending and len(running) < args.parallel:
                config = pending.pop(0)
                run_dir = args.runs / names[config]
                cmd = [sys.executable, "-m", "mmkgc", "train", str(ROOT / "configs" / "db15k" / f"{config}.yaml"),
                       "--run-dir", str(run_dir), "--set", "training.num_threads=1",
                       "--set", f"training.time_budget_clock={args.clock}"]
                if args.seed is not None:
                    cmd += ["--set", f"seed={args.seed}"]
                log = open(args.runs / f"{names[config]}.log", "w")
                running[config] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT), log)
                print(f"started {config}", flush=True)
            time.sleep(30)
            for config in list(running):
                loads[names[config]].append(os.getloadavg()[0])
                proc, log = running[config]
                if proc.poll() is not None:
                    log.close()
                    del running[config]
                    print(f"finished {config}: exit {proc.returncode}", flush=True)
        for name, samples in loads.items():  # one file per run: invocations sharing --runs never write the same file
            atomic_write_text(load_file(args.runs, name), json.dumps(samples))
    else:
        loads.update(read_loads(args.runs, [names[c] for c in args.only]))
    rows = []
    for config in args.only:
        if not (args.runs / names[config] / "metrics.json").is_file():
            print(f"warning: {names[config]}: no metrics.json, left out", file=sys.stderr)
            continue
        rows.append(_row(config, args.runs / names[config], loads.get(names[config], [])))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    written = rows
    if args.append and args.json.is_file():
        written = merge(json.loads(args.json.read_text(encoding="utf-8")), rows)
    tmp = args.json.with_name(args.json.name + ".tmp")
    tmp.write_text(json.dumps(written, indent=2) + "\n")
    tmp.replace(args.json)
    print("| method | config | epochs | s/epoch | test MRR | H@1 | H@10 |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        spe = f"{r['seconds_per_full_epoch']:.0f}" if r["seconds_per_full_epoch"] else "-"
        print(f"| {r['method']} | `{Path(r['config']).name}` | {r['epochs']}{'*' if r['partial_last_epoch'] else ''}"
              f" | {spe} | {100 * r['test_mrr']:.2f} | {100 * r['test_hits1']:.2f} | {100 * r['test_hits10']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
