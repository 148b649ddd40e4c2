"""Feature cache: every feature table is computed once per (dataset, modality, encoder, options).

Layout under the cache home (``$MMKGC_HOME``, default ``platformdirs.user_cache_dir("mmkgc")``)::

    features/<dataset>/<modality>-<key[:16]>.safetensors          finished tables
    features/<dataset>/.<modality>-<key[:16]>.partial/shard-*.safetensors   work in progress

The key (:func:`feature_cache_key`) is the sha256 of canonical JSON over the dataset name, the modality,
the encoder identity (model, weights fingerprint, pooling, normalisation, max length) and the options
(text source and a hash of the exact texts).  Extraction runs in shards of ``shard_size`` encoded rows,
each written atomically; an interrupted run resumes from the shards already on disk and the final table
is merged and written atomically at the end.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from mmkgc.fileio import cache_home
from mmkgc.errors import DataFormatError
from mmkgc.features.entity_text import LabelTable, entity_texts
from mmkgc.features.io import atomic_write, load_feature_table, save_feature_table
from mmkgc.features.store import FeatureTable, make_provenance
from mmkgc.features.text import TextEncoder

log = logging.getLogger(__name__)

#: Bump when the cached file layout or the meaning of a key changes.
CACHE_VERSION = 1
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


#: The cache root (``$MMKGC_HOME`` or the user cache directory); see :func:`mmkgc.fileio.cache_home`.
mmkgc_home = cache_home


def features_dir(dataset: str, cache_dir: str | Path | None = None) -> Path:
    """Directory of cached feature tables of ``dataset``: ``<cache_dir or $MMKGC_HOME>/features/<dataset>``.

    :raises ValueError: a dataset name that is not a plain file name (letters, digits, ``_.+-``).
    """
    if not _SAFE_NAME.match(dataset):
        raise ValueError(f"dataset name {dataset!r} cannot be used as a cache directory name")
    return (Path(cache_dir) if cache_dir is not None else mmkgc_home()) / "features" / dataset


def canonical_json(obj: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, no NaN, non-ASCII kept."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def feature_cache_key(dataset: str, modality: str, encoder_identity: dict[str, Any], options: dict[str, Any]) -> str:
    """Stable cache key: hex sha256 of canonical JSON over
    ``{"cache_version", "dataset", "modality", "encoder", "options"}``.

    :raises TypeError / ValueError: identity or options are not JSON-serialisable.
    """
    payload = {
        "cache_version": CACHE_VERSION,
        "dataset": dataset,
        "modality": modality,
        "encoder": encoder_identity,
        "options": options,
    }
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


def texts_digest(texts: Sequence[str], informative: np.ndarray) -> str:
    """sha256 over the exact texts and the informative mask (changes whenever any entity's input does)."""
    digest = hashlib.sha256()
    for text, ok in zip(texts, informative.tolist()):
        digest.update(b"1" if ok else b"0")
        digest.update(text.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()


def _source_identity(source: Literal["label"] | LabelTable) -> Any:
    return source.identity() if isinstance(source, LabelTable) else source


def _progress(enabled: bool, total: int, description: str):
    """A rich progress bar (or a no-op) as a context manager yielding an ``advance(n)`` callable."""
    from contextlib import contextmanager

    @contextmanager
    def bar():
        if not enabled:
            yield lambda n: None
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()
        ) as progress:
            task = progress.add_task(description, total=total)
            yield lambda n: progress.advance(task, n)

    return bar()


def _read_shard(path: Path, expected_rows: np.ndarray, dim: int) -> np.ndarray | None:
    """Values of a finished shard, or ``None`` when it is unreadable or for other rows."""
    from safetensors.numpy import load_file

    try:
        data = load_file(str(path))
    except Exception as exc:  # corrupt shard: recompute it
        log.warning("ignoring unreadable feature shard %s: %s", path, exc)
        return None
    rows, values = data.get("rows"), data.get("values")
    if rows is None or values is None or values.shape != (len(expected_rows), dim):
        return None
    if not np.array_equal(rows, expected_rows) or not np.isfinite(values).all():
        return None
    return values.astype(np.float32, copy=False)


def cached_text_features(
    dataset_name: str,
    entity_labels: Sequence[str],
    encoder: TextEncoder,
    modality: str = "text",
    source: Literal["label"] | LabelTable = "label",
    cache_dir: str | Path | None = None,
    *,
    fallback: Literal["label", "none"] = "label",
    shard_size: int = 4096,
    chunk_size: int = 512,
    progress: bool = False,
) -> FeatureTable:
    """Text features of every entity, computed once and cached.

    Texts come from :func:`~mmkgc.features.entity_text.entity_texts` (labels or a :class:`LabelTable`).
    Entities with non-informative text (Wikidata ids without labels, numbers, empty strings) are **not
    encoded**: their rows are zeros and they are marked not present.

    :param dataset_name: cache namespace, e.g. ``"DB15K"``.
    :param entity_labels: ``N`` labels in entity-id order.
    :param encoder: any :class:`~mmkgc.features.text.TextEncoder` (``encode``, ``dim``, ``identity``).
    :param modality: modality name of the table (``"text"``, ``"generated_text"``, ...).
    :param cache_dir: cache root instead of ``$MMKGC_HOME``.
    :param fallback: with a :class:`LabelTable`, the text of entities absent from the table (``"label"``:
        their label text; ``"none"``: not present).
    :param shard_size: encoded rows per resumable shard file.
    :param chunk_size: texts per ``encoder.encode`` call (granularity of the progress bar).
    :param progress: show a rich progress bar.
    :returns: :class:`FeatureTable` float32 ``[N, encoder.dim]`` with presence = informative text;
        provenance holds the encoder identity, the text coverage report and the cache key.
    :raises DataFormatError: a cached file is unreadable or does not belong to this key.
    :raises ValueError: ``shard_size``/``chunk_size`` < 1 or an encoder output of the wrong shape/NaN.
    """
    if shard_size < 1 or chunk_size < 1:
        raise ValueError(f"shard_size and chunk_size must be >= 1, got {shard_size}, {chunk_size}")
    if not _SAFE_NAME.match(modality):
        raise ValueError(f"modality name {modality!r} cannot be used in a cache file name")
    texts, informative, coverage = entity_texts(entity_labels, source, fallback=fallback)
    n = len(texts)
    identity = encoder.identity
    options = {
        "source": _source_identity(source),
        "fallback": fallback if isinstance(source, LabelTable) else None,
        "num_entities": n,
        "texts_sha256": texts_digest(texts, informative),
    }
    key = feature_cache_key(dataset_name, modality, identity, options)
    directory = features_dir(dataset_name, cache_dir)
    final = directory / f"{modality}-{key[:16]}.safetensors"

    if final.is_file():
        table = load_feature_table(final, num_entities=n)
        if table.provenance.get("options", {}).get("cache_key") != key or table.modality != modality:
            raise DataFormatError(final, None, "cached table belongs to another cache key; delete the file")
        log.info("feature cache hit: %s", final)
        return table

    dim = int(encoder.dim)
    rows = np.flatnonzero(informative)  # entity ids to encode, ascending
    partial = directory / f".{modality}-{key[:16]}.partial"
    partial.mkdir(parents=True, exist_ok=True)
    values = np.zeros((n, dim), dtype=np.float32)
    num_shards = (len(rows) + shard_size - 1) // shard_size
    pending: list[int] = []
    for s in range(num_shards):
        shard_rows = rows[s * shard_size : (s + 1) * shard_size]
        shard_path = partial / f"shard-{s:05d}.safetensors"
        done = _read_shard(shard_path, shard_rows, dim) if shard_path.is_file() else None
        if done is None:
            pending.append(s)
        else:
            values[shard_rows] = done
    if num_shards and len(pending) < num_shards:
        log.info("resuming %s: %d of %d shards already done", final.name, num_shards - len(pending), num_shards)

    from safetensors.numpy import save_file

    remaining = sum(len(rows[s * shard_size : (s + 1) * shard_size]) for s in pending)
    with _progress(progress, remaining, f"{dataset_name} {modality}") as advance:
        for s in pending:
            shard_rows = rows[s * shard_size : (s + 1) * shard_size]
            out = np.empty((len(shard_rows), dim), dtype=np.float32)
            for c in range(0, len(shard_rows), chunk_size):
                chunk = shard_rows[c : c + chunk_size]
                enc = np.asarray(encoder.encode([texts[i] for i in chunk.tolist()]), dtype=np.float32)
                if enc.shape != (len(chunk), dim):
                    raise ValueError(f"encoder returned shape {enc.shape} for {len(chunk)} texts, expected [{len(chunk)}, {dim}]")
                if not np.isfinite(enc).all():
                    bad = int(chunk[np.flatnonzero(~np.isfinite(enc).all(axis=1))[0]])
                    raise ValueError(f"encoder returned NaN/inf for entity {bad} (text {texts[bad]!r})")
                out[c : c + len(chunk)] = enc
                advance(len(chunk))
            payload = {"rows": np.ascontiguousarray(shard_rows.astype(np.int64)), "values": out}
            atomic_write(partial / f"shard-{s:05d}.safetensors", lambda tmp, p=payload: save_file(p, str(tmp)))
            values[shard_rows] = out

    table = FeatureTable(
        values=torch.from_numpy(values),
        modality=modality,
        present=torch.from_numpy(informative.copy()),
        provenance=make_provenance(
            identity.get("model", type(encoder).__name__),
            encoder=identity,
            dataset=dataset_name,
            cache_key=key,
            text_source=options["source"],
            texts_sha256=options["texts_sha256"],
            text_coverage=coverage,
        ),
    )
    save_feature_table(table, final)
    shutil.rmtree(partial, ignore_errors=True)
    return table
