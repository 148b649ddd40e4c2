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
import pickle
from collections.abc import Mapping, Sequence
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


def is_feature_table_file(path: str | Path) -> bool:
    """``True`` when ``path`` is a file written by :func:`save_feature_table` (a ``.safetensors`` file with
    the mmkgc format tag, or a ``.npy`` file with its ``.meta.json`` sidecar)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        return False
    if suffix == ".npy":
        return _sidecars(path)["meta"].is_file()
    if suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as fh:
                return (fh.metadata() or {}).get("mmkgc_format") == FORMAT_TAG
        except Exception:  # unreadable: not ours (the loader reports the problem)
            return False
    return False


def load_feature_table(
    path: str | Path,
    num_entities: int | None = None,
    *,
    entity_labels: Sequence[str] | None = None,
    modality: str | None = None,
    name_map: Mapping[str, str] | str | Path | None = None,
) -> FeatureTable:
    """Read a feature table from any supported file.

    Files written by :func:`save_feature_table` are read as they are.  With ``modality`` given, community
    files are imported too: ``.pth``/``.pt``, plain ``.npy``/``.safetensors`` (:func:`import_feature_file`,
    row manifest used when present) and name-keyed ``.h5``/``.hdf5`` (:func:`import_h5_features`, needs
    ``entity_labels``).  With ``modality`` given, the result carries that modality name.

    :param num_entities: when given, the row count must equal it.
    :param entity_labels: dataset labels, to align row manifests and ``.h5`` keys by name.
    :param name_map: feature-file name -> dataset label (mapping or a two-column file), for manifests / ``.h5``.
    :raises DataFormatError: missing or unreadable file, not an mmkgc feature file and no ``modality`` given,
        inconsistent sidecars, wrong row count, NaN/inf in present rows.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if modality is not None and path.is_file() and not is_feature_table_file(path):
        if suffix in (".h5", ".hdf5"):
            if entity_labels is None:
                raise ValueError(f"{path}: .h5 files are keyed by entity name; pass entity_labels")
            table = import_h5_features(path, modality, entity_labels, name_map=name_map)
        else:
            if isinstance(name_map, (str, Path)):
                name_map, _ = read_name_map(name_map, entity_labels)
            table = import_feature_file(path, modality, num_entities=num_entities, entity_labels=entity_labels,
                                        name_map=name_map)
        return _check_rows(path, table, num_entities)
    table = _load_own_table(path, num_entities)
    if modality is not None and table.modality != modality:
        table = table.renamed(modality)
    return table


def _load_own_table(path: Path, num_entities: int | None) -> FeatureTable:
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


# --------------------------------------------------------------------------------- name maps and .h5 files


def read_name_map(
    path: str | Path, entity_labels: Sequence[str] | None = None
) -> tuple[dict[str, str], dict[str, Any]]:
    """Read a name-alignment map: one pair of names per line, as MMRNS ``ent_links`` (DBpedia ->
    Wikidata) or Beyond Images ``ent_links.tsv`` (``dbpedia_url<TAB>dataset_id<TAB>wikidata_url``).

    Columns are tab-separated (whitespace when a line has no tab; ``.csv`` files comma-separated); the
    **first and the last** column are the pair; empty lines and lines starting with ``#`` are skipped.  The
    map is returned as ``feature-file name -> dataset label``: with ``entity_labels`` given, the column whose
    names match more dataset labels is taken as the dataset side (so either direction works); without them
    the last column is the dataset side.

    :returns: ``(mapping, report)``; ``report = {"path", "pairs", "direction"}`` with direction
        ``"first->last"`` or ``"last->first"`` (from feature-file side to dataset side).
    :raises DataFormatError: unreadable file, a line with one column, one name mapped to two different
        names (with the 1-based line numbers).
    """
    import csv

    from mmkgc.features.entity_text import EntityNameIndex

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataFormatError(path, None, "name map not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFormatError(path, None, f"cannot read name map: {exc}") from exc
    pairs: list[tuple[int, str, str]] = []
    lines = text.splitlines()
    rows = csv.reader(lines) if path.suffix.lower() == ".csv" else None
    for lineno, raw in enumerate(lines, start=1):
        cols = next(rows) if rows is not None else (raw.split("\t") if "\t" in raw else raw.split())
        cols = [c.strip() for c in cols]
        if not any(cols) or cols[0].startswith("#"):
            continue
        cols = [c for c in cols if c]
        if len(cols) < 2:
            raise DataFormatError(path, lineno, f"expected two names (tab-separated), got {raw.strip()!r}")
        pairs.append((lineno, cols[0], cols[-1]))
    forward = True
    if entity_labels is not None and pairs:
        index = EntityNameIndex(entity_labels, local_names=False)
        first_hits = sum(index.lookup(a) is not None for _, a, _ in pairs)
        last_hits = sum(index.lookup(b) is not None for _, _, b in pairs)
        forward = last_hits >= first_hits
    mapping: dict[str, str] = {}
    seen: dict[str, int] = {}
    for lineno, a, b in pairs:
        src, dst = (a, b) if forward else (b, a)
        key = normalize_entity_name(src)
        if key in mapping and normalize_entity_name(mapping[key]) != normalize_entity_name(dst):
            raise DataFormatError(path, lineno, f"{src!r} is mapped to {mapping[key]!r} on line {seen[key]} and to {dst!r} here")
        mapping.setdefault(key, dst)
        seen.setdefault(key, lineno)
    report = {"path": str(path), "pairs": len(mapping), "direction": "first->last" if forward else "last->first"}
    return mapping, report


_H5_NAME_KEYS = ("names", "entities", "entity_names", "keys", "ids")
_H5_VALUE_KEYS = ("values", "embeddings", "features", "vectors", "data")


def _h5_strings(path: Path, ds: Any) -> list[str]:
    raw = ds[()]
    out = []
    for i, x in enumerate(np.atleast_1d(raw).tolist()):
        if isinstance(x, bytes):
            try:
                x = x.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataFormatError(path, None, f"dataset {ds.name!r}: name {i} is not UTF-8: {exc}") from exc
        out.append(str(x))
    return out


def _h5_float(path: Path, name: str, arr: np.ndarray) -> np.ndarray:
    if not np.issubdtype(arr.dtype, np.floating):
        raise DataFormatError(path, None, f"dataset {name!r}: expected floating-point vectors, got dtype {arr.dtype}")
    return arr


def import_h5_features(
    path: str | Path,
    modality: str,
    entity_labels: Sequence[str],
    *,
    name_map: Mapping[str, str] | str | Path | None = None,
    layout: Literal["auto", "per_entity", "matrix"] = "auto",
    group: str | None = None,
    values_key: str | None = None,
    names_key: str | None = None,
    multi: Literal["mean", "first", "tokens"] = "mean",
    presence: Literal["all", "nonzero", "not_equal_fill"] = "all",
    fill_vector: torch.Tensor | np.ndarray | None = None,
    atol: float = 0.0,
) -> FeatureTable:
    """Import a name-keyed ``.h5`` feature file (MMRNS style, methods.md §1.2; Beyond Images' ``.h5``
    export, §3.1 step 7) as an aligned :class:`FeatureTable`.

    Layouts (``layout="auto"`` decides from the file):

    * ``per_entity``: one dataset per entity, named by the entity, of shape ``[d]`` or ``[k, d]`` (``k``
      vectors per entity: 4 sentence vectors, 24 image vectors, ...);
    * ``matrix``: a 2-D ``[M, d]`` or 3-D ``[M, k, d]`` dataset (``values_key``, or one named ``values``,
      ``embeddings``, ``features``, ...) with a 1-D names dataset of length ``M`` (``names_key``, or one named
      ``names``, ``entities``, ``keys``, ...).

    Names are matched to the dataset's labels through ``name_map`` (``file name -> dataset label``; a path is
    read with :func:`read_name_map`) and :class:`~mmkgc.features.entity_text.EntityNameIndex` (exact
    normalised name, or the local name of a URI label).  Entities without an entry are marked not present.
    Dimensions are always read from the data.

    :param group: the HDF5 group holding the datasets (default: the root).
    :param multi: several vectors per entity: ``"mean"`` (pooled ``[N, d]``), ``"first"`` (``[N, d]``) or
        ``"tokens"`` (``[N, K, d]`` padded to the largest ``k``, with a token mask).
    :param presence: ``"all"`` (every matched entry present), or a
        :func:`~mmkgc.features.store.presence_from_values` rule applied to the aligned rows on top of matching.
    :returns: the table; ``provenance["options"]["alignment"]`` is the coverage report ``{"layout",
        "file_keys", "matched", "missing_entities", "unknown_keys", "unknown_examples", "duplicate_keys",
        "vectors_per_entry": [min, max], "dim", "multi", "name_map"}``.
    :raises DataFormatError: not an HDF5 file, unknown group/dataset, non-float data, inconsistent
        dimensions, names and values of different lengths, NaN/inf in an entry kept present (named by key).
    :raises ConfigError: unknown ``layout`` or ``multi``.
    """
    from mmkgc.extras import require

    h5py = require("h5py", "reading .h5 feature files", extra="h5")
    from mmkgc.errors import ConfigError
    from mmkgc.features.entity_text import EntityNameIndex

    if layout not in ("auto", "per_entity", "matrix"):
        raise ConfigError(f"unknown h5 layout {layout!r}; expected auto, per_entity or matrix")
    if multi not in ("mean", "first", "tokens"):
        raise ConfigError(f"unknown multi-vector policy {multi!r}; expected mean, first or tokens")
    path = Path(path)
    map_report: dict[str, Any] | None = None
    if isinstance(name_map, (str, Path)):
        name_map, map_report = read_name_map(name_map, entity_labels)
    elif name_map is not None:
        map_report = {"pairs": len(name_map), "direction": "given"}
    if not path.is_file():
        raise DataFormatError(path, None, "file not found")
    try:
        fh = h5py.File(path, "r")
    except OSError as exc:
        raise DataFormatError(path, None, f"not a readable HDF5 file: {exc}") from exc
    entries: list[tuple[str, np.ndarray]] = []
    with fh:
        try:
            node = fh[group] if group else fh
        except KeyError:
            raise DataFormatError(path, None, f"no group {group!r} (top level: {', '.join(list(fh)[:10])})") from None
        if not isinstance(node, h5py.Group):
            raise DataFormatError(path, None, f"{group!r} is a dataset, not a group")
        members = {k: v for k, v in node.items() if isinstance(v, h5py.Dataset)}
        if layout == "auto":
            has_names = names_key is not None or any(k in members for k in _H5_NAME_KEYS)
            layout = "matrix" if (values_key is not None or has_names) else "per_entity"
        if layout == "matrix":
            nk = names_key or next((k for k in _H5_NAME_KEYS if k in members), None)
            vk = values_key or next((k for k in _H5_VALUE_KEYS if k in members), None)
            if vk is None:
                others = [k for k, v in members.items() if k != nk and v.ndim in (2, 3)]
                vk = others[0] if len(others) == 1 else None
            if nk is None or nk not in members or vk is None or vk not in members:
                raise DataFormatError(
                    path, None, f"matrix layout needs a names and a values dataset (names_key={nk!r}, "
                    f"values_key={vk!r}; datasets: {', '.join(members) or 'none'})"
                )
            names = _h5_strings(path, members[nk])
            values = _h5_float(path, vk, members[vk][()])
            if values.ndim not in (2, 3):
                raise DataFormatError(path, None, f"dataset {vk!r}: expected [M, d] or [M, k, d], got {list(values.shape)}")
            if values.shape[0] != len(names):
                raise DataFormatError(path, None, f"{len(names)} names in {nk!r} but {values.shape[0]} rows in {vk!r}")
            entries = [(name, values[i].reshape(-1, values.shape[-1])) for i, name in enumerate(names)]
        else:
            for key, ds in members.items():
                arr = _h5_float(path, key, ds[()])
                if arr.ndim == 1:
                    arr = arr[None, :]
                if arr.ndim != 2 or arr.shape[0] < 1:
                    raise DataFormatError(path, None, f"dataset {key!r}: expected [d] or [k, d] vectors, got {list(arr.shape)}")
                entries.append((key, arr))
            skipped = len(node) - len(members)
            if skipped:
                log.warning("%s: skipped %d sub-groups (not entity datasets)", path, skipped)
    if not entries:
        raise DataFormatError(path, None, "no feature entries found")
    dims = {arr.shape[-1] for _, arr in entries}
    if len(dims) != 1:
        first = {}
        for key, arr in entries:
            first.setdefault(arr.shape[-1], key)
        raise DataFormatError(path, None, f"entries have different dimensions: {', '.join(f'{d} ({k!r})' for d, k in first.items())}")
    dim = dims.pop()

    index = EntityNameIndex(entity_labels, name_map)
    n = len(entity_labels)
    chosen: dict[int, tuple[str, np.ndarray]] = {}
    unknown: list[str] = []
    duplicates: list[str] = []
    for key, arr in entries:
        i = index.lookup(key)
        if i is None:
            unknown.append(key)
        elif i in chosen:
            duplicates.append(key)
        else:
            chosen[i] = (key, arr)
    counts = [arr.shape[0] for _, arr in entries]
    width = max((arr.shape[0] for _, arr in chosen.values()), default=1)
    if multi == "tokens":
        values_t = torch.zeros((n, width, dim), dtype=torch.float32)
        token_mask = torch.zeros((n, width), dtype=torch.bool)
    else:
        values_t = torch.zeros((n, dim), dtype=torch.float32)
        token_mask = None
    present = torch.zeros(n, dtype=torch.bool)
    for i, (_key, arr) in chosen.items():
        x = torch.from_numpy(np.asarray(arr, dtype=np.float32))
        present[i] = True
        if multi == "tokens":
            values_t[i, : x.shape[0]] = x
            token_mask[i, : x.shape[0]] = True
        else:
            values_t[i] = x.mean(0) if multi == "mean" else x[0]
    if presence != "all":
        present &= presence_from_values(values_t, rule=presence, fill_vector=fill_vector, atol=atol)
    check = values_t if token_mask is None else values_t.masked_fill(~token_mask.unsqueeze(-1), 0.0)
    bad = ~torch.isfinite(check.reshape(n, -1)).all(dim=1) & present
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0, 0])
        raise DataFormatError(
            path, None, f"entry {chosen[i][0]!r} (entity {entity_labels[i]!r}) holds NaN or inf; "
            "use a presence rule (nonzero / not_equal_fill) to mark such entries missing"
        )
    report = {
        "layout": layout,
        "file_keys": len(entries),
        "matched": len(chosen),
        "missing_entities": int(n - len(chosen)),
        "unknown_keys": len(unknown),
        "unknown_examples": unknown[:5],
        "duplicate_keys": len(duplicates),
        "duplicate_examples": duplicates[:5],
        "vectors_per_entry": [min(counts), max(counts)],
        "dim": int(dim),
        "multi": multi,
        "name_map": map_report,
        "present": int(present.sum()),
    }
    if unknown:
        log.warning("%s: %d of %d keys are not dataset entities (e.g. %s)", path, len(unknown), len(entries),
                    ", ".join(unknown[:3]))
    options: dict[str, Any] = {"presence": presence, "alignment": report}
    if group:
        options["group"] = group
    return _table_or_error(path, values=values_t, modality=modality, present=present, token_mask=token_mask,
                           provenance=make_provenance(str(path), **options))
