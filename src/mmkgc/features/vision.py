"""Frozen image encoders and entity image collections: entity images -> one feature row per entity.

Encoders (:class:`HFImageEncoder`, built by :func:`build_image_encoder`) are the image towers of CLIP-family
models loaded through ``transformers``:

* CLIP (Radford et al., 2021; ``CLIPModel`` checkpoints or ``CLIPVisionModel`` towers): ``pooled`` is the
  vision pooler output (the post-layer-norm [CLS] state, 768-d for ViT-B/32, what VEMP uses, methods.md
  §2.1); ``projected`` is CLIP's ``image_embeds`` (pooler output times ``visual_projection``, the joint
  image-text space, 512-d for ViT-B/32); ``tokens`` is the last hidden state ``[L, d]`` ([CLS] + patches,
  50 x 768 for ViT-B/32) with a token mask, for token-level fusion (methods.md §8.2).
* SigLIP (Zhai et al., 2023; ``SiglipVisionModel``): ``pooled`` is the attention-pooling head output,
  ``tokens`` the patch states; SigLIP has no separate projection, so ``projected`` is refused.
* ViT (Dosovitskiy et al., 2021; ``ViTModel``): ``pooled`` is the pooler output (dense + tanh over
  [CLS]), ``tokens`` the last hidden state.

Images are preprocessed by the model's own ``AutoImageProcessor`` (resize, centre crop, normalisation as
saved with the model).  Models resolve like text models (:func:`mmkgc.features.text.resolve_model`): a local
directory, or a hub name, taken only from the local cache when ``HF_HUB_OFFLINE`` is set.

Entity image collections (:class:`EntityImages`) come from three layouts:

* ``folders``: one sub-folder per entity, named by the entity name (matched by
  :class:`~mmkgc.features.entity_text.EntityNameIndex`: exact normalised name, or the local name of a URI
  label, e.g. ``Alabama/`` for ``<http://dbpedia.org/resource/Alabama>``), images inside (sorted by name);
* ``flat``: one folder of ``<KEY>_<k>.<ext>`` files (``Q42_0.jpg``, ``Q42_1.jpg``; Beyond Images' layout,
  methods.md §3.1), sorted by ``k``;
* ``table``: a CSV/TSV/parquet file mapping entity names to image paths (relative paths are resolved
  against the table's folder), in table order.

An optional name map (``external name -> dataset label``) links another namespace (Wikidata QIDs) to the
dataset's labels.  Unreadable, truncated or missing images are skipped and counted; an entity with no
readable image is marked not present.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch

from mmkgc.errors import ConfigError, DataFormatError, UnknownNameError
from mmkgc.features.entity_text import EntityNameIndex
from mmkgc.distributed import device_for_rank
from mmkgc.features.text import quiet_transformers, weights_identity, resolve_model

log = logging.getLogger(__name__)

#: File suffixes treated as images (raster formats Pillow reads).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"})
OutputKind = Literal["pooled", "projected", "tokens"]
Aggregation = Literal["mean", "max", "first", "set"]
Layout = Literal["auto", "folders", "flat", "table"]
AGGREGATIONS = ("mean", "max", "first", "set")
OUTPUT_KINDS = ("pooled", "projected", "tokens")
_FLAT_NAME = re.compile(r"^(?P<key>.+)_(?P<k>\d+)$")
_TABLE_PATH_COLUMNS = ("image_path", "path", "image", "file", "filename")


# ------------------------------------------------------------------------------------------ collections


@dataclass
class EntityImages:
    """The image files of every entity of a dataset.

    :ivar paths: ``N`` tuples of image paths, ``paths[i]`` for entity id ``i`` in their order (an entity
        without images has an empty tuple).  Paths may point to missing or unreadable files; those are
        skipped when encoding.
    :ivar layout: ``"folders"``, ``"flat"`` or ``"table"``.
    :ivar source: the folder or table the images were listed from.
    :ivar report: ``{"layout", "source", "num_entities", "entities_with_images", "images", "unknown_keys",
        "unknown_examples", "ignored_files", ...}``: keys (folders, file keys, table rows) that name no entity
        are counted in ``unknown_keys``.
    """

    paths: list[tuple[Path, ...]]
    layout: str
    source: Path
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def num_entities(self) -> int:
        """``N``."""
        return len(self.paths)

    @property
    def num_images(self) -> int:
        """Number of listed image paths over all entities."""
        return sum(len(p) for p in self.paths)

    def identity(self) -> dict[str, Any]:
        """JSON-able identity for cache keys: layout, source and a sha256 over every (entity id, path,
        size, mtime) -- so adding, removing, replacing or touching an image changes it.  Missing files
        count with size and mtime ``-1``."""
        digest = hashlib.sha256()
        for i, paths in enumerate(self.paths):
            for p in paths:
                try:
                    st = p.stat()
                    size, mtime = st.st_size, st.st_mtime_ns
                except OSError:
                    size, mtime = -1, -1
                digest.update(f"{i}\0{p}\0{size}\0{mtime}\n".encode("utf-8", "surrogateescape"))
        return {
            "layout": self.layout,
            "source": str(self.source),
            "images": self.num_images,
            "sha256": digest.hexdigest(),
        }


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _finish(paths: list[list[Path]], layout: str, source: Path, unknown: list[str], extra: dict[str, Any]) -> EntityImages:
    frozen = [tuple(p) for p in paths]
    report = {
        "layout": layout,
        "source": str(source),
        "num_entities": len(frozen),
        "entities_with_images": sum(1 for p in frozen if p),
        "images": sum(len(p) for p in frozen),
        "unknown_keys": len(unknown),
        "unknown_examples": unknown[:5],
        **extra,
    }
    if unknown:
        log.warning("%s: %d image keys name no dataset entity (e.g. %s)", source, len(unknown), ", ".join(unknown[:3]))
    return EntityImages(frozen, layout, source, report)


def _require_dir(root: Path) -> None:
    if not root.is_dir():
        raise DataFormatError(root, None, "image folder not found" if not root.exists() else "not a folder")


def images_from_folders(
    root: str | Path, entity_labels: Sequence[str], name_map: Mapping[str, str] | None = None
) -> EntityImages:
    """Layout ``folders``: ``root/<entity name>/*.jpg`` (images of a folder sorted by file name).

    :param name_map: optional ``folder name -> dataset label`` map.
    :raises DataFormatError: ``root`` is not a folder; two folders name the same entity.
    """
    root = Path(root)
    _require_dir(root)
    index = EntityNameIndex(entity_labels, name_map)
    paths: list[list[Path]] = [[] for _ in entity_labels]
    owner: dict[int, str] = {}
    unknown: list[str] = []
    ignored = 0
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        i = index.lookup(sub.name)
        if i is None:
            unknown.append(sub.name)
            continue
        if i in owner:
            raise DataFormatError(sub, None, f"folders {owner[i]!r} and {sub.name!r} both name entity {entity_labels[i]!r}")
        owner[i] = sub.name
        files = sorted(p for p in sub.iterdir() if p.is_file())
        images = [p for p in files if _is_image(p)]
        ignored += len(files) - len(images)
        paths[i] = images
    loose = sum(1 for p in root.iterdir() if p.is_file())
    return _finish(paths, "folders", root, unknown, {"ignored_files": ignored + loose})


def images_from_flat_folder(
    root: str | Path, entity_labels: Sequence[str], name_map: Mapping[str, str] | None = None
) -> EntityImages:
    """Layout ``flat``: ``root/<KEY>_<k>.<ext>`` (``Q42_0.jpg``, ``Q42_1.jpg``), images of a key sorted by
    the integer ``k``.  The key may itself contain ``_`` (the last ``_<digits>`` is the index).

    :param name_map: optional ``KEY -> dataset label`` map.
    :raises DataFormatError: ``root`` is not a folder.
    """
    root = Path(root)
    _require_dir(root)
    index = EntityNameIndex(entity_labels, name_map)
    found: dict[int, list[tuple[int, str, Path]]] = {}
    unknown: set[str] = set()
    ignored = 0
    for p in sorted(root.iterdir()):
        if not p.is_file():
            continue
        m = _FLAT_NAME.match(p.stem) if _is_image(p) else None
        if m is None:
            ignored += 1
            continue
        key = m.group("key")
        i = index.lookup(key)
        if i is None:
            unknown.add(key)
            continue
        found.setdefault(i, []).append((int(m.group("k")), p.name, p))
    paths: list[list[Path]] = [[] for _ in entity_labels]
    for i, items in found.items():
        paths[i] = [p for _, _, p in sorted(items)]
    return _finish(paths, "flat", root, sorted(unknown), {"ignored_files": ignored})


def _read_table(path: Path):
    from mmkgc.extras import require

    pd = require("pandas", "reading an image table", extra="vision")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        require("pyarrow", f"reading {path.name}", extra="vision")
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path), None
        if suffix in (".csv", ".tsv", ".tab", ".txt"):
            return pd.read_csv(path, sep="," if suffix == ".csv" else "\t", dtype=str, keep_default_na=False), 2
    except FileNotFoundError:
        raise DataFormatError(path, None, "file not found") from None
    except Exception as exc:  # pandas raises many parser error types
        raise DataFormatError(path, None, f"cannot read table: {exc}") from exc
    raise DataFormatError(path, None, f"unknown table format {suffix!r}; use .csv, .tsv or .parquet")


def images_from_table(
    path: str | Path,
    entity_labels: Sequence[str],
    key_column: str = "entity",
    path_column: str | None = None,
    name_map: Mapping[str, str] | None = None,
) -> EntityImages:
    """Layout ``table``: rows ``entity -> image path`` of a CSV/TSV/parquet file with a header.  Several rows
    may name the same entity (images kept in table order).  Relative paths are resolved against the
    table's folder; empty paths are skipped.

    :param path_column: the path column; ``None`` picks the first of ``image_path``, ``path``, ``image``,
        ``file``, ``filename``.
    :raises DataFormatError: unreadable table, missing column (line 1 of the header named).
    """
    path = Path(path)
    df, first_line = _read_table(path)
    if key_column not in df.columns:
        raise DataFormatError(path, 1 if first_line else None,
                              f"no column {key_column!r} (columns: {', '.join(map(str, df.columns))})")
    if path_column is None:
        path_column = next((c for c in _TABLE_PATH_COLUMNS if c in df.columns), None)
        if path_column is None:
            raise DataFormatError(path, 1 if first_line else None,
                                  f"no image path column (looked for {', '.join(_TABLE_PATH_COLUMNS)}; "
                                  f"columns: {', '.join(map(str, df.columns))}); pass path_column")
    elif path_column not in df.columns:
        raise DataFormatError(path, 1 if first_line else None,
                              f"no column {path_column!r} (columns: {', '.join(map(str, df.columns))})")
    index = EntityNameIndex(entity_labels, name_map)
    paths: list[list[Path]] = [[] for _ in entity_labels]
    unknown: list[str] = []
    empty = urls = 0
    base = path.parent
    for key, value in zip(df[key_column].tolist(), df[path_column].tolist()):
        value = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value).strip()
        if not value:
            empty += 1
            continue
        if "://" in value:  # URLs are not downloaded
            urls += 1
            continue
        i = index.lookup(str(key))
        if i is None:
            unknown.append(str(key))
            continue
        p = Path(value).expanduser()
        paths[i].append(p if p.is_absolute() else base / p)
    return _finish(paths, "table", path, unknown,
                   {"key_column": key_column, "path_column": path_column, "empty_paths": empty, "url_paths": urls})


def find_entity_images(
    source: str | Path,
    entity_labels: Sequence[str],
    layout: Layout = "auto",
    name_map: Mapping[str, str] | None = None,
    **table_options: Any,
) -> EntityImages:
    """List the images of every entity from a folder or a table.

    :param layout: ``"auto"`` (a file -> ``table``; a folder holding sub-folders -> ``folders``; else
        ``flat``), ``"folders"``, ``"flat"`` or ``"table"``.
    :param table_options: ``key_column`` / ``path_column`` for tables.
    :raises DataFormatError: ``source`` does not exist or does not fit the layout.
    :raises ConfigError: unknown layout.
    """
    source = Path(source)
    if layout == "auto":
        if not source.exists():
            raise DataFormatError(source, None, "image folder or table not found")
        if source.is_file():
            layout = "table"
        else:
            layout = "folders" if any(p.is_dir() and not p.name.startswith(".") for p in source.iterdir()) else "flat"
    if layout == "table":
        return images_from_table(source, entity_labels, name_map=name_map, **table_options)
    if table_options:
        raise ConfigError(f"options {sorted(table_options)} apply only to the 'table' layout")
    if layout == "folders":
        return images_from_folders(source, entity_labels, name_map)
    if layout == "flat":
        return images_from_flat_folder(source, entity_labels, name_map)
    raise ConfigError(f"unknown image layout {layout!r}; expected auto, folders, flat or table")


def load_image(path: Path):
    """Open and fully decode one image as RGB (a ``PIL.Image.Image``), or return the reason it is unusable.

    :returns: ``(image, None)`` or ``(None, reason)`` for a missing, unreadable, truncated or oversized file.
    """
    from mmkgc.extras import require

    require("PIL", "reading images", extra="vision")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()  # decode now: truncated files fail here, not inside the processor
            return img.convert("RGB"), None
    except FileNotFoundError:
        return None, "file not found"
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        return None, f"{type(exc).__name__}: {exc}"


# ------------------------------------------------------------------------------------------------ encoders


@runtime_checkable
class ImageEncoder(Protocol):
    """What the feature cache needs from an image encoder."""

    @property
    def dim(self) -> int:
        """Feature dimension ``d``."""

    @property
    def token_shape(self) -> tuple[int, ...]:
        """Shape of one image's output: ``(d,)`` for pooled/projected vectors, ``(L, d)`` for tokens."""

    @property
    def identity(self) -> dict[str, Any]:
        """JSON-able dict of everything that changes the output (model, fingerprint, output kind, ...)."""

    def encode_images(self, images: list[Any]) -> np.ndarray:
        """Encode ``n`` RGB images to float32 ``[n, *token_shape]``."""


def _transformers_at_least(major: int, minor: int) -> bool:
    from mmkgc.extras import require

    require("transformers", "an image encoder", extra="vision")
    import transformers

    parts = re.findall(r"\d+", transformers.__version__)[:2]
    return tuple(int(p) for p in parts) >= (major, minor)


_ARCHITECTURES = ("clip", "clip_vision_model", "siglip", "siglip_vision_model", "vit")


class HFImageEncoder:
    """Image features from the image tower of a CLIP, SigLIP or ViT model (frozen, eval mode).

    :param name_or_path: a local model directory (``config.json``, weights, ``preprocessor_config.json``)
        or a hub name (see :func:`~mmkgc.features.text.resolve_model`).
    :param output: ``"pooled"`` (vision pooler output ``[d]``), ``"projected"`` (CLIP ``image_embeds``
        ``[p]``, the joint image-text space) or ``"tokens"`` (last hidden state ``[L, d]``).
    :param batch_size: images per forward pass (does not change the output).
    :param device: ``None`` picks CUDA when available.
    :param normalize: L2-normalise each image's vector (each token for ``"tokens"``).
    :param dtype: compute dtype (``"float32"``, ``"float16"``, ``"bfloat16"``); outputs are float32.
    :raises UnknownNameError: unresolvable model name or path.
    :raises ConfigError: an architecture other than CLIP/SigLIP/ViT, ``projected`` for a model without a
        projection, no image processor saved with the model, bad ``output``/``batch_size``/``dtype``.
    """

    kind = "hf-vision"

    def __init__(
        self,
        name_or_path: str | Path,
        *,
        output: OutputKind = "pooled",
        batch_size: int = 32,
        device: str | torch.device | None = None,
        normalize: bool = False,
        dtype: str = "float32",
    ):
        if output not in OUTPUT_KINDS:
            raise ConfigError(f"image output must be one of {', '.join(OUTPUT_KINDS)}, got {output!r}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        torch_dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}.get(dtype)
        if torch_dtype is None:
            raise ConfigError(f"dtype must be float32, float16 or bfloat16, got {dtype!r}")
        self.resolved = resolve_model(name_or_path, "image model")
        self.output = output
        self.batch_size = int(batch_size)
        self.device = str(device_for_rank(device))
        self.normalize = bool(normalize)
        self.dtype = dtype
        self.model, self.architecture = self._load_model(torch_dtype)
        self.processor = self._load_processor()
        self._token_shape: tuple[int, ...] | None = None
        self._identity: dict[str, Any] | None = None

    # ---------------------------------------------------------------------------------------- loading
    def _load_model(self, torch_dtype: torch.dtype):
        from mmkgc.extras import require

        require("transformers", "an image encoder", extra="vision")
        import transformers
        from transformers import AutoConfig
        from transformers.utils import logging as hf_logging

        quiet_transformers()
        kw = {"local_files_only": self.resolved.local_files_only}
        where = self.resolved.requested
        try:
            config = AutoConfig.from_pretrained(self.resolved.location, **kw)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"image model {where!r}: cannot read its config.json: {exc}") from exc
        model_type = getattr(config, "model_type", None)
        if model_type not in _ARCHITECTURES:
            raise ConfigError(
                f"image model {where!r} has architecture {model_type!r}; supported: {', '.join(_ARCHITECTURES)}"
            )
        family = model_type.split("_")[0]
        if self.output == "projected" and family != "clip":
            raise ConfigError(f"image model {where!r} ({model_type}) has no image projection; use output 'pooled'")
        vision_config = getattr(config, "vision_config", config)
        if family == "clip":
            if self.output == "projected":
                cls = transformers.CLIPVisionModelWithProjection
                if hasattr(config, "projection_dim") and model_type == "clip":
                    vision_config.projection_dim = config.projection_dim  # the joint-space size lives on the top config
            else:
                cls = transformers.CLIPVisionModel
        elif family == "siglip":
            cls = transformers.SiglipVisionModel
        else:
            cls = transformers.ViTModel
        previous = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # a vision tower loaded from a full CLIP checkpoint skips the text weights
        try:
            if torch_dtype != torch.float32:  # the keyword is `dtype` since transformers 4.56, `torch_dtype` before
                kw["dtype" if _transformers_at_least(4, 56) else "torch_dtype"] = torch_dtype
            model = cls.from_pretrained(self.resolved.location, config=vision_config, **kw)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ConfigError(f"image model {where!r}: cannot load the {cls.__name__} weights: {exc}") from exc
        finally:
            hf_logging.set_verbosity(previous)
        return model.to(self.device).eval(), cls.__name__

    def _load_processor(self):
        from mmkgc.extras import require

        require("transformers", "an image encoder", extra="vision")
        from transformers import AutoImageProcessor

        try:
            return AutoImageProcessor.from_pretrained(
                self.resolved.location, local_files_only=self.resolved.local_files_only
            )
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"image model {self.resolved.requested!r}: no image processor (preprocessor_config.json) "
                f"saved with the model: {exc}"
            ) from exc

    # --------------------------------------------------------------------------------------- interface
    @property
    def token_shape(self) -> tuple[int, ...]:
        """``(d,)`` for ``pooled``/``projected``; ``(L, d)`` for ``tokens`` (measured on a blank image)."""
        if self._token_shape is None:
            from mmkgc.extras import require

            require("PIL", "an image encoder", extra="vision")
            from PIL import Image

            probe = self.encode_images([Image.new("RGB", (32, 32))])
            self._token_shape = tuple(int(s) for s in probe.shape[1:])
        return self._token_shape

    @property
    def dim(self) -> int:
        """Feature dimension ``d`` of one vector / token."""
        return self.token_shape[-1]

    @property
    def identity(self) -> dict[str, Any]:
        """``{"kind", "model", "source", weights fingerprint or revision, "architecture", "output",
        "normalize", "dtype", "processor", "shape"}``."""
        if self._identity is None:
            self._identity = {
                "kind": self.kind,
                "model": self.resolved.canonical,
                "source": self.resolved.source,
                **weights_identity(self.resolved),
                "architecture": self.architecture,
                "output": self.output,
                "normalize": self.normalize,
                "dtype": self.dtype,
                "processor": type(self.processor).__name__,
                "shape": list(self.token_shape),
            }
        return dict(self._identity)

    def encode_images(self, images: list[Any]) -> np.ndarray:
        """Encode ``n`` RGB ``PIL`` images.

        :returns: float32 numpy ``[n, d]`` (pooled/projected) or ``[n, L, d]`` (tokens).
        """
        images = list(images)
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                batch = self.processor(images=images[start : start + self.batch_size], return_tensors="pt")
                pixels = batch["pixel_values"].to(self.device, dtype=self.model.dtype)
                out = self.model(pixel_values=pixels)
                if self.output == "projected":
                    x = out.image_embeds
                elif self.output == "pooled":
                    x = out.pooler_output
                else:
                    x = out.last_hidden_state
                x = x.float()
                if self.normalize:
                    x = torch.nn.functional.normalize(x, dim=-1)
                chunks.append(x.cpu().numpy())
        if not chunks:
            shape = self._token_shape or (0,)
            return np.zeros((0, *shape), dtype=np.float32)
        return np.ascontiguousarray(np.concatenate(chunks), dtype=np.float32)


def build_image_encoder(name: str | Path, **options: Any) -> HFImageEncoder:
    """Build an image encoder by model name or directory; ``options`` are :class:`HFImageEncoder`'s keyword
    arguments (``output``, ``batch_size``, ``device``, ``normalize``, ``dtype``).

    :raises UnknownNameError: unresolvable model; unknown option.
    :raises ConfigError: see :class:`HFImageEncoder`.
    """
    known = {"output", "batch_size", "device", "normalize", "dtype"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UnknownNameError(f"unknown image encoder option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return HFImageEncoder(name, **options)


# ------------------------------------------------------------------------------------------- aggregation


def entity_row_shape(token_shape: tuple[int, ...], aggregate: Aggregation, set_size: int) -> tuple[int, ...]:
    """Shape of one entity's row: ``token_shape`` for mean/max/first; ``(set_size, d)`` (vectors) or
    ``(set_size * L, d)`` (tokens) for ``"set"``."""
    if aggregate == "set":
        per_image = token_shape[0] if len(token_shape) == 2 else 1
        return (set_size * per_image, token_shape[-1])
    return tuple(token_shape)


def aggregate_images(
    feats: np.ndarray, aggregate: Aggregation, row_shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray | None]:
    """Combine the features of one entity's ``k >= 1`` readable images.

    :param feats: float32 ``[k, d]`` or ``[k, L, d]``.
    :param aggregate: ``"mean"`` / ``"max"`` (element-wise over images), ``"first"`` (the first readable
        image), ``"set"`` (images kept side by side: ``[K, d]`` or ``[K * L, d]``, padded, with a mask).
    :param row_shape: :func:`entity_row_shape`.
    :returns: ``(row float32 row_shape, token mask bool [row_shape[0]] or None)``; the mask is ``None``
        for pooled rows, all-true for mean/max/first token rows.
    """
    if aggregate == "mean":
        row = feats.mean(axis=0)
    elif aggregate == "max":
        row = feats.max(axis=0)
    elif aggregate == "first":
        row = feats[0]
    elif aggregate == "set":
        flat = feats.reshape(-1, feats.shape[-1])[: row_shape[0]]
        row = np.zeros(row_shape, dtype=np.float32)
        row[: len(flat)] = flat
        mask = np.zeros(row_shape[0], dtype=bool)
        mask[: len(flat)] = True
        return row, mask
    else:
        raise ConfigError(f"unknown image aggregation {aggregate!r}; expected {', '.join(AGGREGATIONS)}")
    row = row.astype(np.float32, copy=False)
    return row, (np.ones(row_shape[0], dtype=bool) if len(row_shape) == 2 else None)


def encode_entity_rows(
    images: EntityImages,
    encoder: ImageEncoder,
    rows: Sequence[int],
    aggregate: Aggregation,
    max_images: int | None,
    row_shape: tuple[int, ...],
    on_unreadable: Callable[[Path, str], None] | None = None,
) -> dict[str, np.ndarray]:
    """Features of the entities ``rows``: each entity's first ``max_images`` readable images are encoded
    (in batches of the encoder's batch size) and aggregated.

    :returns: ``{"values": float32 [n, *row_shape], "present": bool [n], "images_read": int32 [n],
        "images_unreadable": int32 [n]}`` plus ``"token_mask": bool [n, row_shape[0]]`` for token rows
        (``len(row_shape) == 2``).  Entities without a readable image get zeros and ``present = False``.
    """
    n = len(rows)
    limit = max_images
    loaded: list[Any] = []
    read = np.zeros(n, dtype=np.int32)
    bad = np.zeros(n, dtype=np.int32)
    for j, entity in enumerate(rows):
        for path in images.paths[int(entity)]:
            if limit is not None and read[j] >= limit:
                break
            img, reason = load_image(path)
            if img is None:
                bad[j] += 1
                if on_unreadable is not None:
                    on_unreadable(path, reason)
                continue
            loaded.append(img)
            read[j] += 1
    feats = encoder.encode_images(loaded) if loaded else np.zeros((0, *encoder.token_shape), dtype=np.float32)
    if feats.shape != (len(loaded), *encoder.token_shape):
        raise ValueError(
            f"image encoder returned shape {feats.shape} for {len(loaded)} images, expected "
            f"[{len(loaded)}, {', '.join(map(str, encoder.token_shape))}]"
        )
    values = np.zeros((n, *row_shape), dtype=np.float32)
    tokens = len(row_shape) == 2
    token_mask = np.zeros((n, row_shape[0]), dtype=bool) if tokens else None
    present = read > 0
    start = 0
    for j in range(n):
        k = int(read[j])
        if k == 0:
            continue
        sel = feats[start : start + k]
        start += k
        if not np.isfinite(sel).all():
            entity = int(rows[j])
            raise ValueError(f"image encoder returned NaN/inf for entity {entity} ({images.paths[entity][0].parent})")
        row, mask = aggregate_images(sel, aggregate, row_shape)
        values[j] = row
        if tokens:
            token_mask[j] = mask
    out = {"values": values, "present": present, "images_read": read, "images_unreadable": bad}
    if tokens:
        out["token_mask"] = token_mask
    return out


def default_set_size(images: EntityImages, max_images: int | None) -> int:
    """``K`` of the ``"set"`` aggregation: ``max_images`` when given, else the largest number of images
    listed for one entity (at least 1)."""
    if max_images is not None:
        return int(max_images)
    return max(1, max((len(p) for p in images.paths), default=1))

