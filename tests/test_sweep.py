"""``mmkgc sweep``: grid parsing, one ordinary run per grid point, the comparison table from the runs' own metrics,
and the sweep directory rules (refused when not empty unless --resume / --force; never another program's files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mmkgc import cli
from mmkgc.errors import ConfigError
from mmkgc.sweep import grid, parse_params, split_values

TINY = {
    "name": "sweep-tiny", "seed": 0,
    "dataset": {"synthetic": {"seed": 0, "num_entities": 60, "num_relations": 3, "num_types": 3}},
    "model": {"scorer": "distmult", "dim": 8},
    "training": {"epochs": 1, "batch_size": 256, "num_negatives": 2},
    "evaluation": {"every": 1, "patience": None, "batch_size": 64},
}


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def test_values_split_at_top_level_commas_only():
    assert split_values("a, b") == ["a", "b"]
    assert split_values("[16],[32, 8]") == ["[16]", "[32, 8]"]
    assert split_values("'x,y',{a: 1, b: 2}") == ["'x,y'", "{a: 1, b: 2}"]


def test_grid_is_the_product_in_param_order():
    points = grid(parse_params(["training.lr=0.1,0.01", "model.dim=8,16,32"]))
    assert [p.overrides for p in points][:4] == [["training.lr=0.1", "model.dim=8"], ["training.lr=0.1", "model.dim=16"],
                                                 ["training.lr=0.1", "model.dim=32"], ["training.lr=0.01", "model.dim=8"]]
    assert len(points) == 6 and points[0].label == "1-lr=0.1,dim=8" and points[5].label == "6-lr=0.01,dim=32"


@pytest.mark.parametrize("params,message", [
    ([], "at least one"), (["training.lr"], "expected dotted.key=V1,V2"), (["training.lr=0.1,"], "empty value"),
    (["training.lr=0.1,0.1"], "given twice"), (["model.dim=8", "model.dim=16"], "model.dim: given twice"),
])
def test_bad_params_are_refused(params, message):
    with pytest.raises(ConfigError, match=message):
        parse_params(params)


def test_sweep_runs_each_point_and_tabulates_its_metrics(tmp_path: Path, capsys):
    config, out = _config(tmp_path), tmp_path / "sweep"
    code = cli.run(["sweep", str(config), "--param", "model.dim=4,8", "--out", str(out), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "sweep.json").read_text())
    assert [r["label"] for r in summary["rows"]] == ["1-dim=4", "2-dim=8"]
    for row, dim in zip(summary["rows"], (4, 8)):
        run = out / row["run_dir"]
        assert yaml.safe_load((run / "config.yaml").read_text())["model"]["dim"] == dim  # an ordinary run directory
        metrics = json.loads((run / "metrics.json").read_text())
        assert row["test"] == {k: metrics["summary"]["test"]["realistic"][k] for k in ("mrr", "hits@1", "hits@3",
                                                                                       "hits@10")}
        assert row["valid"]["mrr"] == metrics["summary"]["valid"]["realistic"]["mrr"]
        assert f"| {row['label']} | {dim} | filtered | {row['valid']['mrr']:.4f} |" in (out / "sweep.md").read_text()
    assert (out / "sweep.png").is_file()

    # a second sweep into the same directory is refused; --resume keeps the finished runs; --force starts again
    before = (out / "runs" / "1-dim=4" / "metrics.json").stat().st_mtime_ns
    assert cli.run(["sweep", str(config), "--param", "model.dim=4,8", "--out", str(out)]) == 2
    assert "--resume to continue it or --force" in capsys.readouterr().err
    assert cli.run(["sweep", str(config), "--param", "model.dim=4,8", "--out", str(out), "--resume"]) == 0
    assert "finished earlier, kept" in capsys.readouterr().err
    assert (out / "runs" / "1-dim=4" / "metrics.json").stat().st_mtime_ns == before
    assert cli.run(["sweep", str(config), "--param", "model.dim=4,16", "--out", str(out), "--resume"]) == 2
    assert "--resume needs the same ones" in capsys.readouterr().err
    assert cli.run(["sweep", str(config), "--param", "model.dim=4,16", "--out", str(out), "--force",
                    "--device", "cpu"]) == 0
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["1-dim=4", "2-dim=16"]


def test_sweep_refuses_bad_input_before_anything_runs(tmp_path: Path, capsys):
    config = _config(tmp_path)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    cases = [
        (["--param", "model.dim=4,8", "--out", str(foreign)], "not empty and not a sweep directory"),
        (["--param", "model.dimm=4", "--out", str(tmp_path / "a")], "sweep point 1-dimm=4: .*model.dimm: unknown key"),
        (["--param", "model.dim=4,-1", "--out", str(tmp_path / "b")], "sweep point 2-dim=-1: .*model.dim"),
        (["--param", "model.modalities.3.table=x", "--out", str(tmp_path / "c")], "modalities"),
        (["--param", "model.dim=4", "--out", str(tmp_path / "d"), "--resume", "--force"], "exclude each other"),
    ]
    import re

    for argv, message in cases:
        code = cli.run(["sweep", str(config), *argv])
        err = capsys.readouterr().err
        assert code == 2 and re.search(message, err) and "Traceback" not in err, (argv, err)
    assert (foreign / "notes.txt").read_text() == "keep me" and sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    assert not any((tmp_path / d).exists() for d in "abcd")  # refused before the directory was made


def test_an_interrupted_sweep_says_how_to_resume_and_keeps_finished_runs(tmp_path: Path, monkeypatch, capsys):
    import mmkgc.pipeline as pipeline

    config, out = _config(tmp_path), tmp_path / "sweep"
    real = pipeline.run_experiment
    calls = []

    def second_interrupted(cfg, run_dir, **kwargs):
        calls.append(run_dir.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(cfg, run_dir, **kwargs)

    monkeypatch.setattr(pipeline, "run_experiment", second_interrupted)
    assert cli.run(["sweep", str(config), "--param", "model.dim=4,8", "--out", str(out), "--device", "cpu"]) == 130
    err = capsys.readouterr().err
    assert "finished runs are kept" in err and "--resume" in err and "Traceback" not in err
    assert [r["label"] for r in json.loads((out / "sweep.json").read_text())["rows"]] == ["1-dim=4"]
    monkeypatch.setattr(pipeline, "run_experiment", real)
    assert cli.run(["sweep", str(config), "--param", "model.dim=4,8", "--out", str(out), "--resume",
                    "--device", "cpu"]) == 0
    assert [r["label"] for r in json.loads((out / "sweep.json").read_text())["rows"]] == ["1-dim=4", "2-dim=8"]
