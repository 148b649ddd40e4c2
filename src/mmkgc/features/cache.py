"""Feature cache: every feature table is computed once per (dataset, modality, encoder, options).

Layout under the cache home (``$MMKGC_HOME``, default ``platformdirs.user_cache_dir("mmkgc")``)::

    features/<dataset>/<modality>-<key[:16]>.safetensors          finished tables
    features/<dataset>/.<modality>-<key[:16]>.partial/shard-*.safetensors   work in progress
    features/<dataset>/<name>.safetensors                         named tables (``mmkgc features extract``)

The key (:func:`feature_cache_key`) is the sha256 of canonical JSON over the dataset name, the modality,
the encoder identity (model, weights fingerprint, pooling, normalisation, max length) and the options
(text source and a hash of the exact texts).  Extraction runs in shards of ``shard_size`` encoded rows,
each written atomically; an interrupted run resumes from the shards already on disk and the final table
is merged and written atomically at the end.  :func:`cached_text_features` and
:func:`cached_image_features` share that machinery (:func:`compute_sharded`); image keys also cover the
aggregation and every image file (path, size, mtime).  Named tables (:func:`load_named_table`) are what
training configs refer to with ``table: NAME``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from mmkgc.fileio import cache_home
from mmkgc.errors import DataFormatError
from mmkgc.features.entity_text import LabelTable, entity_texts
from mmkgc.features.io import atomic_write, load_feature_table, save_feature_table
from mmkgc.features.store import FeatureTable, make_provenance
from mmkgc.features.text import TextEncoder

if TYPE_CHECKING:
    from mmkgc.features.vision import EntityImages, ImageEncoder

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


FieldSpec = dict[str, tuple[tuple[int, ...], Any]]


def _read_shard(path: Path, expected_rows: np.ndarray, fields: FieldSpec) -> dict[str, np.ndarray] | None:
    """Arrays of a finished shard, or ``None`` when it is unreadable, for other rows, or of another shape."""
    from safetensors.numpy import load_file

    try:
        data = load_file(str(path))
    except Exception as exc:  # corrupt shard: recompute it
        log.warning("ignoring unreadable feature shard %s: %s", path, exc)
        return None
    rows = data.get("rows")
    if rows is None or not np.array_equal(rows, expected_rows):
        return None
    out = {}
    for name, (shape, dtype) in fields.items():
        arr = data.get(name)
        if arr is None or arr.shape != (len(expected_rows), *shape) or arr.dtype != np.dtype(dtype):
            return None
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            return None
        out[name] = arr
    return out


def compute_sharded(
    partial: Path,
    rows: np.ndarray,
    fields: FieldSpec,
    compute: Callable[[np.ndarray], dict[str, np.ndarray]],
    *,
    shard_size: int,
    chunk_size: int,
    progress: bool = False,
    description: str = "features",
) -> dict[str, np.ndarray]:
    """Resumable computation of per-row arrays in shards (the machinery behind every feature cache).

    ``rows`` (int64 ``[n]``) are split into shards of ``shard_size``; each shard is computed in chunks of
    ``chunk_size`` rows by ``compute(chunk_rows) -> {field: array [len(chunk), *shape]}`` and written
    atomically to ``partial/shard-%05d.safetensors`` (the rows and every field).  Shards already on disk
    (from an interrupted run) with the same rows and field shapes/dtypes are reused; unreadable ones are
    recomputed.  The caller removes ``partial`` once the result is stored.

    :param fields: ``{name: (shape of one row, numpy dtype)}``.
    :returns: ``{name: array [n, *shape]}`` in the order of ``rows``.
    :raises ValueError: ``compute`` returned a missing field or a wrong shape.
    """
    from safetensors.numpy import save_file

    partial.mkdir(parents=True, exist_ok=True)
    n = len(rows)
    result = {name: np.zeros((n, *shape), dtype=dtype) for name, (shape, dtype) in fields.items()}
    num_shards = (n + shard_size - 1) // shard_size
    pending: list[int] = []
    for s in range(num_shards):
        sl = slice(s * shard_size, (s + 1) * shard_size)
        shard_path = partial / f"shard-{s:05d}.safetensors"
        done = _read_shard(shard_path, rows[sl], fields) if shard_path.is_file() else None
        if done is None:
            pending.append(s)
        else:
            for name, arr in done.items():
                result[name][sl] = arr
    if num_shards and len(pending) < num_shards:
        log.info("resuming %s: %d of %d shards already done", partial.name, num_shards - len(pending), num_shards)

    remaining = sum(len(rows[s * shard_size : (s + 1) * shard_size]) for s in pending)
    from mmkgc.progress import progress as progress_bar

    with progress_bar(progress, remaining, description) as advance:
        for s in pending:
            sl = slice(s * shard_size, (s + 1) * shard_size)
            shard_rows = rows[sl]
            out = {name: np.zeros((len(shard_rows), *shape), dtype=dtype) for name, (shape, dtype) in fields.items()}
            for c in range(0, len(shard_rows), chunk_size):
                chunk = shard_rows[c : c + chunk_size]
                got = compute(chunk)
                for name, (shape, _) in fields.items():
                    arr = got.get(name)
                    if arr is None or tuple(arr.shape) != (len(chunk), *shape):
                        raise ValueError(
                            f"feature computation returned {None if arr is None else list(arr.shape)} for field "
                            f"{name!r} of {len(chunk)} rows, expected {[len(chunk), *shape]}"
                        )
                    out[name][c : c + len(chunk)] = arr
                advance(len(chunk))
            payload = {"rows": np.ascontiguousarray(shard_rows.astype(np.int64)), **out}
            atomic_write(partial / f"shard-{s:05d}.safetensors", lambda tmp, p=payload: save_file(p, str(tmp)))
            for name, arr in out.items():
                result[name][sl] = arr
    return result


def _cache_entry(dataset_name: str, modality: str, identity: dict, options: dict, cache_dir, n: int):
    """``(key, directory, final path, cached table or None)`` of a feature table's cache entry."""
    key = feature_cache_key(dataset_name, modality, identity, options)
    directory = features_dir(dataset_name, cache_dir)
    final = directory / f"{modality}-{key[:16]}.safetensors"
    return key, directory, final, _cache_hit(final, key, modality, n)


def _cache_hit(final: Path, key: str, modality: str, n: int) -> FeatureTable | None:
    if not final.is_file():
        return None
    table = load_feature_table(final, num_entities=n)
    if table.provenance.get("options", {}).get("cache_key") != key or table.modality != modality:
        raise DataFormatError(final, None, "cached table belongs to another cache key; delete the file")
    log.info("feature cache hit: %s", final)
    return table


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
    :param progress: report progress (a bar on a terminal, a line every 30 s otherwise).
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
    key, directory, final, hit = _cache_entry(dataset_name, modality, identity, options, cache_dir, n)
    if hit is not None:
        return hit

    dim = int(encoder.dim)
    rows = np.flatnonzero(informative)  # entity ids to encode, ascending

    def encode(chunk: np.ndarray) -> dict[str, np.ndarray]:
        enc = np.asarray(encoder.encode([texts[i] for i in chunk.tolist()]), dtype=np.float32)
        if enc.shape != (len(chunk), dim):
            raise ValueError(f"encoder returned shape {enc.shape} for {len(chunk)} texts, expected [{len(chunk)}, {dim}]")
        if not np.isfinite(enc).all():
            bad = int(chunk[np.flatnonzero(~np.isfinite(enc).all(axis=1))[0]])
            raise ValueError(f"encoder returned NaN/inf for entity {bad} (text {texts[bad]!r})")
        return {"values": enc}

    partial = directory / f".{modality}-{key[:16]}.partial"
    done = compute_sharded(partial, rows, {"values": ((dim,), np.float32)}, encode, shard_size=shard_size,
                           chunk_size=chunk_size, progress=progress, description=f"{dataset_name} {modality}")
    values = np.zeros((n, dim), dtype=np.float32)
    values[rows] = done["values"]

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


def cached_image_features(
    dataset_name: str,
    images: "EntityImages",
    encoder: "ImageEncoder",
    modality: str = "image",
    cache_dir: str | Path | None = None,
    *,
    aggregate: Literal["mean", "max", "first", "set"] = "mean",
    max_images: int | None = None,
    shard_size: int = 1024,
    chunk_size: int = 32,
    progress: bool = False,
) -> FeatureTable:
    """Image features of every entity, computed once and cached (same shard/resume machinery as
    :func:`cached_text_features`).

    Each entity's first ``max_images`` readable images are encoded and aggregated
    (:func:`~mmkgc.features.vision.aggregate_images`); unreadable, truncated and missing files are skipped
    and counted; entities without a readable image get zeros and are marked not present.

    The cache key covers the dataset, the modality, the encoder identity (model fingerprint, output kind,
    normalisation, dtype, processor), the aggregation, ``max_images`` and the image list (every path with its
    size and mtime, :meth:`~mmkgc.features.vision.EntityImages.identity`).

    :param images: the entity images (:func:`~mmkgc.features.vision.find_entity_images`).
    :param encoder: an :class:`~mmkgc.features.vision.ImageEncoder` (``encode_images``, ``token_shape``,
        ``identity``).
    :param aggregate: ``mean`` / ``max`` / ``first`` -> pooled ``[N, d]`` (``[N, L, d]`` for token outputs);
        ``set`` -> ``[N, K, d]`` (or ``[N, K * L, d]``) with a token mask, ``K`` = ``max_images`` or the
        largest number of images of one entity.
    :param shard_size: entities per resumable shard file; ``chunk_size``: entities per encoding call.
    :returns: :class:`FeatureTable` with presence = at least one readable image; provenance holds the encoder
        identity, the image listing report, the image counts (listed, read, unreadable) and the cache key.
    :raises DataFormatError: a cached file is unreadable or belongs to another key.
    :raises ConfigError: unknown aggregation; ``max_images`` < 1.
    :raises ValueError: ``shard_size``/``chunk_size`` < 1 or an encoder output of the wrong shape/NaN.
    """
    from mmkgc.errors import ConfigError
    from mmkgc.features.vision import AGGREGATIONS, default_set_size, encode_entity_rows, entity_row_shape

    if aggregate not in AGGREGATIONS:
        raise ConfigError(f"unknown image aggregation {aggregate!r}; expected {', '.join(AGGREGATIONS)}")
    if max_images is not None and max_images < 1:
        raise ConfigError(f"max_images must be >= 1, got {max_images}")
    if shard_size < 1 or chunk_size < 1:
        raise ValueError(f"shard_size and chunk_size must be >= 1, got {shard_size}, {chunk_size}")
    if not _SAFE_NAME.match(modality):
        raise ValueError(f"modality name {modality!r} cannot be used in a cache file name")
    n = images.num_entities
    identity = encoder.identity
    options = {
        "aggregate": aggregate,
        "max_images": max_images,
        "num_entities": n,
        "images": images.identity(),
    }
    key, directory, final, hit = _cache_entry(dataset_name, modality, identity, options, cache_dir, n)
    if hit is not None:
        return hit

    token_shape = tuple(encoder.token_shape)
    row_shape = entity_row_shape(token_shape, aggregate, default_set_size(images, max_images))
    fields: FieldSpec = {
        "values": (row_shape, np.float32),
        "present": ((), np.bool_),
        "images_read": ((), np.int32),
        "images_unreadable": ((), np.int32),
    }
    if len(row_shape) == 2:
        fields["token_mask"] = ((row_shape[0],), np.bool_)
    rows = np.array([i for i, p in enumerate(images.paths) if p], dtype=np.int64)
    examples: list[str] = []

    def note(path: Path, reason: str) -> None:
        if len(examples) < 5:
            examples.append(f"{path}: {reason}")
        log.debug("skipping unreadable image %s (%s)", path, reason)

    def encode(chunk: np.ndarray) -> dict[str, np.ndarray]:
        return encode_entity_rows(images, encoder, chunk.tolist(), aggregate, max_images, row_shape, note)

    partial = directory / f".{modality}-{key[:16]}.partial"
    done = compute_sharded(partial, rows, fields, encode, shard_size=shard_size, chunk_size=chunk_size,
                           progress=progress, description=f"{dataset_name} {modality}")
    values = np.zeros((n, *row_shape), dtype=np.float32)
    present = np.zeros(n, dtype=bool)
    values[rows] = done["values"]
    present[rows] = done["present"]
    token_mask = None
    if "token_mask" in done:
        token_mask = np.zeros((n, row_shape[0]), dtype=bool)
        token_mask[rows] = done["token_mask"]
    unreadable = int(done["images_unreadable"].sum())
    counts = {
        "entities_with_images": int(len(rows)),
        "entities_present": int(present.sum()),
        "images_read": int(done["images_read"].sum()),
        "images_unreadable": unreadable,
    }
    if unreadable:
        log.warning(
            "%s %s: skipped %d unreadable/missing images; %d of %d entities with listed images have none readable%s",
            dataset_name, modality, unreadable, counts["entities_with_images"] - counts["entities_present"],
            counts["entities_with_images"], f" (e.g. {examples[0]})" if examples else "",
        )
    table = FeatureTable(
        values=torch.from_numpy(values),
        modality=modality,
        present=torch.from_numpy(present),
        token_mask=None if token_mask is None else torch.from_numpy(token_mask),
        provenance=make_provenance(
            identity.get("model", type(encoder).__name__),
            encoder=identity,
            dataset=dataset_name,
            cache_key=key,
            aggregate=aggregate,
            max_images=max_images,
            images=images.report,
            image_counts=counts,
        ),
    )
    save_feature_table(table, final)
    shutil.rmtree(partial, ignore_errors=True)
    return table


_TABLE_SUFFIXES = (".safetensors", ".npy")


def is_table_name(name: str) -> bool:
    """``True`` when ``name`` is a bare feature-table name (``text``, ``image-clip``) rather than a path:
    letters, digits, ``_.+-`` only and no ``.safetensors``/``.npy`` suffix."""
    return bool(_SAFE_NAME.match(name)) and not name.lower().endswith(_TABLE_SUFFIXES)


def table_path(dataset: str, name_or_path: str | Path, cache_dir: str | Path | None = None) -> Path:
    """Where a named feature table lives: a bare name (:func:`is_table_name`) ->
    ``<cache>/features/<dataset>/<name>.safetensors``; anything else is a file path."""
    if isinstance(name_or_path, Path) or not is_table_name(str(name_or_path)):
        return Path(name_or_path).expanduser()
    return features_dir(dataset, cache_dir) / f"{name_or_path}.safetensors"


def load_named_table(
    dataset: str, name_or_path: str | Path, num_entities: int | None = None, cache_dir: str | Path | None = None
) -> FeatureTable:
    """Load a table written by ``mmkgc features extract/import`` by name (or any mmkgc table file by path).

    :raises UnknownNameError: a bare name with no such table (the message lists the dataset's tables).
    :raises DataFormatError: unreadable file or wrong row count.
    """
    from mmkgc.errors import UnknownNameError

    path = table_path(dataset, name_or_path, cache_dir)
    if is_table_name(str(name_or_path)) and not isinstance(name_or_path, Path) and not path.is_file():
        have = sorted(p.stem for p in path.parent.glob("*.safetensors")) if path.parent.is_dir() else []
        raise UnknownNameError(
            f"no feature table {str(name_or_path)!r} for dataset {dataset!r} (looked for {path}; "
            f"available: {', '.join(have) or 'none'}); write one with `mmkgc features extract` or `import`"
        )
    return load_feature_table(path, num_entities=num_entities)
