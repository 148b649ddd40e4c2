"""Relation groupings kept as data: meta-relations over the 279 DBpedia relations of DB15K for VEMP's R-GCN.

VEMP (Sela et al.; methods.md section 2.1) groups DB15K's relations by a hand-written table into 31
"meta-relations" (GEO_POLITICAL, LOC_EVENT, ONTOLOGY_METADATA, ...) whose ids are the alphabetical positions of their
names, and runs its R-GCN over those edge types.  Two tables ship with the package, both
``{"meta_relations": [names, sorted], "relations": {relation URI: meta name}}``:

* ``vemp_meta`` -- ``vemp_relation_to_meta.json``: VEMP's own table, the ``relation_to_meta`` dictionary of the public
  code (DvirSela/Lab_Project, ``utils/util.py``), kept as data with its source and commit recorded in the file;
* ``mmkgc_meta`` -- ``mmkgc_meta_relations.json``: mmkgc's earlier grouping written from the relation names in the
  same scheme (31 names; adjusted Rand index 0.48 against VEMP's table, so a different set of edge types).
"""

from __future__ import annotations

import json
from importlib import resources

import torch

from mmkgc.errors import DataFormatError, UnknownNameError

VEMP_META_FILE = "vemp_relation_to_meta.json"
MMKGC_META_FILE = "mmkgc_meta_relations.json"
#: ``relation_grouping`` name -> packaged table file.
META_TABLES = {"vemp_meta": VEMP_META_FILE, "mmkgc_meta": MMKGC_META_FILE}


def load_vemp_meta_relations(grouping: str = "vemp_meta") -> tuple[list[str], dict[str, str]]:
    """``(meta names in id order, {relation URI: meta name})`` of a packaged table (see the module).

    :raises UnknownNameError: ``grouping`` is not one of :data:`META_TABLES`.
    :raises DataFormatError: the names are not in alphabetical order or a relation maps to an unlisted name.
    """
    try:
        filename = META_TABLES[grouping]
    except KeyError:
        raise UnknownNameError(f"unknown relation grouping {grouping!r}; known: {', '.join(META_TABLES)}") from None
    data = json.loads(resources.files("mmkgc.data").joinpath(filename).read_text(encoding="utf-8"))
    names = list(data["meta_relations"])
    if names != sorted(names):
        raise DataFormatError(filename, None, "meta_relations must be in alphabetical order")
    table = dict(data["relations"])
    unknown = sorted(set(table.values()) - set(names))
    if unknown:
        raise DataFormatError(filename, None, f"relations map to meta-relations not listed: {unknown}")
    return names, table


def _canonical(label: str) -> str:
    return label.strip().strip("<>")


def vemp_relation_map(relation_labels: list[str], grouping: str = "vemp_meta") -> tuple[torch.Tensor, list[str]]:
    """Map dataset relations to meta-relation ids.

    :param relation_labels: the dataset's ``R`` relation names (URIs, with or without ``<>``).
    :param grouping: ``vemp_meta`` (VEMP's published table) or ``mmkgc_meta`` (mmkgc's own grouping).
    :returns: int64 ``[R]`` meta id per relation and the meta names (31 for both tables).
    :raises DataFormatError: a relation missing from the table (naming it).
    :raises UnknownNameError: an unknown ``grouping``.
    """
    names, table = load_vemp_meta_relations(grouping)
    index = {n: i for i, n in enumerate(names)}
    ids = []
    for i, label in enumerate(relation_labels):
        meta = table.get(_canonical(label))
        if meta is None:
            raise DataFormatError(META_TABLES[grouping], None,
                                  f"relation {i} {label!r} has no meta-relation (use relation_grouping: none)")
        ids.append(index[meta])
    return torch.tensor(ids, dtype=torch.long), names
