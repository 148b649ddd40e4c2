"""Readers and writers for knowledge-graph files.

Two layouts are supported:

* **OpenKE** (Han et al., 2018, "OpenKE: An Open Toolkit for Knowledge Embedding"; the layout of every
  benchmark shipped with AdaMF-MAT and NativE).  A directory holds ``entity2id.txt`` and ``relation2id.txt``
  (first line: the count ``N``; then one ``<name><whitespace><id>`` line per item) and ``train2id.txt``,
  ``valid2id.txt``, ``test2id.txt`` (first line: the number of triples; then one ``head tail relation`` line
  per triple, integer ids).  **The column order on disk is h, t, r**; inside mmkgc triples are always
  (h, r, t).  Names may contain spaces; TIVA and Kuai16K separate the name from the id with a tab, so a line
  that contains a tab is split on its *last* tab, any other line on its last run of whitespace.
* **Labeled TSV**: one file per split, one ``head<TAB>relation<TAB>tail`` line per triple, with names
  instead of ids (the id maps are built from the names, sorted, or taken from the caller).

Every problem in a file raises :class:`mmkgc.errors.DataFormatError` naming the file and the 1-based line.
The happy path is vectorised (:func:`numpy.loadtxt`); only when it fails is the file scanned line by line to
locate the first bad line.  Writers replace each file atomically (temporary file in the same directory, then
:func:`os.replace`), so an interrupted write never leaves a half-written file behind.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from mmkgc.data.triples import CATEGORY_NAMES, SPLITS, TripleSet
from mmkgc.fileio import atomic_write_text  # noqa: F401 - re-exported
from mmkgc.errors import DataFormatError

__all__ = [
    "OPENKE_FILES",
    "OPENKE_SPLIT_FILES",
    "TSV_SPLIT_FILES",
    "CategoryComparison",
    "atomic_write_text",
    "compare_openke_categories",
    "read_id_map",
    "read_labeled_tsv",
    "read_openke",
    "read_openke_categories",
    "read_openke_triples",
    "write_id_map",
    "write_labeled_tsv",
    "write_openke",
    "write_openke_triples",
]

#: File name of each split in an OpenKE directory.
OPENKE_SPLIT_FILES = {"train": "train2id.txt", "valid": "valid2id.txt", "test": "test2id.txt"}
#: All files an OpenKE directory must contain, in the order they are read.
OPENKE_FILES = ("entity2id.txt", "relation2id.txt", "train2id.txt", "valid2id.txt", "test2id.txt")
#: Default file name of each split in a labeled-TSV directory.
TSV_SPLIT_FILES = {"train": "train.tsv", "valid": "valid.tsv", "test": "test.tsv"}

_INT = re.compile(r"[+-]?[0-9]+")


# ---------------------------------------------------------------------------------------------- helpers
def _read_text(path: Path) -> str:
    """Whole file as text (UTF-8); missing, unreadable, undecodable or empty files raise DataFormatError."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataFormatError(path, None, "file not found") from None
    except IsADirectoryError:
        raise DataFormatError(path, None, "expected a file, found a directory") from None
    except OSError as exc:
        raise DataFormatError(path, None, f"cannot read file: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataFormatError(path, line, f"not valid UTF-8 ({exc.reason})") from None
    if not text.strip():
        raise DataFormatError(path, None, "empty file")
    return text


def _header_count(path: Path, first_line: str, what: str) -> int:
    token = first_line.strip()
    if not _INT.fullmatch(token):
        raise DataFormatError(
            path, 1, f"expected the number of {what} on the first line, found {first_line.strip()[:60]!r}"
        )
    count = int(token)
    if count < 0:
        raise DataFormatError(path, 1, f"negative {what} count {count}")
    return count


def _split_name_id(line: str) -> tuple[str, str] | None:
    """Split ``<name><sep><id>``: on the last tab if there is one, else on the last run of whitespace."""
    if "\t" in line:
        name, _, ident = line.rpartition("\t")
        return name, ident.strip()
    parts = line.rsplit(None, 1)
    if len(parts) != 2:
        return None
    return parts[0].strip(), parts[1]


# ---------------------------------------------------------------------------------------------- id maps
def read_id_map(path: str | Path, count_line: bool | None = True) -> list[str]:
    """Read an OpenKE ``entity2id.txt`` / ``relation2id.txt`` file.

    Layout: first line the count ``N`` (when ``count_line``), then ``N`` lines ``<name><whitespace><id>``.
    A line containing a tab is split on its last tab (the name keeps everything before it, spaces
    included; TIVA and Kuai16K), any other line on its last run of whitespace.  Blank lines are ignored.
    Ids must be exactly ``0..N-1``, each once, in any order.  Names are not required to be unique (OpenKE
    never parses them); :mod:`mmkgc.data.health` reports repeated names.

    :param path: the file.
    :param count_line: ``True`` (OpenKE) if the first line holds the count, ``False`` if there is no count line
        (IMF/MoMoK ``entity2id.txt``), ``None`` to detect it (a first line that is a single integer).
    :returns: the ``N`` names, ``names[i]`` being the name of id ``i``.
    :raises DataFormatError: missing or empty file, a count line that is not an integer or disagrees with the
        number of lines, a line without a name and an id, a non-integer id, an id outside ``[0, N)``, an id
        given twice.
    """
    path = Path(path)
    text = _read_text(path)
    lines = text.splitlines()
    if count_line is None:
        count_line = bool(_INT.fullmatch(lines[0].strip()))
    start = 1 if count_line else 0
    entries = [(i + 1, line) for i, line in enumerate(lines[start:], start=start) if line.strip()]
    if count_line:
        expected = _header_count(path, lines[0], "entries")
        if expected != len(entries):
            raise DataFormatError(
                path, 1, f"the first line says {expected} entries but the file has {len(entries)} entry lines"
            )
    n = len(entries)
    names: list[str | None] = [None] * n
    for lineno, line in entries:
        parts = _split_name_id(line)
        if parts is None or not parts[0].strip():
            raise DataFormatError(path, lineno, f"expected '<name> <id>', found {line.strip()[:80]!r}")
        name, ident = parts
        if not _INT.fullmatch(ident):
            raise DataFormatError(path, lineno, f"id {ident[:40]!r} is not an integer")
        idx = int(ident)
        if not 0 <= idx < n:
            raise DataFormatError(path, lineno, f"id {idx} out of range [0, {n})")
        if names[idx] is not None:
            raise DataFormatError(path, lineno, f"duplicate id {idx} (already used by {names[idx]!r})")
        names[idx] = name
    return [str(x) for x in names]


def _check_labels(labels: Sequence[str], what: str, tab_ok: bool) -> None:
    for i, label in enumerate(labels):
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"{what} {i}: label {label!r} is empty or not a string")
        if "\n" in label or "\r" in label:
            raise ValueError(f"{what} {i}: label {label!r} contains a line break and cannot be written")
        if not tab_ok and "\t" in label:
            raise ValueError(f"{what} {i}: label {label!r} contains a tab and cannot be written as TSV")


def write_id_map(labels: Sequence[str], path: str | Path) -> Path:
    """Write an OpenKE id map (count line, then ``<name><sep><i>`` for ``i = 0..N-1``), atomically.

    The separator is a single space when the name contains no whitespace (as in DB15K and MKG-W, so those
    files round-trip byte for byte) and a tab otherwise (as in TIVA and Kuai16K), which :func:`read_id_map`
    splits on the last tab.

    :raises ValueError: a label that is empty or contains a line break.
    """
    _check_labels(labels, "entry", tab_ok=True)
    parts = [f"{len(labels)}\n"]
    for i, label in enumerate(labels):
        sep = "\t" if (label != label.strip() or any(c.isspace() for c in label)) else " "
        parts.append(f"{label}{sep}{i}\n")
    return atomic_write_text(path, "".join(parts))


# ---------------------------------------------------------------------------------------------- triples
def _scan_triples(path: Path, lines: list[str], num_entities: int, num_relations: int) -> None:
    """Slow path: find and raise the first bad triple line (lines[0] is the count line)."""
    for i, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 3:
            raise DataFormatError(
                path, i, f"expected 3 integer ids 'head tail relation', found {len(fields)} fields: "
                f"{line.strip()[:80]!r}"
            )
        for field, what in zip(fields, ("head", "tail", "relation")):
            if not _INT.fullmatch(field):
                raise DataFormatError(path, i, f"{what} id {field[:40]!r} is not an integer")
        h, t, r = (int(x) for x in fields)
        for value, what, limit in ((h, "head", num_entities), (t, "tail", num_entities),
                                   (r, "relation", num_relations)):
            if not 0 <= value < limit:
                raise DataFormatError(path, i, f"{what} id {value} out of range [0, {limit})")


def read_openke_triples(path: str | Path, num_entities: int, num_relations: int) -> torch.Tensor:
    """Read an OpenKE ``train2id.txt`` / ``valid2id.txt`` / ``test2id.txt`` file.

    Layout: first line the number of triples ``n``; then ``n`` lines ``head tail relation`` (integer ids
    separated by whitespace; blank lines are ignored).  Duplicate rows are kept (see
    :mod:`mmkgc.data.health`).

    :param num_entities: ``N``; head and tail ids must lie in ``[0, N)``.
    :param num_relations: ``R``; relation ids must lie in ``[0, R)``.
    :returns: int64 ``[n, 3]`` in **(head, relation, tail)** order (columns reordered from the file's h t r).
    :raises DataFormatError: missing or empty file, a count line that is not an integer or disagrees with the
        number of triple lines, a line without exactly three fields, a non-integer id, an id out of range.
    """
    path = Path(path)
    text = _read_text(path)
    newline = text.find("\n")
    first, body = (text, "") if newline < 0 else (text[:newline], text[newline + 1:])
    expected = _header_count(path, first, "triples")

    def slow(reason: str) -> DataFormatError:
        # Locate the first bad line (raises with its number); the fallback names the file only.
        _scan_triples(path, text.splitlines(), num_entities, num_relations)
        return DataFormatError(path, None, reason)

    data = np.empty((0, 3), dtype=np.int64)
    failure = None
    if body.strip():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                data = np.loadtxt(io.StringIO(body), dtype=np.int64, comments=None, ndmin=2)
        except ValueError as exc:
            failure = str(exc)
        if failure is None and data.shape[1] != 3:
            failure = f"expected 3 columns 'head tail relation', found {data.shape[1]}"
    if failure is not None:
        raise slow(failure)
    if data.shape[0] != expected:
        raise DataFormatError(
            path, 1, f"the first line says {expected} triples but the file has {data.shape[0]} triple lines"
        )
    if data.shape[0]:
        ent = data[:, :2]
        rel = data[:, 2]
        if ent.min() < 0 or ent.max() >= num_entities or rel.min() < 0 or rel.max() >= num_relations:
            raise slow("id out of range")
    hrt = data[:, [0, 2, 1]]
    return torch.from_numpy(np.ascontiguousarray(hrt))


def write_openke_triples(triples: torch.Tensor, path: str | Path) -> Path:
    """Write (h, r, t) triples ``[n, 3]`` as an OpenKE ``*2id.txt`` file (count line, then ``h t r``), atomically."""
    x = torch.as_tensor(triples).to(torch.long).reshape(-1, 3).numpy()
    buffer = io.StringIO()
    buffer.write(f"{x.shape[0]}\n")
    if x.shape[0]:
        np.savetxt(buffer, x[:, [0, 2, 1]], fmt="%d", delimiter=" ", newline="\n")
    return atomic_write_text(path, buffer.getvalue())


def read_openke(directory: str | Path, name: str | None = None) -> TripleSet:
    """Read an OpenKE benchmark directory into a :class:`~mmkgc.data.triples.TripleSet`.

    Reads ``entity2id.txt``, ``relation2id.txt``, ``train2id.txt``, ``valid2id.txt`` and ``test2id.txt``
    (see the module docstring for the layout; triples on disk are ``head tail relation``).

    :param directory: the benchmark directory.
    :param name: dataset name; defaults to the directory name.
    :returns: a TripleSet with int64 (h, r, t) splits and the entity / relation names as labels;
        ``metadata`` records ``format="openke"`` and the source directory.
    :raises DataFormatError: a missing directory or file, or any malformed file (with its line number).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DataFormatError(directory, None, "OpenKE directory not found")
    entities = read_id_map(directory / "entity2id.txt")
    relations = read_id_map(directory / "relation2id.txt")
    splits = {
        split: read_openke_triples(directory / filename, len(entities), len(relations))
        for split, filename in OPENKE_SPLIT_FILES.items()
    }
    return TripleSet(
        **splits,
        entity_labels=entities,
        relation_labels=relations,
        name=name or directory.resolve().name,
        metadata={"format": "openke", "path": str(directory)},
    )


def write_openke(triples: TripleSet, directory: str | Path) -> Path:
    """Write a TripleSet as an OpenKE directory (the five files of :data:`OPENKE_FILES`).

    Each file is replaced atomically.  Ids are the TripleSet's ids; the labels become the names.  For a set
    read with :func:`read_openke` from DB15K or MKG-W the written files are byte-identical to the originals.

    :returns: the directory.
    :raises ValueError: a label that is empty or contains a line break.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_id_map(triples.entity_labels, directory / "entity2id.txt")
    write_id_map(triples.relation_labels, directory / "relation2id.txt")
    for split, filename in OPENKE_SPLIT_FILES.items():
        write_openke_triples(triples.split(split), directory / filename)
    return directory


# ---------------------------------------------------------------------------------------------- categories
def read_openke_categories(path: str | Path, num_entities: int, num_relations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Read OpenKE's ``test2id_all.txt``: the test triples with the category ``n-n.py`` gave each.

    Layout (written by OpenKE ``benchmarks/*/n-n.py``): first line the number of triples ``n``; then ``n``
    lines ``<code><TAB>head tail relation`` with ``code`` 0 = 1-1, 1 = 1-N, 2 = N-1, 3 = N-N
    (:data:`mmkgc.data.triples.CATEGORY_NAMES`), in the order of ``test2id.txt``.

    :returns: int64 (h, r, t) triples ``[n, 3]`` and int64 codes ``[n]``.
    :raises DataFormatError: missing/empty file, a bad count line, a line without four integer fields, a code
        outside 0-3 or an id out of range (naming the file and line).
    """
    path = Path(path)
    lines = _read_text(path).splitlines()
    expected = _header_count(path, lines[0], "triples")
    rows: list[tuple[int, int, int, int]] = []
    for i, line in enumerate(lines[1:], start=2):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 4 or not all(_INT.fullmatch(f) for f in fields):
            raise DataFormatError(path, i, f"expected 'code<TAB>head tail relation' (4 integers), found "
                                           f"{line.strip()[:80]!r}")
        code, h, t, r = (int(f) for f in fields)
        if not 0 <= code <= 3:
            raise DataFormatError(path, i, f"category code {code} is not 0 (1-1), 1 (1-N), 2 (N-1) or 3 (N-N)")
        for value, what, limit in ((h, "head", num_entities), (t, "tail", num_entities),
                                   (r, "relation", num_relations)):
            if not 0 <= value < limit:
                raise DataFormatError(path, i, f"{what} id {value} out of range [0, {limit})")
        rows.append((h, r, t, code))
    if len(rows) != expected:
        raise DataFormatError(path, 1, f"the first line says {expected} triples but the file has {len(rows)} "
                                       "triple lines")
    data = torch.tensor(rows, dtype=torch.long).reshape(-1, 4)
    return data[:, :3].contiguous(), data[:, 3].contiguous()


@dataclass
class CategoryComparison:
    """Relation categories of mmkgc (:attr:`TripleSet.relation_categories`) against an OpenKE file.

    :param rows: number of triples in the reference file.
    :param mismatches: rows whose reference code differs from mmkgc's category of the row's relation.
    :param ours: mmkgc's count of reference rows per category name (``"1-1"`` ... ``"N-N"``).
    :param reference: the file's count per category name.
    :param mismatched_relations: relation ids with at least one disagreeing row, sorted.
    :param same_triples: whether the file's triples equal the TripleSet's test split row by row.
    """

    rows: int
    mismatches: int
    ours: dict[str, int]
    reference: dict[str, int]
    mismatched_relations: list[int]
    same_triples: bool

    def to_dict(self) -> dict:
        return asdict(self)


def compare_openke_categories(triples: TripleSet, path: str | Path) -> CategoryComparison:
    """Compare mmkgc's relation categories with a reference ``test2id_all.txt`` (OpenKE ``n-n.py`` output).

    For a parity check against a reference checkout, e.g. NativE's ``benchmarks/DB15K/test2id_all.txt``
    (0 mismatches on DB15K and MKG-W).  Each row of the file is categorised by its relation with
    ``triples.relation_categories``; the file's rows need not be the TripleSet's test split (``same_triples``
    says whether they are).

    :raises DataFormatError: see :func:`read_openke_categories`.
    """
    ref_triples, ref_codes = read_openke_categories(path, triples.num_entities, triples.num_relations)
    ours = triples.relation_categories[ref_triples[:, 1]]
    differ = ours != ref_codes
    return CategoryComparison(
        rows=int(ref_codes.numel()),
        mismatches=int(differ.sum()),
        ours=dict(zip(CATEGORY_NAMES, torch.bincount(ours, minlength=4).tolist())),
        reference=dict(zip(CATEGORY_NAMES, torch.bincount(ref_codes, minlength=4).tolist())),
        mismatched_relations=sorted(set(ref_triples[differ, 1].tolist())),
        same_triples=bool(ref_triples.shape == triples.test.shape and torch.equal(ref_triples, triples.test)),
    )


# ---------------------------------------------------------------------------------------------- labeled TSV
#: Column names of triple tables; a first row made only of these is a header (see :func:`_looks_like_header`).
HEADER_WORDS = frozenset({
    "head", "relation", "tail", "h", "r", "t", "subject", "predicate", "object", "s", "p", "o", "source", "target",
    "src", "dst", "rel", "head_entity", "tail_entity", "entity1", "entity2", "e1", "e2", "from", "to", "edge",
    "type", "label", "relation_type", "head_id", "relation_id", "tail_id", "sub", "obj", "pred",
})


def _looks_like_header(fields: list[str]) -> bool:
    """Whether a first row is a column header such as ``head relation tail`` or ``#subject predicate object``:
    every field, lower-cased and stripped of ``#`` and spaces, is a column name of :data:`HEADER_WORDS`."""
    return all(f.strip().lstrip("#").strip().lower() in HEADER_WORDS for f in fields)


def _read_named_lines(path: Path, delimiter: str | None) -> tuple[list[int], list[str], list[str], list[str]]:
    text = _read_text(path)
    linenos: list[int] = []
    heads: list[str] = []
    rels: list[str] = []
    tails: list[str] = []
    shape = "head<TAB>relation<TAB>tail" if delimiter == "\t" else "head relation tail"
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(delimiter) if delimiter is not None else line.split()
        if len(fields) != 3:
            raise DataFormatError(path, i, f"expected 3 fields '{shape}', found {len(fields)}: {line[:80]!r}")
        for field, what in zip(fields, ("head", "relation", "tail")):
            if not field.strip():
                raise DataFormatError(path, i, f"empty {what} name")
        if not linenos and _looks_like_header(fields):
            raise DataFormatError(path, i, f"the first row {line[:80]!r} looks like a column header, not a triple; "
                                  "remove it (labeled TSV files have no header)")
        linenos.append(i)
        heads.append(fields[0])
        rels.append(fields[1])
        tails.append(fields[2])
    return linenos, heads, rels, tails


def _label_map(labels: Sequence[str], what: str) -> dict[str, int]:
    mapping: dict[str, int] = {}
    for i, label in enumerate(labels):
        if label in mapping:
            raise ValueError(f"{what} map: label {label!r} appears twice (ids {mapping[label]} and {i})")
        mapping[label] = i
    return mapping


def read_labeled_tsv(
    directory: str | Path | None = None,
    *,
    train: str | Path | None = None,
    valid: str | Path | None = None,
    test: str | Path | None = None,
    entity_labels: Sequence[str] | None = None,
    relation_labels: Sequence[str] | None = None,
    name: str | None = None,
    delimiter: str | None = "\t",
) -> TripleSet:
    """Read name-encoded triples, one ``head<TAB>relation<TAB>tail`` line per triple and one file per split.

    Either give ``directory`` (holding ``train.tsv``, ``valid.tsv`` and ``test.tsv``, all required) or the
    split files explicitly (``train`` required; a split given as ``None`` is empty).  Explicit paths win over
    the directory's defaults.  Blank lines are ignored; names are taken verbatim (no trimming).

    :param entity_labels, relation_labels: fixed id maps (``labels[i]`` is the name of id ``i``); a name that
        is not in a given map is an error.  When omitted, the map is the sorted set of names over all splits
        (deterministic).
    :param delimiter: field separator, tab by default; ``None`` splits on runs of whitespace (IMF/MoMoK
        ``train.txt``, whose names contain no spaces).
    :returns: a TripleSet with (h, r, t) int64 splits; ``metadata["format"] = "labeled_tsv"``.
    :raises DataFormatError: missing or empty file, a line without exactly three non-empty fields, a name
        absent from a given map, a first row that is a column header (file and line named).
    :raises ValueError: a given map with a repeated label.
    """
    base = Path(directory) if directory is not None else None
    paths: dict[str, Path | None] = {}
    for split, given in (("train", train), ("valid", valid), ("test", test)):
        if given is not None:
            paths[split] = Path(given)
        elif base is not None:
            paths[split] = base / TSV_SPLIT_FILES[split]
        else:
            paths[split] = None
    if paths["train"] is None:
        raise ValueError("read_labeled_tsv needs a directory or an explicit train file")
    if base is not None and not base.is_dir():
        raise DataFormatError(base, None, "directory not found")

    parsed = {split: _read_named_lines(p, delimiter) for split, p in paths.items() if p is not None}

    if entity_labels is None:
        names = set()
        for _, heads, _, tails in parsed.values():
            names.update(heads)
            names.update(tails)
        entity_labels = sorted(names)
    if relation_labels is None:
        names = set()
        for _, _, rels, _ in parsed.values():
            names.update(rels)
        relation_labels = sorted(names)
    ent_map = _label_map(entity_labels, "entity")
    rel_map = _label_map(relation_labels, "relation")

    out: dict[str, torch.Tensor] = {}
    for split in SPLITS:
        if split not in parsed:
            out[split] = torch.empty(0, 3, dtype=torch.long)
            continue
        linenos, heads, rels, tails = parsed[split]
        path = paths[split]
        assert path is not None
        ids = np.empty((len(linenos), 3), dtype=np.int64)
        for col, (column, mapping, what) in enumerate(
            ((heads, ent_map, "entity"), (rels, rel_map, "relation"), (tails, ent_map, "entity"))
        ):
            try:
                ids[:, col] = [mapping[x] for x in column]
            except KeyError:
                bad = next(k for k, x in enumerate(column) if x not in mapping)
                raise DataFormatError(
                    path, linenos[bad], f"unknown {what} {column[bad]!r} (not in the given {what} map)"
                ) from None
        out[split] = torch.from_numpy(ids)
    source = base if base is not None else paths["train"].parent
    return TripleSet(
        **out,
        entity_labels=list(entity_labels),
        relation_labels=list(relation_labels),
        name=name or Path(source).resolve().name,
        metadata={"format": "labeled_tsv", "path": str(source)},
    )


def write_labeled_tsv(
    triples: TripleSet,
    directory: str | Path,
    file_names: dict[str, str] | None = None,
) -> dict[str, Path]:
    """Write each split as ``head<TAB>relation<TAB>tail`` lines of names, each file atomically.

    :param file_names: split -> file name; defaults to :data:`TSV_SPLIT_FILES`.
    :returns: split -> written path.
    :raises ValueError: a label that is empty or contains a tab or a line break.
    """
    directory = Path(directory)
    file_names = {**TSV_SPLIT_FILES, **(file_names or {})}
    _check_labels(triples.entity_labels, "entity", tab_ok=False)
    _check_labels(triples.relation_labels, "relation", tab_ok=False)
    ents = np.asarray(triples.entity_labels, dtype=object)
    rels = np.asarray(triples.relation_labels, dtype=object)
    written: dict[str, Path] = {}
    for split in SPLITS:
        x = triples.split(split).numpy()
        lines = [f"{h}\t{r}\t{t}\n" for h, r, t in zip(ents[x[:, 0]], rels[x[:, 1]], ents[x[:, 2]])]
        written[split] = atomic_write_text(directory / file_names[split], "".join(lines))
    return written


def read_vemp_graph(
    directory: str | Path,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 42,
    name: str = "DB15K-vemp",
) -> tuple[TripleSet, list[str]]:
    """VEMP's graph (Sela et al.; methods.md 2.1): ``entities.csv`` (``entity,short_name``), ``relations.csv``
    (``relation``) and ``edge_index.parquet`` (``src_id, dst_id, rel_id``), split into random train / valid / test
    edges (default 80/10/10, seeded, like PyG's ``RandomLinkSplit``).

    Edges are kept as triples ``(src, rel, dst)``; node ``i`` is row ``i`` of ``entities.csv``.

    :returns: the split :class:`TripleSet` (entity labels = URIs) and the short names ``[N]``.
    :raises DataFormatError: a missing file or column, an id out of range (naming file and row).
    """
    from mmkgc.extras import require

    pd = require("pandas", "reading the VEMP graph layout", extra="gnn")
    require("pyarrow", "reading edge_index.parquet", extra="gnn")
    directory = Path(directory)
    files = {k: directory / v for k, v in
             {"entities": "entities.csv", "relations": "relations.csv", "edges": "edge_index.parquet"}.items()}
    for path in files.values():
        if not path.is_file():
            raise DataFormatError(path, None, "missing file of the VEMP graph layout")
    if not (0 <= valid_fraction < 1 and 0 <= test_fraction < 1 and valid_fraction + test_fraction < 1):
        raise ValueError(f"bad split fractions valid={valid_fraction} test={test_fraction}")

    def columns(frame, path: Path, needed: Sequence[str]):
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise DataFormatError(path, 1, f"missing column(s) {', '.join(missing)}; found {', '.join(frame.columns)}")

    ents = pd.read_csv(files["entities"], dtype=str, keep_default_na=False)
    columns(ents, files["entities"], ["entity", "short_name"])
    rels = pd.read_csv(files["relations"], dtype=str, keep_default_na=False)
    columns(rels, files["relations"], ["relation"])
    edges = pd.read_parquet(files["edges"])
    columns(edges, files["edges"], ["src_id", "dst_id", "rel_id"])
    x = torch.from_numpy(edges[["src_id", "rel_id", "dst_id"]].to_numpy(dtype=np.int64).copy())
    for col, limit, what in ((0, len(ents), "src_id"), (2, len(ents), "dst_id"), (1, len(rels), "rel_id")):
        bad = ((x[:, col] < 0) | (x[:, col] >= limit)).nonzero()
        if bad.numel():
            row = int(bad[0, 0])
            raise DataFormatError(files["edges"], row + 1, f"{what} {int(x[row, col])} outside [0, {limit})")
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(int(seed)))
    n_valid, n_test = int(round(valid_fraction * x.shape[0])), int(round(test_fraction * x.shape[0]))
    valid, test, train = perm[:n_valid], perm[n_valid:n_valid + n_test], perm[n_valid + n_test:]
    triples = TripleSet(x[train], x[valid], x[test], list(ents["entity"]), list(rels["relation"]), name=name,
                        metadata={"format": "vemp_csv", "path": str(directory), "split_seed": int(seed),
                                  "valid_fraction": valid_fraction, "test_fraction": test_fraction})
    return triples, list(ents["short_name"])
