"""Feature file formats: own safetensors/npy round trips, community .pth/.npy imports, row manifests,
refusal of pickled objects and atomic writes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from mmkgc.errors import DataFormatError
from mmkgc.features.io import (
    atomic_write,
    import_feature_file,
    load_feature_table,
    read_feature_array,
    read_manifest,
    save_feature_table,
)
from mmkgc.features.store import FeatureTable, make_provenance

LABELS = [
    "<http://dbpedia.org/resource/Anarchism>",
    "<http://dbpedia.org/resource/Alabama_(state)>",
    "<http://dbpedia.org/resource/Franciaország>",
    "<http://dbpedia.org/resource/Pedagogy>",
]


def _pooled(n=4, d=3):
    g = torch.Generator().manual_seed(1)
    return FeatureTable(
        values=torch.randn(n, d, generator=g),
        modality="image",
        present=torch.tensor([True, False, True, True])[:n],
        provenance=make_provenance("unit-test", note="ünïcode"),
    )


def _tokens():
    g = torch.Generator().manual_seed(2)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    return FeatureTable(values=torch.randn(2, 3, 4, generator=g), modality="text", token_mask=mask)


def _assert_same(a: FeatureTable, b: FeatureTable):
    assert a.modality == b.modality
    assert torch.equal(a.values, b.values)
    assert torch.equal(a.present, b.present)
    assert (a.token_mask is None) == (b.token_mask is None)
    if a.token_mask is not None:
        assert torch.equal(a.token_mask, b.token_mask)
    assert a.provenance == b.provenance


@pytest.mark.parametrize("suffix", [".safetensors", ".npy"])
@pytest.mark.parametrize("make", [_pooled, _tokens])
def test_round_trip(tmp_path, suffix, make):
    t = make()
    path = save_feature_table(t, tmp_path / f"feat{suffix}")
    back = load_feature_table(path, num_entities=t.num_entities)
    _assert_same(t, back)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_npy_sidecar_names(tmp_path):
    save_feature_table(_tokens(), tmp_path / "x.npy")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "x.meta.json", "x.npy", "x.present.npy", "x.token_mask.npy",
    ]


def test_load_checks_row_count(tmp_path):
    path = save_feature_table(_pooled(), tmp_path / "f.safetensors")
    with pytest.raises(DataFormatError, match="4 rows, but the dataset has 5"):
        load_feature_table(path, num_entities=5)


def test_load_refuses_foreign_files(tmp_path):
    save_file({"values": torch.zeros(2, 2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(DataFormatError, match="import_feature_file"):
        load_feature_table(tmp_path / "plain.safetensors")
    np.save(tmp_path / "plain.npy", np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(DataFormatError, match="import_feature_file"):
        load_feature_table(tmp_path / "plain.npy")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(DataFormatError, match="junk.safetensors"):
        load_feature_table(tmp_path / "junk.safetensors")
    with pytest.raises(DataFormatError, match="file not found"):
        load_feature_table(tmp_path / "absent.safetensors")


def test_npy_values_disagreeing_with_meta_are_detected(tmp_path):
    save_feature_table(_pooled(), tmp_path / "f.npy")
    np.save(tmp_path / "f.npy", np.zeros((3, 3), dtype=np.float32))  # a foreign overwrite
    with pytest.raises(DataFormatError, match="disagrees"):
        load_feature_table(tmp_path / "f.npy")


def test_atomic_write_leaves_target_untouched_on_failure(tmp_path):
    target = tmp_path / "f.safetensors"
    save_feature_table(_pooled(), target)
    before = target.read_bytes()

    def failing(tmp: Path):
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, failing)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.safetensors"]


def test_save_unsupported_suffix(tmp_path):
    with pytest.raises(ValueError, match="unsupported"):
        save_feature_table(_pooled(), tmp_path / "f.pkl")


# ----------------------------------------------------------------------------------- community imports


def test_import_pth_tensor_in_id_order(tmp_path):
    x = torch.randn(4, 5, dtype=torch.float64)
    torch.save(x, tmp_path / "DB15K-visual.pth")
    t = import_feature_file(tmp_path / "DB15K-visual.pth", "image", num_entities=4)
    assert t.values.dtype == torch.float32 and torch.allclose(t.values, x.float())
    assert bool(t.present.all())
    assert t.provenance["source"].endswith("DB15K-visual.pth")
    assert t.provenance["options"]["original_dtype"] == "float64"


def test_import_pth_dict_needs_key_when_ambiguous(tmp_path):
    torch.save({"a": torch.ones(4, 2), "b": torch.zeros(4, 2)}, tmp_path / "d.pth")
    with pytest.raises(DataFormatError, match="key="):
        import_feature_file(tmp_path / "d.pth", "image", num_entities=4)
    t = import_feature_file(tmp_path / "d.pth", "image", num_entities=4, key="b")
    assert torch.equal(t.values, torch.zeros(4, 2))
    torch.save({"only": torch.ones(4, 2)}, tmp_path / "one.pth")
    assert import_feature_file(tmp_path / "one.pth", "image", num_entities=4).dim == 2


class _Payload:
    """An object whose unpickling would create a marker file (stands in for arbitrary code)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickled_objects_are_refused_without_execution(tmp_path):
    marker = tmp_path / "code-was-executed"
    path = tmp_path / "evil.pth"
    torch.save({"features": torch.zeros(2, 2), "x": _Payload(marker)}, path)
    assert not marker.exists()
    with pytest.raises(DataFormatError, match="refused to load") as err:
        import_feature_file(path, "image", num_entities=2)
    assert "evil.pth" in str(err.value)
    assert not marker.exists()


def test_numpy_object_array_refused(tmp_path):
    arr = np.empty((2, 2), dtype=object)
    np.save(tmp_path / "obj.npy", arr, allow_pickle=True)
    with pytest.raises(DataFormatError, match="unpickling"):
        read_feature_array(tmp_path / "obj.npy")


@pytest.mark.parametrize(
    "array, match",
    [
        (torch.zeros(4, dtype=torch.float32), "2-D"),
        (torch.zeros(4, 2, 2, 2), "2-D"),
        (torch.zeros(4, 2, dtype=torch.int64), "dtype"),
        (torch.zeros(3, 2), "3 rows, but the dataset has 4"),
    ],
)
def test_import_shape_dtype_rowcount_errors(tmp_path, array, match):
    torch.save(array, tmp_path / "f.pth")
    with pytest.raises(DataFormatError, match=match):
        import_feature_file(tmp_path / "f.pth", "image", num_entities=4)


def test_import_nan_row_error_and_presence_rule(tmp_path):
    x = torch.ones(4, 2)
    x[2] = math.nan
    x[1] = 0.0
    np.save(tmp_path / "f.npy", x.numpy())
    with pytest.raises(DataFormatError, match=r"f\.npy.*row 2"):
        import_feature_file(tmp_path / "f.npy", "text", num_entities=4)
    t = import_feature_file(tmp_path / "f.npy", "text", num_entities=4, presence="nonzero")
    assert t.present.tolist() == [True, False, False, True]
    assert t.provenance["options"]["missing_rows"] == 2
    assert torch.equal(t.with_fill("zeros").values[2], torch.zeros(2))


def test_import_needs_entity_count(tmp_path):
    torch.save(torch.zeros(2, 2), tmp_path / "f.pth")
    with pytest.raises(ValueError, match="num_entities"):
        import_feature_file(tmp_path / "f.pth", "image")


def test_manifest_reorders_rows_by_name(tmp_path):
    # Beyond Images style: rows in JSON key order of entities with text, names without angle brackets,
    # one percent-encoded, one unknown name, entity 3 (Pedagogy) absent.
    names = [
        "http://dbpedia.org/resource/Franciaorsz%C3%A1g",
        "http://dbpedia.org/resource/Not_In_Dataset",
        "http://dbpedia.org/resource/Anarchism",
        "http://dbpedia.org/resource/Alabama_%28state%29",
    ]
    rows = torch.tensor([[2.0, 2.0], [9.0, 9.0], [0.0, 0.5], [1.0, 1.0]])
    torch.save(rows, tmp_path / "gen.pth")
    (tmp_path / "gen.pth.entities.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    t = import_feature_file(tmp_path / "gen.pth", "generated_text", entity_labels=LABELS)
    assert t.num_entities == 4
    assert t.present.tolist() == [True, True, True, False]
    # every entity-id row holds the row of its own name
    assert torch.equal(t.values[0], rows[2]) and torch.equal(t.values[1], rows[3])
    assert torch.equal(t.values[2], rows[0]) and torch.equal(t.values[3], torch.zeros(2))
    report = t.provenance["options"]["alignment"]
    assert report["manifest_rows"] == 4 and report["matched"] == 3
    assert report["unknown_names"] == 1 and report["unknown_examples"] == [names[1]]
    assert report["missing_entities"] == 1


def test_manifest_with_name_map_and_presence_rule(tmp_path):
    torch.save(torch.tensor([[0.0, 0.0], [1.0, 1.0]]), tmp_path / "f.pth")
    (tmp_path / "f.pth.entities.txt").write_text("Q1\nQ2\n", encoding="utf-8")
    name_map = {"Q1": LABELS[0], "Q2": LABELS[3]}
    t = import_feature_file(tmp_path / "f.pth", "text", entity_labels=LABELS, name_map=name_map, presence="nonzero")
    assert t.present.tolist() == [False, False, False, True]  # Q1's row is all zeros


def test_manifest_errors(tmp_path):
    torch.save(torch.zeros(3, 2), tmp_path / "f.pth")
    (tmp_path / "f.pth.entities.txt").write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="2 names but the features have 3 rows"):
        import_feature_file(tmp_path / "f.pth", "text", entity_labels=LABELS)
    with pytest.raises(ValueError, match="entity_labels"):
        import_feature_file(tmp_path / "f.pth", "text", num_entities=3)
    (tmp_path / "dup.txt").write_text("a\n<b>\nb\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"dup\.txt:3.*line 2"):
        read_manifest(tmp_path / "dup.txt")
    (tmp_path / "empty.txt").write_text("a\n\nb\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"empty\.txt:2"):
        read_manifest(tmp_path / "empty.txt")
    # an explicit manifest=None ignores the sidecar and checks the row count instead
    with pytest.raises(DataFormatError, match="3 rows, but the dataset has 4"):
        import_feature_file(tmp_path / "f.pth", "text", entity_labels=LABELS, manifest=None)


def test_import_plain_safetensors(tmp_path):
    save_file({"emb": torch.ones(4, 3)}, str(tmp_path / "x.safetensors"))
    t = import_feature_file(tmp_path / "x.safetensors", "image", entity_labels=LABELS)
    assert t.values.shape == (4, 3)


def test_imported_table_round_trips(tmp_path):
    torch.save(torch.randn(4, 3), tmp_path / "f.pth")
    t = import_feature_file(tmp_path / "f.pth", "image", num_entities=4)
    back = load_feature_table(save_feature_table(t, tmp_path / "f.safetensors"))
    _assert_same(t, back)
