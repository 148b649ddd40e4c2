"""Combination policies: how generated descriptions (G) enter a method's modality inputs (methods.md §3.2).

Beyond Images plugs G into existing models "without architecture or loss changes"; for models with a fixed set
of feature slots the paper leaves the combination open.  Every option is one policy here, applied to the list of
modality inputs *before* the model is built, so any representation (concatenation now, attention fusions later)
consumes the result unchanged:

* ``extra_modality`` (I+T+G): G is one more modality (``generated_text``); fusions are modality-count agnostic.
* ``replace_image`` (T+G): G takes the place of the image modality (images dropped).
* ``replace_text`` (I+G): G takes the place of the text modality.
* ``concat_text`` (I+[T;G]): the existing entity text and G are joined into one text *before encoding*, and the
  joint encoding replaces the text modality (needs a text modality computed from texts, ``encoder:``).

The generated table comes from released-layout JSON files (aligned by name and encoded with the configured text
encoder through the feature cache), from a fusion journal (``.jsonl``) or from a ready feature table file/name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mmkgc.errors import ConfigError
from mmkgc.features.store import FeatureTable

POLICIES = ("extra_modality", "replace_image", "replace_text", "concat_text")
_TARGET = {"replace_image": "image", "replace_text": "text", "concat_text": "text"}


def policy_target(policy: str, target: str | None) -> str | None:
    """The modality a policy replaces (``None`` for ``extra_modality``).

    :raises ConfigError: unknown policy.
    """
    if policy not in POLICIES:
        raise ConfigError(f"model.enrichment.policy: unknown policy {policy!r}; expected one of {', '.join(POLICIES)}")
    if policy == "extra_modality":
        return None
    return target or _TARGET[policy]


def enriched_modality(enrichment: Any) -> str:
    """The name of the modality an enrichment writes: the replaced one for ``concat_text`` (generated text joined
    to its texts), else ``enrichment.modality`` (a new modality, or the one taking the target's place).

    :raises ConfigError: unknown policy.
    """
    target = policy_target(enrichment.policy, enrichment.target)
    return target if enrichment.policy == "concat_text" else enrichment.modality


def enrichment_texts(enrichment: Any, triples: Any) -> tuple[list[str], dict[str, Any]]:
    """Per-entity generated texts (``""`` = none) and the alignment report for an enrichment config.

    ``enrichment.source`` is a list of released-layout ``.json`` files or fusion journals (``.jsonl``, keyed by
    dataset label).

    :raises ConfigError / DataFormatError: unreadable or unsupported source.
    """
    from mmkgc.features.enrich.encode import EnrichedEntity, align_enrichment, combine_enrichment, read_enrichment_json
    from mmkgc.features.enrich.fuse import read_summaries
    from mmkgc.features.io import read_name_map

    files = []
    for path in enrichment.source:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"model.enrichment.source: {path} does not exist")
        if path.suffix.lower() == ".jsonl":
            files.append({label: EnrichedEntity(key=label, summary=s, files=[str(path)])
                          for label, s in read_summaries(path).items()})
        elif path.suffix.lower() == ".json":
            files.append(read_enrichment_json(path))
        else:
            raise ConfigError(f"model.enrichment.source: {path} is neither a released-layout .json nor a fusion "
                              "journal .jsonl (a feature table goes in model.enrichment.table)")
    name_map = None
    if getattr(enrichment, "name_map", None):
        name_map, _ = read_name_map(enrichment.name_map, triples.entity_labels)
    aligned = align_enrichment(combine_enrichment(files), triples.entity_labels, text=enrichment.text,
                               name_map=name_map)
    return aligned.texts, aligned.report


def _base_texts(m: Any, triples: Any) -> list[str]:
    """The texts a text modality config encodes (label or table source)."""
    from mmkgc.features.entity_text import LabelTable, entity_texts

    if m is None or m.encoder is None:
        raise ConfigError("model.enrichment.policy 'concat_text' needs the text modality to be computed from texts "
                          "(encoder: ...), not read from a feature file or table")
    source: Any = "label"
    if m.text_source == "table":
        source = LabelTable(m.table_path, m.table_key or "entity", m.table_column)
    texts, informative, _ = entity_texts(triples.entity_labels, source)
    return [t if ok else "" for t, ok in zip(texts, informative.tolist())]


def generated_table(enrichment: Any, triples: Any, *, base_texts: Sequence[str] | None = None,
                    modality: str | None = None, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The generated-text features ``(values [N, d], present [N], report)`` of an enrichment config.

    :param base_texts: for ``concat_text``: existing texts joined before the generated ones.
    """
    from mmkgc.features.enrich.encode import combine_texts, encode_texts

    modality = modality or enrichment.modality
    if getattr(enrichment, "table", None) is not None:
        from mmkgc.features.cache import load_named_table

        if base_texts is not None:
            raise ConfigError("model.enrichment.policy 'concat_text' encodes texts; give source files, not a table")
        table = load_named_table(triples.name, enrichment.table, num_entities=triples.num_entities)
        if table.is_tokens:
            table = table.pooled("mean")
        return table.values, table.present, {"table": str(enrichment.table), "with_text": int(table.present.sum())}
    from mmkgc.features.text import build_text_encoder

    texts, report = enrichment_texts(enrichment, triples)
    if base_texts is not None:
        texts = combine_texts(texts, base_texts)
        report = dict(report, concat_with="text", with_text=sum(1 for t in texts if t))
    encoder = build_text_encoder(enrichment.encoder)
    table = encode_texts(triples.name, triples.entity_labels, texts, encoder, modality=modality, report=report,
                         progress=progress)
    return table.values, table.present, report


def apply_enrichment(features: list[FeatureTable], modality_configs: Sequence[Any], enrichment: Any, triples: Any,
                     progress: bool = False, log: Any = None) -> list[FeatureTable]:
    """Apply ``enrichment.policy`` to the modality inputs of a model.

    :param features: the model's modality tables built from ``modality_configs`` (same order).
    :returns: the new list (the input list is not modified); the generated table is named
        :func:`enriched_modality` (its fill policy, ``enrichment.missing``, is the model's business).
    :raises ConfigError: the policy's target modality is not among the configured ones, or the generated modality
        name clashes with an existing one.
    """
    target = policy_target(enrichment.policy, enrichment.target)
    names = [f.modality for f in features]
    if target is not None and target not in names:
        raise ConfigError(f"model.enrichment.policy {enrichment.policy!r} replaces modality {target!r}, but the model "
                          f"has only {names or 'no modalities'}; add it or set model.enrichment.target")
    base = None
    if enrichment.policy == "concat_text":
        base = _base_texts(next(m for m in modality_configs if m.name == target), triples)
    name = enriched_modality(enrichment)
    if enrichment.policy != "concat_text" and name in [n for n in names if n != target]:
        raise ConfigError(f"model.enrichment.modality {name!r} clashes with a configured modality; rename it")
    values, present, report = generated_table(enrichment, triples, base_texts=base, modality=name, progress=progress)
    if log is not None:
        log(f"enrichment ({enrichment.policy}): {int(present.sum())}/{triples.num_entities} entities have "
            f"generated text ({report.get('matched', '?')} entries matched)")
    new = FeatureTable(torch.as_tensor(values, dtype=torch.float32), name, torch.as_tensor(present, dtype=torch.bool),
                       provenance={"enrichment": enrichment.policy})
    if target is None:
        return [*features, new]
    return [new if f.modality == target else f for f in features]
