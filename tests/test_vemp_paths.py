"""VEMP stage 2 through the ordinary pipeline (``representation: rgcn``, ``training.loop: link_bce``, the
``mlp_link`` scorer, ``evaluation.protocol: vemp_sampled``) against the numbers of the stage-2 loop it replaced.

``OLD`` holds what ``mmkgc.vemp.train_linkpred`` (the ``mmkgc vemp linkpred`` loop, removed in the commit after
7063e4d) returned on this tiny graph, recorded from that commit; at 7063e4d a test ran both paths side by side and
found every loss, validation MRR and test metric equal to the last bit (without dropout: the old loop continued the
global random stream after building the model, the Trainer re-seeds it before the first batch, so dropout masks
differ; with the old loop re-seeded at that point the two agreed with dropout too).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from test_vemp import _tiny_vemp

OLD = {
    "binary": {
        "loss": [0.7063494622707367, 0.7039899826049805, 0.6948466300964355],
        "valid_mrr": [0.16502359117490695, 0.16859336197571492],
        "valid": {"mrr": 0.16859336197571492, "hits@1": 0.08333333333333333, "hits@10": 0.25},
        "test": {"mrr": 0.1269162804573021, "hits@1": 0.0, "hits@3": 0.08333333333333333, "hits@10": 0.5},
        "test_legacy": {"mrr": 0.20453723895220058, "hits@10": 0.6666666666666666},
    },
    "tail": {
        "loss": [0.6876669824123383, 0.689717635512352, 0.6862714886665344],
        "valid_mrr": [0.18221500721500725, 0.16222480005374743],
        "valid": {"mrr": 0.18221500721500725, "hits@1": 0.08333333333333333, "hits@10": 0.25},
        "test": {"mrr": 0.09512354117617276, "hits@1": 0.0, "hits@3": 0.0, "hits@10": 0.3333333333333333},
        "test_legacy": {"mrr": 0.18527270718766883, "hits@10": 0.4166666666666667},
    },
}


@pytest.mark.parametrize("negatives,fanouts,disjoint", [("binary", [5, 3], 0.3), ("tail", None, 0.0)])
def test_pipeline_reproduces_the_old_stage2_loop(tmp_path: Path, negatives, fanouts, disjoint):
    """Same seed, same numbers: initialisation order (R-GCN, then the MLP decoder), the epoch's permutation,
    negatives and subgraphs from the run's stream, the query subsets (seed + 1), the legacy negative edges
    (seed + 2) and the candidates (seed)."""
    from mmkgc.config import parse_config
    from mmkgc.features.io import save_feature_table
    from mmkgc.features.store import FeatureTable
    from mmkgc.pipeline import run_pipeline

    _tiny_vemp(tmp_path)
    x = torch.randn(40, 6, generator=torch.Generator().manual_seed(3))
    table = save_feature_table(FeatureTable(x, "x"), tmp_path / "x.safetensors")
    exp = {
        "name": "vemp-new", "seed": 0,
        "dataset": {"path": str(tmp_path / "raw"), "format": "vemp_csv"},
        "model": {"scorer": "mlp_link", "dim": 8, "scorer_options": {"hidden": 128, "dropout": 0.0},
                  "representation": "rgcn", "modalities": [{"name": "x", "file": str(table)}],
                  "gnn": {"hidden_dims": [16], "num_bases": 2, "dropout": 0.0, "relation_grouping": "none",
                          "final_activation": True, "fanouts": fanouts}},
        "training": {"loop": "link_bce", "loss": "bce", "epochs": 3, "batch_size": 32, "lr": 1e-3,
                     "link_bce": {"negatives": negatives, "disjoint_supervision": disjoint}},
        "evaluation": {"protocol": "vemp_sampled", "split": "valid", "every": 2, "patience": None,
                       "sampled_candidates": 20, "vemp_legacy": True, "max_queries": 12},
    }
    metrics, _, _ = run_pipeline(parse_config(exp), tmp_path / "run", device="cpu", log=lambda s: None)
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    old = OLD[negatives]
    assert [h["loss"] for h in history] == pytest.approx(old["loss"], rel=1e-6, abs=0)
    assert [h["valid"]["mrr"] for h in history if "valid" in h] == pytest.approx(old["valid_mrr"], rel=1e-9)
    for split in ("valid", "test"):
        new = metrics[split]["metrics"]["realistic"]["tail"]
        assert new["count"] == 12
        for k, v in old[split].items():
            assert new[k] == pytest.approx(v, rel=1e-9), (split, k)
    legacy = metrics["protocol"]["legacy"]["test"]["realistic"]
    assert legacy["mrr"] == pytest.approx(old["test_legacy"]["mrr"], rel=1e-9)
    assert legacy["hits@10"] == pytest.approx(old["test_legacy"]["hits@10"], rel=1e-9)
    assert metrics["protocol"]["queries"] == {"valid": 12, "test": 12}
    assert metrics["training"]["best_epoch"] == (3 if negatives == "binary" else 2)
    # `mmkgc evaluate` / api.evaluate of the run use its protocol: the same sampled ranks as its metrics.json
    from mmkgc.api import evaluate, load

    trained = load(tmp_path / "run", device="cpu")
    again = evaluate(trained, split="test").to_dict()["metrics"]["realistic"]["tail"]
    assert again == pytest.approx(metrics["test"]["metrics"]["realistic"]["tail"], rel=1e-12)
    everything = evaluate(trained, split="test", protocol="filtered").to_dict()["metrics"]["realistic"]["tail"]
    assert everything["count"] == trained.triples.test.shape[0] != 12
