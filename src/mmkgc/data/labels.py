"""Entity and relation labels typed by a user: resolve them to ids, or say which labels were probably meant.

Benchmark labels are often URIs (DB15K: ``<http://dbpedia.org/resource/Alabama>``; MKG-W:
``http://www.wikidata.org/entity/Q30``) while a user types the local name (``Alabama``).  The suggestions compare the
query with the whole labels and with their local names (the part after the last ``/`` or ``#``, without ``<>``).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from mmkgc.errors import ConfigError


def local_name(label: str) -> str:
    """The local part of a URI label: ``<http://dbpedia.org/resource/Alabama>`` -> ``Alabama``; other labels
    unchanged (``/m/02mjmr`` -> ``02mjmr`` too, as the rule is only "after the last / or #")."""
    core = label.strip().removeprefix("<").removesuffix(">").rstrip("/#")
    for sep in ("#", "/"):
        if sep in core:
            core = core.rsplit(sep, 1)[1]
    return core or label


def suggest_labels(query: str, labels: Sequence[str], n: int = 3) -> list[str]:
    """Up to ``n`` labels the user probably meant by ``query``, best first: labels whose local name equals the
    query (ignoring case), then close matches of the local names, then close matches of the whole labels
    (:func:`difflib.get_close_matches`, ratio >= 0.6)."""
    by_local: dict[str, list[str]] = {}
    for label in labels:
        by_local.setdefault(local_name(label), []).append(label)
    folded = query.strip().casefold()
    out: list[str] = []

    def add(candidates) -> None:
        for c in candidates:
            if c not in out and c != query:
                out.append(c)

    add(label for name, group in by_local.items() if name.casefold() == folded for label in group)
    for name in difflib.get_close_matches(local_name(query), list(by_local), n=n):
        add(by_local[name])
    add(difflib.get_close_matches(query, list(labels), n=n))
    return out[:n]


def resolve_label(label: str, labels: Sequence[str], mapping: dict[str, int], what: str = "entity") -> int:
    """The id of ``label``.

    :param labels: all labels, ``labels[i]`` names id ``i``; ``mapping``: label -> id (the last id of a shared label).
    :param what: ``entity`` or ``relation`` (for the messages).
    :raises ConfigError: an unknown label (the message suggests close matches, :func:`suggest_labels`) or a label
        several ids share (the message lists them).
    """
    if label in mapping:
        ids = [i for i, name in enumerate(labels) if name == label] if list(labels).count(label) > 1 else []
        if ids:
            plural = "entities" if what == "entity" else "relations"
            raise ConfigError(f"the {what} label {label!r} is shared by {len(ids)} {plural} (ids "
                              f"{', '.join(map(str, ids[:10]))}{', ...' if len(ids) > 10 else ''}); the query is "
                              "ambiguous: give the labels unique names in the dataset")
        return mapping[label]
    close = suggest_labels(label, labels)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigError(f"unknown {what} {label!r}{hint}")
