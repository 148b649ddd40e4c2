"""Cleaning and merging of per-image descriptions into per-entity description lists (methods.md §3.1 steps 5-6).

Rules (Beyond Images' fusion pre-processing, made explicit and configurable in :class:`CleaningRules`):

1. Sources in priority order: descriptions of the *original* images before those of *new* images.
2. Inside a source, descriptions in image order (natural order of the image id: ``Q42_2`` before ``Q42_10``).
3. Whitespace normalised; exact duplicates (case-insensitive) dropped -- across sources as well, so a caption
   repeated for a new image does not appear twice (the reference de-duplicates per file only).
4. Too short: fewer than ``min_words`` words (paper: 3) dropped.
5. Repetitive: more than ``repetitive_min_words`` words (paper: 5) and fewer unique words than
   ``unique_ratio`` (paper: 0.5) times the word count -- the degenerate "a a a a a a" loops of greedy decoding.
6. At most ``max_per_entity`` descriptions kept (paper: 500), the first ones in the order above.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mmkgc.errors import ConfigError

_WS = re.compile(r"\s+")
_DIGITS = re.compile(r"(\d+)")


@dataclass(frozen=True)
class CleaningRules:
    """Thresholds of the description filters (defaults = the paper's).

    :raises ConfigError: a negative threshold, a ratio outside [0, 1] or ``max_per_entity`` < 1.
    """

    min_words: int = 3
    repetitive_min_words: int = 5
    unique_ratio: float = 0.5
    max_per_entity: int = 500
    source_order: tuple[str, ...] = ("original", "new")

    def __post_init__(self) -> None:
        if self.min_words < 0 or self.repetitive_min_words < 0:
            raise ConfigError("min_words and repetitive_min_words must be >= 0")
        if not 0.0 <= self.unique_ratio <= 1.0:
            raise ConfigError(f"unique_ratio must be in [0, 1], got {self.unique_ratio}")
        if self.max_per_entity < 1:
            raise ConfigError(f"max_per_entity must be >= 1, got {self.max_per_entity}")


def normalise_description(text: str) -> str:
    """Collapse whitespace and strip."""
    return _WS.sub(" ", str(text)).strip()


def natural_key(image_id: str) -> tuple:
    """Sort key that orders embedded numbers numerically (``Q42_2.jpg`` < ``Q42_10.jpg``)."""
    return tuple(int(p) if p.isdigit() else p.lower() for p in _DIGITS.split(str(image_id)))


def rejection_reason(text: str, rules: CleaningRules) -> str | None:
    """``"empty"``, ``"too_short"``, ``"repetitive"`` or ``None`` (kept) for one normalised description."""
    words = text.split()
    if not words:
        return "empty"
    if len(words) < rules.min_words:
        return "too_short"
    if len(words) > rules.repetitive_min_words and len({w.lower() for w in words}) < rules.unique_ratio * len(words):
        return "repetitive"
    return None


@dataclass
class MergedEntity:
    """The cleaned descriptions of one entity.

    :ivar descriptions: kept descriptions in priority order (at most ``max_per_entity``).
    :ivar images: ``{image id: raw description}`` of every captioned image (for the released layout and the
        audit), in image order per source.
    :ivar sources: the source of each kept description.
    :ivar dropped: ``{reason: count}`` (``duplicate``, ``too_short``, ``repetitive``, ``empty``, ``cap``).
    """

    descriptions: list[str] = field(default_factory=list)
    images: dict[str, str] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def merged_text(self) -> str:
        """The kept descriptions joined by spaces (Beyond Images' ``merged_descriptions``)."""
        return " ".join(self.descriptions)


def merge_descriptions(
    items: Iterable[tuple[str, str, str]], rules: CleaningRules | None = None
) -> MergedEntity:
    """Clean and merge the ``(image id, description, source)`` triples of one entity.

    :raises ConfigError: a source not listed in ``rules.source_order``.
    """
    rules = rules or CleaningRules()
    order = {s: k for k, s in enumerate(rules.source_order)}
    items = list(items)
    for _, _, src in items:
        if src not in order:
            raise ConfigError(f"image source {src!r} is not in source_order {list(rules.source_order)}")
    items.sort(key=lambda it: (order[it[2]], natural_key(it[0])))
    out = MergedEntity()
    seen: set[str] = set()

    def drop(reason: str) -> None:
        out.dropped[reason] = out.dropped.get(reason, 0) + 1

    for image_id, raw, src in items:
        text = normalise_description(raw)
        out.images[image_id] = text
        reason = rejection_reason(text, rules)
        if reason is not None:
            drop(reason)
            continue
        key = text.lower()
        if key in seen:
            drop("duplicate")
            continue
        seen.add(key)
        if len(out.descriptions) >= rules.max_per_entity:
            drop("cap")
            continue
        out.descriptions.append(text)
        out.sources.append(src)
    return out


def merge_all(
    captions: Mapping[str, Sequence[tuple[str, str, str]]], rules: CleaningRules | None = None
) -> tuple[dict[str, MergedEntity], dict[str, Any]]:
    """:func:`merge_descriptions` for every entity of ``{entity label: [(image id, description, source)]}``.

    :returns: ``(merged per entity, report)``; the report counts entities, descriptions in and kept, drops by
        reason and entities left without any description.
    """
    rules = rules or CleaningRules()
    merged = {name: merge_descriptions(items, rules) for name, items in captions.items()}
    dropped: dict[str, int] = {}
    for m in merged.values():
        for k, v in m.dropped.items():
            dropped[k] = dropped.get(k, 0) + v
    report = {
        "entities": len(merged),
        "descriptions_in": sum(len(v) for v in captions.values()),
        "descriptions_kept": sum(len(m.descriptions) for m in merged.values()),
        "dropped": dropped,
        "entities_without_descriptions": sum(1 for m in merged.values() if not m.descriptions),
        "rules": {"min_words": rules.min_words, "repetitive_min_words": rules.repetitive_min_words,
                  "unique_ratio": rules.unique_ratio, "max_per_entity": rules.max_per_entity,
                  "source_order": list(rules.source_order)},
    }
    return merged, report
