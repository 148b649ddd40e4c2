"""Missing-modality experiment on the synthetic multimodal KG: what presence masks and AFME's generative
completion buy on entities that lack a modality.

A controlled share of the entities misses each modality (``--missing``, for text and visual alike; their rows are
zeros).  Every variant is a fused RotatE with the same budget (epochs, optimiser, sampler, seed):

* ``structure``          -- RotatE without modalities (reference);
* ``fused_zero``         -- relation-temperature fusion where an absent modality is a zero vector averaged in
  (``missing: zeros``, ``model.fusion.mask_missing: false``): the baseline that presence masks replace;
* ``fused_nomask``       -- the same, but the absent modality enters the softmax as its *learned* fill vector;
* ``fused_mask``         -- the same with presence masks (absent modalities get zero weight);
* ``afme_mask``          -- AFME fusion (relation gate + L2 confidence) with masks and the MoIEn generator trained,
  but no completion (``complete_missing: false``);
* ``afme_complete``      -- AFME with completion: absent modalities are filled by the generator from the start;
* ``afme_complete_warm`` -- the same, but completion starts after half of the generator updates
  (``complete_after_steps``); before that absent modalities are masked;
* ``oracle_full``        -- ``fused_mask`` trained and tested with *no* modality missing (the same graph and the
  same feature values: the generator draws presence after the features): the ceiling any completion could reach.

Reported: test MRR / Hits@10 (realistic ties, head and tail averaged, filtered), overall, on ranking tasks whose
*predicted* entity misses at least one modality, and on the rest (from the run's ``diagnostics``).  The per-task
reciprocal ranks of the selected checkpoint are saved (``<variant>/test_reciprocal_ranks.npy``, realistic ties,
head tasks then tail tasks) so that :mod:`missing_modality_summary` can compare variants *paired* over seeds.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/missing_modality.py --missing 0.5 --epochs 15 --seed 42 --out runs/mm_s42
    python benchmarks/missing_modality_summary.py runs/mm_s4*   # paired comparison over seeds

Writes ``<out>/<variant>/`` run directories and ``<out>/summary.json`` / ``summary.md``.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from mmkgc.config import parse_config
from mmkgc.evaluation.metrics import evaluate
from mmkgc.fileio import atomic_write, atomic_write_text
from mmkgc.pipeline import load_data, load_run, run_experiment

VARIANTS = ("structure", "fused_zero", "fused_nomask", "fused_mask", "afme_mask", "afme_complete",
            "afme_complete_warm", "oracle_full")


def variant_config(name: str, missing: float, epochs: int, dim: int, seed: int, steps_per_epoch: int = 0) -> dict:
    """The experiment config of one variant (see the module docstring); ``steps_per_epoch`` (batches per epoch)
    sets the warm-up of ``afme_complete_warm``."""
    cfg: dict = {
        "name": f"missing-{name}",
        "seed": seed,
        "dataset": {"synthetic": {"seed": 0, "missing_text": 0.0 if name == "oracle_full" else missing,
                                  "missing_visual": 0.0 if name == "oracle_full" else missing}},
        "model": {"scorer": "rotate", "dim": dim, "scorer_options": {"margin": 6.0, "epsilon": 2.0}},
        "training": {"epochs": epochs, "batch_size": 1024, "num_negatives": 32, "loss": "nssa",
                     "adversarial_temperature": 1.0, "lr": 0.005, "num_threads": 1},
        "evaluation": {"every": max(1, epochs // 3), "patience": None, "split": "valid_clean"},
    }
    if name == "structure":
        return cfg
    fill = "zeros" if name == "fused_zero" else "learned"
    mods = [{"name": "text", "missing": fill}, {"name": "visual", "missing": fill}]
    fusion: dict = {"kind": "attention", "relation_temperature": True}
    if name.startswith("afme"):
        fusion.update(confidence="l2", relation_gate=True)
        cfg["training"]["adversarial"] = {"kind": "moien", "mu": 0.0, "generator_lr": 0.001, "layers": 2,
                                          "heads": 4, "complete_missing": name.startswith("afme_complete")}
        if name == "afme_complete_warm":
            cfg["training"]["adversarial"]["complete_after_steps"] = epochs * steps_per_epoch // 2
    if name in ("fused_zero", "fused_nomask"):
        fusion["mask_missing"] = False
    cfg["model"].update(representation="fused", adapter="mlp", modalities=mods, fusion=fusion)
    return cfg


def split_groups(groups: dict, overall: dict) -> dict:
    """Count-weighted MRR / Hits@10 over groups with all modalities (``text+visual``) vs the rest; a single group
    (``same_as: test``, e.g. nothing missing) takes the ``overall`` metrics."""
    groups = {g: (dict(overall, count=v["count"]) if "same_as" in v else v) for g, v in groups.items()}
    out = {}
    for part, keep in (("complete", lambda g: g == "text+visual"), ("missing", lambda g: g != "text+visual")):
        sel = {g: v for g, v in groups.items() if keep(g)}
        n = sum(v["count"] for v in sel.values())
        out[part] = {"count": n, **({m: sum(v[m] * v["count"] for v in sel.values()) / n
                                     for m in ("mrr", "hits@10")} if n else {})}
    return out


def _npy_bytes(arr: np.ndarray) -> bytes:
    """``arr`` in ``.npy`` format (``np.save`` on a path would append ``.npy`` to the temporary name)."""
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def save_reciprocal_ranks(run_dir: Path) -> None:
    """Re-rank the test split with the run's selected checkpoint and save the per-task reciprocal ranks
    (float64 ``[2 * n_test]``, realistic ties, head tasks then tail tasks) and the predicted entity of each task
    (int64, same order) as ``test_reciprocal_ranks.npy`` / ``test_targets.npy``."""
    _, data, model = load_run(run_dir, device="cpu")
    with torch.no_grad():
        result = evaluate(model.score_fn(), data.triples, split="test", per_relation=False)
    ranks = result.ranks
    rr = torch.cat([1.0 / ranks.side("head").realistic, 1.0 / ranks.side("tail").realistic]).numpy()
    targets = torch.cat([ranks.queries[:, 0], ranks.queries[:, 2]]).numpy()
    for fname, arr in (("test_reciprocal_ranks.npy", rr), ("test_targets.npy", targets)):
        atomic_write(run_dir / fname, lambda tmp, arr=arr: tmp.write_bytes(_npy_bytes(arr)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--missing", type=float, default=0.5, help="share of entities without each modality")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--out", type=Path, default=Path("runs/missing_modality"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    probe = parse_config(variant_config("structure", args.missing, args.epochs, args.dim, args.seed))
    num_train = load_data(probe).triples.train.shape[0]
    steps_per_epoch = math.ceil(num_train / probe.training.batch_size)
    results = {}
    for name in args.variants:
        raw = variant_config(name, args.missing, args.epochs, args.dim, args.seed, steps_per_epoch)
        cfg = parse_config(copy.deepcopy(raw))
        t0 = time.perf_counter()
        metrics = run_experiment(cfg, args.out / name, device="cpu", log=lambda line: None)
        save_reciprocal_ranks(args.out / name)
        test = metrics["summary"]["test"]["realistic"]
        row = {"mrr": test["mrr"], "hits@10": test["hits@10"], "seconds": time.perf_counter() - t0}
        if "diagnostics" in metrics:
            row.update(split_groups(metrics["diagnostics"]["test_by_modalities"], test))
            row["mean_weights"] = metrics["diagnostics"]["modality_weights"]["mean"]
        results[name] = row
        print(name, json.dumps(row))
    lines = [f"missing share per modality: {args.missing}; {args.epochs} epochs, dim {args.dim}, seed {args.seed}", "",
             "| variant | test MRR | H@10 | MRR (pred. entity complete) | MRR (pred. entity missing a modality) | s |",
             "|---|---|---|---|---|---|"]
    for name, r in results.items():
        c, m = r.get("complete", {}), r.get("missing", {})
        lines.append(f"| {name} | {r['mrr']:.4f} | {r['hits@10']:.4f} | "
                     f"{c.get('mrr', float('nan')):.4f} (n={c.get('count', '-')}) | "
                     f"{m.get('mrr', float('nan')):.4f} (n={m.get('count', '-')}) | {r['seconds']:.0f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "summary.json", json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                            "results": results}, indent=2))
    atomic_write_text(args.out / "summary.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
