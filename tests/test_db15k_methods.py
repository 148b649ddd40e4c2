"""``benchmarks/db15k_methods.py``: the row's variant string and the merge of new rows into the method table."""

from __future__ import annotations

import pytest
from benchmark_modules import BENCH, load_benchmark

methods = load_benchmark("db15k_methods")


def test_variant_names_batch_negatives_lr_and_the_adversarial_schedule():
    plain = {"training": {"batch_size": 4096, "num_negatives": 64, "lr": 0.002}}
    assert methods.variant(plain) == "batch 4096, 64 negatives, lr 0.002"
    mat = {"training": {"batch_size": 4096, "num_negatives": 64, "lr": 0.002,
                        "adversarial": {"kind": "mat", "mu": 0.004, "every": 4}}}
    assert methods.variant(mat) == "batch 4096, 64 negatives, lr 0.002, mat mu 0.004 every 4"
    one_to_n = {"training": {"loop": "one_to_n", "batch_size": 1024, "lr": 0.01}}
    assert methods.variant(one_to_n) == "batch 1024, lr 0.01"


def test_merge_keeps_old_rows_and_marks_the_replaced_one():
    previous = [{"config": "a", "test_mrr": 0.1}, {"config": "b", "test_mrr": 0.2, "current": False}]
    merged = methods.merge(previous, [{"config": "a", "test_mrr": 0.3}, {"config": "c", "test_mrr": 0.4}])
    assert merged == [{"config": "a", "test_mrr": 0.1, "current": False},
                      {"config": "b", "test_mrr": 0.2, "current": False},
                      {"config": "a", "test_mrr": 0.3, "current": True},
                      {"config": "c", "test_mrr": 0.4, "current": True}]


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


VARIANT_CHANGES = {  # what each CPU-budget variant changes against its method config, and nothing else
    "b4096": {"name", "training.batch_size", "training.lr", "evaluation.every", "evaluation.patience"},
    "every4": {"name", "training.adversarial.every", "evaluation.every", "evaluation.patience"},
    "n16": {"name", "training.num_negatives"},
    "lr3e3": {"name", "training.lr"},
}


@pytest.mark.parametrize("path", sorted((BENCH.parent / "configs" / "db15k").glob("*_b4096.yaml"))
                         + sorted((BENCH.parent / "configs" / "db15k").glob("*_every4.yaml"))
                         + sorted((BENCH.parent / "configs" / "db15k").glob("*_n16.yaml"))
                         + sorted((BENCH.parent / "configs" / "db15k").glob("*_lr3e3.yaml")), ids=lambda p: p.stem)
def test_budget_variants_change_only_what_they_say(path):
    from mmkgc.config import load_config

    base_name, kind = path.stem.rsplit("_", 1)
    variant_cfg = _flat(load_config(path).model_dump())
    base = _flat(load_config(path.with_name(f"{base_name}.yaml")).model_dump())
    changed = {k for k in set(base) | set(variant_cfg) if base.get(k) != variant_cfg.get(k)}
    expected = set(VARIANT_CHANGES[kind])
    if base_name == "adamf_mat_text":  # its batch-4096 variant also runs the adversarial part on every 4th batch
        expected |= {"training.adversarial.every"}
    assert changed == expected
    if kind == "b4096":
        assert variant_cfg["training.batch_size"] == 4 * base["training.batch_size"]
        assert variant_cfg["training.num_negatives"] == base["training.num_negatives"]
        assert variant_cfg["training.lr"] == pytest.approx(4 * base["training.lr"])
    if kind == "n16":
        assert variant_cfg["training.num_negatives"] == 16 and base["training.num_negatives"] == 64
        assert path.stem in methods.METHODS
    if kind == "lr3e3":
        assert variant_cfg["training.lr"] == pytest.approx(3 * base["training.lr"]) and base["training.lr"] == 1e-3
        assert path.stem in methods.METHODS


def test_every16_configs_change_only_the_adversarial_schedule():
    """``afme_text_n16_every16.yaml`` and ``adamf_mat_text_frozen_every16.yaml`` are their every-4 configs with the
    adversarial part on every 16th batch."""
    from mmkgc.config import load_config

    db15k = BENCH.parent / "configs" / "db15k"
    every16 = _flat(load_config(db15k / "afme_text_n16_every16.yaml").model_dump())
    every4 = _flat(load_config(db15k / "afme_text_every4_n16.yaml").model_dump())
    changed = {k for k in set(every4) | set(every16) if every4.get(k) != every16.get(k)}
    assert changed == {"name", "training.adversarial.every"}
    assert (every4["training.adversarial.every"], every16["training.adversarial.every"]) == (4, 16)
    assert "afme_text_n16_every16" in methods.METHODS
    mat16 = _flat(load_config(db15k / "adamf_mat_text_frozen_every16.yaml").model_dump())
    mat4 = _flat(load_config(db15k / "adamf_mat_text_every4_frozen.yaml").model_dump())
    assert {k for k in set(mat4) | set(mat16) if mat4.get(k) != mat16.get(k)} == {"name", "training.adversarial.every"}
    assert (mat4["training.adversarial.every"], mat16["training.adversarial.every"]) == (4, 16)
    assert "adamf_mat_text_frozen_every16" in methods.METHODS


def test_method_table_rows_have_the_required_keys_and_one_current_row_per_config():
    import json

    rows = json.loads((BENCH.parent / "docs" / "results" / "db15k_methods.json").read_text(encoding="utf-8"))
    current: dict[str, int] = {}
    for row in rows:
        for key in ("config", "method", "epochs", "training_seconds", "test_mrr", "test_hits1", "test_hits10",
                    "variant", "current"):
            assert key in row, (row["config"], key)
        h1, mrr, h10 = row["test_hits1"], row["test_mrr"], row["test_hits10"]
        # fractions; a reciprocal rank is 1 at rank 1 and at most 1/11 beyond rank 10
        assert 0.0 <= h1 <= mrr <= h10 + (1.0 - h10) / 11 and h10 <= 1.0, row["config"]
        assert (BENCH.parent / row["config"]).is_file(), row["config"]
        current[row["config"]] = current.get(row["config"], 0) + bool(row["current"])
    assert all(n <= 1 for n in current.values()), current


def test_seed_runs_get_their_own_directory_and_replace_only_their_own_row():
    assert methods.run_name("rotate", None) == "rotate"
    assert methods.run_name("rotate", 43) == "rotate-seed43"
    previous = [{"config": "a", "seed": 42, "test_mrr": 0.1}, {"config": "a", "seed": 43, "test_mrr": 0.2}]
    merged = methods.merge(previous, [{"config": "a", "seed": 43, "test_mrr": 0.3}])
    assert merged == [{"config": "a", "seed": 42, "test_mrr": 0.1, "current": True},
                      {"config": "a", "seed": 43, "test_mrr": 0.2, "current": False},
                      {"config": "a", "seed": 43, "test_mrr": 0.3, "current": True}]


def test_residual_concat_config_changes_only_the_representation():
    """``rotate_text_residual.yaml`` is ``rotate_text.yaml`` with the concat operator's structural block fixed."""
    from mmkgc.config import load_config

    db15k = BENCH.parent / "configs" / "db15k"
    residual = _flat(load_config(db15k / "rotate_text_residual.yaml").model_dump())
    base = _flat(load_config(db15k / "rotate_text.yaml").model_dump())
    changed = {k for k in set(base) | set(residual) if base.get(k) != residual.get(k)}
    assert changed == {"name", "model.representation", "model.fusion.residual_slot", "model.fusion.fixed_residual"}
    assert residual["model.representation"] == "fused" and residual["model.fusion.kind"] == "concat"
    assert residual["model.fusion.residual_slot"] == 0 and residual["model.fusion.fixed_residual"] is True
    assert "rotate_text_residual" in methods.METHODS


@pytest.mark.parametrize("stem", ["adamf_text", "adamf_mat_text_every4"])
def test_frozen_adamf_configs_change_only_the_feature_training(stem):
    from mmkgc.config import load_config

    db15k = BENCH.parent / "configs" / "db15k"
    frozen = _flat(load_config(db15k / f"{stem}_frozen.yaml").model_dump())
    base = _flat(load_config(db15k / f"{stem}.yaml").model_dump())
    changed = {k for k in set(base) | set(frozen) if base.get(k) != frozen.get(k)}
    assert changed == {"name", "model.trainable_features"} and frozen["model.trainable_features"] is False
    assert f"{stem}_frozen" in methods.METHODS


def test_load_samples_are_kept_per_run_and_old_shared_files_still_read(tmp_path):
    """Two invocations on one ``--runs`` once crashed reading a half-written shared ``load.json``; each run now has
    its own file, and a run found only in an old shared file keeps its samples."""
    import json

    (tmp_path / "load.json").write_text(json.dumps({"a": [1.0], "b": [2.0]}))
    methods.atomic_write_text(methods.load_file(tmp_path, "b"), json.dumps([3.0, 4.0]))
    assert methods.read_loads(tmp_path, ["a", "b", "c"]) == {"a": [1.0], "b": [3.0, 4.0]}
    assert methods.load_file(tmp_path, "b").name == "b.load.json"


def test_tucker_budget_is_the_imvia_budget_decoder_trained_the_same_way():
    """``tucker_budget.yaml`` is the structure decoder of ``imvia_text_budget_nodropout.yaml`` alone: the same TuckER
    widths and dropouts, the same per-decoder loss and label smoothing, optimiser, batch, budget and selection."""
    from mmkgc.config import load_config

    db15k = BENCH.parent / "configs" / "db15k"
    tucker = load_config(db15k / "tucker_budget.yaml")
    imvia = load_config(db15k / "imvia_text_budget_nodropout.yaml")
    opts, io = tucker.model.scorer_options, imvia.model.imvia
    assert tucker.model.scorer == "tucker" and tucker.model.modalities == [] and tucker.model.reciprocal
    assert tucker.model.dim == imvia.model.dim and opts["relation_dim"] == io.relation_dim
    assert (opts["input_dropout"], opts["hidden_dropout1"], opts["hidden_dropout2"]) == (
        io.input_dropout, io.hidden_dropout1, io.hidden_dropout2)
    assert tucker.training.loss == io.branch_loss == "softmax_ce"
    assert tucker.training.label_smoothing == io.label_smoothing
    for key in ("loop", "batch_size", "optimizer", "lr", "time_budget_minutes", "epochs"):
        assert getattr(tucker.training, key) == getattr(imvia.training, key), key
    assert tucker.evaluation == imvia.evaluation and tucker.seed == imvia.seed
    assert "tucker_budget" in methods.METHODS


@pytest.mark.parametrize("stem, base_stem, key, before, after", [
    ("imvia_text_budget_identity", "imvia_text_budget_nodropout", "model.imvia.expert_init", "normal", "identity"),
    ("imvia_text_budget_identity_logp", "imvia_text_budget_identity", "model.imvia.decision_space", "probability",
     "log_probability"),
])
def test_imvia_budget_configs_change_one_option_each(stem, base_stem, key, before, after):
    from mmkgc.config import load_config

    db15k = BENCH.parent / "configs" / "db15k"
    variant = _flat(load_config(db15k / f"{stem}.yaml").model_dump())
    base = _flat(load_config(db15k / f"{base_stem}.yaml").model_dump())
    changed = {k for k in set(base) | set(variant) if base.get(k) != variant.get(k)}
    assert changed == {"name", key}
    assert base[key] == before and variant[key] == after
    assert stem in methods.METHODS
