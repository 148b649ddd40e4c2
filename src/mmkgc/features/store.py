"""Per-entity modality feature tables.

A :class:`FeatureTable` is one modality of one dataset: a float32 tensor with one row per entity id
(pooled vectors ``[N, d]`` or token sequences ``[N, L, d]`` with a token mask ``[N, L]``), a presence mask
``[N]`` saying which entities really have the modality, and a provenance record.  The published
benchmark feature files (OpenKE ``<DATASET>-visual.pth`` etc., see methods.md §1.2) carry no presence
mask; :func:`presence_from_values` derives one with an explicit, configurable rule.  Missing rows are
never silently zero: a fill policy is chosen explicitly with :meth:`FeatureTable.with_fill` (a
*learned* fill is the model's job, which is why presence is exposed).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

import numpy as np
import torch

#: Modality names used across mmkgc.  Other names are accepted (a dataset may have any modality), but
#: these are the ones the shipped methods and presets refer to.
KNOWN_MODALITIES = ("text", "image", "generated_text", "numeric", "audio", "video")

FillPolicy = Literal["zeros", "mean", "keep"]
PresenceRule = Literal["nonzero", "not_equal_fill"]

_MODALITY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _mmkgc_version() -> str:
    from mmkgc._version import __version__

    return __version__


def utc_now_iso() -> str:
    """Current time in UTC as an ISO-8601 string with seconds precision, e.g. ``2025-01-31T12:00:00+00:00``."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def make_provenance(source: str, **options: Any) -> dict[str, Any]:
    """A provenance record for a feature table.

    :param source: where the values come from: a file path or an encoder name.
    :param options: everything else that determined the values (pooling, normalisation, alignment
        report, ...); must be JSON-serialisable.
    :returns: ``{"source", "options", "created" (UTC ISO-8601), "mmkgc_version"}``.
    """
    return {
        "source": str(source),
        "options": dict(options),
        "created": utc_now_iso(),
        "mmkgc_version": _mmkgc_version(),
    }


def _to_tensor(x: Any, what: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    if isinstance(x, np.ndarray):
        if x.dtype == object:
            raise ValueError(f"{what}: object arrays are not feature data")
        return torch.from_numpy(np.ascontiguousarray(x))
    return torch.as_tensor(x)


def _as_bool_mask(x: Any, shape: tuple[int, ...], what: str) -> torch.Tensor:
    mask = _to_tensor(x, what)
    if tuple(mask.shape) != shape:
        raise ValueError(f"{what} must have shape {list(shape)}, got {list(mask.shape)}")
    if mask.dtype == torch.bool:
        return mask.contiguous()
    if mask.dtype.is_floating_point or mask.dtype.is_complex:
        raise ValueError(f"{what} must be bool (or integer 0/1), got dtype {mask.dtype}")
    if mask.numel() and not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError(f"{what} must contain only 0/1 values")
    return (mask != 0).contiguous()


def first_nonfinite_row(values: torch.Tensor, rows: torch.Tensor | None = None) -> int | None:
    """Index of the first row of ``values`` ([N, ...]) holding NaN or +-inf, restricted to the rows
    where the bool mask ``rows`` [N] is true; ``None`` when every such row is finite."""
    if values.numel() == 0:
        return None
    bad = ~torch.isfinite(values.reshape(values.shape[0], -1)).all(dim=1)
    if rows is not None:
        bad &= rows
    idx = torch.nonzero(bad)
    return int(idx[0, 0]) if idx.numel() else None


@dataclass(eq=False)  # tensors have no boolean ==; compare fields explicitly
class FeatureTable:
    """Features of one modality for every entity of one dataset.

    :param values: float32 ``[N, d]`` (pooled vectors) or ``[N, L, d]`` (token sequences).  Other
        floating dtypes (float16, bfloat16, float64) are converted to float32; numpy arrays are accepted.
    :param modality: modality name (``"text"``, ``"image"``, ``"generated_text"``, ``"numeric"``,
        ``"audio"``, ``"video"`` or any other identifier made of letters, digits, ``_``, ``.``, ``-``).
    :param present: bool ``[N]``, ``True`` where the entity actually has this modality; ``None`` means
        every entity has it.
    :param token_mask: bool ``[N, L]`` for token tables (``True`` = real token, ``False`` = padding);
        ``None`` means all tokens are real.  Must be ``None`` for pooled tables.
    :param provenance: JSON-serialisable dict (source file or encoder, options, ``created`` UTC time,
        ``mmkgc_version``); ``created`` and ``mmkgc_version`` are added when absent.
    :raises ValueError: shapes disagree, a dtype is not floating/bool, the modality name is invalid, the
        provenance is not JSON-serialisable, or a present row holds NaN/inf (the message names the
        modality and the first bad row).  Rows of missing entities may hold anything, including NaN.
    """

    values: torch.Tensor
    modality: str
    present: torch.Tensor | None = None
    token_mask: torch.Tensor | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.modality, str) or not _MODALITY_NAME.match(self.modality):
            raise ValueError(
                f"invalid modality name {self.modality!r}: use letters, digits, '_', '.', '-' "
                f"(known: {', '.join(KNOWN_MODALITIES)})"
            )
        what = f"feature table {self.modality!r}"
        values = _to_tensor(self.values, f"{what} values")
        if values.ndim not in (2, 3):
            raise ValueError(
                f"{what}: values must be [N, d] (pooled) or [N, L, d] (tokens), got shape {list(values.shape)}"
            )
        if not values.dtype.is_floating_point:
            raise ValueError(f"{what}: values must be floating point, got dtype {values.dtype}")
        self.values = values.to(torch.float32).contiguous()
        n = self.values.shape[0]

        self.present = (
            torch.ones(n, dtype=torch.bool)
            if self.present is None
            else _as_bool_mask(self.present, (n,), f"{what} presence mask")
        )
        if self.values.ndim == 3:
            shape = tuple(self.values.shape[:2])
            self.token_mask = (
                torch.ones(shape, dtype=torch.bool)
                if self.token_mask is None
                else _as_bool_mask(self.token_mask, shape, f"{what} token_mask")
            )
        elif self.token_mask is not None:
            raise ValueError(f"{what}: token_mask given for pooled values of shape {list(self.values.shape)}")

        bad = first_nonfinite_row(self._masked_for_check(), self.present)
        if bad is not None:
            raise ValueError(
                f"{what}: row {bad} (entity id {bad}) is marked present but contains NaN or inf; "
                "mark it missing (presence mask) or fix the source"
            )

        if not isinstance(self.provenance, dict):
            raise ValueError(f"{what}: provenance must be a dict, got {type(self.provenance).__name__}")
        self.provenance = dict(self.provenance)
        self.provenance.setdefault("created", utc_now_iso())
        self.provenance.setdefault("mmkgc_version", _mmkgc_version())
        try:
            json.dumps(self.provenance, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{what}: provenance is not JSON-serialisable: {exc}") from exc

    def _masked_for_check(self) -> torch.Tensor:
        """Values with padding tokens zeroed, so NaN in padding does not count as bad data."""
        if self.values.ndim == 2:
            return self.values
        return self.values.masked_fill(~self.token_mask.unsqueeze(-1), 0.0)

    # ----------------------------------------------------------------------------------------- shape

    @property
    def num_entities(self) -> int:
        """``N``, the number of rows (one per entity id)."""
        return int(self.values.shape[0])

    @property
    def dim(self) -> int:
        """Feature dimension ``d`` (last axis)."""
        return int(self.values.shape[-1])

    @property
    def is_tokens(self) -> bool:
        """``True`` for token tables ``[N, L, d]``."""
        return self.values.ndim == 3

    @property
    def num_tokens(self) -> int | None:
        """``L`` for token tables, ``None`` for pooled tables."""
        return int(self.values.shape[1]) if self.is_tokens else None

    @property
    def num_present(self) -> int:
        """Number of entities that have this modality."""
        return int(self.present.sum())

    def __len__(self) -> int:
        return self.num_entities

    def __repr__(self) -> str:
        shape = "x".join(str(s) for s in self.values.shape)
        return (
            f"FeatureTable(modality={self.modality!r}, values=[{shape}] float32, "
            f"present={self.num_present}/{self.num_entities})"
        )

    # ------------------------------------------------------------------------------------ transforms

    def replace(self, **changes: Any) -> FeatureTable:
        """A copy with some fields replaced (validated again); provenance is copied, not shared."""
        changes.setdefault("provenance", dict(self.provenance))
        return dataclasses.replace(self, **changes)

    def renamed(self, modality: str) -> FeatureTable:
        """The same table under another modality name (e.g. to use generated text in the image slot)."""
        prov = dict(self.provenance)
        prov.setdefault("renamed_from", self.modality)
        return self.replace(modality=modality, provenance=prov)

    def with_fill(self, policy: FillPolicy) -> FeatureTable:
        """Fill the rows of missing entities (``present == False``) by an explicit policy.

        * ``"zeros"``: missing rows become 0 (token tables: all tokens 0, token mask unchanged).
        * ``"mean"``: missing rows become the mean of the present rows (token tables: the mean over all
          real tokens of present entities, placed as a single real token at position 0, the rest padding).
        * ``"keep"``: rows are left as stored (e.g. the fill vector a community file already used).

        The presence mask is **not** changed, so a model can still learn its own fill for missing rows.

        :raises ValueError: unknown policy; ``"mean"`` with no present row; ``"keep"`` when a missing row
            holds NaN/inf.
        """
        missing = ~self.present
        prov = dict(self.provenance)
        prov["fill"] = policy
        if policy == "keep":
            bad = first_nonfinite_row(self._masked_for_check(), missing)
            if bad is not None:
                raise ValueError(
                    f"feature table {self.modality!r}: fill policy 'keep' but missing row {bad} holds NaN/inf; "
                    "use 'zeros' or 'mean'"
                )
            return self.replace(provenance=prov)
        if policy not in ("zeros", "mean"):
            raise ValueError(f"unknown fill policy {policy!r}; expected 'zeros', 'mean' or 'keep'")
        if not bool(missing.any()):
            return self.replace(provenance=prov)
        values = self.values.clone()
        token_mask = None if self.token_mask is None else self.token_mask.clone()
        if policy == "zeros":
            values[missing] = 0.0
        else:
            if not bool(self.present.any()):
                raise ValueError(f"feature table {self.modality!r}: fill policy 'mean' but no entity is present")
            if self.is_tokens:
                real = self.token_mask & self.present.unsqueeze(1)
                count = real.sum().clamp_min(1)
                mean = (self.values * real.unsqueeze(-1)).sum(dim=(0, 1)) / count
                values[missing] = 0.0
                values[missing, 0] = mean
                token_mask[missing] = False
                token_mask[missing, 0] = True
            else:
                values[missing] = self.values[self.present].mean(dim=0)
        return self.replace(values=values, token_mask=token_mask, provenance=prov)

    def l2_normalized(self, eps: float = 1e-12) -> FeatureTable:
        """Rows (pooled) or tokens (token tables) scaled to unit Euclidean norm; zero vectors stay zero.
        A fixed preprocessing step some methods apply (methods.md §8.1)."""
        norm = self.values.norm(dim=-1, keepdim=True).clamp_min(eps)
        prov = dict(self.provenance)
        prov["l2_normalized"] = True
        return self.replace(values=self.values / norm, provenance=prov)

    def pooled(self, mode: Literal["mean", "first"] = "mean") -> FeatureTable:
        """Pool a token table to ``[N, d]``: ``"mean"`` over real tokens (entities with no real token get
        zeros) or ``"first"`` token (e.g. a [CLS] token).  Pooled tables are returned unchanged."""
        if not self.is_tokens:
            return self
        if mode == "first":
            values = self.values[:, 0]
        elif mode == "mean":
            m = self.token_mask.unsqueeze(-1).to(self.values.dtype)
            values = (self.values * m).sum(1) / m.sum(1).clamp_min(1.0)
        else:
            raise ValueError(f"unknown pooling {mode!r}; expected 'mean' or 'first'")
        prov = dict(self.provenance)
        prov["pooled"] = mode
        return FeatureTable(values=values, modality=self.modality, present=self.present.clone(), provenance=prov)


def presence_from_values(
    values: torch.Tensor | np.ndarray,
    rule: PresenceRule = "nonzero",
    fill_vector: torch.Tensor | np.ndarray | None = None,
    atol: float = 0.0,
) -> torch.Tensor:
    """Derive a presence mask from a feature array that has none (e.g. OpenKE ``.pth`` tables).

    The community files give every entity a row; entities without an image or text get zeros or a fill
    vector (methods.md §1.2 and §9 item 6).  The rule that recovers them is a choice, so it is explicit:

    * ``"nonzero"``: a row is missing when all its entries satisfy ``|x| <= atol``.
    * ``"not_equal_fill"``: a row is missing when it equals ``fill_vector`` within ``atol``
      (element-wise ``|x - f| <= atol``).  Without ``fill_vector`` the most common row (exact match)
      is used, provided it occurs at least twice; when every row is unique nothing is missing.

    Rows containing NaN or inf are always missing.

    :param values: ``[N, d]`` or ``[N, L, d]`` (token tables are compared on the whole flattened row).
    :param fill_vector: ``[d]`` (or ``[L, d]`` for token tables) for ``"not_equal_fill"``.
    :param atol: absolute tolerance, >= 0.
    :returns: bool ``[N]``, ``True`` = present.
    :raises ValueError: unknown rule, bad shapes, negative ``atol``.
    """
    x = _to_tensor(values, "values")
    if x.ndim not in (2, 3):
        raise ValueError(f"values must be [N, d] or [N, L, d], got shape {list(x.shape)}")
    if atol < 0 or math.isnan(atol):
        raise ValueError(f"atol must be >= 0, got {atol}")
    x = x.to(torch.float32)
    n = x.shape[0]
    flat = x.reshape(n, -1)
    finite = torch.isfinite(flat).all(dim=1)
    if rule == "nonzero":
        return finite & (flat.abs() > atol).any(dim=1)
    if rule != "not_equal_fill":
        raise ValueError(f"unknown presence rule {rule!r}; expected 'nonzero' or 'not_equal_fill'")
    if fill_vector is None:
        if n == 0:
            return torch.zeros(0, dtype=torch.bool)
        rows, inverse, counts = torch.unique(flat, dim=0, return_inverse=True, return_counts=True)
        best = int(torch.argmax(counts))
        if int(counts[best]) < 2:
            return finite
        fill = rows[best]
    else:
        fill = _to_tensor(fill_vector, "fill_vector").to(torch.float32)
        if tuple(fill.shape) != tuple(x.shape[1:]):
            raise ValueError(f"fill_vector must have shape {list(x.shape[1:])}, got {list(fill.shape)}")
        fill = fill.reshape(-1)
    equal = ((flat - fill).abs() <= atol).all(dim=1)
    return finite & ~equal
