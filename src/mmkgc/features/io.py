"""Reading and writing feature tables.

Own formats (written by :func:`save_feature_table`, read by :func:`load_feature_table`):

* ``.safetensors``: tensors ``values`` (float32), ``present`` (bool) and, for token tables,
  ``token_mask`` (bool); the metadata holds ``mmkgc_format``, ``modality`` and the provenance as JSON.
* ``.npy``: ``<stem>.npy`` (values), sidecars ``<stem>.present.npy``, ``<stem>.token_mask.npy`` (token
  tables) and ``<stem>.meta.json`` (modality, provenance, shape).

Community formats (read by :func:`import_feature_file`): the OpenKE/AdaMF/NativE ``<DATASET>-visual.pth``
style (a ``torch.save``d tensor, loaded with ``weights_only=True`` so that a pickle of arbitrary objects
is refused without being executed), plain ``.npy`` (``allow_pickle=False``) and plain ``.safetensors``.
Rows must be in entity-id order unless a row manifest ``<file>.entities.txt`` (one entity name per line,
as Beyond Images writes beside its ``.pth``, methods.md §3.5) maps them to entity names.

Every write goes to a temporary file in the target directory and is moved into place with
:func:`os.replace`, so a reader never sees a half-written file.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from mmkgc.fileio import atomic_write, atomic_write_text  # noqa: F401 - re-exported
from mmkgc.errors import DataFormatError
from mmkgc.features.entity_text import normalize_entity_name
from mmkgc.features.store import FeatureTable, make_provenance, presence_from_values

log = logging.getLogger(__name__)

#: Value of the ``mmkgc_format`` metadata key / meta.json field of files written by this module.
FORMAT_TAG = "mmkgc.feature_table/1"
MANIFEST_SUFFIX = ".entities.txt"

# ----------------------------------------------------------------------------------------- atomic writes


def _save_npy(path: Path, array: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object stops np.save from appending ".npy" to the temp name
            np.save(fh, array, allow_pickle=False)

    atomic_write(path, write)


# ------------------------------------------------------------------------------------------- own formats


def _sidecars(path: Path) -> dict[str, Path]:
    stem = path.with_suffix("")
    return {
        "present": stem.with_name(stem.name + ".present.npy"),
        "token_mask": stem.with_name(stem.name + ".token_mask.npy"),
        "meta": stem.with_name(stem.name + ".meta.json"),
    }


def save_feature_table(table: FeatureTable, path: str | Path) -> Path:
    """Write ``table`` to ``path`` (``.safetensors`` or ``.npy`` + sidecars), atomically per file.

    :raises ValueError: unsupported suffix.
    :returns: ``Path(path)``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        tensors = {"values": table.values.contiguous(), "present": table.present.contiguous()}
        if table.is_tokens:
            tensors["token_mask"] = table.token_mask.contiguous()
        metadata = {
            "mmkgc_format": FORMAT_TAG,
            "modality": table.modality,
            "provenance": json.dumps(table.provenance, sort_keys=True),
        }
        return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    if suffix == ".npy":
        side = _sidecars(path)
        meta = {
            "mmkgc_format": FORMAT_TAG,
            "modality": table.modality,
            "shape": list(table.values.shape),
            "provenance": table.provenance,
        }
        # Sidecars first, values last: a reader checks the meta shape against the values.
        _save_npy(side["present"], table.present.numpy())
        if table.is_tokens:
            _save_npy(side["token_mask"], table.token_mask.numpy())
        atomic_write_text(side["meta"], json.dumps(meta, sort_keys=True, indent=1))
        _save_npy(path, table.values.numpy())
        return path
    raise ValueError(f"{path}: unsupported feature file suffix {suffix!r}; use .safetensors or .npy")


def _table_or_error(path: Path, **kwargs: Any) -> FeatureTable:
    try:
        return FeatureTable(**kwargs)
    except ValueError as exc:
        raise DataFormatError(path, None, str(exc)) from exc


def _check_rows(path: Path, table: FeatureTable, num_entities: int | None) -> FeatureTable:
    if num_entities is not None and table.num_entities != num_entities:
        raise DataFormatError(
            path, None, f"{table.num_entities} rows, but the dataset has {num_entities} entities"
        )
    return table


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataFormatError(path, None, "file not found") from None
    except ValueError as exc:  # object arrays need pickle, which is refused
        raise DataFormatError(path, None, f"cannot read .npy without unpickling objects: {exc}") from exc
    except OSError as exc:
        raise DataFormatError(path, None, f"not a valid .npy file: {exc}") from exc


def load_feature_table(path: str | Path, num_entities: int | None = None) -> FeatureTable:
    """Read a table written by :func:`save_feature_table`.

    :param num_entities: when given, the row count must equal it.
    :raises DataFormatError: missing or unreadable file, not an mmkgc feature file (use
        :func:`import_feature_file` for community files), inconsistent sidecars, wrong row count,
        NaN/inf in present rows.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise DataFormatError(path, None, "file not found")
    if suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
                if meta.get("mmkgc_format") != FORMAT_TAG:
                    raise DataFormatError(
                        path, None, "not an mmkgc feature table (no mmkgc_format metadata); "
                        "use import_feature_file(path, modality=...)"
                    )
                keys = set(fh.keys())
                if not {"values", "present"} <= keys:
                    raise DataFormatError(path, None, f"missing tensors: needs 'values' and 'present', has {sorted(keys)}")
                values = fh.get_tensor("values")
                present = fh.get_tensor("present")
                token_mask = fh.get_tensor("token_mask") if "token_mask" in keys else None
        except DataFormatError:
            raise
        except Exception as exc:  # safetensors raises its own error types for corrupt headers
            raise DataFormatError(path, None, f"not a readable safetensors file: {exc}") from exc
        try:
            provenance = json.loads(meta.get("provenance", "{}"))
        except json.JSONDecodeError as exc:
            raise DataFormatError(path, None, f"provenance metadata is not JSON: {exc}") from exc
        table = _table_or_error(
            path, values=values, modality=meta.get("modality", ""), present=present,
            token_mask=token_mask, provenance=provenance,
        )
        return _check_rows(path, table, num_entities)
    if suffix == ".npy":
        side = _sidecars(path)
        if not side["meta"].is_file():
            raise DataFormatError(
                path, None, f"no {side['meta'].name} beside it, so not an mmkgc feature table; "
                "use import_feature_file(path, modality=...)"
            )
        try:
            meta = json.loads(side["meta"].read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataFormatError(side["meta"], None, f"not valid JSON: {exc}") from exc
        if not isinstance(meta, dict) or meta.get("mmkgc_format") != FORMAT_TAG:
            raise DataFormatError(side["meta"], None, f"mmkgc_format is not {FORMAT_TAG!r}")
        values = _check_array(path, _load_npy(path))
        if list(values.shape) != list(meta.get("shape", [])):
            raise DataFormatError(
                path, None, f"shape {list(values.shape)} disagrees with {side['meta'].name} ({meta.get('shape')}); "
                "the files were written by different saves"
            )
        present = _load_npy(side["present"]) if side["present"].is_file() else None
        token_mask = None
        if values.ndim == 3 and side["token_mask"].is_file():
            token_mask = _load_npy(side["token_mask"])
        table = _table_or_error(
            path, values=torch.from_numpy(values), modality=meta.get("modality", ""), present=present,
            token_mask=token_mask, provenance=meta.get("provenance", {}),
        )
        return _check_rows(path, table, num_entities)
    raise DataFormatError(path, None, f"unsupported feature file suffix {suffix!r}; use .safetensors or .npy")


# ------------------------------------------------------------------------------------- community formats

_FLOAT_DTYPES = {torch.float16, torch.bfloat16, torch.float32, torch.float64}


def _check_array(path: Path, x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    if x.ndim not in (2, 3):
        raise DataFormatError(
            path, None, f"feature array must be 2-D [N, d] or 3-D [N, L, d], got shape {list(x.shape)}"
        )
    ok = x.dtype in _FLOAT_DTYPES if isinstance(x, torch.Tensor) else np.issubdtype(x.dtype, np.floating)
    if not ok:
        raise DataFormatError(path, None, f"feature array must be floating point, got dtype {x.dtype}")
    return x


def _pick(path: Path, obj: Mapping[str, Any], key: str | None) -> Any:
    if key is not None:
        if key not in obj:
            raise DataFormatError(path, None, f"no entry {key!r} (entries: {', '.join(map(str, obj))})")
        return obj[key]
    tensors = [k for k, v in obj.items() if isinstance(v, torch.Tensor)]
    if len(tensors) != 1:
        raise DataFormatError(
            path, None, f"holds {len(tensors)} tensors ({', '.join(map(str, tensors))}); pass key=... to choose one"
        )
    return obj[tensors[0]]


def read_feature_array(path: str | Path, key: str | None = None) -> torch.Tensor:
    """Read a raw feature array from a community file, without executing any pickled code.

    * ``.pth`` / ``.pt``: ``torch.load(..., weights_only=True)``; a tensor, or a dict holding one tensor
      (or the one named ``key``).
    * ``.npy``: ``np.load(..., allow_pickle=False)``.
    * ``.safetensors``: the only tensor, or the one named ``key``.

    :returns: the array as a torch tensor (dtype as stored), shape ``[N, d]`` or ``[N, L, d]``.
    :raises DataFormatError: unreadable file; a pickle of arbitrary objects (refused, not executed); not a
        tensor; not 2-D/3-D; not floating point.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, None, "file not found")
    suffix = path.suffix.lower()
    if suffix in (".pth", ".pt"):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            first = str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else ""
            raise DataFormatError(
                path, None,
                "refused to load: the file is a pickle containing objects other than tensors, and loading it "
                "would execute code from the file (torch.load(weights_only=True) stopped it). Re-save the "
                "features as a plain tensor (torch.save(tensor)), .npy or .safetensors from a trusted "
                f"environment. Details: {first}",
            ) from None
        except Exception as exc:  # corrupt zip archives, truncated files, ...
            raise DataFormatError(path, None, f"cannot read torch file: {exc}") from exc
        if isinstance(obj, Mapping):
            obj = _pick(path, obj, key)
        if not isinstance(obj, torch.Tensor):
            raise DataFormatError(path, None, f"expected a tensor, found {type(obj).__name__}")
        return _check_array(path, obj)
    if suffix == ".npy":
        return torch.from_numpy(_check_array(path, _load_npy(path)))
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj = load_file(str(path))
        except Exception as exc:
            raise DataFormatError(path, None, f"not a readable safetensors file: {exc}") from exc
        return _check_array(path, _pick(path, obj, key))
    raise DataFormatError(path, None, f"unsupported feature file suffix {suffix!r}; use .pth, .npy or .safetensors")


def read_manifest(path: str | Path) -> list[str]:
    """Read a row manifest: one entity name per line (UTF-8), row ``i`` of the features belongs to line
    ``i``.  Trailing empty lines are ignored.

    :raises DataFormatError: empty name or duplicate name (with the 1-based line number).
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFormatError(path, None, f"cannot read manifest: {exc}") from exc
    while lines and not lines[-1].strip():
        lines.pop()
    seen: dict[str, int] = {}
    names = []
    for i, raw in enumerate(lines, start=1):
        name = raw.rstrip("\r").strip()
        if not name:
            raise DataFormatError(path, i, "empty entity name")
        key = normalize_entity_name(name)
        if key in seen:
            raise DataFormatError(path, i, f"entity {name!r} already listed on line {seen[key]}")
        seen[key] = i
        names.append(name)
    return names


def align_rows(
    values: torch.Tensor,
    row_names: Sequence[str],
    entity_labels: Sequence[str],
    name_map: Mapping[str, str] | None = None,
    source: str | Path = "<manifest>",
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Re-order feature rows given by name to entity-id order.

    :param values: ``[M, ...]`` rows in manifest order.
    :param row_names: ``M`` names, row ``i`` of ``values`` belongs to ``row_names[i]``.
    :param entity_labels: ``N`` dataset labels in id order.  Names are compared after
        :func:`~mmkgc.features.entity_text.normalize_entity_name` (angle brackets, percent-encoding).
    :param name_map: optional map from manifest names to dataset labels (e.g. Wikidata -> DBpedia).
    :returns: ``(aligned [N, ...] float32 with zeros for missing entities, present bool [N], report)``;
        ``report = {"manifest_rows", "matched", "unknown_names", "unknown_examples", "missing_entities"}``.
    :raises DataFormatError: row count differs from the manifest length; two dataset labels normalise to
        the same name.
    """
    if values.shape[0] != len(row_names):
        raise DataFormatError(
            source, None, f"manifest lists {len(row_names)} names but the features have {values.shape[0]} rows"
        )
    index: dict[str, int] = {}
    for i, label in enumerate(entity_labels):
        key = normalize_entity_name(label)
        if key in index:
            raise DataFormatError(
                source, None, f"entity labels {index[key]} and {i} both normalise to {key!r}; cannot align by name"
            )
        index[key] = i
    name_map = name_map or {}
    n = len(entity_labels)
    src_rows: list[int] = []
    dst_rows: list[int] = []
    unknown: list[str] = []
    for row, name in enumerate(row_names):
        target = index.get(normalize_entity_name(name_map.get(name, name)))
        if target is None:
            unknown.append(name)
        else:
            src_rows.append(row)
            dst_rows.append(target)
    aligned = torch.zeros((n, *values.shape[1:]), dtype=torch.float32)
    present = torch.zeros(n, dtype=torch.bool)
    if dst_rows:
        dst = torch.tensor(dst_rows, dtype=torch.long)
        aligned[dst] = values[torch.tensor(src_rows, dtype=torch.long)].to(torch.float32)
        present[dst] = True
    report = {
        "manifest_rows": len(row_names),
        "matched": len(dst_rows),
        "unknown_names": len(unknown),
        "unknown_examples": unknown[:5],
        "missing_entities": int(n - present.sum()),
    }
    if unknown:
        log.warning(
            "%s: %d of %d manifest names are not dataset entities (e.g. %s)",
            source, len(unknown), len(row_names), ", ".join(unknown[:3]),
        )
    return aligned, present, report


def import_feature_file(
    path: str | Path,
    modality: str,
    *,
    num_entities: int | None = None,
    entity_labels: Sequence[str] | None = None,
    manifest: str | Path | Literal["auto"] | None = "auto",
    name_map: Mapping[str, str] | None = None,
    presence: Literal["all", "nonzero", "not_equal_fill"] = "all",
    fill_vector: torch.Tensor | np.ndarray | None = None,
    atol: float = 0.0,
    key: str | None = None,
) -> FeatureTable:
    """Import a community feature file as an aligned :class:`FeatureTable`.

    Without a manifest, row ``i`` must be entity id ``i`` and the row count must equal the dataset's
    ``N`` (``num_entities`` or ``len(entity_labels)``).  With a manifest (``manifest="auto"`` uses
    ``<file>.entities.txt`` when it exists), rows are re-ordered to entity ids by name, entities absent
    from the manifest are marked missing and unknown names are counted; the alignment report is stored in
    ``provenance["options"]["alignment"]``.

    :param presence: how to derive the presence mask of manifest-free files: ``"all"`` (every row present),
        or a :func:`~mmkgc.features.store.presence_from_values` rule (``"nonzero"``, ``"not_equal_fill"``
        with ``fill_vector``/``atol``).  With a manifest, presence is manifest membership, further reduced by
        the rule when one is given.
    :param key: tensor name inside a dict-valued ``.pth`` or a multi-tensor ``.safetensors``.
    :raises DataFormatError: unreadable or unsafe file, wrong dtype or rank, wrong row count, NaN/inf in a
        present row (first bad row named), manifest problems.
    :raises ValueError: a manifest without ``entity_labels``, or neither ``num_entities`` nor
        ``entity_labels`` given for a manifest-free file.
    """
    path = Path(path)
    raw = read_feature_array(path, key=key)
    n_expected = len(entity_labels) if entity_labels is not None else num_entities
    if entity_labels is not None and num_entities is not None and len(entity_labels) != num_entities:
        raise ValueError(f"num_entities={num_entities} but {len(entity_labels)} entity labels were given")
    manifest_path: Path | None
    if manifest == "auto":
        candidate = path.with_name(path.name + MANIFEST_SUFFIX)
        manifest_path = candidate if candidate.is_file() else None
    else:
        manifest_path = None if manifest is None else Path(manifest)
    options: dict[str, Any] = {"presence": presence, "original_dtype": str(raw.dtype).replace("torch.", "")}
    if key is not None:
        options["key"] = key
    if manifest_path is not None:
        if entity_labels is None:
            raise ValueError(f"{path}: a row manifest ({manifest_path}) needs entity_labels to align rows by name")
        names = read_manifest(manifest_path)
        values, present, report = align_rows(raw, names, entity_labels, name_map=name_map, source=manifest_path)
        if presence != "all":
            present &= presence_from_values(values, rule=presence, fill_vector=fill_vector, atol=atol)
        options["manifest"] = str(manifest_path)
        options["alignment"] = report
    else:
        if n_expected is None:
            raise ValueError(f"{path}: pass num_entities or entity_labels so the row count can be checked")
        if raw.shape[0] != n_expected:
            raise DataFormatError(
                path, None,
                f"{raw.shape[0]} rows, but the dataset has {n_expected} entities "
                f"(rows must be in entity-id order, or provide a row manifest {path.name}{MANIFEST_SUFFIX})",
            )
        values = raw.to(torch.float32)
        if presence == "all":
            present = torch.ones(values.shape[0], dtype=torch.bool)
        else:
            present = presence_from_values(values, rule=presence, fill_vector=fill_vector, atol=atol)
        options["missing_rows"] = int((~present).sum())
    return _table_or_error(
        path, values=values, modality=modality, present=present,
        provenance=make_provenance(str(path), **options),
    )
