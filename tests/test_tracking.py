"""Result trackers: metrics.jsonl by default; TensorBoard (real package when installed), MLflow and W&B.

MLflow and Weights & Biases are not in the test extra (large, with servers and binaries): their trackers are
tested against small fake modules put in ``sys.modules`` that record the calls, which pins the calls mmkgc makes
(names, steps, values) but not the packages' own behaviour.
"""

import json
import types
from pathlib import Path

import pytest

from mmkgc.config import parse_config
from mmkgc.extras import MissingExtraError
from mmkgc.pipeline import run_experiment
from mmkgc.training.tracking import ResultTracker, flatten, numeric


def _raw(**tracking) -> dict:
    return {
        "name": "tracked", "seed": 4,
        "dataset": {"synthetic": {"seed": 2, "num_entities": 160, "num_relations": 5, "num_types": 5}},
        "model": {"scorer": "distmult", "dim": 8},
        "training": {"epochs": 3, "batch_size": 128, "num_negatives": 4, "lr": 0.02},
        "evaluation": {"every": 2, "patience": None, "batch_size": 64},
        "tracking": tracking,
    }


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_flatten_and_numeric():
    record = {"epoch": 2, "loss": 0.5, "partial": False, "valid": {"mrr": 0.25, "hits@10": 1}, "x": float("nan"),
              "terms": {"adv": {"g": 3}}}
    assert flatten(record)["valid/mrr"] == 0.25 and flatten(record)["terms/adv/g"] == 3
    assert numeric(record) == {"epoch": 2.0, "loss": 0.5, "valid/mrr": 0.25, "valid/hits@10": 1.0,
                               "terms/adv/g": 3.0}


class _Recorder(ResultTracker):
    def __init__(self, fail_at: int | None = None):
        self.calls: list[tuple] = []
        self.fail_at = fail_at

    def start_run(self, name, run_dir=None):
        self.calls.append(("start", name))

    def log_params(self, params):
        self.calls.append(("params", params))

    def log_metrics(self, metrics, step):
        self.calls.append(("metrics", step, metrics))
        if step == self.fail_at:
            raise RuntimeError("tracker stops the run")

    def end_run(self, status="finished"):
        self.calls.append(("end", status))


def test_extra_tracker_sees_every_epoch_and_the_status(tmp_path: Path):
    rec = _Recorder()
    metrics = run_experiment(parse_config(_raw()), tmp_path / "r", device="cpu", log=lambda line: None,
                             trackers=[rec])
    assert rec.calls[0] == ("start", "tracked") and rec.calls[-1] == ("end", "finished")
    params = rec.calls[1][1]
    assert params["training.lr"] == 0.02 and params["model.dim"] == 8 and "tune" not in params
    epochs = [c for c in rec.calls if c[0] == "metrics" and "final" not in c[2]]
    assert [c[2] for c in epochs] == _records(tmp_path / "r")  # the same records as metrics.jsonl
    final = next(c for c in rec.calls if c[0] == "metrics" and "final" in c[2])
    assert final[1] == 3 and final[2]["final"]["test"]["mrr"] == metrics["summary"]["test"]["realistic"]["mrr"]

    failing = _Recorder(fail_at=2)
    with pytest.raises(RuntimeError, match="tracker stops"):
        run_experiment(parse_config(_raw()), tmp_path / "f", device="cpu", log=lambda line: None, trackers=[failing])
    assert failing.calls[-1] == ("end", "failed")
    assert len(_records(tmp_path / "f")) == 2  # metrics.jsonl (first tracker) got epoch 2 before the failure


def _fake_mlflow(calls: list) -> types.ModuleType:
    mod = types.ModuleType("mlflow")
    for name in ("set_tracking_uri", "set_experiment", "start_run", "log_params", "log_metrics", "end_run"):
        setattr(mod, name, lambda *a, _n=name, **k: calls.append((_n, a, k)))
    return mod


def test_mlflow_tracker_calls(tmp_path: Path, monkeypatch):
    calls: list = []
    monkeypatch.setitem(__import__("sys").modules, "mlflow", _fake_mlflow(calls))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = parse_config(_raw(trackers=["mlflow"], mlflow_tracking_uri=uri, project="proj"))
    run_experiment(cfg, tmp_path / "r", device="cpu", log=lambda line: None)
    names = [c[0] for c in calls]
    assert names[:4] == ["set_tracking_uri", "set_experiment", "start_run", "log_params"]
    assert calls[0][1] == (uri,) and calls[1][1] == ("proj",) and calls[2][2] == {"run_name": "tracked"}
    assert calls[3][1][0]["training.lr"] == "0.02"  # parameters as strings
    logged = [(c[2]["step"], c[1][0]) for c in calls if c[0] == "log_metrics"]
    records = _records(tmp_path / "r")
    assert [step for step, _ in logged[:3]] == [1, 2, 3]
    for (step, values), record in zip(logged, records):
        assert values["loss"] == record["loss"]
        assert ("valid/mrr" in values) == ("valid" in record)
        if "valid" in record:
            assert values["valid/mrr"] == record["valid"]["mrr"]
            assert values["valid/hits_at_10"] == record["valid"]["hits@10"]  # MLflow refuses '@' in names
        assert not any("@" in key for key in values)
    assert calls[-1] == ("end_run", (), {"status": "FINISHED"})


def test_wandb_tracker_calls(tmp_path: Path, monkeypatch):
    calls: list = []

    class Run:
        config = types.SimpleNamespace(update=lambda params, **k: calls.append(("config", params)))

        def log(self, values, step):
            calls.append(("log", step, values))

        def finish(self, exit_code):
            calls.append(("finish", exit_code))

    mod = types.ModuleType("wandb")
    mod.init = lambda **kwargs: calls.append(("init", kwargs)) or Run()
    monkeypatch.setitem(__import__("sys").modules, "wandb", mod)
    cfg = parse_config(_raw(trackers=["wandb"], wandb_mode="offline"))
    run_experiment(cfg, tmp_path / "r", device="cpu", log=lambda line: None)
    init = calls[0][1]
    assert init["mode"] == "offline" and init["project"] == "tracked" and init["dir"] == str(tmp_path / "r")
    assert calls[1][0] == "config" and calls[1][1]["model.scorer"] == "distmult"
    steps = [c[1] for c in calls if c[0] == "log"]
    assert steps == [1, 2, 3, 3]  # three epochs, then the final valid/test block at the last epoch
    assert calls[-1] == ("finish", 0)


def test_tensorboard_tracker_writes_the_epoch_scalars(tmp_path: Path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_experiment(parse_config(_raw(trackers=["tensorboard"])), tmp_path / "r", device="cpu", log=lambda line: None)
    acc = EventAccumulator(str(tmp_path / "r" / "tensorboard"))
    acc.Reload()
    records = _records(tmp_path / "r")
    loss = acc.Scalars("loss")
    assert [e.step for e in loss] == [1, 2, 3]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in records], rel=1e-6)
    mrr = acc.Scalars("valid/mrr")
    assert [(e.step, round(e.value, 6)) for e in mrr] == [(r["epoch"], round(r["valid"]["mrr"], 6))
                                                          for r in records if "valid" in r]


def test_missing_tracker_package_names_the_extra_before_writing(tmp_path: Path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "mlflow", None)
    with pytest.raises(MissingExtraError, match=r'pip install "mmkgc\[trackers\]"'):
        run_experiment(parse_config(_raw(trackers=["mlflow"])), tmp_path / "r", device="cpu", log=lambda line: None)
    assert not (tmp_path / "r").exists()


def test_cli_tracker_option(tmp_path: Path, capsys):
    import yaml

    from mmkgc.cli import run

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(_raw()))
    assert run(["train", str(cfg), "--run-dir", str(tmp_path / "bad"), "--tracker", "neptune"]) == 2
    err = capsys.readouterr().err
    assert "tracking.trackers" in err and "neptune" in err and not (tmp_path / "bad").exists()
    pytest.importorskip("tensorboard")
    assert run(["train", str(cfg), "--run-dir", str(tmp_path / "tb"), "--device", "cpu", "--tracker",
                "tensorboard"]) == 0
    assert any((tmp_path / "tb" / "tensorboard").iterdir())
