"""Combination policies of generated descriptions (``model.enrichment``): config validation and the modality
inputs each policy hands to an unchanged model, plus one short training run with the extra modality."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mmkgc.config import parse_config
from mmkgc.errors import ConfigError
from mmkgc.pipeline import build_model, load_data, run_experiment

SMALL = {"num_entities": 60, "num_relations": 4, "num_types": 4, "seed": 1}


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    """A tiny BERT (hidden 16) with a word-level tokenizer: encodes text without network access."""
    from transformers import BertConfig, BertModel

    from model_builders import tiny_word_tokenizer

    d = tmp_path_factory.mktemp("enc")
    tok = tiny_word_tokenizer(d, bert_style=True)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=64)).save_pretrained(d)
    return d


def _source(tmp_path: Path, n: int = 40) -> Path:
    words = "red blue green dog cat car house tree river city".split()
    data = {f"entity_{i:05d}": {"entity_name": f"entity_{i:05d}",
                                "images": {f"e{i}_0.jpg": {"image_description_detail": f"a {words[i % 10]} near a {words[(i * 3) % 10]}"}},
                                "merged_descriptions": f"a {words[i % 10]} near a {words[(i * 3) % 10]}"}
            for i in range(n)}
    data["entity_00001"]["images"]["images_t5_descriptions"] = "a small red house in the city"
    path = tmp_path / "SYN_img_original_summary_blip.json"
    path.write_text(json.dumps(data))
    return path


def _cfg(tmp_path: Path, encoder_dir: Path, policy: str, **enrichment) -> dict:
    return {
        "name": f"syn-{policy}", "seed": 0,
        "dataset": {"synthetic": SMALL},
        "model": {"scorer": "distmult", "dim": 8, "representation": "concat",
                  "modalities": [{"name": "text", "encoder": str(encoder_dir)}, {"name": "visual"}],
                  "enrichment": {"source": str(_source(tmp_path)), "encoder": str(encoder_dir), "policy": policy,
                                 **enrichment}},
        "training": {"epochs": 2, "batch_size": 64, "num_negatives": 4, "lr": 0.01, "num_threads": 1},
        "evaluation": {"every": 1, "patience": None, "batch_size": 64},
    }


@pytest.mark.parametrize("policy,target,names", [
    ("extra_modality", None, ["text", "visual", "generated_text"]),
    ("replace_image", "visual", ["text", "generated_text"]),
    ("replace_text", None, ["generated_text", "visual"]),
    ("concat_text", None, ["text", "visual"]),
])
def test_each_policy_builds_the_expected_modalities(tmp_path, encoder_dir, monkeypatch, policy, target, names):
    monkeypatch.setenv("MMKGC_HOME", str(tmp_path / "home"))
    extra = {"target": target} if target else {}
    cfg = parse_config(_cfg(tmp_path, encoder_dir, policy, **extra))
    data = load_data(cfg)
    model = build_model(cfg, data)
    inputs = {m.name: m for m in model.entities.inputs}
    assert list(inputs) == names
    plain = build_model(parse_config({**_cfg(tmp_path, encoder_dir, policy),
                                      "model": {**_cfg(tmp_path, encoder_dir, policy)["model"], "enrichment": None}}),
                        data)
    base = {m.name: m for m in plain.entities.inputs}
    generated = inputs["text" if policy == "concat_text" else "generated_text"]
    if policy == "concat_text":
        # "label + description" differs from the label-only text exactly where a description exists
        changed = ~torch.isclose(generated.values, base["text"].values).all(dim=1)
        assert changed[:40].all() and not changed[40:].any()
    else:
        assert generated.present[:40].all() and not generated.present[40:].any()
        assert generated.values.shape == (60, 16)
    for name in names:
        if name in base and not (policy == "concat_text" and name == "text"):
            assert torch.equal(inputs[name].values, base[name].values)  # untouched modalities stay as they were


def test_enrichment_config_errors(tmp_path, encoder_dir):
    cfg = _cfg(tmp_path, encoder_dir, "replace_image")
    with pytest.raises(ConfigError, match="replaces modality 'image'.*text, visual"):
        parse_config(cfg)
    cfg = _cfg(tmp_path, encoder_dir, "extra_modality")
    cfg["model"]["enrichment"]["policy"] = "blend"
    with pytest.raises(ConfigError, match="model.enrichment.policy"):
        parse_config(cfg)
    cfg = _cfg(tmp_path, encoder_dir, "concat_text")
    cfg["model"]["enrichment"] = {"table": "gen", "policy": "concat_text"}
    with pytest.raises(ConfigError, match="concat_text.*source"):
        parse_config(cfg)
    cfg = _cfg(tmp_path, encoder_dir, "extra_modality")
    cfg["model"]["enrichment"]["source"] = []
    with pytest.raises(ConfigError, match="source or table"):
        parse_config(cfg)
    cfg = _cfg(tmp_path, encoder_dir, "concat_text")
    cfg["model"]["modalities"][0] = {"name": "text"}  # built-in table: no texts to join
    with pytest.raises(ConfigError, match="concat_text.*encoder"):
        build_model(parse_config(cfg), load_data(parse_config(cfg)))
    cfg = _cfg(tmp_path, encoder_dir, "extra_modality")
    cfg["model"]["enrichment"]["source"] = str(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="missing.json does not exist"):
        c = parse_config(cfg)
        build_model(c, load_data(c))


def test_training_with_extra_modality_runs_and_records_it(tmp_path, encoder_dir, monkeypatch):
    monkeypatch.setenv("MMKGC_HOME", str(tmp_path / "home"))
    cfg = parse_config(_cfg(tmp_path, encoder_dir, "extra_modality"))
    metrics = run_experiment(cfg, tmp_path / "run", device="cpu", log=lambda s: None)
    # the reported MRR is the saved model's: an independent loop-based filtered MRR gives the same value
    from rank_check import brute_force_mrr

    from mmkgc.pipeline import load_run

    _, data, model = load_run(tmp_path / "run", device="cpu")
    model.eval()
    assert metrics["summary"]["test"]["realistic"]["mrr"] == pytest.approx(
        brute_force_mrr(model.score_fn(), data.triples), rel=1e-6)
    assert "enrichment" in (tmp_path / "run" / "config.yaml").read_text()


def test_enrichment_from_a_feature_table(tmp_path, encoder_dir, monkeypatch):
    """``enrichment.table``: a table written by ``mmkgc enrich encode`` is used as is (no re-encoding)."""
    from mmkgc.features.io import save_feature_table
    from mmkgc.features.store import FeatureTable

    monkeypatch.setenv("MMKGC_HOME", str(tmp_path / "home"))
    values = torch.randn(60, 5)
    present = torch.arange(60) % 3 == 0
    path = save_feature_table(FeatureTable(values, "generated_text", present), tmp_path / "gen.safetensors")
    raw = _cfg(tmp_path, encoder_dir, "replace_text")
    raw["model"]["enrichment"] = {"table": str(path), "policy": "replace_text", "missing": "zeros"}
    cfg = parse_config(raw)
    model = build_model(cfg, load_data(cfg))
    gen = {m.name: m for m in model.entities.inputs}["generated_text"]
    assert torch.equal(gen.present, present) and torch.allclose(gen.values[present], values[present])
    assert gen.missing_policy == "zeros"


def test_extra_modality_reaches_an_attention_fusion(tmp_path, encoder_dir, monkeypatch):
    """The policy is representation-agnostic: the AdaMF/NativE attention fusion gets G as one more modality."""
    monkeypatch.setenv("MMKGC_HOME", str(tmp_path / "home"))
    raw = _cfg(tmp_path, encoder_dir, "extra_modality")
    raw["model"].update({"representation": "fused", "fusion": {"kind": "attention"}})
    cfg = parse_config(raw)
    model = build_model(cfg, load_data(cfg))
    assert [m.name for m in model.entities.inputs] == ["text", "visual", "generated_text"]
    scores = model.score_hrt(torch.tensor([[0, 0, 1], [2, 1, 3]]))
    assert scores.shape == (2,) and torch.isfinite(scores).all()
