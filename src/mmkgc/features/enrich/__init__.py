"""Beyond Images enrichment: entity images -> captions -> cleaned descriptions -> LLM summary -> text features
(methods.md §3, §8.2 ``ImageToTextEnricher``).

One module per stage, each an offline, resumable producer whose output any method can consume unchanged:

* :mod:`~mmkgc.features.enrich.journal` -- append-only JSONL journals (resume without redoing or duplicating)
* :mod:`~mmkgc.features.enrich.caption` -- :class:`Captioner` (BLIP, BLIP-2, GIT, LLaVA) and :func:`caption_images`
* :mod:`~mmkgc.features.enrich.clean` -- :class:`CleaningRules`, :func:`merge_descriptions` (dedupe, filters, cap,
  source priority)
* :mod:`~mmkgc.features.enrich.fuse` -- :class:`LLMFuser` (seq2seq and chat models) and :func:`fuse_entities`
* :mod:`~mmkgc.features.enrich.encode` -- released JSON layout read/write, alignment to entity ids with a
  coverage report, encoding through the feature cache
* :mod:`~mmkgc.features.enrich.audit` -- the self-contained HTML audit page
* :mod:`~mmkgc.features.enrich.stages` -- the stages over one working directory (used by ``mmkgc enrich``)
* :mod:`~mmkgc.features.enrich.policy` -- combination policies (extra modality, replace image/text, concat text)

Heavy dependencies (transformers, Pillow) are imported only when a model is built.
"""

from mmkgc.features.enrich.caption import CaptionReport, CaptionSettings, Captioner, caption_images, read_captions
from mmkgc.features.enrich.clean import CleaningRules, MergedEntity, merge_all, merge_descriptions
from mmkgc.features.enrich.encode import (
    AlignedTexts,
    EnrichedEntity,
    align_enrichment,
    combine_enrichment,
    encode_texts,
    read_enrichment_files,
    read_enrichment_json,
    write_enrichment_json,
)
from mmkgc.features.enrich.fuse import FusionSettings, LLMFuser, fuse_entities, read_summaries
from mmkgc.features.enrich.journal import Journal, read_journal

__all__ = [
    "AlignedTexts",
    "CaptionReport",
    "CaptionSettings",
    "Captioner",
    "CleaningRules",
    "EnrichedEntity",
    "FusionSettings",
    "Journal",
    "LLMFuser",
    "MergedEntity",
    "align_enrichment",
    "caption_images",
    "combine_enrichment",
    "encode_texts",
    "fuse_entities",
    "merge_all",
    "merge_descriptions",
    "read_captions",
    "read_enrichment_files",
    "read_enrichment_json",
    "read_journal",
    "read_summaries",
    "write_enrichment_json",
]
