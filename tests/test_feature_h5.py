"""Name-keyed .h5 feature files (MMRNS style): both layouts, alignment maps, multi-vector entries, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

h5py = pytest.importorskip("h5py")

from mmkgc.errors import DataFormatError  # noqa: E402
from mmkgc.features.io import import_h5_features, load_feature_table, read_name_map  # noqa: E402

LABELS = [
    "http://www.wikidata.org/entity/Q1",
    "http://www.wikidata.org/entity/Q2",
    "http://www.wikidata.org/entity/Q3",
    "http://www.wikidata.org/entity/Q4",
    "http://www.wikidata.org/entity/Q5",
]


def _vectors(k: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((k, d)).astype(np.float32)


@pytest.fixture()
def per_entity(tmp_path) -> tuple[Path, dict[str, np.ndarray]]:
    """Keys in DBpedia's namespace (mapped to Wikidata by ent_links), 1..4 vectors of 6-d each; one key is
    the bare QID (matches without the map), one key is unknown; Q4 and Q5 have no entry."""
    entries = {
        "Douglas_Adams": _vectors(4, 6, 1),   # -> Q1 via the map
        "Berlin": _vectors(2, 6, 2),          # -> Q2 via the map
        "Q3": _vectors(1, 6, 3),              # local name of the Wikidata URI
        "Atlantis": _vectors(3, 6, 4),        # mapped to an entity that is not in the dataset
        "Nowhere": _vectors(1, 6, 5),         # not in the map at all
    }
    path = tmp_path / "MKG_W_description_sentences.h5"
    with h5py.File(path, "w") as fh:
        for key, arr in entries.items():
            fh.create_dataset(key, data=arr if key != "Q3" else arr[0])  # a [d] entry too
    return path, entries


@pytest.fixture()
def ent_links(tmp_path) -> Path:
    path = tmp_path / "ent_links"
    path.write_text(
        "# dbpedia -> wikidata\n"
        "http://dbpedia.org/resource/Douglas_Adams\thttp://www.wikidata.org/entity/Q1\n"
        "Douglas_Adams\thttp://www.wikidata.org/entity/Q1\n"
        "Berlin\thttp://www.wikidata.org/entity/Q2\n"
        "\n"
        "Atlantis\thttp://www.wikidata.org/entity/Q999\n"
    )
    return path


def test_per_entity_layout_with_alignment_map(per_entity, ent_links):
    path, entries = per_entity
    t = import_h5_features(path, "text", LABELS, name_map=ent_links)
    assert t.values.shape == (5, 6) and not t.is_tokens
    assert t.present.tolist() == [True, True, True, False, False]
    np.testing.assert_allclose(t.values[0].numpy(), entries["Douglas_Adams"].mean(0), rtol=1e-6)
    np.testing.assert_allclose(t.values[2].numpy(), entries["Q3"][0], rtol=1e-6)
    assert not t.values[3:].any()
    rep = t.provenance["options"]["alignment"]
    assert rep["layout"] == "per_entity" and rep["file_keys"] == 5 and rep["matched"] == 3
    assert rep["missing_entities"] == 2 and rep["unknown_keys"] == 2
    assert sorted(rep["unknown_examples"]) == ["Atlantis", "Nowhere"]
    assert rep["vectors_per_entry"] == [1, 4] and rep["dim"] == 6
    assert rep["name_map"]["direction"] == "first->last" and rep["name_map"]["pairs"] == 4


def test_multi_vector_entries_as_tokens_and_first(per_entity, ent_links):
    path, entries = per_entity
    t = import_h5_features(path, "text", LABELS, name_map=ent_links, multi="tokens")
    assert t.values.shape == (5, 4, 6) and t.is_tokens
    assert t.token_mask.sum(1).tolist() == [4, 2, 1, 0, 0]
    np.testing.assert_allclose(t.values[1, :2].numpy(), entries["Berlin"], rtol=1e-6)
    assert torch.allclose(t.pooled("mean").values[0], torch.from_numpy(entries["Douglas_Adams"].mean(0)), atol=1e-6)
    f = import_h5_features(path, "text", LABELS, name_map=ent_links, multi="first")
    np.testing.assert_allclose(f.values[0].numpy(), entries["Douglas_Adams"][0], rtol=1e-6)


def test_map_direction_is_detected_and_three_columns_use_first_and_last(tmp_path, per_entity):
    path, _ = per_entity
    reverse = tmp_path / "links.tsv"  # dataset name first, feature key last; a middle id column
    reverse.write_text("http://www.wikidata.org/entity/Q1\t17\tDouglas_Adams\nhttp://www.wikidata.org/entity/Q2\t18\tBerlin\n")
    mapping, report = read_name_map(reverse, LABELS)
    assert report["direction"] == "last->first"
    assert mapping["Douglas_Adams"] == "http://www.wikidata.org/entity/Q1"
    t = import_h5_features(path, "text", LABELS, name_map=reverse)
    assert t.present.tolist() == [True, True, True, False, False]


def test_name_map_errors(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("a\tQ1\nb\tQ2\na\tQ3\n")
    with pytest.raises(DataFormatError, match=r"bad\.tsv:3: 'a' is mapped to 'Q1' on line 1"):
        read_name_map(bad)
    one = tmp_path / "one.tsv"
    one.write_text("a\tQ1\nlonely\n")
    with pytest.raises(DataFormatError, match=r"one\.tsv:2: expected two names"):
        read_name_map(one)
    with pytest.raises(DataFormatError, match="not found"):
        read_name_map(tmp_path / "absent.tsv")


def test_matrix_layout_with_names_dataset(tmp_path):
    values = _vectors(3, 5, 7)
    path = tmp_path / "img.h5"
    with h5py.File(path, "w") as fh:
        fh.create_dataset("embeddings", data=values)
        fh.create_dataset("names", data=np.array([b"Q5", b"Q1", b"Q77"]))
    t = import_h5_features(path, "image", LABELS)
    rep = t.provenance["options"]["alignment"]
    assert rep["layout"] == "matrix" and rep["matched"] == 2 and rep["unknown_examples"] == ["Q77"]
    np.testing.assert_allclose(t.values[4].numpy(), values[0])
    np.testing.assert_allclose(t.values[0].numpy(), values[1])
    assert t.present.tolist() == [True, False, False, False, True]

    grid = _vectors(2 * 24, 3, 8).reshape(2, 24, 3)  # 24 image vectors per entity, as MMRNS' BEiT file
    path3 = tmp_path / "grid.h5"
    with h5py.File(path3, "w") as fh:
        g = fh.create_group("feats")
        g.create_dataset("values", data=grid)
        g.create_dataset("entities", data=np.array(["Q2", "Q3"], dtype=h5py.string_dtype()))
    tok = import_h5_features(path3, "image", LABELS, group="feats", multi="tokens")
    assert tok.values.shape == (5, 24, 3) and tok.token_mask.sum(1).tolist() == [0, 24, 24, 0, 0]
    pooled = import_h5_features(path3, "image", LABELS, group="feats")
    np.testing.assert_allclose(pooled.values[1].numpy(), grid[0].mean(0), rtol=1e-6)


def test_h5_errors(tmp_path):
    mixed = tmp_path / "mixed.h5"
    with h5py.File(mixed, "w") as fh:
        fh.create_dataset("Q1", data=np.zeros(4, np.float32))
        fh.create_dataset("Q2", data=np.zeros(5, np.float32))
    with pytest.raises(DataFormatError, match="different dimensions"):
        import_h5_features(mixed, "text", LABELS)
    ints = tmp_path / "ints.h5"
    with h5py.File(ints, "w") as fh:
        fh.create_dataset("Q1", data=np.arange(4))
    with pytest.raises(DataFormatError, match="floating-point"):
        import_h5_features(ints, "text", LABELS)
    nan = tmp_path / "nan.h5"
    with h5py.File(nan, "w") as fh:
        fh.create_dataset("Q1", data=np.ones(3, np.float32))
        fh.create_dataset("Q2", data=np.array([np.nan, 1, 1], np.float32))
        fh.create_dataset("Q3", data=np.zeros(3, np.float32))
    with pytest.raises(DataFormatError, match="'Q2'.*NaN"):
        import_h5_features(nan, "text", LABELS)
    kept = import_h5_features(nan, "text", LABELS, presence="nonzero")  # NaN and all-zero entries -> missing
    assert kept.present.tolist() == [True, False, False, False, False]
    lengths = tmp_path / "len.h5"
    with h5py.File(lengths, "w") as fh:
        fh.create_dataset("values", data=np.zeros((3, 2), np.float32))
        fh.create_dataset("names", data=np.array([b"Q1", b"Q2"]))
    with pytest.raises(DataFormatError, match="2 names"):
        import_h5_features(lengths, "text", LABELS)
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not hdf5 at all")
    with pytest.raises(DataFormatError, match="not a readable HDF5"):
        import_h5_features(garbage, "text", LABELS)
    with pytest.raises(DataFormatError, match="no group"):
        import_h5_features(mixed, "text", LABELS, group="nope")


def test_load_feature_table_imports_community_files(per_entity, ent_links, tmp_path):
    path, _ = per_entity
    t = load_feature_table(path, num_entities=5, entity_labels=LABELS, modality="text", name_map=ent_links)
    assert t.modality == "text" and t.num_present == 3
    pth = tmp_path / "vis.pth"
    torch.save(torch.ones(5, 3), pth)
    v = load_feature_table(pth, num_entities=5, entity_labels=LABELS, modality="image")
    assert v.values.shape == (5, 3) and v.modality == "image"
    torch.save(torch.ones(4, 3), pth)
    with pytest.raises(DataFormatError, match="4 rows, but the dataset has 5"):
        load_feature_table(pth, num_entities=5, entity_labels=LABELS, modality="image")
