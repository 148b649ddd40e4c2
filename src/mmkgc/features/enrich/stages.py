"""The enrichment pipeline as resumable stages over one working directory.

Layout of a working directory (every file written atomically or append-only)::

    captions-original.jsonl   caption journal of the original images (one record per image)
    captions-new.jsonl        caption journal of the new images (optional second source)
    merged.json               released layout: per-image captions + merged_descriptions (after ``merge``)
    descriptions.json         {entity label: cleaned descriptions in priority order} (input of ``fuse``)
    fusion.jsonl              fusion journal (one record per entity)
    enriched.json             released layout with the fused summary (``images.images_t5_descriptions``)
    reports.json              {stage: statistics} of every stage run so far
    audit.html                the audit page

``caption -> merge -> fuse -> encode`` (plus ``audit``) each read the previous stage's files, so any stage can be
re-run alone; ``caption`` and ``fuse`` skip the work their journals already hold.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmkgc.errors import ConfigError
from mmkgc.features.enrich.clean import CleaningRules, merge_all
from mmkgc.features.enrich.encode import (
    EnrichedEntity,
    align_enrichment,
    combine_texts,
    encode_texts,
    entity_entry,
    label_texts,
    read_enrichment_files,
    write_enrichment_json,
)
from mmkgc.fileio import atomic_write_text

SOURCES = ("original", "new")


class Workdir:
    """Paths of an enrichment working directory (see the module docstring)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def captions(self, source: str) -> Path:
        """Caption journal of one image source (``original`` or ``new``)."""
        if source not in SOURCES:
            raise ConfigError(f"unknown image source {source!r}; expected {' or '.join(SOURCES)}")
        return self.root / f"captions-{source}.jsonl"

    merged = property(lambda self: self.root / "merged.json")
    descriptions = property(lambda self: self.root / "descriptions.json")
    fusion = property(lambda self: self.root / "fusion.jsonl")
    enriched = property(lambda self: self.root / "enriched.json")
    reports = property(lambda self: self.root / "reports.json")
    audit = property(lambda self: self.root / "audit.html")

    def read_reports(self) -> dict[str, Any]:
        """``reports.json`` (empty dict when absent)."""
        return json.loads(self.reports.read_text(encoding="utf-8")) if self.reports.is_file() else {}

    def add_report(self, stage: str, report: dict[str, Any]) -> None:
        """Store one stage's statistics in ``reports.json``."""
        reports = self.read_reports()
        reports[stage] = report
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.reports, json.dumps(reports, indent=1, ensure_ascii=False))

    def require(self, path: Path, stage: str) -> Path:
        """``path`` or a ConfigError saying which stage produces it."""
        if not path.is_file():
            raise ConfigError(f"{path} not found; run `mmkgc enrich {stage}` first")
        return path


def run_caption(workdir: Workdir, images: Any, entity_labels: Sequence[str], captioner: Any, *,
                source: str = "original", limit_entities: Sequence[int] | None = None,
                progress: bool = False) -> dict[str, Any]:
    """Caption one image source into its journal (resumable); returns and stores the counts."""
    from mmkgc.features.enrich.caption import caption_images, image_root

    report = caption_images(images, entity_labels, captioner, workdir.captions(source), source=source,
                            limit_entities=limit_entities, progress=progress).to_dict()
    report["image_root"] = str(image_root(images).resolve())
    workdir.add_report(f"caption-{source}", report)
    return report


def _entries_key(labels: Sequence[str]) -> dict[str, str]:
    """Entry key in the released layout per label: the local name, or the full label when two collide."""
    keys: dict[str, str] = {}
    used: dict[str, int] = {}
    for lab in labels:
        k = entity_entry(lab).key
        used[k] = used.get(k, 0) + 1
    for lab in labels:
        k = entity_entry(lab).key
        keys[lab] = k if used[k] == 1 else lab
    return keys


def run_merge(workdir: Workdir, rules: CleaningRules | None = None) -> dict[str, Any]:
    """Clean and merge the caption journals into ``merged.json`` and ``descriptions.json``."""
    from mmkgc.features.enrich.caption import read_captions

    captions: dict[str, list[tuple[str, str, str]]] = {}
    found = False
    for source in SOURCES:
        path = workdir.captions(source)
        if path.is_file():
            found = True
            for label, items in read_captions(path).items():
                captions.setdefault(label, []).extend(items)
    if not found:
        raise ConfigError(f"no caption journal in {workdir.root}; run `mmkgc enrich caption` first")
    merged, report = merge_all(captions, rules)
    keys = _entries_key(list(merged))
    entries: dict[str, EnrichedEntity] = {}
    for label, m in merged.items():
        e = entity_entry(label)
        e.key = keys[label]
        e.images = dict(m.images)
        e.merged_descriptions = m.merged_text
        entries[e.key] = e
    write_enrichment_json(workdir.merged, entries)
    atomic_write_text(workdir.descriptions, json.dumps(
        {label: {"key": keys[label], "descriptions": m.descriptions} for label, m in merged.items()},
        indent=1, ensure_ascii=False))
    workdir.add_report("merge", report)
    return report


def run_fuse(workdir: Workdir, fuser: Any, *, progress: bool = False) -> dict[str, Any]:
    """Fuse the cleaned descriptions (resumable journal) and write ``enriched.json``."""
    from mmkgc.features.enrich.fuse import fuse_entities, read_summaries

    desc = json.loads(workdir.require(workdir.descriptions, "merge").read_text(encoding="utf-8"))
    report = fuse_entities({label: d["descriptions"] for label, d in desc.items()}, fuser, workdir.fusion,
                           progress=progress)
    summaries = read_summaries(workdir.fusion)
    entries = read_enrichment_files([workdir.require(workdir.merged, "merge")])
    for label, d in desc.items():
        if label in summaries and d["key"] in entries:
            entries[d["key"]].summary = summaries[label]
    write_enrichment_json(workdir.enriched, entries)
    workdir.add_report("fuse", report)
    return report


def run_encode(
    entity_labels: Sequence[str],
    dataset_name: str,
    encoder: Any,
    *,
    workdir: Workdir | None = None,
    files: Sequence[str | Path] | None = None,
    text: str = "auto",
    concat_with_label: bool = False,
    name_map: dict[str, str] | None = None,
    modality: str = "generated_text",
    progress: bool = False,
):
    """Align enrichment texts to entity ids and encode them into a feature table.

    :param files: released-layout JSON files (original first); default: the workdir's ``enriched.json`` (or
        ``merged.json`` when ``fuse`` was not run).
    :param concat_with_label: encode "entity name + enrichment text" (``concat_text`` policy at the text level).
    :returns: ``(FeatureTable [N, d], coverage report)``.
    :raises ConfigError: neither ``workdir`` nor ``files``.
    """
    if files is None:
        if workdir is None:
            raise ConfigError("give enrichment files or a working directory")
        files = [workdir.enriched if workdir.enriched.is_file() else workdir.require(workdir.merged, "merge")]
    aligned = align_enrichment(read_enrichment_files(files), entity_labels, text=text, name_map=name_map)  # type: ignore[arg-type]
    texts = aligned.texts
    report = dict(aligned.report, files=[str(f) for f in files])
    if concat_with_label:
        texts = [t and c for t, c in zip(texts, combine_texts(texts, label_texts(entity_labels)))]
        report["concat_with_label"] = True
    table = encode_texts(dataset_name, entity_labels, texts, encoder, modality=modality, report=report,
                         progress=progress)
    if workdir is not None:
        workdir.add_report("encode", report)
    return table, report


def run_audit(workdir: Workdir, *, embed: bool = True, max_entities: int | None = None) -> Path:
    """Write ``audit.html`` from the working directory (images found through the caption journals)."""
    from mmkgc.features.enrich.audit import write_audit_html
    from mmkgc.features.enrich.journal import Journal

    source = workdir.enriched if workdir.enriched.is_file() else workdir.require(workdir.merged, "merge")
    entries = read_enrichment_files([source])
    reports = workdir.read_reports()
    image_paths: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    for src in SOURCES:
        journal_path = workdir.captions(src)
        root = reports.get(f"caption-{src}", {}).get("image_root")
        if not journal_path.is_file():
            continue
        for rec in Journal(journal_path, key="image"):
            key = str(rec["image"])
            if root:
                image_paths[key] = Path(root) / key
            if rec.get("status") == "skipped":
                skipped[key] = str(rec.get("reason", ""))
    kept = None
    if workdir.descriptions.is_file():
        desc = json.loads(workdir.descriptions.read_text(encoding="utf-8"))
        kept = {d["key"]: d["descriptions"] for d in desc.values()}
    return write_audit_html(workdir.audit, entries, image_paths=image_paths, kept=kept, skipped=skipped,
                            reports=reports, embed=embed, max_entities=max_entities)
