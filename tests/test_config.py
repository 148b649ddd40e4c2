"""Config validation: every mistake gets one message naming the field."""

from pathlib import Path

import pytest

from mmkgc.config import load_config, parse_config
from mmkgc.errors import ConfigError

MINIMAL = {"dataset": {"synthetic": {"seed": 1}}}


def test_minimal_config_gets_defaults():
    cfg = parse_config(MINIMAL)
    assert cfg.model.scorer == "rotate"
    assert cfg.training.loop == "negative_sampling"
    assert cfg.evaluation.split == "valid_clean"


def test_unknown_key_is_named():
    with pytest.raises(ConfigError) as err:
        parse_config({**MINIMAL, "training": {"epocs": 3}}, source="x.yaml")
    msg = str(err.value)
    assert "x.yaml" in msg and "training.epocs" in msg and "unknown key" in msg


def test_wrong_type_is_named():
    with pytest.raises(ConfigError) as err:
        parse_config({**MINIMAL, "training": {"lr": "fast"}})
    assert "training.lr" in str(err.value)


def test_out_of_range_and_unknown_scorer():
    with pytest.raises(ConfigError, match="training.batch_size"):
        parse_config({**MINIMAL, "training": {"batch_size": 0}})
    with pytest.raises(ConfigError, match="unknown scorer 'rotatee'"):
        parse_config({**MINIMAL, "model": {"scorer": "rotatee"}})


def test_cross_field_rules():
    with pytest.raises(ConfigError, match="reciprocal"):
        parse_config({**MINIMAL, "training": {"loop": "one_to_n", "loss": "bce"}})
    with pytest.raises(ConfigError, match="one_to_n"):
        parse_config({**MINIMAL, "model": {"reciprocal": True}, "training": {"loop": "one_to_n", "loss": "nssa"}})
    with pytest.raises(ConfigError, match="modalities"):
        parse_config({**MINIMAL, "model": {"representation": "concat"}})
    with pytest.raises(ConfigError, match="exactly one of"):
        parse_config({"dataset": {"name": "DB15K", "synthetic": {}}})


def test_load_config_file_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset:\n  name: [DB15K\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: not valid YAML"):
        load_config(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="empty"):
        load_config(empty)


def test_relative_paths_resolve_against_config_dir_and_overrides(tmp_path: Path):
    cfg_file = tmp_path / "sub" / "c.yaml"
    cfg_file.parent.mkdir()
    cfg_file.write_text("dataset:\n  path: data\ntraining:\n  epochs: 3\n")
    cfg = load_config(cfg_file, overrides=["training.epochs=7", "model.dim=16"])
    assert cfg.dataset.path == (tmp_path / "sub" / "data").resolve()
    assert cfg.training.epochs == 7 and cfg.model.dim == 16
    with pytest.raises(ConfigError, match="dotted.key=value"):
        load_config(cfg_file, overrides=["training.epochs"])


def test_fusion_kind_by_resolver_name_and_operator_options_checked_by_field():
    """model.fusion.kind takes any name of the fusion operators (spelling-insensitive, stored as the configs spell
    it); undeclared keys are constructor options of that operator, and an unknown one is named by its path."""
    model = {"scorer": "rotate", "dim": 8, "representation": "fused",
             "modalities": [{"name": "text", "file": "t.npy"}]}
    cfg = parse_config({**MINIMAL, "model": {**model, "fusion": {"kind": "Tanh-Attention", "init_range": 0.1}}})
    assert (cfg.model.fusion.kind, cfg.model.fusion.options) == ("attention", {"init_range": 0.1})
    with pytest.raises(ConfigError) as err:
        parse_config({**MINIMAL, "model": {**model, "fusion": {"kind": "attention", "temperatur": 2.0}}})
    assert "model.fusion.temperatur: unexpected option of fusion 'attention'" in str(err.value)
    assert "init_range" in str(err.value) and "relation_temperature" not in str(err.value).split("options:")[1]
    with pytest.raises(ConfigError, match="model.fusion.kind: .*unknown fusion 'attn'"):
        parse_config({**MINIMAL, "model": {**model, "fusion": {"kind": "attn"}}})
    with pytest.raises(ConfigError, match=r"model.scorer_options.marginn: unexpected option of scorer 'rotate' "
                                          r"\(its options: margin, epsilon\)"):
        parse_config({**MINIMAL, "model": {**model, "scorer_options": {"marginn": 1.0}}})


_EXPERIMENTS = sorted(p for p in (Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml")
                      if not (p.parent.name == "vemp" and p.stem.startswith("stage1"))  # VEMP stage-1 options
                      and not p.stem.endswith("_space"))


@pytest.mark.parametrize("path", _EXPERIMENTS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_every_shipped_experiment_config_is_valid(path: Path):
    """configs/ (VEMP's stage-1 option files and the tune search spaces are other formats) all validate."""
    cfg = load_config(path)
    assert cfg.model.fusion.kind in ("concat", "attention")


def test_selection_metric_comes_from_the_one_metric_list():
    from mmkgc.evaluation.metrics import HEADLINE_METRICS, SELECTION_METRICS

    assert SELECTION_METRICS == ("mrr", "hits@1", "hits@3", "hits@10") and HEADLINE_METRICS[1] == "mr"
    assert parse_config({**MINIMAL, "evaluation": {"metric": "hits@3"}}).evaluation.metric == "hits@3"
    with pytest.raises(ConfigError, match=r"evaluation.metric: .*expected one of mrr, hits@1, hits@3, hits@10"):
        parse_config({**MINIMAL, "evaluation": {"metric": "mr"}})  # lower is better: not a selection metric


def test_builder_refuses_operator_options_the_representation_cannot_pass_on():
    from mmkgc.pipeline import build_model, load_data

    raw = {"dataset": {"synthetic": {"seed": 1, "num_entities": 60, "num_relations": 3, "num_types": 3}},
           "model": {"scorer": "distmult", "dim": 8, "representation": "concat",
                     "modalities": [{"name": "text"}], "fusion": {"kind": "concat", "other_scale": 0.2}}}
    cfg = parse_config(raw)
    assert cfg.model.fusion.options == {"other_scale": 0.2}
    with pytest.raises(ConfigError, match="model.fusion.other_scale: representation 'concat' builds its 'concat'"):
        build_model(cfg, load_data(cfg))


def test_training_loss_by_any_resolver_name_stored_as_the_trainer_spells_it():
    base = {**MINIMAL, "model": {"reciprocal": True}}
    for name, stored in [("NSSA", "nssa"), ("self-adversarial-sigmoid", "nssa"), ("MarginRanking", "margin"),
                         ("softplus", "softplus")]:
        assert parse_config({**base, "training": {"loss": name}}).training.loss == stored
    assert parse_config({**base, "training": {"loop": "one_to_n", "loss": "ce"}}).training.loss == "softmax_ce"
    with pytest.raises(ConfigError, match=r"training.loss: .*unknown loss 'huber'; known: .*nssa"):
        parse_config({**base, "training": {"loss": "huber"}})
    with pytest.raises(ConfigError, match="loss 'bce' belongs to loop 'one_to_n'"):
        parse_config({**base, "training": {"loss": "BCEWithLabelSmoothing"}})


def test_scorer_name_is_stored_as_the_scorer_names_itself():
    assert parse_config({**MINIMAL, "model": {"scorer": "RotatE"}}).model.scorer == "rotate"
    assert parse_config({**MINIMAL, "model": {"scorer": "DistMult"}}).model.scorer == "distmult"
