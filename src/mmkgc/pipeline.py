"""From a validated config to a finished run directory, and back.

A run directory holds::

    config.yaml          the resolved config
    health.json/.md      the data-health report of the dataset
    metrics.jsonl        one line per epoch (loss, seconds, validation metrics)
    metrics.json         final metrics: selection split and test, every tie policy, per category
    training_curve.png   loss and validation metric per epoch
    checkpoints/last     the latest state (resume)
    checkpoints/best     the selected model

:func:`run_experiment` writes it; :func:`load_run` rebuilds the model from it for ``evaluate`` and ``predict``.

The module is callable: ``mmkgc.pipeline(config, **overrides)`` is :func:`mmkgc.api.pipeline`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mmkgc.config import ExperimentConfig, ModalityConfig, dump_config, load_config
from mmkgc.data.triples import TripleSet
from mmkgc.errors import ConfigError
from mmkgc.features.store import FeatureTable
from mmkgc.models.kge import EmbeddingRepresentation, KGEModel, ModalityInput, MultimodalRepresentation
from mmkgc.nn.scorers import build_scorer
from mmkgc.fileio import atomic_write_text as _atomic_write_text
from mmkgc.training.checkpoint import load_checkpoint
from mmkgc.evaluation.metrics import HEADLINE_METRICS


@dataclass
class LoadedData:
    """A dataset and, for the synthetic KG, its built-in modality tables (modality name -> pooled table)."""

    triples: TripleSet
    builtin_features: dict[str, FeatureTable]
    #: The modality inputs of the model once loaded (set by :func:`build_model`, or given by a saved model so
    #: nothing is read from a feature cache or re-encoded; see :mod:`mmkgc.saved_model`).
    model_features: list[FeatureTable] | None = None
    #: The config part ``model_features`` were built from (``None``: given, valid for any config).
    model_features_key: str | None = None


def load_data(cfg: ExperimentConfig) -> LoadedData:
    """Read the dataset a config names.

    :raises MMKGCError: unknown dataset, missing or malformed files (message names file and line).
    """
    ds = cfg.dataset
    if ds.synthetic is not None:
        from mmkgc.data.synthetic import make_synthetic_mmkg

        options = ds.synthetic.model_dump()
        try:
            syn = make_synthetic_mmkg(**options)
        except (ValueError, TypeError) as err:  # a value or combination of values the generator refuses
            raise ConfigError(f"dataset.synthetic: {err}") from None
        feats = {name: FeatureTable(values, name, syn.present[name], provenance={"synthetic": options})
                 for name, values in syn.features.items()}
        return LoadedData(syn.triples, feats)
    if ds.pykeen is not None:
        from mmkgc.interop.pykeen import load_pykeen_dataset

        return LoadedData(load_pykeen_dataset(ds.pykeen), {})
    from mmkgc.data.registry import resolve_dataset

    if ds.path is not None:
        if not ds.path.is_dir():
            raise ConfigError(f"dataset.path: {ds.path} is not a directory")
        split = ds.random_split
        return LoadedData(resolve_dataset(ds.path, format=ds.format, random_split=(
            (0.1, 0.1, 42) if split is None else (split.valid_fraction, split.test_fraction, split.seed))), {})
    return LoadedData(resolve_dataset(ds.name, data_dir=ds.data_dir, allow_unpinned=ds.allow_unpinned), {})


def _modality_features(m: ModalityConfig, data: LoadedData, progress: bool) -> FeatureTable:
    triples = data.triples
    if m.file is not None:
        from mmkgc.features.io import load_feature_table

        table = load_feature_table(m.file, num_entities=triples.num_entities, entity_labels=triples.entity_labels,
                                   modality=m.name)
        values, present = table.values, table.present
    elif m.encoder is not None:
        from mmkgc.features.cache import cached_text_features
        from mmkgc.features.text import build_text_encoder

        encoder = build_text_encoder(m.encoder)
        source: Any = "label"
        if m.text_source == "table":
            from mmkgc.features.entity_text import LabelTable

            if not m.table_path.is_file():
                raise ConfigError(f"model.modalities[{m.name}].table_path: {m.table_path} does not exist")
            source = LabelTable(m.table_path, m.table_key or "entity", m.table_column)
        table = cached_text_features(triples.name, triples.entity_labels, encoder, modality=m.name, source=source,
                                     progress=progress)
        values, present = table.values, table.present
    elif m.table is not None:
        from mmkgc.features.cache import load_named_table

        table = load_named_table(triples.name, m.table, num_entities=triples.num_entities)
        if table.is_tokens:
            if m.pool is None:
                raise ConfigError(
                    f"model.modalities[{m.name}].table: {m.table!r} is a token table {list(table.values.shape)}; "
                    "the concat representation takes pooled [N, d] features: set pool: mean (or first)"
                )
            table = table.pooled(m.pool)
        values, present = table.values, table.present
    elif m.name in data.builtin_features:
        table = data.builtin_features[m.name]
        values, present = table.values, table.present
    else:
        available = sorted(data.builtin_features) or "none built in"
        raise ConfigError(
            f"model.modalities[{m.name}]: no file or encoder given and the dataset has no built-in "
            f"{m.name!r} features (available: {available})"
        )
    values = torch.as_tensor(values, dtype=torch.float32)
    if values.ndim != 2:
        raise ConfigError(f"model.modalities[{m.name}]: expected pooled features [N, d], got {tuple(values.shape)}")
    if values.shape[0] != triples.num_entities:
        raise ConfigError(
            f"model.modalities[{m.name}]: feature table has {values.shape[0]} rows but {triples.name} has "
            f"{triples.num_entities} entities"
        )
    if m.dim is not None and values.shape[1] != m.dim:
        raise ConfigError(
            f"model.modalities[{m.name}].dim: the config declares {m.dim}-d features but the table has "
            f"{values.shape[1]} columns"
        )
    try:
        return FeatureTable(values, m.name, torch.as_tensor(present, dtype=torch.bool))
    except ValueError as err:
        raise ConfigError(f"model.modalities[{m.name}]: {err}") from None


def model_features(cfg: ExperimentConfig, data: LoadedData, progress: bool) -> list[FeatureTable]:
    """The modality inputs of a model: one per ``model.modalities`` entry, then ``model.enrichment``'s policy
    (generated descriptions as an extra modality or in place of the image/text one, methods.md §3.2).
    Computed once per :class:`LoadedData` and modality config, and kept in ``data.model_features`` (which a saved
    model fills in)."""
    key = json.dumps([[m.model_dump(mode="json") for m in cfg.model.modalities],
                      None if cfg.model.enrichment is None else cfg.model.enrichment.model_dump(mode="json")],
                     sort_keys=True)
    if data.model_features is not None and data.model_features_key in (None, key):
        return data.model_features
    feats = [_modality_features(m, data, progress) for m in cfg.model.modalities]
    if cfg.model.enrichment is not None:
        from mmkgc.features.enrich.policy import apply_enrichment

        feats = apply_enrichment(feats, cfg.model.modalities, cfg.model.enrichment, data.triples, progress=progress)
    data.model_features, data.model_features_key = feats, key
    return feats


def build_model(cfg: ExperimentConfig, data: LoadedData, progress: bool = False) -> KGEModel:
    """The model a config describes: scorer, entity representation (structure / concat / modality only / fused /
    R-GCN, or IMVIA), freshly initialised.  ``model.structure_init`` is applied by the training pipeline
    (:func:`init_structure`), not here, so rebuilding a trained run for ``evaluate`` or ``predict`` never needs the
    source model."""
    from mmkgc.builders import check_fusion_options, fill_policies

    mc = cfg.model
    check_fusion_options(cfg)
    torch.manual_seed(cfg.seed)
    triples = data.triples
    if mc.method == "imvia":  # per-modality MoE + TuckER decoders with decision fusion (methods.md section 4)
        from mmkgc.models.imvia import IMVIAModel

        feats = model_features(cfg, data, progress)
        return IMVIAModel(triples.num_entities, triples.num_relations, mc.dim, feats, mc.imvia,
                          missing=fill_policies(cfg))
    scorer = build_scorer(mc.scorer, mc.dim, **mc.scorer_options)
    if mc.representation == "fused":  # AdaMF / AdaMF-MAT / NativE / AFME (methods.md sections 5-7)
        from mmkgc.builders import build_fused_model

        return _with_unseen(cfg, data, build_fused_model(cfg, data, scorer, model_features(cfg, data, progress)))
    if mc.representation == "structure":
        rep = EmbeddingRepresentation(triples.num_entities, scorer.entity_dim, init=scorer.init_entity_,
                                      sparse=cfg.training.sparse)
    elif mc.representation == "rgcn":
        from mmkgc.builders import build_rgcn_representation

        feats = model_features(cfg, data, progress)
        # The encoder's parameters are drawn before the scorer's (VEMP's order: R-GCN, then the MLP decoder); a
        # scorer without parameters (DistMult, RotatE, ...) draws nothing, so only the first build's draws are undone.
        torch.manual_seed(cfg.seed)
        rep = build_rgcn_representation(mc.gnn, triples, scorer.entity_dim, feats, seed=cfg.seed)
        scorer = build_scorer(mc.scorer, mc.dim, **mc.scorer_options)
    else:
        feats = model_features(cfg, data, progress)
        rep = MultimodalRepresentation(
            triples.num_entities,
            scorer.entity_dim,
            feats,
            with_structure=mc.representation == "concat",
            init=scorer.init_entity_,
            dropout=mc.projection_dropout,
            missing=fill_policies(cfg),
        )
    return _with_unseen(cfg, data, KGEModel(triples.num_entities, triples.num_relations, scorer, rep,
                                            reciprocal=mc.reciprocal))


def structure_init_file(path: str | Path) -> Path:
    """The ``model.safetensors`` that ``model.structure_init`` names: the file itself, a checkpoint directory that
    holds it, or a run directory (its selected checkpoint, ``checkpoints/best``).

    :raises ConfigError: nothing of the three at ``path``.
    """
    path = Path(path)
    for candidate in (path, path / "model.safetensors", path / "checkpoints" / "best" / "model.safetensors"):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"model.structure_init: {path}: no model here (expected a run directory, a checkpoint "
                      "directory with model.safetensors, or the model.safetensors file)")


def structure_init_record(file: Path) -> dict[str, Any]:
    """What ``metrics.json`` records of a ``model.structure_init`` source file: ``{"file", "epoch",
    "training_seconds"}``, the checkpoint's epoch and the seconds its run trained (the run's ``metrics.json``, else
    the checkpoint's own record; ``None`` where neither can be read)."""
    info: dict[str, Any] = {"file": str(file), "epoch": None, "training_seconds": None}
    try:  # the checkpoint's epoch; the source run's training time (its metrics.json, else the checkpoint's record)
        state = json.loads((file.parent / "state.json").read_text(encoding="utf-8"))
        info["epoch"] = state.get("epoch")
        done = [h for h in state.get("history", []) if h.get("epoch") == info["epoch"]]
        info["training_seconds"] = done[-1].get("training_seconds") if done else None
    except (OSError, json.JSONDecodeError, AttributeError):
        pass
    try:
        run_metrics = json.loads((file.parent.parent.parent / "metrics.json").read_text(encoding="utf-8"))
        info["training_seconds"] = run_metrics["training"]["training_seconds"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        pass
    return info


def init_structure(model: KGEModel, path: str | Path, cfg: ExperimentConfig | None = None) -> dict[str, Any]:
    """Copy a trained structure-only model's entity table and relation table into ``model``'s structural table and
    relation table (``model.structure_init``; PyKEEN's ``PretrainedInitializer`` for the structural part).

    The source is a checkpoint of ``representation: structure`` (keys ``entities.embedding.weight [N, D]`` and
    ``relations.weight [R', d_r]``), read with safetensors (no pickle).  When the source run's ``config.yaml`` is
    found (two folders above a checkpoint's file), its scorer, ``dim``, ``reciprocal`` and representation must equal
    ``cfg``'s; the shapes must always match.  Every other parameter of ``model`` keeps its initialisation.

    :returns: ``{"file", "epoch", "training_seconds"}``: the file read, the checkpoint's epoch, and the seconds the
        source run trained (its ``metrics.json``; else the checkpoint's own record; ``None`` when neither is there).
    :raises ConfigError: no such model, not a structure-only model, another scorer / dim / reciprocity, or a model
        without a structural table; the message names ``model.structure_init`` and the file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    file = structure_init_file(path)
    where = f"model.structure_init: {file}"
    table = model.entities if isinstance(model.entities, EmbeddingRepresentation) else \
        getattr(model.entities, "structure", None)
    if not isinstance(table, EmbeddingRepresentation):
        raise ConfigError(f"{where}: this model's entity representation ({type(model.entities).__name__}) has no "
                          "structural table to initialise")
    source_cfg = file.parent.parent.parent / "config.yaml"
    if cfg is not None and source_cfg.is_file():
        try:
            src = load_config(source_cfg).model
        except ConfigError as err:
            raise ConfigError(f"{where}: the source run's config is invalid ({err})") from None
        mc = cfg.model
        for field, mine, theirs in (("representation", "structure", src.representation), ("scorer", mc.scorer, src.scorer),
                                    ("dim", mc.dim, src.dim), ("reciprocal", mc.reciprocal, src.reciprocal)):
            if mine != theirs:
                raise ConfigError(f"{where}: the source run has model.{field} {theirs!r}, this run needs {mine!r} "
                                  f"(the source must be a structure-only model with the same scorer, dim and "
                                  f"reciprocal; its config: {source_cfg})")
    try:
        tensors = load_file(str(file))
    except (SafetensorError, OSError) as err:
        raise ConfigError(f"{where}: unreadable ({err})") from None
    pairs = (("entities.embedding.weight", table.embedding.weight), ("relations.weight", model.relations.weight))
    for key, target in pairs:
        if key not in tensors:
            raise ConfigError(f"{where}: not a structure-only model (no {key!r}; it holds "
                              f"{', '.join(sorted(tensors)[:6])}{' ...' if len(tensors) > 6 else ''})")
        if tuple(tensors[key].shape) != tuple(target.shape):
            raise ConfigError(f"{where}: {key} is {list(tensors[key].shape)}, this model's is {list(target.shape)} "
                              "(same dataset, scorer, dim and reciprocal needed)")
    with torch.no_grad():
        for key, target in pairs:
            target.copy_(tensors[key].to(target.dtype))
    return structure_init_record(file)


def _with_unseen(cfg: ExperimentConfig, data: LoadedData, model: KGEModel) -> KGEModel:
    """Attach ``model.unseen`` (modality substitutes for entities without training triples) to a built model."""
    options = cfg.model.unseen
    if options.mode == "none":
        return model
    from mmkgc.evaluation.metrics import seen_in_training
    from mmkgc.models.inductive import attach_modality_structure, training_degree

    try:
        attach_modality_structure(model.entities, seen_in_training(data.triples), share=options.share,
                                  dropout=options.dropout, align_weight=options.align_weight, seed=cfg.seed,
                                  projection=options.projection, sparsest=options.sparsest,
                                  degree=training_degree(data.triples.train, data.triples.num_entities))
    except ValueError as err:
        raise ConfigError(f"model.unseen: {err}") from None
    return model


def run_fingerprint(cfg: ExperimentConfig, model: KGEModel) -> dict[str, Any]:
    """What must not change between a checkpoint and the run resuming it: data, model, seed, feature tables."""
    # Options added after runs existed (``model.unseen``, ``model.structure_init``, ``dataset.pykeen``,
    # ``dataset.random_split``) are not part
    # of the hash while they are at their defaults, so a run started before an option existed still resumes with the
    # newer code.
    model_exclude = ({"unseen"} if cfg.model.unseen.mode == "none" else set()) | \
        ({"structure_init"} if cfg.model.structure_init is None else set())
    model_part = cfg.model.model_dump(mode="json", exclude=model_exclude or None)
    if "unseen" in model_part and cfg.model.unseen.sparsest == 1.0:  # added later: hashed only when set
        model_part["unseen"].pop("sparsest", None)
    if model_part.get("imvia") and model_part["imvia"].get("align_head") == "per_branch":  # added later, default
        model_part["imvia"].pop("align_head")
    new_at_default = {k for k in ("pykeen", "random_split") if getattr(cfg.dataset, k) is None}
    dataset_part = cfg.dataset.model_dump(mode="json", exclude=new_at_default or None)
    payload = json.dumps({"dataset": dataset_part, "model": model_part, "seed": cfg.seed}, sort_keys=True)
    features = {}
    if isinstance(model.entities, MultimodalRepresentation):
        features = {m.name: m.fingerprint for m in model.entities.inputs}
    elif cfg.model.representation == "fused":  # tables as loaded (trainable ones before fine-tuning)
        features = {m.name: m.fingerprint for m in model.entities.inputs}
    elif cfg.model.method == "imvia":  # projected modality tables of the IMVIA branches
        features = {m.name: m.fingerprint for m in model.modules() if isinstance(m, ModalityInput)}
    return {"config": hashlib.sha256(payload.encode()).hexdigest()[:16], "features": features}


def check_device(name: str | None) -> None:
    """Refuse a device name torch does not know, or one this machine / torch build cannot use.

    :raises ConfigError: e.g. ``--device gpu``, ``--device cuda`` on a CPU-only torch, ``cuda:3`` with 2 GPUs.
    """
    if name in (None, "auto"):
        return
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device {name!r}: not a device name (use cpu, cuda, cuda:N, mps or auto)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ConfigError(f"--device {name}: {build} (torch {torch.__version__}); use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) "
                              f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"--device {name}: MPS is not available on this machine; use --device cpu or auto")
    elif dev.type != "cpu":
        raise ConfigError(f"--device {name}: unsupported device type {dev.type!r} (use cpu, cuda, cuda:N, mps or auto)")


def resolve_device(name: str | None) -> torch.device:
    """The one device helper of the top layer: ``name`` checked (:func:`check_device`), then ``auto`` / ``None``
    resolved to ``cuda:LOCAL_RANK`` where CUDA is available, else the CPU (:func:`mmkgc.distributed.device_for_rank`).

    :raises ConfigError: see :func:`check_device`.
    """
    from mmkgc.distributed import device_for_rank

    check_device(name)
    return device_for_rank(name)


# ------------------------------------------------------------------------------------------------ run directories
#: Written first into every run directory mmkgc creates; a non-empty directory without it is not ours to write.
RUN_MARKER = ".mmkgc-run"
#: Held (``flock``) by the process training into the directory.
LOCK_FILE = ".lock"
#: What ``run_experiment`` (and the model diagnostics) write into a run directory; the only names it replaces.
RUN_FILES = frozenset({RUN_MARKER, LOCK_FILE, "config.yaml", "health.json", "health.md", "metrics.jsonl",
                       "metrics.json", "training_curve.png", "checkpoints", "modality_weights_entities.csv",
                       "modality_weights_relations.csv", "modality_weights.png", "modality_diagnostics.json",
                       "imvia_decoders.json", "tensorboard", "wandb"})


def has_checkpoint(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a ``last`` checkpoint to resume from."""
    last = Path(run_dir) / "checkpoints" / "last"
    return last.exists() or last.with_name("last.old").exists()


def _is_run_file(name: str) -> bool:
    # the files above and the temporaries of their atomic writes (".<name>.<random>.tmp")
    return name in RUN_FILES or (name.startswith(".") and name.endswith(".tmp")
                                 and name[1:].split(".", 1)[0] in {n.split(".")[0] for n in RUN_FILES} - {""})


def check_run_dir(run_dir: str | Path, resume: bool) -> None:
    """Refuse a run directory that training would damage.

    Without ``resume`` the directory must be new, empty, or a run directory of mmkgc (marker file) that stopped
    before its first checkpoint and holds only files mmkgc writes; with ``resume`` it must hold a checkpoint.

    :raises ConfigError: naming the directory and what is wrong.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: the run directory is a file")
    if resume:
        if not has_checkpoint(run_dir):
            raise ConfigError(f"{run_dir}: --resume: no checkpoint to resume from (no checkpoints/last); "
                              "run without --resume to start training")
        return
    entries = sorted(p.name for p in run_dir.iterdir()) if run_dir.is_dir() else []
    if not entries:
        return
    if has_checkpoint(run_dir) or (run_dir / "metrics.json").exists():
        raise ConfigError(f"{run_dir}: the run directory already holds a run; pass --resume to continue it or "
                          "choose another --run-dir")
    if RUN_MARKER not in entries:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise ConfigError(f"{run_dir}: the run directory is not empty and is not an mmkgc run directory "
                          f"(holds {shown}); choose a new or empty --run-dir")
    foreign = [name for name in entries if not _is_run_file(name)]
    if foreign:
        raise ConfigError(f"{run_dir}: the run directory holds files mmkgc did not write ({', '.join(foreign[:5])}); "
                          "choose a new or empty --run-dir")


def clear_run_dir(run_dir: str | Path) -> None:
    """Remove a previous run from ``run_dir`` so a new one can start there (``mmkgc demo`` re-runs): only the
    files mmkgc writes, only in a directory marked as an mmkgc run, and only when it holds nothing else.

    :raises ConfigError: the directory is not an mmkgc run directory or holds other files (nothing is removed).
    """
    import shutil

    run_dir = Path(run_dir)
    if not run_dir.exists():
        return
    entries = sorted(p.name for p in run_dir.iterdir()) if run_dir.is_dir() else [run_dir.name]
    foreign = [name for name in entries if not _is_run_file(name)]
    if not run_dir.is_dir() or (entries and RUN_MARKER not in entries) or foreign:
        shown = ", ".join((foreign or entries)[:5])
        raise ConfigError(f"{run_dir}: exists and is not an mmkgc run directory holding only mmkgc's files "
                          f"({shown}); nothing was removed: choose another output location")
    with RunLock(run_dir):
        for name in entries:
            path = run_dir / name
            if name in (LOCK_FILE, RUN_MARKER):
                continue
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()


class RunLock:
    """An exclusive, non-blocking ``flock`` on ``run_dir/.lock`` for the duration of a run (released on exit,
    also when the process dies).  A no-op where ``fcntl`` does not exist.

    :raises ConfigError: another process holds the lock (its pid is named).
    """

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK_FILE
        self._fh = None

    def __enter__(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return self
        fh = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            owner = fh.read().strip() or "unknown"
            fh.close()
            raise ConfigError(f"{self.path.parent}: the run directory is in use by another mmkgc process "
                              f"(pid {owner}); wait for it or choose another --run-dir") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self._fh.close()  # closing releases the lock
            self._fh = None


def _prepare_log(run_dir: Path, resume: bool) -> None:
    """Make ``metrics.jsonl`` agree with the checkpoint training continues from: a fresh run starts it empty; a
    resume drops the lines of epochs after the checkpoint (written before a kill interrupted the checkpoint), so
    no epoch appears twice.  Also removes temporaries that a killed checkpoint write left behind."""
    from mmkgc.training.checkpoint import read_checkpoint_state, remove_orphan_temporaries

    remove_orphan_temporaries(run_dir / "checkpoints")
    for path in run_dir.iterdir():  # ".<file>.<random>.tmp" of an atomic write that a kill interrupted
        if path.is_file() and path.name.endswith(".tmp") and path.name not in RUN_FILES and _is_run_file(path.name):
            path.unlink()
    log = run_dir / "metrics.jsonl"
    if not log.exists():
        return
    if not resume:
        log.unlink()
        return
    saved = int(read_checkpoint_state(run_dir / "checkpoints" / "last").get("epoch", 0))
    kept = []
    for line in log.read_text(encoding="utf-8").splitlines():
        try:
            if int(json.loads(line).get("epoch", 0)) <= saved:
                kept.append(line)
        except (ValueError, AttributeError):  # a torn last line
            continue
    _atomic_write_text(log, "".join(f"{line}\n" for line in kept))


def run_experiment(
    cfg: ExperimentConfig,
    run_dir: str | Path,
    resume: bool = False,
    progress: bool = False,
    device: str | None = "auto",
    log: Callable[[str], None] = print,
    trackers: list[Any] | None = None,
) -> dict[str, Any]:
    """Train, select on the validation split, test, and write the run directory: :func:`run_pipeline` with a run
    directory, returning only the content of ``metrics.json``."""
    return run_pipeline(cfg, run_dir, resume=resume, progress=progress, device=device, log=log, trackers=trackers)[0]


def run_pipeline(
    cfg: ExperimentConfig,
    run_dir: str | Path | None,
    resume: bool = False,
    progress: bool = False,
    device: str | None = "auto",
    log: Callable[[str], None] = print,
    data: LoadedData | None = None,
    trackers: list[Any] | None = None,
) -> tuple[dict[str, Any], KGEModel, LoadedData]:
    """Train, select on the validation split, test, and write the run directory (none with ``run_dir=None``:
    an in-memory run that writes no file, for notebooks; :func:`mmkgc.api.pipeline`; it also skips the
    method diagnostics files, so its metrics have no ``diagnostics`` block).

    Each epoch's record goes to ``metrics.jsonl``, to the trackers the config names (``tracking.trackers``) and
    to ``trackers`` (:class:`~mmkgc.training.tracking.ResultTracker` objects, e.g. the tuner's pruning hook).

    Under ``torchrun`` (an initialised process group, see :mod:`mmkgc.distributed`) every rank calls this: training
    runs with DDP, evaluation is sharded, and only rank 0 logs and writes files.

    The run directory is checked first (:func:`check_run_dir`: never another program's or person's files, a
    resume needs a checkpoint), the device and the dataset next, and only then is anything written; rank 0
    holds :class:`RunLock` for the whole run.

    :param data: the dataset, when the caller has loaded it already (else :func:`load_data`).
    :param trackers: extra :class:`~mmkgc.training.tracking.ResultTracker` objects, after the run directory's
        ``metrics.jsonl`` and the config's ``tracking.trackers``; an in-memory run logs to these and to the
        config's trackers only.
    :returns: ``(metrics, model, data)``: the content of ``metrics.json``, the selected model (eval mode) and the
        dataset with the model's modality inputs (``data.model_features``).
    :raises ConfigError: ``resume`` without a run directory, a run directory that is not free (see
        :func:`check_run_dir`) or in use by another process, a device that does not exist, and the config errors
        of :func:`load_data` / :func:`build_model`.
    :raises TrainingInterrupted: Ctrl-C or SIGTERM during training (the last checkpoint is kept).
    """
    from mmkgc.distributed import barrier, is_main_process

    if run_dir is None:
        if resume:
            raise ConfigError("resume: an in-memory run (no run directory) has no checkpoint to resume from")
        resolve_device(device)
        data = data if data is not None else load_data(cfg)
        main = is_main_process()
        trackers = _config_trackers(cfg) + list(trackers or []) if main else []
        return _run_tracked(cfg, data, None, False, progress, device, log, main, trackers)
    run_dir = Path(run_dir)
    check_run_dir(run_dir, resume)
    resolve_device(device)  # a bad --device fails before anything is written
    data = data if data is not None else load_data(cfg)  # as does a dataset that cannot be read
    main = is_main_process()
    trackers = _config_trackers(cfg) + list(trackers or []) if main else []  # as does a missing tracker package
    lock = contextlib.nullcontext()
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / RUN_MARKER).touch()  # the directory is new, empty or ours (checked above)
        lock = RunLock(run_dir)
    with lock:
        if main:
            check_run_dir(run_dir, resume)  # again under the lock: another process may have finished a run here
            _prepare_log(run_dir, resume)
        barrier()  # every rank has checked the run directory before rank 0 writes into it
        return _run_tracked(cfg, data, run_dir, resume, progress, device, log, main, trackers)


def _config_trackers(cfg: ExperimentConfig) -> list[Any]:
    """The trackers ``tracking.trackers`` names (their packages imported now, before anything is written).

    :raises MissingExtraError: a tracker's package is not installed (``pip install "mmkgc[trackers]"``).
    """
    from mmkgc.training.tracking import build_trackers

    tc = cfg.tracking
    return build_trackers(list(tc.trackers), project=tc.project or cfg.name,
                          mlflow_tracking_uri=tc.mlflow_tracking_uri, wandb_mode=tc.wandb_mode)


def _run_tracked(cfg: ExperimentConfig, data: LoadedData, run_dir: Path | None, resume: bool, progress: bool,
                 device: str | None, log: Callable[[str], None], main: bool, extra: list[Any]
                 ) -> tuple[dict[str, Any], KGEModel, LoadedData]:
    """:func:`_run_locked` between the trackers' ``start_run``/``log_params`` and ``end_run`` (rank 0 only): the
    run directory's :class:`~mmkgc.training.tracking.FileTracker` first (none for an in-memory run), then
    ``extra``."""
    from mmkgc.training.tracking import FileTracker, flatten

    files = [FileTracker(run_dir)] if main and run_dir is not None else []
    others = list(extra) if main else []
    trackers = files + others
    for tracker in trackers:
        tracker.start_run(cfg.name, run_dir)
        tracker.log_params(flatten(cfg.model_dump(mode="json", exclude={"tune"}), sep="."))
    status = "failed"
    try:
        out = _run_locked(cfg, data, run_dir, resume, progress, device, log, main, trackers)
        metrics = out[0]
        final = {split: values[cfg.evaluation.tie_policy] for split, values in metrics.get("summary", {}).items()
                 if cfg.evaluation.tie_policy in values}
        for tracker in others:  # the selected model's valid and test metrics (metrics.json has them already)
            tracker.log_metrics({"final": final}, step=int(metrics["training"]["epochs"]))
        status = "finished"
        return out
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        for tracker in trackers:
            tracker.end_run(status)


def _run_locked(cfg: ExperimentConfig, data: LoadedData, run_dir: Path | None, resume: bool, progress: bool,
                device: str | None, log: Callable[[str], None], main: bool, trackers: list[Any] | None = None
                ) -> tuple[dict[str, Any], KGEModel, LoadedData]:
    from mmkgc.data.health import health_report
    from mmkgc.evaluation.metrics import evaluate
    from mmkgc.plotting import plot_training_curve
    from mmkgc.training.trainer import Trainer, evaluation_policies

    if not main:
        log, progress = (lambda line: None), False

    writes = main and run_dir is not None  # an in-memory run (run_dir None) writes nothing
    files = run_dir if run_dir is not None else Path(".")
    if cfg.model.structure_init is not None and not (resume and run_dir is not None and has_checkpoint(run_dir)):
        structure_init_file(cfg.model.structure_init)  # a missing source is refused before anything is written

    def atomic_write_text(path: Path, text: str) -> None:
        if writes:
            _atomic_write_text(path, text)

    atomic_write_text(files / "config.yaml", dump_config(cfg))

    triples = data.triples
    report = health_report(triples, cfg.evaluation.split, cfg.evaluation.protocol)
    atomic_write_text(files / "health.json", json.dumps(report.to_dict(), indent=2))
    atomic_write_text(files / "health.md", report.to_markdown())
    for warning in getattr(report, "warnings", []):
        log(f"data health: {warning}")

    dev = resolve_device(device)
    # feature encoding reports progress on rank 0 also when output is not a terminal (lines every 30 s)
    model = build_model(cfg, data, progress=progress or main)
    structure_init = None
    if cfg.model.structure_init is not None:
        if resume and run_dir is not None and has_checkpoint(run_dir):  # the checkpoint has the weights
            try:
                structure_init = structure_init_record(structure_init_file(cfg.model.structure_init))
            except ConfigError:  # the source may be gone by now: it is not needed to resume
                structure_init = {"file": str(cfg.model.structure_init), "epoch": None, "training_seconds": None}
        else:
            structure_init = init_structure(model, cfg.model.structure_init, cfg)
            log(f"structural table and relations initialised from {structure_init['file']}"
                + (f" (epoch {structure_init['epoch']}, {structure_init['training_seconds']:.0f} s of training)"
                   if structure_init["training_seconds"] is not None else ""))
    sampled = protocol_evaluator(cfg, model, triples)
    trainer = Trainer(model, triples, cfg.training, cfg.evaluation, seed=cfg.seed, run_dir=run_dir,
                      fingerprint=run_fingerprint(cfg, model), device=dev, progress=progress, log=log,
                      trackers=trackers,
                      validate_fn=None if sampled is None else (lambda: sampled.evaluate(cfg.evaluation.split)))
    summary = trainer.train(resume=resume)

    model.eval()
    diagnostics = model.write_diagnostics(run_dir, triples) if writes else {}
    metrics: dict[str, Any] = {
        "name": cfg.name,
        "dataset": triples.summary(),
        "training": {
            "epochs": summary.epochs_completed,
            "stopped_because": summary.stopped_because,
            "best_epoch": summary.best_epoch,
            "best_valid_metric": summary.best_metric,
            "selection": f"{cfg.evaluation.split} {cfg.evaluation.metric} ({cfg.evaluation.tie_policy})",
            "training_seconds": summary.training_seconds,
        },
    }
    if structure_init is not None:
        # the source model's training time is not in training_seconds: a warm start's total is the sum
        metrics["training"]["structure_init"] = structure_init
    score_fn = model.score_fn()
    policies = evaluation_policies(cfg.evaluation)
    def final(split: str) -> Any:
        if sampled is not None:
            return sampled.evaluate(split)
        return evaluate(score_fn, triples, split=split, batch_size=cfg.evaluation.batch_size,
                        sampled_candidates=cfg.evaluation.sampled_candidates, policies=policies, seed=cfg.seed)

    if triples.split(cfg.evaluation.split).shape[0] > 0:
        result = final(cfg.evaluation.split)
        metrics["valid"] = result.to_dict()
        metrics["summary"] = {"valid": headline(result)}
    if cfg.evaluation.test and triples.test.shape[0] > 0:
        t0 = time.perf_counter()
        result = final("test")
        metrics["test"] = result.to_dict()
        metrics["test_seconds"] = time.perf_counter() - t0
        metrics.setdefault("summary", {})["test"] = headline(result)
        metrics["summary"]["test_by_seen"] = seen_headline(result)
        log(result.to_markdown())
    if sampled is not None:
        metrics["protocol"] = sampled_protocol_summary(cfg, sampled)
    if diagnostics:
        metrics["diagnostics"] = diagnostics
    if writes:
        from mmkgc.extras import MissingExtraError

        test_summary = metrics.get("summary", {}).get("test", {}).get(cfg.evaluation.tie_policy)
        try:
            plot_training_curve(summary.history, run_dir / "training_curve.png", metric=cfg.evaluation.metric,
                                name=cfg.name, selected_epoch=summary.best_epoch, test=test_summary,
                                selection=metrics["training"]["selection"])
        except MissingExtraError as err:  # the light install: everything but the picture
            log(f"training_curve.png not written: {err}")
    if cfg.evaluation.report == "legacy_best_test_per_metric":
        # The MoMoK/IMVIA reporting: each metric's best *test* value over the validation epochs, separately.
        metrics["legacy_best_test_per_metric"] = {
            "warning": "selected on the test set, each metric at its own epoch; not comparable with 'test'",
            "tie_policy": cfg.evaluation.tie_policy,
            "metrics": trainer.legacy_best_test,
        }
        log("WARNING: evaluation.report legacy_best_test_per_metric reports, for each metric separately, its best "
            "TEST value over epochs (it selects on the test set); use the 'test' block for honest numbers")
    atomic_write_text(files / "metrics.json", json.dumps(metrics, indent=2))
    return metrics, model, data


def protocol_evaluator(cfg: ExperimentConfig, model: KGEModel, triples: TripleSet) -> Any:
    """The evaluator of ``evaluation.protocol`` when it is not the filtered all-entity one: for ``vemp_sampled`` a
    :class:`~mmkgc.models.vemp.SampledLinkEvaluator` (queries and legacy negatives drawn now, from the seed);
    ``None`` for ``filtered``."""
    ec = cfg.evaluation
    if ec.protocol != "vemp_sampled":
        return None
    from mmkgc.evaluation.sampled import VempSampledProtocol
    from mmkgc.models.vemp import SampledLinkEvaluator
    from mmkgc.training.trainer import evaluation_policies

    protocol = VempSampledProtocol(triples, ec.sampled_candidates or 100, seed=cfg.seed, max_queries=ec.max_queries)
    return SampledLinkEvaluator(model, triples, protocol, evaluation_policies(ec))


def sampled_protocol_summary(cfg: ExperimentConfig, sampled: Any) -> dict[str, Any]:
    """The ``protocol`` block of a ``vemp_sampled`` run's ``metrics.json``: what was ranked, and with
    ``evaluation.vemp_legacy`` the selected model's metrics under the public code's protocol (``legacy``)."""
    p = sampled.protocol
    out: dict[str, Any] = {"name": "vemp_sampled", "sides": "tail", "num_candidates": p.num_candidates,
                           "queries": {split: int(q.shape[0]) for split, q in p.queries.items()},
                           "message_graph": {"valid": "train", "test": "train + valid"}}
    if cfg.evaluation.vemp_legacy:
        out["legacy"] = {split: headline(sampled.evaluate(split, legacy=True)) for split in ("valid", "test")
                         if p.queries[split].shape[0] > 0}
    return out


def headline(result: Any) -> dict[str, dict[str, float]]:
    """Head-and-tail averaged metrics per tie policy: ``{policy: {"mrr": ..., "hits@10": ...}}``."""
    return {policy: {m: result.get(m, side=result.default_side, policy=policy) for m in HEADLINE_METRICS}
            for policy in result.policies}


def seen_headline(result: Any) -> dict[str, dict[str, float]]:
    """Primary-policy, head-and-tail averaged metrics of the queries whose entities all occur in training
    (``seen``) and of the others (``unseen``), with their task counts: ``{group: {"count": ..., "mrr": ...}}``."""
    return {group: {m: result.get(m, side=result.default_side, seen=group) for m in ("count", *HEADLINE_METRICS)}
            for group in result.by_seen}


def load_run(run_dir: str | Path, device: str | None = "auto", which: str = "best") -> tuple[ExperimentConfig, LoadedData, KGEModel]:
    """Rebuild the model of a finished (or interrupted) run and load its ``best`` (or ``last``) weights.

    :raises MMKGCError: no config in the directory, the checkpoint is missing, corrupt or mismatched, or a
        modality feature table changed since training (its fingerprint differs from the one the run recorded).
    """
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise ConfigError(f"{run_dir}: not a run directory (no config.yaml)")
    cfg = load_config(cfg_path)
    data = load_data(cfg)
    model = build_model(cfg, data)
    ckpt = run_dir / "checkpoints" / which
    if which == "best" and not (ckpt.exists() or ckpt.with_name("best.old").exists()):
        ckpt = run_dir / "checkpoints" / "last"
    dev = resolve_device(device)
    from mmkgc.errors import CheckpointError
    from mmkgc.training.checkpoint import read_checkpoint_state

    saved = read_checkpoint_state(ckpt).get("fingerprint")
    now = run_fingerprint(cfg, model)
    if saved is not None and saved.get("features", {}) != now["features"]:
        changed = sorted(name for name in set(saved.get("features", {})) | set(now["features"])
                         if saved.get("features", {}).get(name) != now["features"].get(name))
        raise CheckpointError(
            f"{run_dir}: the feature table(s) {', '.join(changed)} changed since this run was trained (fingerprints "
            "differ); the model would be evaluated on other inputs than it learned from. Restore the tables or "
            "train a new run")
    load_checkpoint(ckpt, model)
    model.to(dev).eval()
    return cfg, data, model


def predict(model: KGEModel, triples: TripleSet, head: str | None, relation: str, tail: str | None = None,
            top_k: int = 10, filtered: bool = True) -> list[tuple[str, float, bool]]:
    """Top-k answers of ``(head, relation, ?)`` or ``(?, relation, tail)`` by label.

    :param filtered: drop answers already known in train/valid/test (marked ``True`` in the third field when kept).
    :returns: ``(entity label, score, known)`` best first.
    :raises ConfigError: unknown labels (the message suggests close matches), a label several entities (or
        relations) share (the message lists their ids), or neither/both of head and tail.
    """
    from mmkgc.data.labels import resolve_label

    if (head is None) == (tail is None):
        raise ConfigError("give exactly one of --head and --tail")

    def lookup(label: str, mapping: dict[str, int], what: str) -> int:
        labels = triples.entity_labels if what == "entity" else triples.relation_labels
        return resolve_label(label, labels, mapping, what)

    r = lookup(relation, triples.relation_to_id, "relation")
    side = "tail" if head is not None else "head"
    e = lookup(head if head is not None else tail, triples.entity_to_id, "entity")
    query = torch.tensor([[e, r, 0]] if side == "tail" else [[0, r, e]])
    scores = model.score_fn()(query, side)[0].cpu()
    rows, known_ids = triples.filter_index.known(query, side)
    known = torch.zeros_like(scores, dtype=torch.bool)
    known[known_ids] = True
    if filtered:
        scores = scores.masked_fill(known, float("-inf"))
    k = min(top_k, int(torch.isfinite(scores).sum()))
    values, ids = torch.topk(scores, k)
    return [(triples.entity_labels[i], float(v), bool(known[i])) for v, i in zip(values.tolist(), ids.tolist())]


# ------------------------------------------------------------------------------------------------ mmkgc.pipeline(...)
class _CallablePipelineModule(type(contextlib)):
    """This module, callable: ``mmkgc.pipeline(config, **overrides)`` is :func:`mmkgc.api.pipeline` (the attribute
    ``mmkgc.pipeline`` is this module once it is imported, so the function is reached through it)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from mmkgc.api import pipeline as api_pipeline

        return api_pipeline(*args, **kwargs)


import sys as _sys  # noqa: E402

_sys.modules[__name__].__class__ = _CallablePipelineModule
