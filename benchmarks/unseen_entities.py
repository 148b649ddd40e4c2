"""Entities without training triples (issue 18): what ``model.unseen.mode: modality`` buys, with and without it.

Two experiments, each writing run directories and a JSON summary:

``synthetic``
    The synthetic KG with an inductive split (``unseen_entity_share``, default 0.15: that share of the entities
    has no training triple, its facts are in valid/test only; :func:`mmkgc.data.synthetic.make_synthetic_mmkg`).
    Variants, all ComplEx 1-N (the ``mmkgc demo`` recipe) with the same budget and seed:

    * ``structure``        -- structure only (the control: an unseen entity is an untrained row);
    * ``concat``           -- structure + text + visual by concatenation, without the option;
    * ``concat_unseen``    -- the same with ``model.unseen.mode: modality`` (structure dropout, the config defaults; ``--unseen`` overrides);
    * ``concat_align``     -- the same with alignment only (``dropout: false``, ``align_weight: 1``);
    * ``fused_unseen``     -- attention fusion (AdaMF-style) with the option;
    * ``modality_only``    -- no structural table at all, every entity from its features (a reference: what the
      features alone give seen and unseen entities alike).

``db15k``
    A DB15K config with name text (default ``configs/db15k/rotate_text.yaml``, 10-minute training budget) trained
    with the same seed without and with the option (``--runs``: each run's name and ``--set`` overrides; default
    ``without`` and ``with:model.unseen.mode=modality``), all runs as processes at once with one torch thread
    each, so they see the same load; the load average is sampled every 30 s.

Both report test MRR / Hits@10 (realistic ties, filtered) by ranking task: ``answer_unseen`` (the entity to predict
has no training triple), ``query_unseen`` (the known entity has none, the answer has), ``seen`` (both have), and
the triple-level ``summary.test_by_seen`` split of ``metrics.json`` (``unseen``: the triple involves an entity
without training triples, both of its tasks).

Usage::

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/unseen_entities.py synthetic --seed 0 --epochs 30 \\
        --out runs/unseen_s0 --json docs/results/unseen_entities_synthetic_seed0.json
    MMKGC_DATA_DIR=../shared/datasets PYTHONPATH=src python benchmarks/unseen_entities.py db15k \\
        --out runs/unseen_db15k --json docs/results/unseen_entities_db15k.json --runs without \\
        dropout:model.unseen.mode=modality \\
        align:model.unseen.mode=modality,model.unseen.dropout=false,model.unseen.align_weight=1
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from mmkgc.evaluation.metrics import answer_seen_labels, evaluate
from mmkgc.fileio import atomic_write_text

SYNTHETIC_VARIANTS = ("structure", "concat", "concat_unseen", "concat_align", "fused_unseen", "modality_only")


def breakdown(run_dir: Path) -> dict:
    """Test metrics of a finished run's selected model by :func:`~mmkgc.evaluation.metrics.answer_seen_labels`
    (realistic ties, both sides) and
    its ``summary.test_by_seen``."""
    from mmkgc.pipeline import load_run

    _, data, model = load_run(run_dir, device="cpu")
    triples = data.triples
    result = evaluate(model.score_fn(), triples, split="test", per_relation=False, group_labels=answer_seen_labels(triples))
    groups = {}
    for label, by_policy in result.to_dict()["by_group"].items():
        both = by_policy["realistic"]["both"]
        groups[label] = {k: both[k] for k in ("count", "mrr", "hits@1", "hits@10")}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    test = metrics["summary"]["test"]["realistic"]
    return {"test": {k: test[k] for k in ("mrr", "hits@1", "hits@10")}, "by_answer": groups,
            "test_by_seen": metrics["summary"].get("test_by_seen"), "epochs": metrics["training"]["epochs"],
            "best_epoch": metrics["training"]["best_epoch"],
            "training_seconds": metrics["training"]["training_seconds"], **epoch_log(run_dir)}


def checkpoint_breakdown(run_dir: Path, which: str = "last") -> dict:
    """Test MRR (%, realistic ties) of a run directory's ``which`` checkpoint, by triple (``seen`` / ``unseen``: the
    triple involves an entity without training triples) and by task (:func:`answer_seen_labels`), and its epoch;
    for checkpoints copied out of a running run (equal-epoch comparisons of time-budgeted runs)."""
    from mmkgc.pipeline import load_run
    from mmkgc.training.checkpoint import read_checkpoint_state

    _, data, model = load_run(run_dir, device="cpu", which=which)
    result = evaluate(model.score_fn(), data.triples, split="test", per_relation=False,
                      group_labels=answer_seen_labels(data.triples))
    out = {"epoch": read_checkpoint_state(run_dir / "checkpoints" / which)["epoch"],
           "test_mrr": 100 * result.get("mrr", side="both")}
    for group in ("seen", "unseen"):
        out[f"triples_{group}"] = {m: result.get(m, side="both", seen=group) for m in ("count", "mrr", "mr")}
    for label, by_policy in result.to_dict()["by_group"].items():
        out[f"task_{label}"] = {k: by_policy["realistic"]["both"][k] for k in ("count", "mrr")}
    return out


def epoch_log(run_dir: Path) -> dict:
    """From a run's ``metrics.jsonl``: ``valid_mrr`` by epoch (the epochs validated; equal-epoch comparisons of runs
    with different budgets) and the CPU seconds of each full epoch (``cpu_seconds_per_epoch``, when logged)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    valid = {str(r["epoch"]): r["valid"]["mrr"] for r in records if "valid" in r}
    cpu = [r["cpu_seconds"] for r in records if "cpu_seconds" in r and not r.get("partial")]
    return {"valid_mrr": valid, "cpu_seconds_per_epoch": cpu}


# ------------------------------------------------------------------------------------------------ synthetic
def synthetic_config(variant: str, seed: int, share: float, epochs: int, options: dict | None = None) -> dict:
    """The config mapping of one synthetic variant (see the module docstring); ``options``: extra ``model.unseen``
    settings of the ``*_unseen`` variants."""
    model: dict = {"scorer": "complex", "dim": 64, "reciprocal": True}
    modalities = [{"name": "text"}, {"name": "visual"}]
    if variant != "structure":
        model.update(representation="concat", modalities=modalities)
    if variant == "fused_unseen":
        model.update(representation="fused", fusion={"kind": "attention"})
    if variant == "modality_only":
        model.update(representation="modality_only")
    if variant in ("concat_unseen", "fused_unseen"):
        model["unseen"] = {"mode": "modality", **(options or {})}
    elif variant == "concat_align":
        model["unseen"] = {"mode": "modality", "dropout": False, "align_weight": 1.0}
    return {"name": f"unseen-{variant}", "seed": seed,
            "dataset": {"synthetic": {"seed": seed, "unseen_entity_share": share}}, "model": model,
            "training": {"loop": "one_to_n", "loss": "softmax_ce", "epochs": epochs, "batch_size": 512,
                         "optimizer": "adam", "lr": 0.003, "num_threads": 1},
            "evaluation": {"every": 2, "patience": 3, "batch_size": 512}}


def run_synthetic(args: argparse.Namespace) -> dict:
    from mmkgc.config import parse_config
    from mmkgc.pipeline import run_experiment

    out = Path(args.out)
    rows = {}
    for variant in args.variants:
        options = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.unseen)}
        cfg = parse_config(synthetic_config(variant, args.seed, args.share, args.epochs, options), source=variant)
        run_dir = out / variant
        t0 = time.perf_counter()
        run_experiment(cfg, run_dir, log=lambda line: None)
        rows[variant] = {"config": copy.deepcopy(cfg.model_dump(mode="json")), **breakdown(run_dir),
                         "wall_seconds": time.perf_counter() - t0, "load_average": os.getloadavg()[0]}
        g = rows[variant]["by_answer"]
        print(f"{variant:14s} test MRR {rows[variant]['test']['mrr']:.4f}  "
              + "  ".join(f"{k} {v['mrr']:.4f} ({int(v['count'])})" for k, v in sorted(g.items())), flush=True)
    return {"experiment": "synthetic", "unseen_entity_share": args.share, "unseen_options": list(args.unseen), "seed": args.seed, "epochs": args.epochs,
            "variants": rows}


# ------------------------------------------------------------------------------------------------ DB15K
def run_db15k(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    runs = {}
    for spec in args.runs:
        name, _, sets = spec.partition(":")
        runs[name] = [item for item in sets.split(",") if item]
    procs = {}
    for name, extra in runs.items():
        cmd = [sys.executable, "-m", "mmkgc", "train", args.config, "--run-dir", str(out / name),
               "--set", "training.num_threads=1", "--set", f"training.time_budget_minutes={args.minutes}"]
        for item in extra:
            cmd += ["--set", item]
        log = open(out / f"{name}.log", "w")
        procs[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), cmd, log)
    loads = []
    while any(p.poll() is None for p, _, _ in procs.values()):
        loads.append(os.getloadavg()[0])
        time.sleep(30)
    result = {"experiment": "db15k", "config": args.config, "minutes": args.minutes, "runs_requested": runs,
              "load_average_samples": loads,
              "load_average_median": sorted(loads)[len(loads) // 2] if loads else None, "runs": {}}
    for name, (proc, cmd, log) in procs.items():
        log.close()
        entry: dict = {"command": " ".join(cmd), "returncode": proc.returncode}
        if proc.returncode == 0:
            entry.update(breakdown(out / name))
        result["runs"][name] = entry
        print(name, json.dumps({k: entry.get(k) for k in ("test", "by_answer", "test_by_seen", "epochs")}), flush=True)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="experiment", required=True)
    syn = sub.add_parser("synthetic")
    syn.add_argument("--out", required=True)
    syn.add_argument("--json")
    syn.add_argument("--seed", type=int, default=0)
    syn.add_argument("--share", type=float, default=0.15)
    syn.add_argument("--epochs", type=int, default=12)
    syn.add_argument("--unseen", nargs="*", default=[], metavar="KEY=VALUE",
                     help="model.unseen settings of the *_unseen variants, e.g. share=0.3 align_weight=1")
    syn.add_argument("--variants", nargs="+", default=list(SYNTHETIC_VARIANTS), choices=SYNTHETIC_VARIANTS)
    db = sub.add_parser("db15k")
    db.add_argument("--out", required=True)
    db.add_argument("--json")
    db.add_argument("--config", default="configs/db15k/rotate_text.yaml")
    db.add_argument("--minutes", type=float, default=10.0)
    db.add_argument("--runs", nargs="+", default=["without", "with:model.unseen.mode=modality"],
                    metavar="NAME[:KEY=VALUE,...]",
                    help="the runs started together, each with its --set overrides (default: without and with the "
                         "option)")
    ev = sub.add_parser("checkpoints", help="test breakdown of run directories' checkpoints (see checkpoint_breakdown)")
    ev.add_argument("run_dirs", nargs="+")
    ev.add_argument("--which", default="last", choices=["last", "best"])
    ev.add_argument("--json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.experiment == "checkpoints":
        result = {"experiment": "checkpoints", "which": args.which,
                  "runs": {d: checkpoint_breakdown(Path(d), args.which) for d in args.run_dirs}}
        print(json.dumps(result["runs"], indent=1))
    else:
        result = run_synthetic(args) if args.experiment == "synthetic" else run_db15k(args)
    result["torch"] = torch.__version__
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
