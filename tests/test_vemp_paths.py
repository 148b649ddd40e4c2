"""VEMP stage 2 through the ordinary pipeline (``representation: rgcn``, ``training.loop: link_bce``, the
``mlp_link`` scorer, ``evaluation.protocol: vemp_sampled``) against the stage-2 loop it replaces
(``mmkgc.vemp.train_linkpred``), on a tiny graph: the same seed gives the same numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from test_vemp import _tiny_vemp


def _features(tmp_path: Path, n: int) -> tuple[torch.Tensor, Path]:
    from mmkgc.features.io import save_feature_table
    from mmkgc.features.store import FeatureTable

    x = torch.randn(n, 6, generator=torch.Generator().manual_seed(3))
    path = save_feature_table(FeatureTable(x, "x"), tmp_path / "x.safetensors")
    return x, path


def _experiment(tmp_path: Path, table: Path, lp, seed: int) -> dict:
    return {
        "name": "vemp-new", "seed": seed,
        "dataset": {"path": str(tmp_path / "raw"), "format": "vemp_csv"},
        "model": {"scorer": "mlp_link", "dim": lp.out_dim,
                  "scorer_options": {"hidden": lp.decoder_hidden, "dropout": lp.decoder_dropout},
                  "representation": "rgcn", "modalities": [{"name": "x", "file": str(table)}],
                  "gnn": {"hidden_dims": list(lp.hidden_dims), "num_bases": lp.num_bases, "dropout": lp.dropout,
                          "relation_grouping": lp.relation_grouping, "final_activation": True,
                          "fanouts": lp.fanouts}},
        "training": {"loop": "link_bce", "loss": "bce", "epochs": lp.epochs, "batch_size": lp.batch_size,
                     "lr": lp.lr, "link_bce": {"negatives": lp.negatives,
                                               "disjoint_supervision": lp.disjoint_supervision}},
        "evaluation": {"protocol": "vemp_sampled", "split": "valid", "every": lp.eval_every, "patience": None,
                       "sampled_candidates": lp.num_candidates, "vemp_legacy": lp.legacy},
    }


@pytest.mark.parametrize("negatives,fanouts,disjoint", [("binary", [5, 3], 0.3), ("tail", None, 0.0)])
def test_pipeline_reproduces_the_old_stage2_loop(tmp_path: Path, negatives, fanouts, disjoint):
    """Without dropout every draw of the two paths is the same (initialisation order, permutation, negatives,
    subgraphs, query subsets, candidates), so losses, selection and metrics agree to the last bit."""
    from mmkgc.config import parse_config
    from mmkgc.config_vemp import load_vemp_config
    from mmkgc.pipeline import run_pipeline
    from mmkgc.vemp import load_graph, train_linkpred

    cfg = load_vemp_config(_tiny_vemp(tmp_path))
    lp = cfg.linkpred
    lp.dropout, lp.decoder_dropout, lp.epochs, lp.eval_every = 0.0, 0.0, 3, 2
    lp.negatives, lp.fanouts, lp.disjoint_supervision, lp.max_queries = negatives, fanouts, disjoint, 12
    triples = load_graph(cfg)
    x, table = _features(tmp_path, triples.num_entities)
    old = train_linkpred(cfg, triples, x, "x", log=lambda s: None)

    exp = _experiment(tmp_path, table, lp, cfg.seed)
    exp["evaluation"]["max_queries"] = 12
    metrics, _, _ = run_pipeline(parse_config(exp), tmp_path / "run", device="cpu", log=lambda s: None)
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]

    assert [h["loss"] for h in history] == [h["loss"] for h in old["history"]]
    assert [h["valid"]["mrr"] for h in history if "valid" in h] == [h["valid"]["mrr"] for h in old["history"]
                                                                     if "valid" in h]
    for split in ("valid", "test"):
        new = metrics[split]["metrics"]["realistic"]["tail"]
        assert new["count"] == old[split]["fixed"]["queries"] == 12
        for k in ("mrr", "hits@1", "hits@3", "hits@10"):
            assert new[k] == old[split]["fixed"][k], (split, k)
        assert metrics[split]["metrics"]["optimistic"]["tail"]["mrr"] == old[split]["fixed"]["mrr_optimistic"]
        legacy = metrics["protocol"]["legacy"][split]["realistic"]
        assert legacy["mrr"] == old[split]["legacy"]["mrr"] and legacy["hits@10"] == old[split]["legacy"]["hits@10"]
    assert metrics["protocol"]["queries"] == {"valid": 12, "test": 12}


def test_with_dropout_the_only_difference_is_the_reseeded_dropout_stream(tmp_path: Path, monkeypatch):
    """With dropout the two paths differ in one place: the Trainer re-seeds the global stream (dropout masks) at the
    start of training, for every method, whereas the old loop continued it after the model's initialisation.  An
    old loop re-seeded at the same point gives the pipeline's numbers exactly; without it they differ."""
    import mmkgc.vemp as vemp
    from mmkgc.config import parse_config
    from mmkgc.config_vemp import load_vemp_config
    from mmkgc.pipeline import run_pipeline

    cfg = load_vemp_config(_tiny_vemp(tmp_path))
    lp = cfg.linkpred
    lp.epochs, lp.eval_every, lp.legacy = 2, 1, False  # dropout 0.5 and 0.3 (the defaults)
    triples = vemp.load_graph(cfg)
    x, table = _features(tmp_path, triples.num_entities)
    plain = train_linkpred_quiet(vemp, cfg, triples, x)

    built = vemp.VempLinkModel

    def reseeded(*args, **kwargs):
        model = built(*args, **kwargs)
        torch.manual_seed(cfg.seed)  # where the Trainer re-seeds: after the model, before the first batch
        return model

    monkeypatch.setattr(vemp, "VempLinkModel", reseeded)
    aligned = train_linkpred_quiet(vemp, cfg, triples, x)
    exp = _experiment(tmp_path, table, lp, cfg.seed)
    metrics, _, _ = run_pipeline(parse_config(exp), tmp_path / "run", device="cpu", log=lambda s: None)
    history = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert history == [h["loss"] for h in aligned["history"]]
    assert metrics["test"]["metrics"]["realistic"]["tail"]["mrr"] == aligned["test"]["fixed"]["mrr"]
    assert history != [h["loss"] for h in plain["history"]]


def train_linkpred_quiet(vemp, cfg, triples, x):
    return vemp.train_linkpred(cfg, triples, x, "x", log=lambda s: None)
