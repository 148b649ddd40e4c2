"""mmkgc tune: Optuna trials through the training pipeline, selected on valid_clean MRR only, resumable, pruned."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

optuna = pytest.importorskip("optuna")

from mmkgc.config import load_config  # noqa: E402
from mmkgc.errors import ConfigError  # noqa: E402
from mmkgc.pipeline import run_experiment  # noqa: E402
from mmkgc.tuning import tune  # noqa: E402

SPACE = {"training.lr": {"type": "float", "low": 0.002, "high": 0.1, "log": True},
         "model.dim": {"type": "categorical", "choices": [8, 16]}}


def _config(tmp_path: Path, space=SPACE, **tune_options) -> Path:
    raw = {
        "name": "tiny", "seed": 3,
        "dataset": {"synthetic": {"seed": 1, "num_entities": 160, "num_relations": 5, "num_types": 5}},
        "model": {"scorer": "distmult", "dim": 8},
        "training": {"epochs": 3, "batch_size": 128, "num_negatives": 4, "lr": 0.01},
        "evaluation": {"every": 1, "patience": None, "batch_size": 64},
        "tune": {"space": space, "pruner": "none", **tune_options},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _quiet(line: str) -> None:
    pass


def _csv(study: Path) -> list[dict]:
    return list(csv.DictReader((study / "trials.csv").open()))


def test_study_selects_on_valid_clean_and_best_config_reproduces_it(tmp_path: Path, monkeypatch):
    import mmkgc.evaluation.metrics as metrics_module
    import mmkgc.training.trainer as trainer_module

    splits: list[str] = []
    real = metrics_module.evaluate

    def spy(*args, **kwargs):
        splits.append(kwargs.get("split", "test"))
        return real(*args, **kwargs)

    monkeypatch.setattr(metrics_module, "evaluate", spy)
    monkeypatch.setattr(trainer_module, "evaluate", spy)
    config = _config(tmp_path)
    result = tune(config, tmp_path / "study", trials=3, device="cpu", log=_quiet)

    # test is evaluated exactly once, after every trial, on the best trial; trials only ever see valid_clean
    assert splits.count("test") == 1 and splits[-1] == "test" and set(splits[:-1]) == {"valid_clean"}
    rows = _csv(tmp_path / "study")
    assert [r["state"] for r in rows] == ["complete"] * 3
    values = {}
    for r in rows:
        trial_dir = tmp_path / "study" / "trials" / f"trial-{int(r['trial']):04d}"
        metrics = json.loads((trial_dir / "metrics.json").read_text())
        assert "test" not in metrics
        assert metrics["training"]["selection"] == "valid_clean mrr (realistic)"
        # the objective is the run's best valid_clean MRR, the maximum over its per-epoch validations
        per_epoch = [json.loads(line)["valid"]["mrr"] for line in (trial_dir / "metrics.jsonl").open()]
        assert float(r["valid_clean_mrr"]) == pytest.approx(max(per_epoch), abs=1e-6)
        values[int(r["trial"])] = metrics["training"]["best_valid_metric"]
    best = max(values, key=values.get)
    assert result.best["number"] == best and result.best["value"] == values[best]
    saved = json.loads((tmp_path / "study" / "best.json").read_text())
    assert saved["trial"] == best and saved["params"] == result.best["params"]
    # only the best trial keeps a checkpoint
    kept = sorted(p.parent.parent.name for p in (tmp_path / "study" / "trials").glob("*/checkpoints/best"))
    assert kept == [f"trial-{best:04d}"]

    # best_config.yaml trains the same model again: same validation MRR, and its test MRR is best.json's
    cfg = load_config(tmp_path / "study" / "best_config.yaml")
    assert cfg.training.lr == pytest.approx(saved["params"]["training.lr"], rel=1e-12)
    assert cfg.model.dim == saved["params"]["model.dim"] and cfg.evaluation.test is True and cfg.tune is None
    again = run_experiment(cfg, tmp_path / "again", device="cpu", log=_quiet)
    assert again["training"]["best_valid_metric"] == pytest.approx(values[best], abs=1e-9)
    assert again["summary"]["test"]["realistic"]["mrr"] == pytest.approx(saved["test"]["realistic"]["mrr"], abs=1e-9)


def test_rerun_continues_the_study_and_refuses_another_space(tmp_path: Path):
    config = _config(tmp_path)
    tune(config, tmp_path / "study", trials=2, device="cpu", log=_quiet)
    first = _csv(tmp_path / "study")
    # a trial that a killed invocation left running is marked failed (not counted), then the study continues to 4
    study = optuna.load_study(study_name="mmkgc", storage=f"sqlite:///{tmp_path / 'study' / 'study.db'}")
    study.ask()
    lines: list[str] = []
    tune(config, tmp_path / "study", trials=4, device="cpu", log=lines.append)
    rows = _csv(tmp_path / "study")
    assert rows[:2] == first  # earlier trials untouched
    assert [r["state"] for r in rows] == ["complete", "complete", "fail", "complete", "complete"]
    assert any("trial 2: left running" in line for line in lines)
    params = [(r["training.lr"], r["model.dim"]) for r in rows if r["state"] == "complete"]
    assert len(set(params)) == 4  # the continued sampler does not replay the first trials' points
    # finished already: nothing more runs
    tune(config, tmp_path / "study", trials=4, device="cpu", log=_quiet)
    assert len(_csv(tmp_path / "study")) == 5
    other = _config(tmp_path, space={"training.lr": {"type": "float", "low": 0.001, "high": 0.1}})
    with pytest.raises(ConfigError, match="another config"):
        tune(other, tmp_path / "study", trials=6, device="cpu", log=_quiet)


def test_pruner_stops_trials_after_a_poor_validation(tmp_path: Path):
    # ThresholdPruner(lower=1.1): every validation MRR is below it, so each trial stops after its first epoch
    config = _config(tmp_path, pruner="threshold", pruner_options={"lower": 1.1})
    result = tune(config, tmp_path / "study", trials=2, device="cpu", log=_quiet)
    assert result.best is None
    rows = _csv(tmp_path / "study")
    assert [(r["state"], r["epochs"]) for r in rows] == [("pruned", "1"), ("pruned", "1")]
    log = (tmp_path / "study" / "trials" / "trial-0000" / "metrics.jsonl").read_text().splitlines()
    assert len(log) == 1
    assert not (tmp_path / "study" / "best_config.yaml").exists()


def test_space_and_study_dir_errors(tmp_path: Path):
    bad_key = _config(tmp_path, space={"training.lrr": {"type": "float", "low": 0.01, "high": 0.1}})
    with pytest.raises(ConfigError, match=r"tune.space.training.lrr.*training.lrr: unknown key"):
        tune(bad_key, tmp_path / "s1", trials=1, device="cpu", log=_quiet)
    bad_value = _config(tmp_path, space={"model.dim": {"type": "int", "low": 0, "high": 4}})
    with pytest.raises(ConfigError, match=r"tune.space.model.dim: the value 0"):
        tune(bad_value, tmp_path / "s2", trials=1, device="cpu", log=_quiet)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(ConfigError, match="not an mmkgc study directory"):
        tune(_config(tmp_path), foreign, trials=1, device="cpu", log=_quiet)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    no_space = tmp_path / "nospace.yaml"
    raw = yaml.safe_load(_config(tmp_path).read_text())
    del raw["tune"]
    no_space.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="no search space"):
        tune(no_space, tmp_path / "s3", trials=1, device="cpu", log=_quiet)


def test_cli_tune_with_a_separate_space_file(tmp_path: Path, capsys, monkeypatch):
    from mmkgc.cli import run

    config = _config(tmp_path)
    raw = yaml.safe_load(config.read_text())
    del raw["tune"]
    config.write_text(yaml.safe_dump(raw))
    (tmp_path / "space.yaml").write_text(yaml.safe_dump({"training.lr": {"type": "float", "low": 0.005, "high": 0.05}}))
    code = run(["tune", str(config), "--space", str(tmp_path / "space.yaml"), "--study-dir", str(tmp_path / "st"),
                "--trials", "2", "--device", "cpu", "--set", "training.epochs=2"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "best: trial" in out and "valid MRR" in out
    rows = _csv(tmp_path / "st")
    assert len(rows) == 2 and all(0.005 <= float(r["training.lr"]) <= 0.05 for r in rows)
    assert all(r["epochs"] == "2" for r in rows)  # the --set override reached every trial
    monkeypatch.setitem(sys.modules, "optuna", None)  # as on an install without the tune extra
    code = run(["tune", str(config), "--space", str(tmp_path / "space.yaml"), "--study-dir", str(tmp_path / "s4")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and err.count("error:") == 1
    assert 'pip install "mmkgc[tune]"' in err and not (tmp_path / "s4").exists()


def test_interrupted_study_exits_130_and_keeps_the_study(tmp_path: Path):
    import signal

    config = _config(tmp_path)
    src = str(Path(__file__).resolve().parents[1] / "src")
    argv = [sys.executable, "-m", "mmkgc", "tune", str(config), "--study-dir", str(tmp_path / "st"), "--trials", "2",
            "--device", "cpu", "--set", "training.epochs=400"]
    env = {"CI": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": src, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=tmp_path)
    seen = []
    for line in proc.stderr:  # wait until trial 0 has finished an epoch
        seen.append(line)
        if line.startswith("trial 0: epoch 2:"):
            proc.send_signal(signal.SIGTERM)
            break
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 130, "".join(seen) + rest
    assert "rerun the same command to continue it" in rest and "Traceback" not in rest
    rows = _csv(tmp_path / "st")
    assert [r["state"] for r in rows] == ["fail"]  # the interrupted trial does not count
    # the --set list and the trial budget are part of the study
    with pytest.raises(ConfigError, match="another config, --set overrides"):
        tune(config, tmp_path / "st", trials=2, overrides=["training.epochs=2"], device="cpu", log=_quiet)
    with pytest.raises(ConfigError, match="trial budget"):
        tune(config, tmp_path / "st", trials=2, overrides=["training.epochs=400"], time_budget_minutes=0.01,
             device="cpu", log=_quiet)
