"""``model.structure_init``: a multimodal model's structural table and relations start from a trained structure-only
model (the warm-start rows of docs/benchmarks.md).  The copied values, the untouched rest, and every refusal."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mmkgc.config import parse_config
from mmkgc.errors import ConfigError
from mmkgc.pipeline import build_model, init_structure, load_data, load_run, run_experiment, structure_init_file

SMALL = {"num_entities": 120, "num_relations": 4, "num_types": 4}


def _raw(**model) -> dict:
    return {
        "name": "warm",
        "seed": 5,
        "dataset": {"synthetic": {"seed": 2, **SMALL}},
        "model": {"scorer": "rotate", "dim": 8, "scorer_options": {"margin": 6.0}, **model},
        "training": {"epochs": 2, "batch_size": 128, "num_negatives": 4, "lr": 0.01},
        "evaluation": {"every": 2, "patience": None, "batch_size": 64},
    }


@pytest.fixture(scope="module")
def source_run(tmp_path_factory) -> Path:
    """A trained structure-only RotatE run directory (2 epochs on the synthetic KG)."""
    run = tmp_path_factory.mktemp("src") / "rotate"
    run_experiment(parse_config(_raw()), run, device="cpu", log=lambda line: None)
    return run


TEXT = {"representation": "concat", "modalities": [{"name": "text"}]}
FUSED = {"representation": "fused", "adapter": "mlp", "modalities": [{"name": "text"}],
         "fusion": {"kind": "attention", "relation_temperature": True}}


@pytest.mark.parametrize("model", [TEXT, FUSED], ids=["concat", "fused"])
def test_copies_the_structural_table_and_relations_and_nothing_else(source_run: Path, model: dict):
    trained = load_file(str(source_run / "checkpoints" / "last" / "model.safetensors"))
    plain_cfg = parse_config(_raw(**model))
    data = load_data(plain_cfg)
    plain = build_model(plain_cfg, data)
    cfg = parse_config(_raw(**model, structure_init=str(source_run / "checkpoints" / "last")))
    warm = build_model(cfg, data)
    assert torch.equal(warm.entities.structure.embedding.weight, plain.entities.structure.embedding.weight)
    info = init_structure(warm, cfg.model.structure_init, cfg)
    assert torch.equal(warm.entities.structure.embedding.weight, trained["entities.embedding.weight"])
    assert torch.equal(warm.relations.weight, trained["relations.weight"])
    # the source really is trained: its table differs from the fresh initialisation of the same seed
    assert not torch.equal(plain.entities.structure.embedding.weight, trained["entities.embedding.weight"])
    copied = {"entities.structure.embedding.weight", "relations.weight"}
    plain_state, warm_state = plain.state_dict(), warm.state_dict()
    assert set(plain_state) == set(warm_state)
    for key in set(plain_state) - copied:  # every other parameter and buffer keeps its own initialisation
        assert torch.equal(plain_state[key], warm_state[key]), key
    assert info["epoch"] == 2
    source_seconds = json.loads((source_run / "metrics.json").read_text())["training"]["training_seconds"]
    assert info["training_seconds"] == pytest.approx(source_seconds)


def test_a_run_directory_means_its_selected_checkpoint(source_run: Path):
    assert structure_init_file(source_run) == source_run / "checkpoints" / "best" / "model.safetensors"
    assert structure_init_file(source_run / "checkpoints" / "last") == \
        source_run / "checkpoints" / "last" / "model.safetensors"
    file = source_run / "checkpoints" / "last" / "model.safetensors"
    assert structure_init_file(file) == file


def test_the_warm_run_records_its_source_and_trains_from_it(source_run: Path, tmp_path: Path):
    raw = _raw(**TEXT, structure_init=str(source_run))
    raw["training"]["epochs"] = 1
    lines: list[str] = []
    metrics = run_experiment(parse_config(raw), tmp_path / "warm", device="cpu", log=lines.append)
    info = metrics["training"]["structure_init"]
    assert info["file"] == str(source_run / "checkpoints" / "best" / "model.safetensors")
    source_seconds = json.loads((source_run / "metrics.json").read_text())["training"]["training_seconds"]
    assert info["training_seconds"] == pytest.approx(source_seconds)
    assert any("initialised from" in line for line in lines)
    # a warm start begins where the source ended: its first epoch's loss is far below a cold start's
    cold = _raw(**TEXT)
    cold["training"]["epochs"] = 1
    run_experiment(parse_config(cold), tmp_path / "cold", device="cpu", log=lambda line: None)
    loss = [json.loads(x)["loss"] for x in (tmp_path / "warm" / "metrics.jsonl").read_text().splitlines()]
    cold_loss = [json.loads(x)["loss"] for x in (tmp_path / "cold" / "metrics.jsonl").read_text().splitlines()]
    assert loss[0] < cold_loss[0]


def test_a_finished_warm_run_needs_its_source_neither_to_evaluate_nor_to_resume(source_run: Path, tmp_path: Path):
    import shutil

    source = tmp_path / "source"
    shutil.copytree(source_run, source)
    raw = _raw(**TEXT, structure_init=str(source))
    raw["training"]["epochs"] = 1
    run_experiment(parse_config(raw), tmp_path / "warm", device="cpu", log=lambda line: None)
    trained = load_file(str(tmp_path / "warm" / "checkpoints" / "best" / "model.safetensors"))
    shutil.rmtree(source)
    _, _, model = load_run(tmp_path / "warm", device="cpu")  # rebuilt from its own checkpoint, not the source
    assert torch.equal(model.entities.structure.embedding.weight, trained["entities.structure.embedding.weight"])
    raw["training"]["epochs"] = 2
    metrics = run_experiment(parse_config(raw), tmp_path / "warm", resume=True, device="cpu", log=lambda line: None)
    assert metrics["training"]["epochs"] == 2
    assert metrics["training"]["structure_init"] == {"file": str(source), "epoch": None, "training_seconds": None}


@pytest.mark.parametrize("change, message", [
    ({"dim": 6}, "model.dim 8, this run needs 6"),
    ({"scorer": "transe", "scorer_options": {}}, "model.scorer 'rotate', this run needs 'transe'"),
    ({"reciprocal": True}, "model.reciprocal False, this run needs True"),
])
def test_refuses_a_source_of_another_shape(source_run: Path, change: dict, message: str):
    cfg = parse_config(_raw(**{**TEXT, **change, "structure_init": str(source_run)}))
    with pytest.raises(ConfigError, match="model.structure_init: .*" + message.replace("(", r"\(")):
        init_structure(build_model(cfg, load_data(cfg)), cfg.model.structure_init, cfg)


def test_refuses_a_multimodal_source_and_a_missing_one(source_run: Path, tmp_path: Path):
    mm = tmp_path / "mm"
    run_experiment(parse_config({**_raw(**TEXT), "training": {**_raw()["training"], "epochs": 1}}), mm, device="cpu",
                   log=lambda line: None)
    cfg = parse_config(_raw(**TEXT, structure_init=str(mm)))
    with pytest.raises(ConfigError, match="source run has model.representation 'concat'"):
        init_structure(build_model(cfg, load_data(cfg)), cfg.model.structure_init, cfg)
    # without the source config next to it, the keys decide: a concat model has no plain entity table
    lone = tmp_path / "lone.safetensors"
    lone.write_bytes((mm / "checkpoints" / "best" / "model.safetensors").read_bytes())
    cfg = parse_config(_raw(**TEXT, structure_init=str(lone)))
    with pytest.raises(ConfigError, match="not a structure-only model"):
        init_structure(build_model(cfg, load_data(cfg)), cfg.model.structure_init, cfg)
    cfg = parse_config(_raw(**TEXT, structure_init=str(tmp_path / "nowhere")))
    with pytest.raises(ConfigError, match="model.structure_init: .*nowhere: no model here"):
        init_structure(build_model(cfg, load_data(cfg)), cfg.model.structure_init, cfg)


def test_config_refuses_a_model_without_a_structural_table():
    with pytest.raises(ConfigError, match="structure_init needs a structural embedding table"):
        parse_config(_raw(representation="modality_only", modalities=[{"name": "text"}], structure_init="x"))


def test_cli_reports_a_bad_source_with_exit_2(tmp_path: Path):
    import yaml

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(_raw(**TEXT, structure_init="missing_run")))
    src = str(Path(__file__).resolve().parents[1] / "src")
    proc = subprocess.run([sys.executable, "-m", "mmkgc", "train", str(cfg), "--run-dir", str(tmp_path / "r")],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=tmp_path,
                          env={"CI": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": src,
                               "MMKGC_HOME": str(tmp_path / "home")})
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "r" / "config.yaml").exists()  # refused before the run directory was written
    # the relative path is taken from the config file's folder
    assert f"model.structure_init: {tmp_path / 'missing_run'}: no model here" in proc.stderr
