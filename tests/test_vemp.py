"""VEMP parts: token cross-attention fusion, contrastive pretraining, R-GCN, sampled protocol, grouping, CLI."""

import json
from pathlib import Path

import pytest
import torch

from mmkgc.config import parse_config
from mmkgc.nn.fusion import CrossAttentionTokenFusion
from mmkgc.nn.gnn import MessageGraph, MLPLinkPredictor, RGCNEncoder, sample_subgraph


# ------------------------------------------------------------------ fusion
def _fusion(seed=0):
    torch.manual_seed(seed)
    return CrossAttentionTokenFusion(text_dim=6, image_dim=5, dim=8, num_heads=2, proj_dim=4).eval()


def test_cross_attention_padding_does_not_change_outputs():
    m = _fusion()
    text, image = torch.randn(3, 4, 6), torch.randn(3, 7, 5)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    out = m(text, mask, image)
    noisy = text.clone()
    noisy[~mask] = torch.randn(int((~mask).sum()), 6) * 100
    out2 = m(noisy, mask, image)
    for key in ("fused", "text", "image", "z_graph", "z_text", "z_image"):
        torch.testing.assert_close(out[key], out2[key], atol=1e-5, rtol=1e-5)
    # truncating the padding gives the same result as well
    short = m(text[:1, :2], mask[:1, :2], image[:1])
    torch.testing.assert_close(short["fused"], out["fused"][:1], atol=1e-5, rtol=1e-5)
    # shapes and unit norm of the heads
    assert out["fused"].shape == (3, 8) and out["z_text"].shape == (3, 4)
    torch.testing.assert_close(out["z_graph"].norm(dim=-1), torch.ones(3))


def test_cross_attention_pooling_is_masked_mean_and_patch_mean():
    m = _fusion()
    text, image = torch.randn(2, 3, 6), torch.randn(2, 4, 5)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    t = m.text_in(text)
    v = m.image_in(image)
    t2 = m.text_ffn(m.text_to_image(t, v, v)[0] + t)
    v2 = m.image_ffn(m.image_to_text(v, t, t, key_padding_mask=~mask)[0] + v)
    f, p_t, p_v = m.encode(text, mask, image)
    torch.testing.assert_close(p_t[0], t2[0, :2].mean(0))
    torch.testing.assert_close(p_t[1], t2[1].mean(0))
    torch.testing.assert_close(p_v, v2.mean(1))
    with pytest.raises(ValueError, match="text_mask"):
        m.encode(text, mask[:, :2], image)
    # a row without any real token stays finite
    f, p_t, _ = m.encode(text, torch.zeros(2, 3, dtype=torch.bool), image)
    assert torch.isfinite(f).all() and p_t.abs().max() == 0


# ------------------------------------------------------------------ graph encoder
def test_sample_subgraph_respects_fanout_and_edges():
    # star: nodes 1..9 -> 0, and 10 -> 1
    src = torch.tensor(list(range(1, 10)) + [10])
    dst = torch.tensor([0] * 9 + [1])
    g = MessageGraph(torch.stack([src, dst]), torch.zeros(10, dtype=torch.long), 11, 1)
    sub = sample_subgraph(g, torch.tensor([0, 0]), [3, 2], torch.Generator().manual_seed(0))
    assert sub.nodes[0] == 0
    hop1 = (sub.edge_index[1] == 0).sum()
    assert hop1 == 3
    glob = sub.nodes[sub.edge_index]
    edges = g.edge_set()
    assert all(tuple(e) in edges for e in glob.T.tolist())
    full = sample_subgraph(g, torch.tensor([0]), [-1, -1])
    assert full.edge_index.shape[1] == 10 and full.nodes.numel() == 11


def test_rgcn_encoder_mean_aggregation_and_sampled_equals_full_when_fanout_covers():
    torch.manual_seed(0)
    enc = RGCNEncoder(4, [6], 3, num_relations=2, num_bases=2, dropout=0.0).eval()
    g = MessageGraph(torch.tensor([[0, 1, 2, 3], [1, 2, 3, 0]]), torch.tensor([0, 1, 0, 1]), 5, 2)
    x = torch.randn(5, 4)
    full = enc(x, g.edge_index, g.edge_type)
    assert full.shape == (5, 3) and (full >= 0).all()  # final ReLU
    sub = sample_subgraph(g, torch.tensor([2]), [-1, -1])
    part = enc(x[sub.nodes], sub.edge_index, sub.edge_type)
    torch.testing.assert_close(part[0], full[2])
    dec = MLPLinkPredictor(3, 8)
    assert dec(full[:2], full[2:4]).shape == (2,)


def test_rgcn_representation_message_graph_is_train_only_and_trains(tmp_path: Path):
    from mmkgc.pipeline import build_model, load_data, run_experiment

    raw = {
        "name": "rgcn", "seed": 0,
        "dataset": {"synthetic": {"seed": 1, "num_entities": 120, "num_relations": 4, "num_types": 4}},
        "model": {"scorer": "distmult", "dim": 8, "representation": "rgcn",
                  "gnn": {"hidden_dims": [8], "num_bases": 2, "dropout": 0.1, "fanouts": [5, 3]}},
        "training": {"epochs": 2, "batch_size": 128, "num_negatives": 4, "lr": 0.01},
        "evaluation": {"every": 1, "patience": None, "batch_size": 64},
    }
    cfg = parse_config(raw)
    data = load_data(cfg)
    model = build_model(cfg, data)
    graph = model.entities.graph
    edges = graph.edge_set()
    t = data.triples
    supervision = {(h, tt) for h, _, tt in torch.cat([t.valid, t.test]).tolist()}
    train_pairs = {(h, tt) for h, _, tt in t.train.tolist()}
    assert graph.num_edges == t.train.shape[0]
    assert not (edges & (supervision - train_pairs))
    metrics = run_experiment(cfg, tmp_path / "run", device="cpu", log=lambda s: None)
    from rank_check import brute_force_mrr

    from mmkgc.pipeline import load_run

    _, loaded, trained = load_run(tmp_path / "run", device="cpu")
    trained.eval()
    assert metrics["summary"]["test"]["realistic"]["mrr"] == pytest.approx(
        brute_force_mrr(trained.score_fn(), loaded.triples), rel=1e-9)


def test_gnn_config_errors():
    base = {"dataset": {"synthetic": {"seed": 1}}, "model": {"representation": "rgcn", "gnn": {"fanouts": [0]}}}
    with pytest.raises(Exception, match="fanouts"):
        parse_config(base)


# ------------------------------------------------------------------ relation grouping
# VEMP's table (DvirSela/Lab_Project at 73ee2d33d621bcea78273c433178f83d5505248a, utils/util.py relation_to_meta):
# the SHA-256 of its 279 meta names joined by newlines in relation-id order, the group sizes and a few entries.
VEMP_META_SHA256 = "682e3eb3851d335c93a486f45d9235fbca66b8cd3bc5df30e66a33ba3e653b04"
VEMP_META_SIZES = {
    "CULTURE_LANGUAGE": 6, "CULTURE_SOCIETY": 7, "GEO_ADMINISTRATIVE": 13, "GEO_HYDROLOGY": 19, "GEO_OTHER": 3,
    "GEO_PHYSICAL": 6, "GEO_POLITICAL": 15, "LOC_EVENT": 8, "LOC_GENERAL": 12, "LOC_STRUCTURE": 10,
    "MEDIA_CREATOR": 14, "MEDIA_INDUSTRY": 12, "MEDIA_PERFORMER": 11, "MEDIA_WORK": 21, "MILITARY_PERSON": 4,
    "MILITARY_UNIT_EVENT": 7, "ONTOLOGY_METADATA": 10, "ORG_PRODUCT": 7, "ORG_STRUCTURE": 18,
    "PERSON_ACHIEVEMENT": 7, "PERSON_ASSOCIATES": 8, "PERSON_BIO": 6, "PERSON_CAREER": 3, "PERSON_EDUCATION": 4,
    "PERSON_FAMILY": 4, "POLITICS_GROUP": 13, "POLITICS_ROLE": 13, "POLITICS_SUCCESSION": 2,
    "SPORTS_PERSON_TEAM": 6, "SPORTS_STRUCTURE": 7, "TECH_SPEC": 3,
}


def test_vemp_meta_table_is_the_published_relation_to_meta():
    import hashlib
    import json
    from collections import Counter
    from importlib import resources

    from mmkgc.data.relation_groups import load_vemp_meta_relations, vemp_relation_map

    names, table = load_vemp_meta_relations()
    assert names == sorted(VEMP_META_SIZES) and dict(Counter(table.values())) == VEMP_META_SIZES
    data = json.loads(resources.files("mmkgc.data").joinpath("vemp_relation_to_meta.json").read_text())
    assert data["source"]["commit"] == "73ee2d33d621bcea78273c433178f83d5505248a"
    ordered = list(table.values())  # file order = VEMP relation ids (data/raw/relations.csv)
    assert hashlib.sha256("\n".join(ordered).encode()).hexdigest() == VEMP_META_SHA256
    ids, _ = vemp_relation_map(["<http://dbpedia.org/ontology/language>", "http://dbpedia.org/ontology/deathPlace",
                                "http://dbpedia.org/ontology/party", "http://dbpedia.org/ontology/presenter"])
    # CULTURE_LANGUAGE, LOC_EVENT, POLITICS_GROUP, MEDIA_PERFORMER at their alphabetical positions
    assert ids.tolist() == [0, 7, 25, 12]
    own_ids, own_names = vemp_relation_map(["http://dbpedia.org/ontology/language"], "mmkgc_meta")
    assert own_names[own_ids[0]] == "LANGUAGE" and len(own_names) == 31


def test_vemp_meta_relations_cover_db15k(db15k):
    from mmkgc.data.relation_groups import vemp_relation_map

    labels = db15k.relation_labels
    assert len(labels) == 279
    for grouping in ("vemp_meta", "mmkgc_meta"):
        ids, names = vemp_relation_map(labels, grouping)
        assert len(names) == 31 and names == sorted(names) and ids.unique().numel() == 31
    ids, names = vemp_relation_map(labels)
    assert [names[i] for i in ids[:3].tolist()] == ["ONTOLOGY_METADATA", "GEO_POLITICAL", "CULTURE_LANGUAGE"]
    assert {n: int((ids == i).sum()) for i, n in enumerate(names)} == VEMP_META_SIZES


def test_vemp_meta_relations_unknown_relation_is_an_error():
    from mmkgc.data.relation_groups import vemp_relation_map
    from mmkgc.errors import DataFormatError, UnknownNameError

    with pytest.raises(DataFormatError, match="no meta-relation"):
        vemp_relation_map(["http://example.org/notARelation"])
    with pytest.raises(UnknownNameError, match="relation grouping"):
        vemp_relation_map(["http://dbpedia.org/ontology/language"], "freebase")


def test_training_negatives_binary_corrupts_both_endpoints_as_pyg():
    from mmkgc.training.loops import training_negatives

    src = torch.tensor([3, 3, 5, 7])
    neg_src, neg_dst = training_negatives(src, 50, "binary", torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    expected_src = torch.randint(50, (4,), generator=g)  # PyG: src_neg, then dst_neg, both torch.randint
    assert neg_src.tolist() == expected_src.tolist()
    assert neg_dst.tolist() == torch.randint(50, (4,), generator=g).tolist()
    tail_src, tail_dst = training_negatives(src, 50, "tail", torch.Generator().manual_seed(4))
    assert tail_src.tolist() == [3, 3, 5, 7] and tail_dst.tolist() == expected_src.tolist()
    # over many draws a binary negative keeps the positive's source only by chance (1/50), the tail form always
    many = torch.zeros(20000, dtype=torch.long)
    kept = (training_negatives(many, 50, "binary", torch.Generator().manual_seed(0))[0] == 0).float().mean()
    assert abs(float(kept) - 1 / 50) < 0.005
    with pytest.raises(ValueError, match="binary"):
        training_negatives(src, 50, "head", torch.Generator())


def test_vemp_sampled_fixed_vs_legacy():
    from mmkgc.evaluation.sampled import vemp_link_ranks

    n = 50
    pos = torch.tensor([[0, 1], [2, 3], [4, 5]])
    known = torch.cat([pos, torch.tensor([[0, k] for k in range(6, 40)])])  # node 0 has many other answers
    neg = torch.tensor([[7, 8], [9, 10], [11, 12]])

    def oracle(src, dst):  # scores every known edge 1, everything else 0
        keys = {(int(a), int(b)) for a, b in known.tolist()}
        return torch.tensor([[float((int(s), int(d)) in keys) for d in row] for s, row in zip(src, dst)])

    fixed = vemp_link_ranks(oracle, pos, n, known_edges=known, num_candidates=100, seed=0)
    assert len(fixed) == 3 and fixed.filtered and fixed.sampled_candidates == 100
    # filtered candidates never contain a known answer: a perfect oracle ranks every positive first
    assert (fixed.ranks("tail", "pessimistic") == 1).all()
    legacy = vemp_link_ranks(oracle, pos, n, negative_edges=neg, num_candidates=100, seed=0, legacy=True)
    assert len(legacy) == 6 and not legacy.filtered  # negatives are queries too
    r = legacy.ranks("tail", "pessimistic")
    assert (r[:1] > 1).all()  # unfiltered: node 0's other answers tie with the target
    assert (r[3:] > 1).all()  # a negative "target" scores 0, like almost all candidates
    with pytest.raises(ValueError, match="known_edges"):
        vemp_link_ranks(oracle, pos, n)
    with pytest.raises(ValueError, match="negative_edges"):
        vemp_link_ranks(oracle, pos, n, legacy=True)


# ------------------------------------------------------------------ pipeline on a tiny synthetic graph
def _tiny_vemp(tmp_path: Path, num_nodes: int = 40, num_edges: int = 160) -> Path:
    """VEMP's graph layout (``raw/``) and token tables ``text.safetensors`` ``[N, 6, 12]`` (masked) and
    ``image.safetensors`` ``[N, 4, 10]`` under ``tmp_path``; returns ``tmp_path``."""
    import pandas as pd

    from mmkgc.features.io import save_feature_table
    from mmkgc.features.store import FeatureTable

    g = torch.Generator().manual_seed(0)
    raw = tmp_path / "raw"
    raw.mkdir()
    pd.DataFrame({"entity": [f"http://x/e{i}" for i in range(num_nodes)],
                  "short_name": [f"e{i}" for i in range(num_nodes)]}).to_csv(raw / "entities.csv", index=False)
    pd.DataFrame({"relation": [f"http://x/r{i}" for i in range(3)]}).to_csv(raw / "relations.csv", index=False)
    src = torch.randint(num_nodes, (num_edges,), generator=g)
    dst = (src + torch.randint(1, 4, (num_edges,), generator=g)) % num_nodes  # local structure to learn
    pd.DataFrame({"src_id": src.numpy(), "dst_id": dst.numpy(),
                  "rel_id": torch.randint(3, (num_edges,), generator=g).numpy()}).to_parquet(raw / "edge_index.parquet")
    lengths = torch.randint(1, 6, (num_nodes,), generator=g)
    mask = torch.arange(6).unsqueeze(0) < lengths.unsqueeze(1)
    save_feature_table(FeatureTable(torch.randn(num_nodes, 6, 12, generator=g), "text", token_mask=mask),
                       tmp_path / "text.safetensors")
    save_feature_table(FeatureTable(torch.randn(num_nodes, 4, 10, generator=g), "image"), tmp_path / "image.safetensors")
    return tmp_path


def _tiny_triples(tmp_path: Path):
    from mmkgc.data.registry import resolve_dataset

    return resolve_dataset(tmp_path / "raw", format="vemp_csv")


def _stage2(tmp_path: Path, table: str, **training) -> dict:
    """A stage-2 experiment over ``table`` on the tiny graph (the db15k.yaml preset, shrunk)."""
    return {
        "name": "tiny-vemp", "seed": 0,
        "dataset": {"path": str(tmp_path / "raw"), "format": "vemp_csv"},
        "model": {"scorer": "mlp_link", "dim": 8, "scorer_options": {"hidden": 16},
                  "representation": "rgcn", "modalities": [{"name": "vemp", "table": table}],
                  "gnn": {"hidden_dims": [16], "num_bases": 2, "fanouts": [5, 3]}},
        "training": {"loop": "link_bce", "loss": "bce", "epochs": 2, "batch_size": 32, **training},
        "evaluation": {"protocol": "vemp_sampled", "split": "valid", "every": 1, "patience": None,
                       "sampled_candidates": 20, "vemp_legacy": True},
    }


@pytest.mark.parametrize("mode", ["binary", "tail"])
def test_link_bce_loop_draws_the_configured_negatives(tmp_path: Path, monkeypatch, mode):
    import mmkgc.training.loops as loops
    from mmkgc.pipeline import run_pipeline

    _tiny_vemp(tmp_path)
    x = tmp_path / "x.safetensors"
    from mmkgc.features.io import save_feature_table
    from mmkgc.features.store import FeatureTable

    save_feature_table(FeatureTable(torch.randn(40, 6), "x"), x)
    drawn = []
    original = loops.training_negatives

    def spy(src, num_nodes, how, gen):
        out = original(src, num_nodes, how, gen)
        drawn.append((how, src.clone(), *out))
        return out

    monkeypatch.setattr(loops, "training_negatives", spy)
    cfg = parse_config(_stage2(tmp_path, str(x), epochs=1, link_bce={"negatives": mode}))
    run_pipeline(cfg, None, device="cpu", log=lambda s: None)
    assert drawn and all(how == mode for how, *_ in drawn)
    same_source = torch.cat([(ns == s) for _, s, ns, _ in drawn]).float().mean()
    assert float(same_source) == 1.0 if mode == "tail" else float(same_source) < 0.2
    # one epoch: round(0.3 * train edges) supervision edges in batches of 32
    n_train = _tiny_triples(tmp_path).train.shape[0]
    assert sum(s.numel() for _, s, _, _ in drawn) == round(0.3 * n_train)


def test_link_bce_epoch_graph_leaves_out_the_supervision_edges(tmp_path: Path):
    """Each epoch's message graph is the training edges minus that epoch's supervision edges; evaluation uses the
    whole training graph (valid) and train + valid (test)."""
    from mmkgc.pipeline import build_model, load_data
    from mmkgc.training.loops import LinkBCELoop

    _tiny_vemp(tmp_path)
    x = tmp_path / "x.safetensors"
    from mmkgc.features.io import save_feature_table
    from mmkgc.features.store import FeatureTable

    save_feature_table(FeatureTable(torch.randn(40, 6), "x"), x)
    cfg = parse_config(_stage2(tmp_path, str(x)))
    data = load_data(cfg)
    model = build_model(cfg, data)
    t = data.triples
    loop = LinkBCELoop(model, t, cfg.training, torch.Generator().manual_seed(0), torch.device("cpu"))
    batches = list(loop.local_batches())
    supervised = torch.cat([b[0][0] for b in batches])
    msg = model.entities.training_graph
    assert supervised.shape[0] == round(0.3 * t.train.shape[0]) and len(batches) == len(loop)
    assert msg.num_edges == t.train.shape[0] - supervised.shape[0]
    sup_keys = sorted(map(tuple, supervised[:, [0, 1, 2]].tolist()))
    msg_keys = sorted(zip(msg.edge_index[0].tolist(), msg.edge_type.tolist(), msg.edge_index[1].tolist()))
    assert sorted(sup_keys + msg_keys) == sorted(map(tuple, t.train.tolist()))  # a partition of the train edges
    model.eval()
    assert model.entities.graph.num_edges == t.train.shape[0]  # evaluation: the full training graph
    from mmkgc.evaluation.sampled import VempSampledProtocol
    from mmkgc.models.vemp import SampledLinkEvaluator

    ev = SampledLinkEvaluator(model, t, VempSampledProtocol(t, 20, seed=0))
    seen = []
    original = model.entities.full

    def spy():
        seen.append(model.entities.graph.num_edges)
        return original()

    model.entities.full = spy
    ev.evaluate("valid")
    ev.evaluate("test")
    assert seen == [t.train.shape[0], t.train.shape[0] + t.valid.shape[0]]
    assert model.entities.graph.num_edges == t.train.shape[0]  # restored


def test_pretrain_uses_training_edges_only(tmp_path: Path):
    from mmkgc.training.steps import ContrastivePretrainStep
    from mmkgc.vemp import held_out_pairs, load_inputs

    _tiny_vemp(tmp_path)
    inputs = load_inputs(_tiny_triples(tmp_path), tmp_path / "text.safetensors", tmp_path / "image.safetensors")
    t = inputs.triples
    fusion = CrossAttentionTokenFusion(12, 10, 16, 2, proj_dim=8)
    train = t.train[:, [0, 2]]
    train_keys = set(map(tuple, train.tolist()))
    held_out = torch.tensor([e for e in torch.cat([t.valid, t.test])[:, [0, 2]].tolist()
                             if tuple(e) not in train_keys])
    assert sorted(map(tuple, held_out_pairs(t).tolist())) == sorted(map(tuple, held_out.tolist()))
    step = ContrastivePretrainStep(fusion, inputs.text, inputs.text_mask, inputs.image, forbidden=held_out)
    bad = held_out[0].tolist()
    with pytest.raises(ValueError, match="validation/test edge"):
        step.step(torch.tensor([bad[0], 0]), torch.tensor([bad[1], 1]))
    before = [p.detach().clone() for p in fusion.parameters()]
    ok = train[:8]
    out = step.step(ok[:, 0], ok[:, 1])
    assert set(out) == {"loss", "mm", "graph"} and out["loss"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, fusion.parameters()))


def test_extract_tables_values_and_provenance(tmp_path: Path):
    """text_only / image_only are the masked / plain means of the tokens, concat their concatenation, fused the
    trained module's encode() output; provenance names the source, the inputs and the pretraining record."""
    from mmkgc.vemp import VempExtractOptions, build_fusion, extract_tables, load_inputs

    _tiny_vemp(tmp_path)
    inputs = load_inputs(_tiny_triples(tmp_path), tmp_path / "text.safetensors", tmp_path / "image.safetensors")
    options = VempExtractOptions(dim=16, num_heads=2, proj_dim=8, batch_size=16, epochs=2, lr=1e-3, amp=False)
    tables = extract_tables(inputs, options, seed=5, sources={"text_tokens": "t"}, log=lambda s: None)
    m = inputs.text_mask.float().unsqueeze(-1)
    assert torch.allclose(tables["text_only"].values, (inputs.text * m).sum(1) / m.sum(1), atol=1e-6)
    assert torch.allclose(tables["image_only"].values, inputs.image.mean(1), atol=1e-6)
    assert torch.equal(tables["concat"].values, torch.cat([tables["text_only"].values, tables["image_only"].values], 1))
    prov = tables["fused"].provenance
    assert prov["source"] == "mmkgc features extract --encoder vemp" and prov["options"]["text_tokens"] == "t"
    record = prov["options"]["pretrain"]
    n_train = inputs.triples.train.shape[0]
    assert record["train_edges"] == n_train and [h["steps"] for h in record["history"]] == [n_train // 16] * 2
    # the same seed trains the same module: rebuild it and compare the fused table with a fresh run
    again = extract_tables(inputs, options, modes=["fused"], seed=5, log=lambda s: None)
    assert torch.equal(again["fused"].values, tables["fused"].values)
    untrained = build_fusion(options, inputs)
    with torch.no_grad():
        f0 = untrained.encode(inputs.text, inputs.text_mask, inputs.image)[0]
    assert not torch.allclose(f0, tables["fused"].values)  # training moved it


def test_cli_extract_then_sweep_over_the_tables(tmp_path: Path, monkeypatch, capsys):
    """`features extract --encoder vemp` writes the four tables into the feature folder; `sweep` trains stage 2
    over each and writes the comparison, whose rows are the runs' own metrics."""
    from mmkgc import cli

    monkeypatch.setenv("MMKGC_HOME", str(tmp_path / "home"))
    _tiny_vemp(tmp_path)
    opts = tmp_path / "stage1.yaml"
    opts.write_text("dim: 16\nnum_heads: 2\nproj_dim: 8\nbatch_size: 16\nepochs: 1\nlr: 1.0e-3\n")
    argv = ["features", "extract", str(tmp_path / "raw"), "--dataset-format", "vemp_csv", "--encoder", "vemp",
            "--text-tokens", str(tmp_path / "text.safetensors"), "--image-tokens", str(tmp_path / "image.safetensors"),
            "--vemp-options", str(opts), "--device", "cpu"]
    assert cli.run(argv) == 0, capsys.readouterr().err
    folder = tmp_path / "home" / "features" / "DB15K-vemp"
    from mmkgc.features.io import load_feature_table

    widths = {m: load_feature_table(folder / f"vemp_{m}.safetensors").values.shape[1]
              for m in ("text_only", "image_only", "concat", "fused")}
    assert widths == {"text_only": 12, "image_only": 10, "concat": 22, "fused": 16}
    config = tmp_path / "stage2.yaml"
    import yaml

    config.write_text(yaml.safe_dump(_stage2(tmp_path, "vemp_fused")))
    out = tmp_path / "sweep"
    tables = "vemp_text_only,vemp_fused"
    assert cli.run(["sweep", str(config), "--param", f"model.modalities.0.table={tables}", "--out", str(out),
                    "--device", "cpu"]) == 0, capsys.readouterr().err
    summary = json.loads((out / "sweep.json").read_text())
    assert [r["values"] for r in summary["rows"]] == [{"model.modalities.0.table": "vemp_text_only"},
                                                      {"model.modalities.0.table": "vemp_fused"}]
    for r in summary["rows"]:
        metrics = json.loads((out / r["run_dir"] / "metrics.json").read_text())
        assert r["test"]["mrr"] == metrics["test"]["metrics"]["realistic"]["tail"]["mrr"]
        assert r["test_legacy"]["mrr"] == metrics["protocol"]["legacy"]["test"]["realistic"]["mrr"]
        assert r["protocol"] == "vemp_sampled"
    assert "| 1-table=vemp_text_only | vemp_text_only | vemp_sampled |" in (out / "sweep.md").read_text()
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # --output DIR: DIR/<mode>.safetensors, never replacing a file that is there
    mine = tmp_path / "tables"
    mine.mkdir()
    (mine / "concat.safetensors").write_text("mine")
    assert cli.run([*argv, "--table", "concat", "--output", str(mine)]) == 2
    assert "concat.safetensors exist(s)" in capsys.readouterr().err
    assert (mine / "concat.safetensors").read_text() == "mine"
    assert cli.run([*argv, "--table", "text_only", "--output", str(mine)]) == 0
    assert torch.equal(load_feature_table(mine / "text_only.safetensors").values,
                       load_feature_table(folder / "vemp_text_only.safetensors").values)


@pytest.mark.parametrize("argv_tail,message", [
    ([], "needs --text-tokens and --image-tokens"),
    (["--text-tokens", "missing.safetensors", "--image-tokens", "image.safetensors"], "--text-tokens: "),
    (["--text-tokens", "image.safetensors", "--image-tokens", "text.safetensors", "--image-pooled",
      "text.safetensors"], "--image-pooled: .* is a token table"),
    (["--text-tokens", "text.safetensors", "--image-tokens", "image.safetensors", "--set", "num_heads=3"],
     "dim 512 must be divisible by num_heads 3"),
    (["--text-tokens", "text.safetensors", "--image-tokens", "image.safetensors", "--set", "epochz=3"],
     "epochz: unknown key"),
    (["--text-tokens", "text.safetensors", "--image-tokens", "image.safetensors", "--modality", "text"],
     "--modality: not used by --encoder vemp"),
    (["--text-tokens", "text.safetensors", "--image-tokens", "image.safetensors", "--output", "out/x.safetensors"],
     "writes four tables; give a directory"),
])
def test_cli_extract_vemp_errors(tmp_path: Path, monkeypatch, capsys, argv_tail, message):
    import re

    from mmkgc import cli

    monkeypatch.setenv("MMKGC_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(_tiny_vemp(tmp_path))
    code = cli.run(["features", "extract", "raw", "--dataset-format", "vemp_csv", "--encoder", "vemp", *argv_tail])
    err = capsys.readouterr().err
    assert code == 2 and re.search(message, err) and "Traceback" not in err, err
    assert not (tmp_path / "home" / "features").exists()  # nothing written


def test_stage2_config_errors():
    from mmkgc.errors import ConfigError

    base = {"dataset": {"synthetic": {"seed": 1}}}
    with pytest.raises(ConfigError, match="loop 'link_bce' trains with loss 'bce'"):
        parse_config({**base, "training": {"loop": "link_bce"}})
    with pytest.raises(ConfigError, match="needs model.scorer 'mlp_link'"):
        parse_config({**base, "evaluation": {"protocol": "vemp_sampled", "split": "valid"}})
    with pytest.raises(ConfigError, match="set split: valid"):
        parse_config({**base, "model": {"scorer": "mlp_link"}, "evaluation": {"protocol": "vemp_sampled"}})
    with pytest.raises(ConfigError, match="vemp_legacy and max_queries apply"):
        parse_config({**base, "evaluation": {"vemp_legacy": True}})
    with pytest.raises(ConfigError, match="random_split applies to format 'vemp_csv'"):
        parse_config({"dataset": {"path": "x", "random_split": {"seed": 1}}})
    with pytest.raises(ConfigError, match="negatives"):
        parse_config({**base, "training": {"loop": "link_bce", "loss": "bce", "link_bce": {"negatives": "head"}}})


def test_presets_parse():
    from mmkgc.config import load_config
    from mmkgc.vemp import load_options

    root = Path(__file__).resolve().parents[1] / "configs" / "vemp"
    published = load_options(root / "stage1.yaml")
    assert (published.dim, published.proj_dim, published.temperature, published.epochs) == (512, 256, 0.07, 20)
    assert load_options(root / "stage1_cpu.yaml").max_seconds == 150
    for name in ("db15k.yaml", "db15k_cpu.yaml", "vemp_graph.yaml", "vemp_graph_cpu.yaml"):
        cfg = load_config(root / name)
        assert (cfg.model.gnn.num_bases, cfg.evaluation.sampled_candidates, cfg.model.gnn.relation_grouping) == (
            31, 100, "vemp_meta"), name
        assert (cfg.training.loop, cfg.model.scorer, cfg.evaluation.protocol) == ("link_bce", "mlplink",
                                                                                  "vemp_sampled")
    assert load_config(root / "vemp_graph.yaml").dataset.format == "vemp_csv"
    assert load_config(root / "db15k_filtered.yaml").model.scorer == "distmult"


def test_read_vemp_graph_errors(tmp_path: Path):
    import pandas as pd

    from mmkgc.data.formats import read_vemp_graph
    from mmkgc.errors import DataFormatError

    _tiny_vemp(tmp_path)
    t, names = read_vemp_graph(tmp_path / "raw", seed=1)
    assert t.num_entities == 40 and names[3] == "e3"
    assert t.train.shape[0] + t.valid.shape[0] + t.test.shape[0] == 160
    pd.DataFrame({"src_id": [0], "dst_id": [99], "rel_id": [0]}).to_parquet(tmp_path / "raw" / "edge_index.parquet")
    with pytest.raises(DataFormatError, match="dst_id 99"):
        read_vemp_graph(tmp_path / "raw")
    (tmp_path / "raw" / "relations.csv").write_text("name\nx\n")
    with pytest.raises(DataFormatError, match="relation"):
        read_vemp_graph(tmp_path / "raw")


def test_mlp_link_scorer_is_vemps_decoder_and_ignores_the_relation():
    from mmkgc.nn.scorers import MLPLink, build_scorer

    torch.manual_seed(0)
    scorer = build_scorer("mlp_link", 4, hidden=3, dropout=0.0)
    assert isinstance(scorer, MLPLink) and scorer.relation_dim == 1 and not scorer.factorises
    w1, b1 = scorer.decoder.net[0].weight, scorer.decoder.net[0].bias
    w2, b2 = scorer.decoder.net[3].weight, scorer.decoder.net[3].bias
    h, t = torch.randn(5, 4), torch.randn(5, 4)
    by_hand = (torch.relu(torch.cat([h, t], 1) @ w1.T + b1) @ w2.T + b2).squeeze(-1)
    r = torch.randn(5, 1)
    assert torch.allclose(scorer.score_hrt(h, r, t), by_hand, atol=1e-6)
    assert torch.equal(scorer.score_hrt(h, r, t), scorer.score_hrt(h, -r, t))  # relation-agnostic
    cand = torch.randn(7, 4)
    all_t = scorer.score_t(h, r, cand)
    assert torch.allclose(all_t[2, 5], scorer.score_hrt(h[2], r[2], cand[5]), atol=1e-6)
    all_h = scorer.score_h(cand, r, t)
    assert torch.allclose(all_h[1, 3], scorer.score_hrt(cand[3], r[1], t[1]), atol=1e-6)
    from mmkgc.errors import ConfigError

    with pytest.raises(ConfigError, match="hidden"):
        build_scorer("mlp_link", 4, hidden=0)


def test_link_bce_run_resumes_to_the_same_numbers(tmp_path: Path):
    """Two epochs in one go equal one epoch, then a resume for the second: the epoch's supervision edges,
    negatives and subgraphs come from the checkpointed stream."""
    from mmkgc.features.io import save_feature_table
    from mmkgc.features.store import FeatureTable
    from mmkgc.pipeline import run_experiment

    _tiny_vemp(tmp_path)
    x = tmp_path / "x.safetensors"
    save_feature_table(FeatureTable(torch.randn(40, 6, generator=torch.Generator().manual_seed(1)), "x"), x)
    raw = _stage2(tmp_path, str(x))
    whole = run_experiment(parse_config(raw), tmp_path / "whole", device="cpu", log=lambda s: None)
    first = {**raw, "training": {**raw["training"], "epochs": 1}}
    run_experiment(parse_config(first), tmp_path / "split", device="cpu", log=lambda s: None)
    resumed = run_experiment(parse_config(raw), tmp_path / "split", resume=True, device="cpu", log=lambda s: None)
    assert resumed["training"]["epochs"] == 2
    assert resumed["summary"]["test"] == whole["summary"]["test"]
    assert resumed["protocol"]["legacy"] == whole["protocol"]["legacy"]
