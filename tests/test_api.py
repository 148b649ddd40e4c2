"""The Python API (mmkgc.api), self-contained saved models, label suggestions, PyKEEN datasets and export, and the
CLI commands built on them (export, evaluate/predict of a saved model, --version)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import mmkgc
from mmkgc import cli
from mmkgc.api import load, metric_frame, pipeline, predict_target, predict_triples, pykeen_metrics, resolve_config
from mmkgc.config import parse_config
from mmkgc.data.labels import local_name, resolve_label, suggest_labels
from mmkgc.errors import CheckpointError, ConfigError, UnknownNameError
from mmkgc.pipeline import run_experiment

SMALL = {"seed": 1, "num_entities": 120, "num_relations": 4, "num_types": 4}


def _raw(**model) -> dict:
    return {
        "name": "api",
        "seed": 3,
        "dataset": {"synthetic": dict(SMALL)},
        "model": {"scorer": "distmult", "dim": 8, **model},
        "training": {"epochs": 2, "batch_size": 128, "num_negatives": 4, "lr": 0.01},
        "evaluation": {"every": 1, "batch_size": 64},
    }


def _quiet(line: str) -> None:
    pass


@pytest.fixture(scope="module")
def concat_result(tmp_path_factory):
    """A concat model whose text modality comes from a .npy file (so deleting the file shows self-containment)."""
    tmp = tmp_path_factory.mktemp("concat")
    table = tmp / "text.npy"
    np.save(table, np.random.default_rng(0).standard_normal((SMALL["num_entities"], 6)).astype(np.float32))
    raw = _raw(representation="concat", modalities=[{"name": "text", "file": str(table)}, {"name": "visual"}])
    return pipeline(raw, log=None), table


# ------------------------------------------------------------------------------------------------ config
def test_resolve_config_applies_dotted_and_double_underscore_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps(_raw()))
    cfg = resolve_config(path, {"training.epochs": 7, "model__scorer_options__p": 2, "model.scorer": "transe"})
    assert (cfg.training.epochs, cfg.model.scorer, cfg.model.scorer_options) == (7, "transe", {"p": 2})
    same = resolve_config(parse_config(_raw()), {"training.lr": 1e-5})  # a float PyYAML would read as text
    assert same.training.lr == 1e-5 and same.training.epochs == 2
    with pytest.raises(ConfigError, match="training.epochz"):
        resolve_config(_raw(), {"training.epochz": 1})
    with pytest.raises(ConfigError, match="seed is not a mapping"):
        resolve_config(_raw(), {"seed.x": 1})


# ------------------------------------------------------------------------------------------------ pipeline
def test_an_in_memory_run_writes_nothing_and_equals_the_run_directory_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = pipeline(_raw(), log=None)
    assert list(tmp_path.iterdir()) == [] and result.run_dir is None
    on_disk = run_experiment(parse_config(_raw()), tmp_path / "run", device="cpu", log=_quiet)
    assert result.metrics["summary"] == on_disk["summary"]
    assert result.metrics["training"]["best_epoch"] == on_disk["training"]["best_epoch"]
    # the returned model is the selected one: its test MRR is the reported one
    again = mmkgc.evaluate(result.model, split="test")
    assert again.get("mrr", side="both", policy="realistic") == pytest.approx(
        result.metrics["summary"]["test"]["realistic"]["mrr"], rel=1e-6)


def test_mmkgc_pipeline_is_callable_and_the_module_still_works(tmp_path):
    result = mmkgc.pipeline(_raw(), log=None, training__epochs=1)
    assert result.metrics["training"]["epochs"] == 1
    mrr = result.metrics["summary"]["test"]["realistic"]["mrr"]
    assert repr(result).startswith(f"PipelineResult(test MRR {mrr:.4f} (realistic ties), run_dir=None, "
                                   "model=TrainedModel(distmult structure, dim 8, dataset 'synthetic': 120 entities")
    assert mmkgc.pipeline.load_data is not None and mmkgc.load is load


def test_metric_frame_and_pykeen_layout_hold_the_metrics_json_values(concat_result):
    result, _ = concat_result
    m = result.metrics
    frame = result.metric_frame
    row = frame[(frame.split == "test") & (frame.policy == "pessimistic") & (frame.side == "head")
                & (frame.metric == "hits@3")]
    assert row.value.item() == m["test"]["metrics"]["pessimistic"]["head"]["hits@3"]
    assert len(frame) == sum(len(v) for s in ("valid", "test") for p in m[s]["metrics"].values() for v in p.values())
    pk = pykeen_metrics(m, "test")
    assert pk["both"]["realistic"]["inverse_harmonic_mean_rank"] == m["test"]["metrics"]["realistic"]["both"]["mrr"]
    assert pk["tail"]["optimistic"]["hits_at_10"] == m["test"]["metrics"]["optimistic"]["tail"]["hits@10"]
    assert pk["head"]["pessimistic"]["arithmetic_mean_rank"] == m["test"]["metrics"]["pessimistic"]["head"]["mr"]
    assert set(pk["both"]) == {"optimistic", "realistic", "pessimistic"}
    assert metric_frame({}).empty
    with pytest.raises(ConfigError, match="'train'"):
        pykeen_metrics(m, "train")


# ------------------------------------------------------------------------------------------------ predictions
def test_predict_target_scores_order_and_known_splits_by_hand(concat_result):
    result, _ = concat_result
    model = result.model
    t = model.triples
    h, r = int(t.test[0, 0]), int(t.test[0, 1])
    frame = predict_target(model, head=t.entity_labels[h], relation=t.relation_labels[r])
    assert len(frame) == t.num_entities and frame.score.is_monotonic_decreasing
    # every score is the model's own pointwise score of (h, r, e)
    ids = torch.tensor(frame.id.to_numpy())
    hrt = torch.stack([torch.full_like(ids, h), torch.full_like(ids, r), ids], 1)
    with torch.no_grad():
        direct = model.module.score_hrt(hrt)
    np.testing.assert_allclose(frame.score.to_numpy(), direct.numpy(), rtol=1e-5, atol=1e-6)
    # known_in against the split lists themselves
    for split in ("train", "valid", "test"):
        tails = {int(x[2]) for x in t.split(split).tolist() if x[0] == h and x[1] == r}
        marked = {int(i) for i, k in zip(frame.id, frame.known_in) if split in k.split(", ")}
        assert marked == tails, split
    assert int(t.test[0, 2]) in set(frame.id[frame.known])
    kept = predict_target(model, head=h, relation=r, remove_known=True, top_k=5)
    assert len(kept) == 5 and not kept.known.any()
    unknown = frame[~frame.known]
    assert kept.id.tolist() == unknown.id.tolist()[:5]
    tail = int(t.test[0, 2])
    heads = predict_target(model, tail=t.entity_labels[tail], relation=r, top_k=3)
    hids = torch.tensor(heads.id.to_numpy())
    with torch.no_grad():
        direct = model.module.score_hrt(torch.stack([hids, torch.full_like(hids, r), torch.full_like(hids, tail)], 1))
    np.testing.assert_allclose(heads.score.to_numpy(), direct.numpy(), rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        all_heads = model.module.score_hrt(torch.stack([torch.arange(t.num_entities),
                                                        torch.full((t.num_entities,), r),
                                                        torch.full((t.num_entities,), tail)], 1))
    assert heads.id.tolist() == torch.topk(all_heads, 3).indices.tolist()
    with pytest.raises(ConfigError, match="exactly one of head and tail"):
        predict_target(model, relation=r)
    with pytest.raises(ConfigError, match="unknown relation 'rel_x'"):
        predict_target(model, head=h, relation="rel_x")


def test_predict_triples_equals_pointwise_scores_and_accepts_labels(concat_result):
    result, _ = concat_result
    model = result.model
    t = model.triples
    batch = torch.cat([t.test[:5], torch.tensor([[0, 0, 1], [2, 1, 3]])])
    frame = predict_triples(model, batch)
    with torch.no_grad():
        np.testing.assert_allclose(frame.score.to_numpy(), model.module.score_hrt(batch).numpy(), rtol=1e-5,
                                   atol=1e-6)
    assert all("test" in k.split(", ") for k in frame.known_in[:5]) and frame.known[:5].all()
    by_label = predict_triples(model, [(t.entity_labels[a], t.relation_labels[b], t.entity_labels[c])
                                       for a, b, c in batch.tolist()])
    assert by_label.score.tolist() == frame.score.tolist()
    assert by_label[["head_id", "relation_id", "tail_id"]].to_numpy().tolist() == batch.tolist()
    with pytest.raises(ConfigError, match="out of range"):
        predict_triples(model, torch.tensor([[0, 0, t.num_entities]]))


# ------------------------------------------------------------------------------------------------ saved models
def test_a_saved_model_loads_without_its_feature_file_and_scores_the_same(concat_result, tmp_path):
    result, table = concat_result
    saved = result.save(tmp_path / "model")
    manifest = json.loads((saved / "mmkgc_model.json").read_text())
    assert [f["name"] for f in manifest["features"]] == ["text", "visual"] and manifest["features_included"]
    assert manifest["entity_labels"] == result.model.triples.entity_labels
    moved = table.with_suffix(".away")
    table.rename(moved)  # the dataset's feature file is gone
    try:
        loaded = load(saved, device="cpu")
    finally:
        moved.rename(table)
    batch = result.model.triples.test
    with torch.no_grad():
        assert torch.equal(loaded.module.score_hrt(batch), result.model.module.score_hrt(batch))
    a = predict_target(loaded, head=0, relation=0, top_k=10)
    b = predict_target(result.model, head=0, relation=0, top_k=10)
    assert a.equals(b)
    with pytest.raises(ConfigError, match="not an empty directory"):
        result.save(tmp_path / "model")


def test_a_changed_or_missing_table_is_one_clear_error(concat_result, tmp_path):
    from safetensors.torch import load_file, save_file

    from mmkgc.saved_model import _sha256

    result, table = concat_result
    saved = result.save(tmp_path / "m")
    tensors = load_file(str(saved / "features.safetensors"))
    trained_text = tensors["text.values"].clone()
    tensors["text.values"] = tensors["text.values"] + 1.0
    save_file(tensors, str(saved / "features.safetensors"))
    with pytest.raises(CheckpointError, match="sha256"):  # the file itself was replaced
        load(saved)
    manifest = json.loads((saved / "mmkgc_model.json").read_text())
    manifest["files"]["features"]["sha256"] = _sha256(saved / "features.safetensors")
    (saved / "mmkgc_model.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="feature table 'text' differs"):
        load(saved)
    tensors["text.values"] = trained_text  # back to the trained table
    del tensors["visual.present"]
    save_file(tensors, str(saved / "features.safetensors"))
    manifest["files"]["features"]["sha256"] = _sha256(saved / "features.safetensors")
    (saved / "mmkgc_model.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="'visual' the model was trained with is missing"):
        load(saved)
    # without stored tables: rebuilt from the config and checked against the hashes
    light = result.save(tmp_path / "light", include_features=False)
    assert not (light / "features.safetensors").exists()
    assert torch.equal(load(light).features[0].values, result.model.features[0].values)
    np.save(table.with_name("other.npy"), np.load(table) * 2)
    original = table.read_bytes()
    table.write_bytes(table.with_name("other.npy").read_bytes())
    try:
        with pytest.raises(CheckpointError, match=r"feature table\(s\) text rebuilt from the config differ"):
            load(light)
        table.unlink()
        with pytest.raises(CheckpointError, match="saved without its feature tables"):
            load(light)
    finally:
        table.write_bytes(original)


def test_not_a_model_directory(tmp_path, concat_result):
    with pytest.raises(ConfigError, match="not a run directory .* not a saved model"):
        load(tmp_path)
    saved = concat_result[0].save(tmp_path / "m")
    manifest = json.loads((saved / "mmkgc_model.json").read_text())
    manifest["files"]["triples"]["file"] = "../../elsewhere.safetensors"
    (saved / "mmkgc_model.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="the triples file must be 'triples.safetensors'"):
        load(saved)
    manifest["format_version"] = 99
    (saved / "mmkgc_model.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="format version 99"):
        load(saved)


# ------------------------------------------------------------------------------------------------ labels
DBPEDIA = ["<http://dbpedia.org/resource/Alabama>", "<http://dbpedia.org/resource/Alaska>",
           "<http://dbpedia.org/resource/Anarchism>", "http://www.wikidata.org/entity/Q30", "Paris"]


def test_local_names_and_suggestions_for_uri_labels():
    assert local_name(DBPEDIA[0]) == "Alabama" and local_name(DBPEDIA[3]) == "Q30" and local_name("Paris") == "Paris"
    assert suggest_labels("Alabama", DBPEDIA)[0] == DBPEDIA[0]
    assert suggest_labels("alabama", DBPEDIA)[0] == DBPEDIA[0]  # case does not matter for the local name
    assert suggest_labels("Alabma", DBPEDIA)[0] == DBPEDIA[0]  # a typo of the local name
    assert suggest_labels("Q30", DBPEDIA) == [DBPEDIA[3]]
    assert suggest_labels("Pariss", DBPEDIA) == ["Paris"]
    assert suggest_labels("zzzzzz", DBPEDIA) == []
    mapping = {label: i for i, label in enumerate(DBPEDIA)}
    with pytest.raises(ConfigError,
                       match=r"unknown entity 'Alabama'; did you mean '<http://dbpedia.org/resource/Alabama>'"):
        resolve_label("Alabama", DBPEDIA, mapping)
    assert resolve_label(DBPEDIA[1], DBPEDIA, mapping) == 1


def test_db15k_local_names_get_their_uri(db15k):
    """Issue 17.7: ``--head Alabama`` on DB15K suggests the DBpedia URI (it suggested only YAGO-like names before)."""
    assert suggest_labels("Alabama", db15k.entity_labels)[0] == "<http://dbpedia.org/resource/Alabama>"
    assert suggest_labels("Alabma", db15k.entity_labels)[0] == "<http://dbpedia.org/resource/Alabama>"
    assert suggest_labels("country", db15k.relation_labels)[0] == "<http://dbpedia.org/ontology/country>"


# ------------------------------------------------------------------------------------------------ PyKEEN
def test_a_pykeen_dataset_by_name_has_pykeens_ids_and_labels():
    pytest.importorskip("pykeen")
    from pykeen.datasets import Nations

    from mmkgc.pipeline import load_data

    data = load_data(parse_config({"dataset": {"pykeen": "Nations"}}))
    ref = Nations()
    t = data.triples
    assert (t.num_entities, t.num_relations) == (ref.training.num_entities, ref.training.num_relations)
    assert torch.equal(t.train, ref.training.mapped_triples) and torch.equal(t.test, ref.testing.mapped_triples)
    assert torch.equal(t.valid, ref.validation.mapped_triples)
    assert all(ref.training.entity_to_id[label] == i for i, label in enumerate(t.entity_labels))
    with pytest.raises(UnknownNameError, match="fb15k237"):
        load_data(parse_config({"dataset": {"pykeen": "FB15k-237x"}}))
    with pytest.raises(ConfigError, match="exactly one of name, path, synthetic or pykeen"):
        parse_config({"dataset": {"pykeen": "Nations", "name": "DB15K"}})


def test_pykeens_own_evaluator_on_the_export_reproduces_our_metrics(tmp_path):
    """Train on PyKEEN's Nations through ``dataset: {pykeen: Nations}``, export, and let PyKEEN's
    RankBasedEvaluator rank the test triples (filtered by train + valid + test): every metric of every side and
    rank type equals mmkgc's, in the layout of :func:`pykeen_metrics`."""
    pytest.importorskip("pykeen")
    from pykeen.evaluation import RankBasedEvaluator

    from mmkgc.interop.pykeen import export_pykeen, load_pykeen_model

    raw = _raw(scorer="complex")
    raw["dataset"] = {"pykeen": "Nations"}
    result = pipeline(raw, log=None, training__epochs=3)
    export_pykeen(result.model, tmp_path / "pk")
    model, factories = load_pykeen_model(tmp_path / "pk")
    theirs = RankBasedEvaluator().evaluate(
        model, factories["testing"].mapped_triples, batch_size=64, use_tqdm=False,
        additional_filter_triples=[factories["training"].mapped_triples, factories["validation"].mapped_triples],
    ).to_dict()
    ours = pykeen_metrics(result.metrics, "test")
    compared = 0
    for side, by_type in ours.items():
        for rank_type, values in by_type.items():
            for metric, value in values.items():
                if metric in ("count", "adjusted_arithmetic_mean_rank_index"):
                    continue
                assert value == pytest.approx(theirs[side][rank_type][metric], rel=1e-6, abs=1e-9), \
                    (side, rank_type, metric)
                compared += 1
    assert compared == 3 * 3 * 5  # sides x rank types x (MRR, MR, Hits@1/3/10)


def test_export_refuses_interactions_pykeen_computes_differently(tmp_path):
    pytest.importorskip("pykeen")
    from mmkgc.interop.pykeen import export_pykeen

    rotate = pipeline(_raw(scorer="rotate", scorer_options={"margin": 6.0}), log=None, training__epochs=1)
    with pytest.raises(ConfigError, match="sum of complex moduli.*Euclidean norm"):
        export_pykeen(rotate.model, tmp_path / "r")
    margin = pipeline(_raw(scorer="transe", scorer_options={"margin": 2.0}), log=None, training__epochs=1)
    with pytest.raises(ConfigError, match="margin"):
        export_pykeen(margin.model, tmp_path / "m")
    reciprocal = pipeline(_raw(scorer="complex", reciprocal=True), log=None, training__epochs=1)
    with pytest.raises(ConfigError, match="reciprocal"):
        export_pykeen(reciprocal.model, tmp_path / "c")
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_exported_transe_with_normalize_and_p2_scores_like_pykeen(tmp_path):
    pytest.importorskip("pykeen")
    import torch as _torch

    from mmkgc.interop.pykeen import export_pykeen, load_pykeen_model

    result = pipeline(_raw(scorer="transe", scorer_options={"p": 2, "normalize": True}), log=None)
    export_pykeen(result.model, tmp_path / "pk")
    pk, factories = load_pykeen_model(tmp_path / "pk")
    batch = result.model.triples.test
    with _torch.no_grad():
        ours = result.model.module.score_hrt(batch)
    theirs = pk.score_hrt(batch).squeeze(1).detach()
    _torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)
    assert _torch.equal(factories["testing"].mapped_triples, batch)
    assert factories["training"].entity_to_id == result.model.triples.entity_to_id
    # PyKEEN's metadata file is plain data: readable without unpickling arbitrary objects
    state = _torch.load(tmp_path / "pk" / "training" / "base.pth", weights_only=True)
    assert state["num_entities"] == result.model.triples.num_entities


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_version(capsys):
    assert cli.run(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"mmkgc {mmkgc.__version__}"


def test_cli_export_then_evaluate_and_predict_a_saved_model(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps(_raw(scorer="transe")))
    run = tmp_path / "run"
    assert cli.run(["train", str(cfg), "--run-dir", str(run), "--device", "cpu"]) == 0
    assert cli.run(["export", str(run), "--output", str(tmp_path / "saved")]) == 0
    capsys.readouterr()
    assert cli.run(["evaluate", str(run), "--output", str(tmp_path / "a.json")]) == 0
    assert cli.run(["evaluate", str(tmp_path / "saved"), "--output", str(tmp_path / "b.json")]) == 0
    a, b = (json.loads((tmp_path / f"{x}.json").read_text())["metrics"] for x in "ab")
    assert a == b
    assert cli.run(["evaluate", str(run), "--output", str(tmp_path / "p.json"), "--layout", "pykeen"]) == 0
    pk = json.loads((tmp_path / "p.json").read_text())
    assert pk["tail"]["realistic"]["inverse_harmonic_mean_rank"] == a["realistic"]["tail"]["mrr"]
    assert pk["both"]["pessimistic"]["hits_at_1"] == a["pessimistic"]["both"]["hits@1"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert b["realistic"]["both"]["mrr"] == pytest.approx(metrics["summary"]["test"]["realistic"]["mrr"], rel=1e-6)
    saved = load(tmp_path / "saved")
    h, r, t = saved.triples.train[0].tolist()
    head, rel = saved.triples.entity_labels[h], saved.triples.relation_labels[r]
    capsys.readouterr()
    top = saved.triples.num_entities
    assert cli.run(["predict", str(tmp_path / "saved"), "--head", head, "--relation", rel, "--top-k", str(top)]) == 0
    out = capsys.readouterr().out
    assert "known in" in out
    line = next(x for x in out.splitlines() if f" {saved.triples.entity_labels[t]} " in x)
    assert "train" in line
    # errors: a format without an identical interaction, an occupied output, a misspelled URI-less label
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("keep")
    assert cli.run(["export", str(run), "--output", str(tmp_path / "busy")]) == 2
    assert (tmp_path / "busy" / "mine.txt").read_text() == "keep"
    assert cli.run(["export", str(run), "--output", str(tmp_path / "x"), "--format", "onnx"]) == 2
    capsys.readouterr()
    assert cli.run(["predict", str(tmp_path / "saved"), "--head", head + "x", "--relation", rel]) == 2
    err = capsys.readouterr().err
    assert f"did you mean '{head}'" in err and "Traceback" not in err


def test_cli_predict_prints_long_labels_whole(tmp_path, capsys):
    """A label longer than the table's entity column wraps onto more lines instead of being cut to '...'."""
    long = "<http://dbpedia.org/resource/Primetime_Emmy_Award_for_Outstanding_Music_Composition_for_a_Series>"
    data = tmp_path / "kg"
    data.mkdir()
    (data / "train.tsv").write_text(f"a\tr\t{long}\nb\tr\t{long}\na\ts\tb\nc\tr\ta\n")
    (data / "valid.tsv").write_text("b\ts\tc\n")
    (data / "test.tsv").write_text(f"c\tr\t{long}\n")
    raw = _raw()
    raw["dataset"] = {"path": str(data), "format": "tsv"}
    pipeline(raw, log=None, training__epochs=1, training__batch_size=4, evaluation__batch_size=4).save(tmp_path / "m")
    capsys.readouterr()
    assert cli.run(["predict", str(tmp_path / "m"), "--head", "a", "--relation", "r"]) == 0
    out = capsys.readouterr().out
    assert "…" not in out
    cells = "".join(line.split("│")[2].strip() for line in out.splitlines() if line.count("│") >= 4)
    assert long in cells
    row = next(line for line in out.splitlines() if "Primetime" in line)
    assert row.split("│")[4].strip() == "train"  # (a, r, long) is a training triple
