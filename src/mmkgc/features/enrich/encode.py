"""Enrichment files in the released layout, alignment to entity ids, and encoding into a feature table.

Released layout (Beyond Images, methods.md §3.1 step 5; ``DB15K_img_original_summary_blip.json`` etc.)::

    {"<entity_name>": {"entity_name": ..., "entity_qid": "Q42", "dbpedia_url": "http://dbpedia.org/resource/X",
                       "wikidata_url": "http://www.wikidata.org/entity/Q42",
                       "images": {"Q42_1.jpg": {"image_description_detail": "..."}, ...,
                                  "images_t5_descriptions": "<fused summary>"},          # optional, legacy key
                       "merged_descriptions": "<space-joined captions>"}}

The reader is lenient where the released files differ from each other: ``merged_descriptions`` may sit at the
entity level or inside ``images``; the per-image caption key may be ``image_description_detail`` or
``image_blip2_detail`` (the supplement's name); the fused summary may be ``images.images_t5_descriptions`` or an
entity-level ``summary`` / ``images_t5_descriptions``.  Anything else malformed is a
:class:`~mmkgc.errors.DataFormatError` naming the file and the entity.

Alignment (fixing the released ``.pth`` misalignment, methods.md §3.5 item 1) goes through the entity *names*:
``dbpedia_url`` first, then ``wikidata_url`` / ``entity_qid`` (through an optional name map, e.g. MKG-W's
``ent_links``), then the entry key, each matched by :class:`~mmkgc.features.entity_text.EntityNameIndex`.  The
text of an entity is its fused summary when present, else its merged descriptions, else its per-image captions
joined (``text: auto``), and it is encoded with any text encoder through the feature cache
(:func:`~mmkgc.features.cache.cached_text_features`: resumable shards, cache key over the exact texts).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mmkgc.errors import ConfigError, DataFormatError
from mmkgc.features.entity_text import EntityNameIndex, entity_local_name, label_text, normalize_entity_name

log = logging.getLogger(__name__)

CAPTION_KEYS = ("image_description_detail", "image_blip2_detail")
SUMMARY_KEYS = ("images_t5_descriptions", "summary", "llm_summary", "fused_summary")
TextChoice = Literal["auto", "summary", "merged", "images"]


@dataclass
class EnrichedEntity:
    """One entry of an enrichment file.

    :ivar key: the entry's key in the file; ``images`` ``{image id: caption}`` in file order.
    """

    key: str
    entity_name: str = ""
    entity_qid: str = ""
    dbpedia_url: str = ""
    wikidata_url: str = ""
    images: dict[str, str] = field(default_factory=dict)
    merged_descriptions: str = ""
    summary: str = ""
    files: list[str] = field(default_factory=list)

    def text(self, choice: TextChoice = "auto") -> tuple[str, str | None]:
        """``(text, kind)`` with kind ``summary`` / ``merged`` / ``images`` or ``("", None)`` when empty."""
        options = {"summary": self.summary.strip(), "merged": self.merged_descriptions.strip(),
                   "images": " ".join(c for c in self.images.values() if c.strip()).strip()}
        order = ("summary", "merged", "images") if choice == "auto" else (choice,)
        for kind in order:
            if options[kind]:
                return " ".join(options[kind].split()), kind
        return "", None


def _str(path: Path, key: str, entry: Mapping[str, Any], name: str) -> str:
    value = entry.get(name, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataFormatError(path, None, f"entity {key!r}: field {name!r} must be a string, got {type(value).__name__}")
    return value


def read_enrichment_json(path: str | Path) -> dict[str, EnrichedEntity]:
    """Read one enrichment file in the released layout.

    :returns: ``{entry key: EnrichedEntity}`` in file order.
    :raises DataFormatError: not JSON, not an object of objects, or a field of the wrong type.
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise DataFormatError(path, None, "file not found") from None
    except json.JSONDecodeError as exc:
        raise DataFormatError(path, exc.lineno, f"not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise DataFormatError(path, None, f"expected a JSON object keyed by entity name, got {type(data).__name__}")
    out: dict[str, EnrichedEntity] = {}
    for key, entry in data.items():
        if not isinstance(entry, dict):
            raise DataFormatError(path, None, f"entity {key!r}: expected an object, got {type(entry).__name__}")
        e = EnrichedEntity(key=str(key), files=[str(path)])
        for name in ("entity_name", "entity_qid", "dbpedia_url", "wikidata_url", "merged_descriptions"):
            setattr(e, name, _str(path, key, entry, name))
        e.summary = next((_str(path, key, entry, k) for k in SUMMARY_KEYS if isinstance(entry.get(k), str)), "")
        images = entry.get("images", {}) or {}
        if not isinstance(images, dict):
            raise DataFormatError(path, None, f"entity {key!r}: 'images' must be an object")
        for image_id, value in images.items():
            if isinstance(value, str):  # summary / merged text stored inside "images"
                if image_id in SUMMARY_KEYS and not e.summary:
                    e.summary = value
                elif image_id == "merged_descriptions" and not e.merged_descriptions:
                    e.merged_descriptions = value
                continue
            if not isinstance(value, dict):
                raise DataFormatError(path, None, f"entity {key!r}, image {image_id!r}: expected an object")
            caption = next((value[k] for k in CAPTION_KEYS if isinstance(value.get(k), str)), None)
            if caption is not None:
                e.images[str(image_id)] = caption
        out[str(key)] = e
    return out


def combine_enrichment(files: Sequence[Mapping[str, EnrichedEntity]]) -> dict[str, EnrichedEntity]:
    """Merge several enrichment files (original-image file first, then new-image files): per entry key the
    metadata and the summary of the first file that has them, the images of all files in file order and the
    merged descriptions concatenated in file order (source priority, methods.md §3.1 step 6)."""
    out: dict[str, EnrichedEntity] = {}
    for entries in files:
        for key, e in entries.items():
            if key not in out:
                out[key] = EnrichedEntity(key=key)
            c = out[key]
            for name in ("entity_name", "entity_qid", "dbpedia_url", "wikidata_url", "summary"):
                if not getattr(c, name) and getattr(e, name):
                    setattr(c, name, getattr(e, name))
            for image_id, caption in e.images.items():
                c.images.setdefault(image_id, caption)
            if e.merged_descriptions.strip():
                c.merged_descriptions = (c.merged_descriptions + " " + e.merged_descriptions).strip()
            c.files.extend(e.files)
    return out


def read_enrichment_files(paths: Sequence[str | Path]) -> dict[str, EnrichedEntity]:
    """:func:`read_enrichment_json` of every path, combined by :func:`combine_enrichment`.

    :raises ConfigError: no path given.
    :raises DataFormatError: as :func:`read_enrichment_json`.
    """
    if not paths:
        raise ConfigError("no enrichment file given")
    return combine_enrichment([read_enrichment_json(p) for p in paths])


def write_enrichment_json(path: str | Path, entities: Mapping[str, EnrichedEntity]) -> Path:
    """Write entries in the released layout (atomically); the summary goes to ``images.images_t5_descriptions``
    and the per-image captions to ``images.<id>.image_description_detail``."""
    from mmkgc.fileio import atomic_write_text

    data: dict[str, Any] = {}
    for key, e in entities.items():
        images: dict[str, Any] = {i: {"image_description_detail": c} for i, c in e.images.items()}
        if e.summary:
            images["images_t5_descriptions"] = e.summary
        data[key] = {"entity_name": e.entity_name or key, "entity_qid": e.entity_qid, "dbpedia_url": e.dbpedia_url,
                     "wikidata_url": e.wikidata_url, "images": images, "merged_descriptions": e.merged_descriptions}
    return atomic_write_text(Path(path), json.dumps(data, ensure_ascii=False, indent=1))


def entity_entry(label: str) -> EnrichedEntity:
    """An empty entry for a dataset label: key = local name (``Alabama``), ``dbpedia_url`` for DBpedia URIs,
    ``wikidata_url`` / ``entity_qid`` for Wikidata URIs."""
    norm = normalize_entity_name(label)
    local = entity_local_name(label) or norm
    e = EnrichedEntity(key=local, entity_name=local)
    if "dbpedia.org/" in norm:
        e.dbpedia_url = norm
    elif "wikidata.org/" in norm:
        e.wikidata_url, e.entity_qid = norm, local
    return e


@dataclass
class AlignedTexts:
    """Enrichment texts in entity-id order.

    :ivar texts: ``N`` strings (``""`` where the entity has no enrichment).
    :ivar kinds: ``N`` of ``"summary"``, ``"merged"``, ``"images"`` or ``None``.
    :ivar report: coverage report (see :func:`align_enrichment`).
    """

    texts: list[str]
    kinds: list[str | None]
    report: dict[str, Any]

    @property
    def present(self) -> np.ndarray:
        """bool ``[N]``: the entity has an enrichment text."""
        return np.array([bool(t) for t in self.texts], dtype=bool)


def align_enrichment(
    entries: Mapping[str, EnrichedEntity],
    entity_labels: Sequence[str],
    text: TextChoice = "auto",
    name_map: Mapping[str, str] | None = None,
) -> AlignedTexts:
    """Align enrichment entries to entity ids through their names.

    :param name_map: optional ``external name -> dataset label`` map (e.g. Wikidata URL -> DBpedia label).
    :returns: :class:`AlignedTexts`; ``report = {"entries", "matched", "unknown", "unknown_examples",
        "duplicates", "num_entities", "with_text", "coverage", "by_kind": {kind: count}, "without_text_examples"}``.
    :raises ConfigError: unknown ``text`` choice.
    """
    if text not in ("auto", "summary", "merged", "images"):
        raise ConfigError(f"unknown enrichment text {text!r}; expected auto, summary, merged or images")
    index = EntityNameIndex(entity_labels, name_map)
    n = len(entity_labels)
    texts = [""] * n
    kinds: list[str | None] = [None] * n
    owner: dict[int, str] = {}
    unknown: list[str] = []
    duplicates = 0
    for key, e in entries.items():
        target = None
        for name in (e.dbpedia_url, e.wikidata_url, e.entity_qid, key, e.entity_name):
            if name:
                target = index.lookup(name)
                if target is not None:
                    break
        if target is None:
            unknown.append(key)
            continue
        if target in owner:
            duplicates += 1
            log.warning("enrichment entries %r and %r both name entity %r; keeping the first", owner[target], key,
                        entity_labels[target])
            continue
        owner[target] = key
        texts[target], kinds[target] = e.text(text)
    by_kind: dict[str, int] = {}
    for k in kinds:
        if k is not None:
            by_kind[k] = by_kind.get(k, 0) + 1
    with_text = sum(by_kind.values())
    report = {
        "entries": len(entries), "matched": len(owner), "unknown": len(unknown), "unknown_examples": unknown[:5],
        "duplicates": duplicates, "num_entities": n, "with_text": with_text,
        "coverage": with_text / n if n else 0.0, "by_kind": by_kind, "text_choice": text,
        "without_text_examples": [entity_labels[i] for i in range(n) if not texts[i]][:5],
    }
    if unknown:
        log.warning("%d of %d enrichment entries name no dataset entity (e.g. %s)", len(unknown), len(entries),
                    ", ".join(unknown[:3]))
    return AlignedTexts(texts, kinds, report)


def combine_texts(generated: Sequence[str], base: Sequence[str], separator: str = " ") -> list[str]:
    """``concat_text`` policy: the existing text followed by the generated one (either may be empty)."""
    if len(generated) != len(base):
        raise ValueError(f"{len(generated)} generated texts but {len(base)} base texts")
    return [separator.join(t for t in (b.strip(), g.strip()) if t) for g, b in zip(generated, base)]


def encode_texts(
    dataset_name: str,
    entity_labels: Sequence[str],
    texts: Sequence[str],
    encoder: Any,
    *,
    modality: str = "generated_text",
    report: dict[str, Any] | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = False,
):
    """Encode one text per entity (``""`` = absent) into a :class:`~mmkgc.features.store.FeatureTable`
    ``[N, encoder.dim]`` with presence = non-empty text, through the feature cache (resumable, keyed by the
    exact texts and the encoder identity).  The coverage ``report`` is stored in the provenance.

    :raises ValueError: ``texts`` and ``entity_labels`` differ in length.
    """
    from mmkgc.extras import require
    from mmkgc.features.cache import cached_text_features, features_dir
    from mmkgc.features.entity_text import LabelTable
    from mmkgc.fileio import atomic_write

    pd = require("pandas", "encoding generated descriptions", extra="text")
    require("pyarrow", "the parquet text table of mmkgc enrich encode", extra="text")

    if len(texts) != len(entity_labels):
        raise ValueError(f"{len(texts)} texts for {len(entity_labels)} entities")
    rows = [(normalize_entity_name(lab), t) for lab, t in zip(entity_labels, texts) if t.strip()]
    digest = hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]
    table_file = features_dir(dataset_name, cache_dir) / f".enrich-texts-{modality}-{digest}.parquet"
    if not table_file.is_file():
        table_file.parent.mkdir(parents=True, exist_ok=True)
        frame = pd.DataFrame(rows, columns=["entity", "text"])
        atomic_write(table_file, lambda tmp: frame.to_parquet(tmp, index=False))
    table = cached_text_features(dataset_name, entity_labels, encoder, modality=modality,
                                 source=LabelTable(table_file, "entity", "text"), cache_dir=cache_dir,
                                 fallback="none", progress=progress)
    if report is not None:
        table = table.replace(provenance={**table.provenance,
                                          "options": {**table.provenance.get("options", {}), "enrichment": report}})
    return table


def label_texts(entity_labels: Sequence[str]) -> list[str]:
    """Readable label text of every entity (``""`` for uninformative labels such as bare ids)."""
    out = []
    for lab in entity_labels:
        t, ok = label_text(lab)
        out.append(t if ok else "")
    return out
