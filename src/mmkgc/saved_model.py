"""Self-contained saved models: what scoring, evaluating and predicting need, without the dataset files, the
feature cache or an encoder.

A saved model is a directory::

    mmkgc_model.json      manifest: format version, mmkgc version, the resolved config, entity and relation
                          labels, split sizes, the content hash (fingerprint) of every modality table and the
                          sha256 of the two tensor files below
    model.safetensors     the weights (``state_dict``; the same file as a checkpoint's)
    state.json            the checkpoint state the weights come from (epoch, fingerprints)
    features.safetensors  the modality tables the model was trained with: ``<name>.values`` float32 ``[N, d]``
                          and ``<name>.present`` bool ``[N]`` (absent when saved with ``include_features=False``)
    triples.safetensors   ``train`` / ``valid`` / ``test`` int64 ``[n, 3]`` (h, r, t): what makes a triple known,
                          and the splits ``evaluate`` ranks

No pickle anywhere: tensors are safetensors, the rest JSON.  :func:`load_saved_model` verifies every hash; a
table that is absent or differs gives one :class:`~mmkgc.errors.CheckpointError` naming it.  Without stored
tables the model rebuilds them from its config (dataset, cache, encoder) and checks their fingerprints.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mmkgc._version import __version__
from mmkgc.config import ExperimentConfig, parse_config
from mmkgc.data.triples import SPLITS, FilterIndex, TripleSet
from mmkgc.errors import CheckpointError
from mmkgc.features.store import FeatureTable
from mmkgc.models.kge import KGEModel, feature_fingerprint

FORMAT = "mmkgc-saved-model"
FORMAT_VERSION = 1
MANIFEST = "mmkgc_model.json"
FEATURES_FILE = "features.safetensors"
TRIPLES_FILE = "triples.safetensors"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class TrainedModel:
    """A model with everything needed to use it: its config, the triples and labels of its dataset, the modality
    tables it was trained with, and the network (in eval mode).

    :param config: the resolved experiment config.
    :param triples: the dataset (``triples.entity_labels[i]`` names entity ``i``).
    :param module: the :class:`~mmkgc.models.kge.KGEModel` (or a subclass).
    :param features: the modality inputs of the model (``[]`` for a structure-only model).
    :param state: the checkpoint state of the weights (``epoch``, ``fingerprint``, ...).
    :param source: the run directory or saved-model directory it was loaded from (``None`` for a fresh run).
    """

    config: ExperimentConfig
    triples: TripleSet
    module: KGEModel
    features: list[FeatureTable] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None

    def __repr__(self) -> str:  # short: the dataclass repr would print every tensor and config field
        m, t = self.config.model, self.triples
        what = m.method if m.method != "kge" else f"{m.scorer} {m.representation}"
        feats = ", ".join(f.modality for f in self.features) or "none"
        return (f"TrainedModel({what}, dim {m.dim}, dataset {t.name!r}: {t.num_entities} entities, "
                f"{t.num_relations} relations; modalities: {feats}; source: {self.source})")

    @property
    def entity_labels(self) -> list[str]:
        return self.triples.entity_labels

    @property
    def relation_labels(self) -> list[str]:
        return self.triples.relation_labels

    def split_index(self, split: str) -> FilterIndex:
        """The known answers of one split (``train``, ``valid`` or ``test``), built once."""
        cache = self.__dict__.setdefault("_split_indexes", {})
        if split not in cache:
            cache[split] = FilterIndex(self.triples.split(split), self.triples.num_entities,
                                       self.triples.num_relations)
        return cache[split]

    def known_in(self, triples: torch.Tensor) -> list[list[str]]:
        """For each row of ``triples`` (int64 ``[n, 3]``, h r t), the splits that contain it (``[]``: unknown)."""
        rows = triples.to(torch.long).cpu()
        hits = {s: self.split_index(s).contains(rows).tolist() for s in SPLITS if self.triples.split(s).numel()}
        return [[s for s in hits if hits[s][i]] for i in range(rows.shape[0])]

    def save(self, directory: str | Path, include_features: bool = True) -> Path:
        """Write this model as a self-contained directory (see the module docstring).

        :param include_features: store the modality tables (default); without them only their fingerprints are
            stored and loading rebuilds the tables from the config (the dataset and cache must be there).
        :returns: the directory.
        :raises ConfigError: ``directory`` exists and is not empty (nothing is overwritten), or is a file.
        """
        return save_model(self, directory, include_features=include_features)


def save_model(model: TrainedModel, directory: str | Path, include_features: bool = True) -> Path:
    """Write ``model`` into ``directory`` atomically (a sibling temporary directory renamed into place): the
    directory is either absent or complete.  See :meth:`TrainedModel.save`."""
    from mmkgc.fileio import write_new_directory
    from mmkgc.training.checkpoint import MODEL_FILE, STATE_FILE

    def write(tmp: Path) -> None:
        module = model.module
        weights = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
        save_file(weights, str(tmp / MODEL_FILE))
        state = dict(model.state, mmkgc_version=__version__)
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
        t = model.triples
        save_file({s: t.split(s).contiguous() for s in SPLITS}, str(tmp / TRIPLES_FILE))
        from mmkgc.builders import fill_policies

        tables = []
        stored: dict[str, torch.Tensor] = {}
        fills = fill_policies(model.config)
        for f in model.features:
            values = torch.as_tensor(f.values, dtype=torch.float32).detach().cpu().contiguous()
            present = torch.as_tensor(f.present, dtype=torch.bool).detach().cpu().contiguous()
            tables.append({"name": f.modality, "missing": fills.get(f.modality, "learned"), "shape": list(values.shape),
                           "fingerprint": feature_fingerprint(values, present)})
            stored[f"{f.modality}.values"], stored[f"{f.modality}.present"] = values, present
        files = {"weights": {"file": MODEL_FILE, "sha256": _sha256(tmp / MODEL_FILE)},
                 "triples": {"file": TRIPLES_FILE, "sha256": _sha256(tmp / TRIPLES_FILE)}}
        if include_features and stored:
            save_file(stored, str(tmp / FEATURES_FILE))
            files["features"] = {"file": FEATURES_FILE, "sha256": _sha256(tmp / FEATURES_FILE)}
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "mmkgc_version": __version__,
            "config": model.config.model_dump(mode="json"),
            "dataset": {"name": t.name, "entities": t.num_entities, "relations": t.num_relations,
                        **{s: int(t.split(s).shape[0]) for s in SPLITS}},
            "entity_labels": list(t.entity_labels), "relation_labels": list(t.relation_labels),
            "features": tables, "features_included": bool(include_features and stored), "files": files,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")

    return write_new_directory(directory, write, what="saved model")


def is_saved_model(directory: str | Path) -> bool:
    """Whether ``directory`` holds a saved model (its manifest)."""
    return (Path(directory) / MANIFEST).is_file()


def _read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{directory}: not a saved model (no {MANIFEST})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: unreadable manifest ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an mmkgc saved-model manifest (format is not {FORMAT!r})")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: saved-model format version {manifest.get('format_version')!r}; this mmkgc "
                              f"{__version__} reads version {FORMAT_VERSION}")
    return manifest


def _checked_file(directory: Path, manifest: dict[str, Any], key: str) -> Path:
    """The file ``key`` (``weights``, ``triples``, ``features``) of a saved model, after checking its sha256.
    Its name is fixed by the format; a manifest naming another file (e.g. a path outside the directory) is refused."""
    from mmkgc.training.checkpoint import MODEL_FILE

    entry = manifest.get("files", {}).get(key)
    if not isinstance(entry, dict) or "sha256" not in entry:
        raise CheckpointError(f"{directory / MANIFEST}: names no {key} file")
    expected = {"weights": MODEL_FILE, "triples": TRIPLES_FILE, "features": FEATURES_FILE}[key]
    if entry.get("file") != expected:
        raise CheckpointError(f"{directory / MANIFEST}: the {key} file must be {expected!r}, got {entry.get('file')!r}")
    path = directory / expected
    if not path.is_file():
        raise CheckpointError(f"{path}: missing from the saved model")
    if _sha256(path) != entry["sha256"]:
        raise CheckpointError(f"{path}: content differs from the sha256 in {MANIFEST} (corrupt or replaced)")
    return path


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (OSError, SafetensorError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable tensors ({err})") from None


def _stored_features(directory: Path, manifest: dict[str, Any]) -> list[FeatureTable]:
    tables = manifest.get("features", [])
    if not tables:
        return []
    tensors = _load_tensors(_checked_file(directory, manifest, "features"))
    out = []
    for t in tables:
        name = t["name"]
        if f"{name}.values" not in tensors or f"{name}.present" not in tensors:
            raise CheckpointError(f"{directory / FEATURES_FILE}: the feature table {name!r} the model was trained "
                                  "with is missing")
        values, present = tensors[f"{name}.values"], tensors[f"{name}.present"]
        if feature_fingerprint(values, present) != t["fingerprint"]:
            raise CheckpointError(f"{directory / FEATURES_FILE}: the feature table {name!r} differs from the one the "
                                  f"model was trained with (fingerprint {feature_fingerprint(values, present)}, "
                                  f"expected {t['fingerprint']})")
        try:
            out.append(FeatureTable(values, name, present))
        except ValueError as err:
            raise CheckpointError(f"{directory / FEATURES_FILE}: {err}") from None
    return out


def _rebuilt_features(directory: Path, cfg: ExperimentConfig, manifest: dict[str, Any]) -> list[FeatureTable]:
    """The tables of a model saved without them, rebuilt from its config and checked against the fingerprints."""
    from mmkgc.errors import MMKGCError
    from mmkgc.pipeline import model_features, load_data

    tables = manifest["features"]
    try:
        feats = model_features(cfg, load_data(cfg), progress=False)
    except (MMKGCError, OSError) as err:
        raise CheckpointError(
            f"{directory}: the model was saved without its feature tables ({', '.join(t['name'] for t in tables)}) "
            f"and they cannot be rebuilt from its config here: {err}") from None
    now = {f.modality: feature_fingerprint(f.values, f.present) for f in feats}
    wrong = [t["name"] for t in tables if now.get(t["name"]) != t["fingerprint"]]
    if wrong:
        raise CheckpointError(
            f"{directory}: the feature table(s) {', '.join(wrong)} rebuilt from the config differ from the ones the "
            "model was trained with (fingerprints in the manifest); save the model with its tables "
            "(include_features=True) to use it elsewhere")
    return feats


def load_saved_model(directory: str | Path, device: str | None = "auto") -> TrainedModel:
    """Load a saved model directory (see the module docstring) onto ``device``, without its dataset files or the
    feature cache when its tables are stored.

    :raises CheckpointError: not a saved model, another format version, a file missing or whose sha256 differs
        from the manifest, a feature table absent or different (named), weights that do not fit the config.
    :raises ConfigError: the stored config is not valid for this version of mmkgc, a bad device.
    """
    from mmkgc.pipeline import LoadedData, build_model, resolve_device
    from mmkgc.training.checkpoint import load_checkpoint

    directory = Path(directory)
    manifest = _read_manifest(directory)
    cfg = parse_config(manifest["config"], source=f"{directory / MANIFEST}: config")
    splits = _load_tensors(_checked_file(directory, manifest, "triples"))
    try:
        triples = TripleSet(splits["train"], splits["valid"], splits["test"], manifest["entity_labels"],
                            manifest["relation_labels"], name=manifest["dataset"]["name"])
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{directory / TRIPLES_FILE}: triples do not fit the labels of the manifest ({err})") \
            from None
    if manifest.get("features") and not manifest.get("features_included"):
        feats = _rebuilt_features(directory, cfg, manifest)
    else:
        feats = _stored_features(directory, manifest)
    model = build_model(cfg, LoadedData(triples, {}, model_features=feats))
    _checked_file(directory, manifest, "weights")
    state, _ = load_checkpoint(directory, model)
    model.to(resolve_device(device)).eval()
    return TrainedModel(cfg, triples, model, feats, state=state, source=directory)
