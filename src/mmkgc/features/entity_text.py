"""Human-readable entity texts, the input of text encoders.

Benchmark entity labels are identifiers, not text: DB15K uses DBpedia URIs in angle brackets
(``<http://dbpedia.org/resource/Alabama_%28state%29>``), MKG-W Wikidata URIs (``http://www.wikidata.org/
entity/Q370252``, no label at all), MKG-Y bare YAGO/DBpedia-style names, TIVA/Kuai16K free text
(methods.md §1.2).  :func:`label_text` turns one label into text and says whether that text is
*informative*; :func:`entity_texts` does it for a dataset, optionally taking the text from a column of a
table (CSV/TSV/parquet) joined on the entity name, with a coverage report.

Entities whose text is not informative (bare Wikidata/Freebase ids, numbers, empty strings) must be
marked missing by whoever encodes them: an encoder would otherwise embed the id string as if it meant
something.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple
from urllib.parse import unquote

import numpy as np

from mmkgc.errors import DataFormatError

_WIKIDATA = re.compile(r"^(?:https?://(?:www\.)?wikidata\.org/(?:entity|wiki)/)?(Q\d+)$", re.IGNORECASE)
_FREEBASE = re.compile(r"^/?m/[0-9a-z_]+$|^(?:https?://rdf\.freebase\.com/ns/)m\.[0-9a-z_]+$", re.IGNORECASE)
_NUMBER = re.compile(r"^[+-]?\d+(?:\.\d+)?$")
_SPACES = re.compile(r"\s+")
#: Namespaces whose local name is everything after the prefix (it may itself contain '/').
_NAMESPACE = re.compile(
    r"^https?://(?:[a-z]{2,3}\.)?(?:dbpedia\.org/(?:resource|page)/|yago-knowledge\.org/resource/"
    r"|wikipedia\.org/wiki/|[a-z]{2,3}\.wikipedia\.org/wiki/)",
    re.IGNORECASE,
)

LabelKind = Literal["empty", "wikidata_id", "freebase_id", "number", "uri", "name"]


def normalize_entity_name(name: str) -> str:
    """Canonical form of an entity name for matching names across files.

    Strips surrounding whitespace and one pair of angle brackets and percent-decodes (UTF-8), so that
    ``<http://dbpedia.org/resource/Alabama_%28state%29>`` and ``http://dbpedia.org/resource/Alabama_(state)``
    match.  Case and underscores are kept (DBpedia names are case-sensitive).
    """
    s = str(name).strip()
    if len(s) >= 2 and s[0] == "<" and s[-1] == ">":
        s = s[1:-1].strip()
    return unquote(s)


def _humanize(segment: str) -> str:
    return _SPACES.sub(" ", segment.replace("_", " ")).strip()


def classify_label(label: str) -> tuple[str, bool, LabelKind]:
    """Text of one entity label.

    * empty -> ``("", False, "empty")``
    * Wikidata id or URI (``Q370252``, ``http://www.wikidata.org/entity/Q370252``) -> the id,
      not informative, ``"wikidata_id"``.
    * Freebase mid (``/m/0abc``) -> the mid, not informative, ``"freebase_id"``.
    * a bare number (e.g. MyGO's stringified ids) -> not informative, ``"number"``.
    * a DBpedia/YAGO/Wikipedia resource URI (``<http://dbpedia.org/resource/Alabama_%28state%29>``) -> the
      local name after the namespace (which may contain ``/``: ``Fahrenheit_9/11``), percent-decoded,
      underscores as spaces: ``"Alabama (state)"``, informative, ``"uri"``; any other URI -> its last path
      segment (after ``/`` or ``#``), treated the same way.
    * anything else (YAGO names, free text) -> percent-decoded, underscores as spaces, ``"name"``.

    :returns: ``(text, informative, kind)``.
    """
    s = normalize_entity_name(label)
    if not s:
        return "", False, "empty"
    m = _WIKIDATA.match(s)
    if m:
        return m.group(1).upper(), False, "wikidata_id"
    if _FREEBASE.match(s):
        return s, False, "freebase_id"
    if "://" in s:
        ns = _NAMESPACE.match(s)
        if ns:  # DBpedia/YAGO/Wikipedia names may contain '/', e.g. "Fahrenheit_9/11"
            segment = s[ns.end() :]
        else:
            rest = s.split("://", 1)[1].rstrip("/#")
            segment = re.split(r"[/#]", rest)[-1] if ("/" in rest or "#" in rest) else ""
        text = _humanize(segment)
        if not text:
            return s, False, "uri"
        if _WIKIDATA.match(text):
            return text.upper(), False, "wikidata_id"
        return text, not _NUMBER.match(text), "uri"
    text = _humanize(s)
    if _NUMBER.match(text):
        return text, False, "number"
    return text, bool(text), "name"


def label_text(label: str) -> tuple[str, bool]:
    """``(text, informative)`` for one entity label; see :func:`classify_label`."""
    text, informative, _ = classify_label(label)
    return text, informative


@dataclass(frozen=True)
class LabelTable:
    """Entity texts stored in a column of a table, joined to the dataset by entity name.

    :param path: ``.csv``, ``.tsv``/``.tab``/``.txt`` (tab-separated) or ``.parquet`` file with a header.
    :param key_column: column holding the entity name (matched after :func:`normalize_entity_name`, so
        ``http://dbpedia.org/resource/X`` matches the DB15K label ``<http://dbpedia.org/resource/X>``).
    :param text_column: column holding the text.
    :param name_map: optional map from dataset labels to the table's key namespace (e.g. DBpedia ->
        Wikidata links), applied before normalisation.

    Example: ``LabelTable("DB15K/raw/entities.csv", "entity", "short_name")``.
    """

    path: str | Path
    key_column: str
    text_column: str
    name_map: Mapping[str, str] | None = None

    def identity(self) -> dict[str, Any]:
        """JSON-able description (for cache keys and provenance)."""
        return {
            "table": str(self.path),
            "key_column": self.key_column,
            "text_column": self.text_column,
            "name_map": len(self.name_map) if self.name_map else None,
        }

    def read(self) -> dict[str, str]:
        """Map normalised entity name -> stripped text (rows with an empty/NA text are skipped).

        :raises DataFormatError: unreadable file, unknown suffix, missing column, or one name with two
            different texts (the message gives the 1-based data line).
        """
        from mmkgc.extras import require

        pd = require("pandas", "an entity text table (text_source: table)", extra="text")
        path = Path(self.path)
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            require("pyarrow", f"reading {path.name}", extra="text")
        try:
            if suffix == ".parquet":
                df = pd.read_parquet(path, columns=[self.key_column, self.text_column])
            elif suffix in (".csv", ".tsv", ".tab", ".txt"):
                sep = "," if suffix == ".csv" else "\t"
                df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
            else:
                raise DataFormatError(path, None, f"unknown table format {suffix!r}; use .csv, .tsv or .parquet")
        except DataFormatError:
            raise
        except FileNotFoundError:
            raise DataFormatError(path, None, "file not found") from None
        except Exception as exc:  # pandas raises many parser error types
            raise DataFormatError(path, None, f"cannot read table: {exc}") from exc
        for col in (self.key_column, self.text_column):
            if col not in df.columns:
                raise DataFormatError(path, 1, f"no column {col!r} (columns: {', '.join(map(str, df.columns))})")
        out: dict[str, str] = {}
        for i, (key, text) in enumerate(zip(df[self.key_column].tolist(), df[self.text_column].tolist())):
            if key is None or (isinstance(key, float) and np.isnan(key)):
                continue
            if text is None or (isinstance(text, float) and np.isnan(text)):
                continue
            name = normalize_entity_name(str(key))
            value = _SPACES.sub(" ", str(text)).strip()
            if not name or not value:
                continue
            if name in out and out[name] != value:
                line = i + 2 if suffix != ".parquet" else None
                raise DataFormatError(path, line, f"entity {name!r} has two different texts")
            out[name] = value
        return out


class EntityTexts(NamedTuple):
    """Result of :func:`entity_texts`.

    :ivar texts: ``N`` strings, one per entity id.
    :ivar informative: numpy bool ``[N]``; ``False`` where the text is an id, a number or empty.
    :ivar coverage: ``{"num_entities", "informative", "from_table", "from_label", "kinds": {kind: count}}``.
    """

    texts: list[str]
    informative: np.ndarray
    coverage: dict[str, Any]


def entity_texts(
    entity_labels: Sequence[str],
    source: Literal["label"] | LabelTable = "label",
    fallback: Literal["label", "none"] = "label",
) -> EntityTexts:
    """Texts for every entity of a dataset.

    :param entity_labels: ``N`` labels in entity-id order (``TripleSet.entity_labels``).
    :param source: ``"label"`` (derive text from the label, :func:`classify_label`) or a
        :class:`LabelTable` (text from a table column joined by normalised entity name).
    :param fallback: with a table, what entities absent from it get: ``"label"`` (their label text,
        informative or not by the label rules) or ``"none"`` (empty text, not informative).
    :returns: :class:`EntityTexts` ``(texts, informative, coverage)``.
    :raises DataFormatError: the table cannot be read (see :meth:`LabelTable.read`).
    :raises ValueError: unknown ``source`` or ``fallback``.
    """
    if fallback not in ("label", "none"):
        raise ValueError(f"unknown fallback {fallback!r}; expected 'label' or 'none'")
    table: dict[str, str] | None = None
    name_map: Mapping[str, str] = {}
    if isinstance(source, LabelTable):
        table = source.read()
        name_map = source.name_map or {}
    elif source != "label":
        raise ValueError(f"unknown text source {source!r}; expected 'label' or a LabelTable")

    n = len(entity_labels)
    texts: list[str] = []
    informative = np.zeros(n, dtype=bool)
    kinds: dict[str, int] = {}
    from_table = 0
    for i, label in enumerate(entity_labels):
        if table is not None:
            key = normalize_entity_name(name_map.get(label, label))
            hit = table.get(key)
            if hit is not None:
                texts.append(hit)
                informative[i] = True
                from_table += 1
                kinds["table"] = kinds.get("table", 0) + 1
                continue
            if fallback == "none":
                texts.append("")
                kinds["empty"] = kinds.get("empty", 0) + 1
                continue
        text, ok, kind = classify_label(label)
        texts.append(text)
        informative[i] = ok
        kinds[kind] = kinds.get(kind, 0) + 1
    coverage = {
        "num_entities": n,
        "informative": int(informative.sum()),
        "from_table": from_table,
        "from_label": n - from_table if (table is None or fallback == "label") else 0,
        "kinds": kinds,
    }
    return EntityTexts(texts, informative, coverage)


def entity_local_name(name: str) -> str | None:
    """The local name of a URI entity label, percent-decoded, underscores kept, or ``None`` for a label
    that is not a URI.

    ``<http://dbpedia.org/resource/Alabama_%28state%29>`` -> ``"Alabama_(state)"``,
    ``http://www.wikidata.org/entity/Q42`` -> ``"Q42"``, ``http://example.org/onto#Thing`` -> ``"Thing"``.
    DBpedia/YAGO/Wikipedia local names are everything after the namespace (``Fahrenheit_9/11``).
    """
    s = normalize_entity_name(name)
    if "://" not in s:
        return None
    ns = _NAMESPACE.match(s)
    if ns:
        local = s[ns.end() :]
    else:
        rest = s.split("://", 1)[1].rstrip("/#")
        if "/" not in rest and "#" not in rest:
            return None
        local = re.split(r"[/#]", rest)[-1]
    return local or None


class EntityNameIndex:
    """Find the entity id of a name written by another tool (an image folder, an ``.h5`` key, a table row).

    A name is first mapped through ``name_map`` (names compared after :func:`normalize_entity_name`), then
    matched (1) exactly against the normalised dataset labels, else (2), when the name is not itself a URI,
    against the *local names* of URI labels (:func:`entity_local_name`: ``Alabama`` finds
    ``<http://dbpedia.org/resource/Alabama>``, ``Q42`` finds ``http://www.wikidata.org/entity/Q42``).  A local
    name shared by several labels is ambiguous and never matched (counted in :attr:`ambiguous_local_names`).

    :param entity_labels: ``N`` dataset labels in id order.
    :param name_map: optional map ``external name -> dataset label`` (e.g. Wikidata QID -> DBpedia URI).
    :param local_names: enable the local-name rule (2).
    """

    def __init__(
        self,
        entity_labels: Sequence[str],
        name_map: Mapping[str, str] | None = None,
        local_names: bool = True,
    ):
        self.num_entities = len(entity_labels)
        self._exact: dict[str, int] = {}
        local: dict[str, int] = {}
        clashes: set[str] = set()
        for i, label in enumerate(entity_labels):
            key = normalize_entity_name(label)
            self._exact.setdefault(key, i)
            if not local_names:
                continue
            ln = entity_local_name(label)
            if ln is None:
                continue
            if ln in local and local[ln] != i:
                clashes.add(ln)
            local.setdefault(ln, i)
        self._local = {k: v for k, v in local.items() if k not in clashes and k not in self._exact}
        self.ambiguous_local_names = len(clashes)
        self._map = {normalize_entity_name(k): normalize_entity_name(v) for k, v in (name_map or {}).items()}

    def lookup(self, name: str) -> int | None:
        """Entity id of ``name``, or ``None`` when it names no dataset entity."""
        key = normalize_entity_name(name)
        key = self._map.get(key, key)
        hit = self._exact.get(key)
        if hit is None and "://" not in key:
            hit = self._local.get(key)
        return hit
