"""Audit page: one self-contained HTML file showing, per entity, its images, their captions, what the cleaning
kept and the fused summary, with the coverage statistics of every stage at the top.

Images are embedded as ``data:`` URIs of small JPEG thumbnails (``embed=True``, the page can be mailed or
archived alone) or linked relatively to the page (``embed=False``).  Every text from a model or a file is
HTML-escaped; the page has no external resources, and its only script is a filter box over entity names.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmkgc.features.enrich.encode import EnrichedEntity

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table.stats{border-collapse:collapse;margin-bottom:1em}
table.stats td,table.stats th{border:1px solid #ccc;padding:2px 8px;text-align:left;vertical-align:top}
section.entity{border-top:1px solid #bbb;padding:.6em 0}
.images{display:flex;flex-wrap:wrap;gap:8px}
figure{margin:0;width:180px;font-size:.85em}
figure img{max-width:170px;max-height:170px;display:block}
.dropped{color:#999;text-decoration:line-through}
.summary{background:#f4f7ff;padding:.5em;border-left:3px solid #36c}
.missing{color:#b00}
"""

_SCRIPT = """
document.getElementById('filter').addEventListener('input', function (ev) {
  var q = ev.target.value.toLowerCase();
  document.querySelectorAll('section.entity').forEach(function (s) {
    s.style.display = s.dataset.name.toLowerCase().indexOf(q) >= 0 ? '' : 'none';
  });
});
"""


def _thumbnail_uri(path: Path, size: int) -> str | None:
    from mmkgc.features.vision import load_image

    img, _ = load_image(path)
    if img is None:
        return None
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _stats_table(title: str, stats: Mapping[str, Any]) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v)}</td></tr>"
        for k, v in stats.items()
    )
    return f"<h3>{html.escape(title)}</h3><table class=\"stats\">{rows}</table>"


def render_audit_html(
    entries: Mapping[str, EnrichedEntity],
    *,
    page_dir: Path,
    image_paths: Mapping[str, Path] | None = None,
    kept: Mapping[str, Sequence[str]] | None = None,
    skipped: Mapping[str, str] | None = None,
    reports: Mapping[str, Mapping[str, Any]] | None = None,
    embed: bool = True,
    thumb_size: int = 160,
    max_entities: int | None = None,
    title: str = "mmkgc enrichment audit",
) -> str:
    """The audit page as an HTML string.

    :param entries: ``{key: EnrichedEntity}`` (images = ``{image id: caption}``, ``merged_descriptions``,
        ``summary``).
    :param page_dir: folder the page will be written to (relative image links are computed from it).
    :param image_paths: ``{image id: file}`` for thumbnails (absent ids are shown as "no file").
    :param kept: ``{key: descriptions kept by cleaning}``; captions not in it are shown struck through.
    :param skipped: ``{image id: reason}`` of images that could not be read.
    :param reports: ``{stage: statistics}`` shown at the top (coverage, drops, counts).
    :param embed: embed thumbnails as data URIs (else relative links to the image files).
    :param max_entities: show only the first this many entities (the statistics still cover all).
    """
    image_paths = image_paths or {}
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p id=\"counts\">{len(entries)} entities, "
        f"{sum(len(e.images) for e in entries.values())} captioned images, "
        f"{sum(1 for e in entries.values() if e.summary)} fused summaries.</p>",
    ]
    for stage, stats in (reports or {}).items():
        parts.append(_stats_table(stage, stats))
    if skipped:
        items = "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in list(skipped.items())[:50])
        parts.append(f"<h3>Skipped images ({len(skipped)})</h3><ul id=\"skipped\">{items}</ul>")
    parts.append("<p><label>Filter entities: <input id=\"filter\" type=\"search\"></label></p>")
    shown = list(entries.items())[: max_entities if max_entities is not None else None]
    for key, e in shown:
        keep = set(kept.get(key, ())) if kept is not None else None
        figures = []
        for image_id, caption in e.images.items():
            path = image_paths.get(image_id)
            if path is not None and Path(path).is_file():
                src = _thumbnail_uri(Path(path), thumb_size) if embed else \
                    Path(os.path.relpath(Path(path).resolve(), page_dir.resolve())).as_posix()
                img = f"<img src=\"{html.escape(src)}\" alt=\"{html.escape(image_id)}\">" if src else \
                    "<div class=\"missing\">unreadable image</div>"
            else:
                img = "<div class=\"missing\">no file</div>"
            cls = "caption" if keep is None or " ".join(caption.split()) in keep else "caption dropped"
            figures.append(f"<figure>{img}<figcaption><b>{html.escape(image_id)}</b><br>"
                           f"<span class=\"{cls}\">{html.escape(caption)}</span></figcaption></figure>")
        name = e.entity_name or key
        links = " ".join(html.escape(u) for u in (e.dbpedia_url, e.wikidata_url) if u)
        summary = (f"<div class=\"summary\"><b>Summary:</b> {html.escape(e.summary)}</div>" if e.summary
                   else "<div class=\"summary missing\">no fused summary</div>")
        merged = (f"<details><summary>merged descriptions</summary>{html.escape(e.merged_descriptions)}</details>"
                  if e.merged_descriptions else "")
        parts.append(
            f"<section class=\"entity\" data-name=\"{html.escape(name)}\"><h2>{html.escape(name)}</h2>"
            f"<div class=\"links\">{links}</div><div class=\"images\">{''.join(figures)}</div>{merged}{summary}</section>"
        )
    if len(shown) < len(entries):
        parts.append(f"<p>{len(entries) - len(shown)} more entities not shown (max_entities).</p>")
    parts.append(f"<script>{_SCRIPT}</script></body></html>")
    return "".join(parts)


def write_audit_html(path: str | Path, entries: Mapping[str, EnrichedEntity], **options: Any) -> Path:
    """:func:`render_audit_html` written atomically to ``path`` (options as there, ``page_dir`` = its folder)."""
    from mmkgc.fileio import atomic_write_text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, render_audit_html(entries, page_dir=path.parent, **options))
