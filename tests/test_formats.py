"""Readers and writers of mmkgc.data.formats: OpenKE directories and labeled TSV."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from mmkgc.data.formats import (
    OPENKE_FILES,
    atomic_write_text,
    read_id_map,
    read_labeled_tsv,
    read_openke,
    read_openke_triples,
    write_id_map,
    write_labeled_tsv,
    write_openke,
)
from mmkgc.data.triples import TripleSet
from mmkgc.errors import DataFormatError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def tiny_openke(directory: Path) -> Path:
    """3 entities, 2 relations; triples on disk in h t r order."""
    write(directory / "entity2id.txt", "3\n<a> 0\n<b> 1\n<c> 2\n")
    write(directory / "relation2id.txt", "2\nlikes 0\nknows 1\n")
    write(directory / "train2id.txt", "3\n0 1 0\n1 2 1\n2 0 0\n")
    write(directory / "valid2id.txt", "1\n0 2 1\n")
    write(directory / "test2id.txt", "1\n1 0 0\n")
    return directory


def raises_at(exc_info, path: Path, line: int | None, fragment: str) -> None:
    err = exc_info.value
    assert err.path == path
    assert err.line == line
    assert fragment in str(err)
    where = f"{path}:{line}" if line is not None else str(path)
    assert str(err).startswith(where)


# ---------------------------------------------------------------------------------------------- OpenKE
def test_read_openke_reorders_h_t_r_to_h_r_t(tmp_path):
    ts = read_openke(tiny_openke(tmp_path / "toy"))
    assert ts.name == "toy"
    assert ts.entity_labels == ["<a>", "<b>", "<c>"]
    assert ts.relation_labels == ["likes", "knows"]
    assert ts.train.dtype == torch.long
    assert ts.train.tolist() == [[0, 0, 1], [1, 1, 2], [2, 0, 0]]
    assert ts.valid.tolist() == [[0, 1, 2]]
    assert ts.test.tolist() == [[1, 0, 0]]
    assert ts.metadata["format"] == "openke"


def test_id_map_tab_separated_names_with_spaces(tmp_path):
    # TIVA / Kuai16K style: free-text names with spaces, tab before the id, ids in any order.
    path = write(tmp_path / "entity2id.txt", "4\nfreon\t0\norganic compound\t3\ntom o bedlam\t1\na  b \t2\n")
    assert read_id_map(path) == ["freon", "tom o bedlam", "a  b ", "organic compound"]


def test_id_map_whitespace_separated_names_split_on_last_run(tmp_path):
    path = write(tmp_path / "relation2id.txt", "3\nhas part   1\nhttp://x.org/p  0\n  spaced name 2\n\n")
    assert read_id_map(path) == ["http://x.org/p", "has part", "spaced name"]


def test_id_map_without_count_line(tmp_path):
    path = write(tmp_path / "entity2id.txt", "x 1\ny 0\n")
    assert read_id_map(path, count_line=False) == ["y", "x"]
    assert read_id_map(path, count_line=None) == ["y", "x"]
    with_count = write(tmp_path / "e2.txt", "2\nx 1\ny 0\n")
    assert read_id_map(with_count, count_line=None) == ["y", "x"]


@pytest.mark.parametrize(
    "text, line, fragment",
    [
        ("3\na 0\nb 1\n", 1, "says 3 entries but the file has 2"),
        ("1\na 0\nb 1\n", 1, "says 1 entries but the file has 2"),
        ("two\na 0\n", 1, "expected the number of entries"),
        ("2\na 0\nb x1\n", 3, "is not an integer"),
        ("2\na 0\nb 2\n", 3, "out of range [0, 2)"),
        ("2\na 0\nb -1\n", 3, "out of range"),
        ("2\na 1\nb 1\n", 3, "duplicate id 1"),
        ("2\na 0\nlonely\n", 3, "expected '<name> <id>'"),
        ("1\n\t0\n", 2, "expected '<name> <id>'"),
    ],
)
def test_id_map_errors_name_file_and_line(tmp_path, text, line, fragment):
    path = write(tmp_path / "entity2id.txt", text)
    with pytest.raises(DataFormatError) as exc_info:
        read_id_map(path)
    raises_at(exc_info, path, line, fragment)


def test_missing_and_empty_files(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(DataFormatError) as exc_info:
        read_id_map(missing)
    raises_at(exc_info, missing, None, "file not found")
    empty = write(tmp_path / "empty.txt", "\n  \n")
    with pytest.raises(DataFormatError) as exc_info:
        read_openke_triples(empty, 3, 2)
    raises_at(exc_info, empty, None, "empty file")


def test_read_openke_missing_file_in_directory(tmp_path):
    directory = tiny_openke(tmp_path / "toy")
    (directory / "valid2id.txt").unlink()
    with pytest.raises(DataFormatError) as exc_info:
        read_openke(directory)
    raises_at(exc_info, directory / "valid2id.txt", None, "file not found")
    with pytest.raises(DataFormatError, match="directory not found"):
        read_openke(tmp_path / "absent")


@pytest.mark.parametrize(
    "text, line, fragment",
    [
        ("2\n0 1 0\n1 2 1 0\n", 3, "found 4 fields"),
        ("2\n0 1 0\n1 2\n", 3, "found 2 fields"),
        ("2\n0 1 0\n1 two 1\n", 3, "tail id 'two' is not an integer"),
        ("2\n0 1 0\n1 2 1.0\n", 3, "relation id '1.0' is not an integer"),
        ("2\n0 1 0\n1 3 1\n", 3, "tail id 3 out of range [0, 3)"),
        ("2\n0 1 0\n-1 2 1\n", 3, "head id -1 out of range"),
        ("2\n0 1 0\n1 2 2\n", 3, "relation id 2 out of range [0, 2)"),
        ("3\n0 1 0\n1 2 1\n", 1, "says 3 triples but the file has 2"),
        ("1\n0 1 0\n1 2 1\n", 1, "says 1 triples but the file has 2"),
        ("x\n0 1 0\n", 1, "expected the number of triples"),
        ("4\n0 1 0\n1 2 1\n2 0 0\n2 1 0 # comment\n", 5, "found 5 fields"),
    ],
)
def test_triple_file_errors_name_file_and_line(tmp_path, text, line, fragment):
    path = write(tmp_path / "train2id.txt", text)
    with pytest.raises(DataFormatError) as exc_info:
        read_openke_triples(path, num_entities=3, num_relations=2)
    raises_at(exc_info, path, line, fragment)


def test_triple_file_tolerates_blank_lines_tabs_and_crlf(tmp_path):
    path = tmp_path / "train2id.txt"
    path.write_bytes(b"3\r\n0\t1 0\r\n\r\n1 2 1\r\n2 0 0\r\n\r\n")
    x = read_openke_triples(path, 3, 2)
    assert x.tolist() == [[0, 0, 1], [1, 1, 2], [2, 0, 0]]


def test_zero_triples_with_count_line(tmp_path):
    path = write(tmp_path / "valid2id.txt", "0\n")
    x = read_openke_triples(path, 3, 2)
    assert x.shape == (0, 3) and x.dtype == torch.long


def test_write_openke_round_trip_with_spaces_in_names(tmp_path):
    ts = TripleSet(
        train=torch.tensor([[0, 1, 2], [2, 0, 1]]),
        valid=torch.tensor([[1, 1, 0]]),
        test=torch.empty(0, 3, dtype=torch.long),
        entity_labels=["plain", "organic compound", " leading space"],
        relation_labels=["r0", "has\tpart"],
        name="toy",
    )
    out = write_openke(ts, tmp_path / "out")
    lines = (out / "entity2id.txt").read_text().splitlines()
    assert lines == ["3", "plain 0", "organic compound\t1", " leading space\t2"]
    assert (out / "train2id.txt").read_text() == "2\n0 2 1\n2 1 0\n"
    assert (out / "test2id.txt").read_text() == "0\n"
    back = read_openke(out, name="toy")
    assert back.entity_labels == ts.entity_labels
    assert back.relation_labels == ts.relation_labels
    for split in ("train", "valid", "test"):
        assert torch.equal(back.split(split), ts.split(split))
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_write_id_map_rejects_line_breaks(tmp_path):
    with pytest.raises(ValueError, match="line break"):
        write_id_map(["ok", "bad\nname"], tmp_path / "e.txt")
    assert not (tmp_path / "e.txt").exists()


def test_atomic_write_keeps_old_file_on_error(tmp_path):
    target = write(tmp_path / "f.txt", "old\n")

    with pytest.raises(TypeError):
        atomic_write_text(target, 123)  # type: ignore[arg-type]
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]
    atomic_write_text(target, "new\n")
    assert target.read_text() == "new\n"


# ---------------------------------------------------------------------------------------------- labeled TSV
def test_labeled_tsv_sorted_maps_and_round_trip(tmp_path):
    write(tmp_path / "d" / "train.tsv", "b\tlikes\ta\nc c\tknows\tb\n\n")
    write(tmp_path / "d" / "valid.tsv", "a\tlikes\tc c\n")
    write(tmp_path / "d" / "test.tsv", "b\tknows\ta\n")
    ts = read_labeled_tsv(tmp_path / "d")
    assert ts.entity_labels == ["a", "b", "c c"]
    assert ts.relation_labels == ["knows", "likes"]
    assert ts.train.tolist() == [[1, 1, 0], [2, 0, 1]]
    assert ts.valid.tolist() == [[0, 1, 2]]
    assert ts.test.tolist() == [[1, 0, 0]]
    written = write_labeled_tsv(ts, tmp_path / "copy")
    assert written["train"].read_text() == "b\tlikes\ta\nc c\tknows\tb\n"
    again = read_labeled_tsv(tmp_path / "copy", entity_labels=ts.entity_labels,
                             relation_labels=ts.relation_labels)
    for split in ("train", "valid", "test"):
        assert torch.equal(again.split(split), ts.split(split))


def test_labeled_tsv_given_maps_and_explicit_paths(tmp_path):
    train = write(tmp_path / "tr.txt", "x\tr\ty\n")
    ts = read_labeled_tsv(train=train, entity_labels=["y", "x", "z"], relation_labels=["q", "r"])
    assert ts.train.tolist() == [[1, 1, 0]]
    assert ts.valid.shape == (0, 3) and ts.test.shape == (0, 3)
    assert ts.num_entities == 3
    bad = write(tmp_path / "te.txt", "x\tr\ty\nx\tr\tw\n")
    with pytest.raises(DataFormatError) as exc_info:
        read_labeled_tsv(train=train, test=bad, entity_labels=["y", "x"], relation_labels=["r"])
    raises_at(exc_info, bad, 2, "unknown entity 'w'")
    with pytest.raises(ValueError, match="appears twice"):
        read_labeled_tsv(train=train, entity_labels=["x", "y", "x"])


def test_labeled_tsv_whitespace_delimiter(tmp_path):
    train = write(tmp_path / "train.txt", "/m/01 /r/a /m/02\n/m/02  /r/b /m/01\n")
    ts = read_labeled_tsv(train=train, delimiter=None)
    assert ts.entity_labels == ["/m/01", "/m/02"]
    assert ts.train.tolist() == [[0, 0, 1], [1, 1, 0]]


@pytest.mark.parametrize(
    "text, line, fragment",
    [
        ("a\tr\tb\na\tr\n", 2, "expected 3 fields"),
        ("a\tr\tb\na\tr\tb\tc\n", 2, "found 4"),
        ("a\tr\tb\n\na\t\tb\n", 3, "empty relation name"),
    ],
)
def test_labeled_tsv_errors(tmp_path, text, line, fragment):
    path = write(tmp_path / "train.tsv", text)
    with pytest.raises(DataFormatError) as exc_info:
        read_labeled_tsv(train=path)
    raises_at(exc_info, path, line, fragment)


def test_labeled_tsv_directory_needs_all_splits(tmp_path):
    write(tmp_path / "d" / "train.tsv", "a\tr\tb\n")
    with pytest.raises(DataFormatError) as exc_info:
        read_labeled_tsv(tmp_path / "d")
    raises_at(exc_info, tmp_path / "d" / "valid.tsv", None, "file not found")


def test_write_labeled_tsv_rejects_tabs_in_labels(tmp_path):
    ts = TripleSet(train=torch.tensor([[0, 0, 1]]), valid=None, test=None,
                   entity_labels=["a", "b\tc"], relation_labels=["r"])
    with pytest.raises(ValueError, match="tab"):
        write_labeled_tsv(ts, tmp_path / "x")


# ---------------------------------------------------------------------------------------------- real data
@pytest.mark.parametrize("name, counts", [
    ("DB15K", (12842, 279, 79222, 9904, 9902)),
    ("MKG-W", (15000, 169, 34196, 4276, 4274)),
])
def test_real_benchmarks_parse_and_round_trip_byte_identical(shared_dataset_dir, tmp_path, name, counts):
    source = shared_dataset_dir(name)
    ts = read_openke(source)
    assert ts.name == name
    assert (ts.num_entities, ts.num_relations, len(ts.train), len(ts.valid), len(ts.test)) == counts
    if name == "DB15K":
        assert ts.entity_labels[0] == "<http://dbpedia.org/resource/Anarchism>"
        assert ts.train[0].tolist() == [11208, 117, 6404]  # file line "11208 6404 117"
    out = write_openke(ts, tmp_path / name)
    for file in OPENKE_FILES:
        original = hashlib.sha256((source / file).read_bytes()).hexdigest()
        assert hashlib.sha256((out / file).read_bytes()).hexdigest() == original, file


def test_atomic_write_gives_the_permissions_of_a_plain_write(tmp_path):
    import os

    from mmkgc.fileio import atomic_write_text

    old = os.umask(0o027)
    try:
        path = atomic_write_text(tmp_path / "a.json", "{}")
        assert path.stat().st_mode & 0o777 == 0o640  # 0666 less the umask, not mkstemp's 0600
        os.chmod(path, 0o604)
        atomic_write_text(path, "{ }")  # a replaced file keeps its permissions
        assert path.stat().st_mode & 0o777 == 0o604 and path.read_text() == "{ }"
    finally:
        os.umask(old)
