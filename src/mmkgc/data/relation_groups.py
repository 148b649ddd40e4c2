"""Relation groupings kept as data: VEMP's 31 meta-relations over the 279 DBpedia relations of DB15K.

VEMP (Sela et al.; methods.md section 2.1) groups DB15K's relations by a hand-written table into 31
"meta-relations" (GEO_POLITICAL, MEDIA_CREATOR, ONTOLOGY_METADATA, ...) whose ids are the alphabetical positions
of their names, and runs its R-GCN over those 31 edge types.  ``vemp_meta_relations.json`` (shipped with the
package) is mmkgc's own table in that scheme, written from the relation names: ``{"meta_relations": [31 names,
sorted], "relations": {relation URI: meta name}}``.
"""

from __future__ import annotations

import json
from importlib import resources

import torch

from mmkgc.errors import DataFormatError

VEMP_META_FILE = "vemp_meta_relations.json"


def load_vemp_meta_relations() -> tuple[list[str], dict[str, str]]:
    """``(meta names in id order, {relation URI: meta name})`` from the packaged table."""
    text = resources.files("mmkgc.data").joinpath(VEMP_META_FILE).read_text(encoding="utf-8")
    data = json.loads(text)
    names = list(data["meta_relations"])
    if names != sorted(names):
        raise DataFormatError(VEMP_META_FILE, None, "meta_relations must be in alphabetical order")
    return names, dict(data["relations"])


def _canonical(label: str) -> str:
    return label.strip().strip("<>")


def vemp_relation_map(relation_labels: list[str]) -> tuple[torch.Tensor, list[str]]:
    """Map dataset relations to VEMP meta-relation ids.

    :param relation_labels: the dataset's ``R`` relation names (URIs, with or without ``<>``).
    :returns: int64 ``[R]`` meta id per relation and the meta names (``len == 31``).
    :raises DataFormatError: a relation missing from the table (naming it).
    """
    names, table = load_vemp_meta_relations()
    index = {n: i for i, n in enumerate(names)}
    ids = []
    for i, label in enumerate(relation_labels):
        meta = table.get(_canonical(label))
        if meta is None:
            raise DataFormatError(VEMP_META_FILE, None,
                                  f"relation {i} {label!r} has no VEMP meta-relation (use relation_grouping: none)")
        ids.append(index[meta])
    return torch.tensor(ids, dtype=torch.long), names
