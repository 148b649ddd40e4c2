"""Checkpoints: model weights in safetensors, optimiser and RNG state via ``torch.save`` read back with
``weights_only=True``, and a JSON state file.  Written atomically: a checkpoint directory is either the old one or
the complete new one, never a mixture.

Layout of a checkpoint directory::

    model.safetensors      model.state_dict() (persistent parameters and buffers)
    training_state.pt      {"optimizer": ..., "rng": {...}, "auxiliary": {...}, "scheduler": ...}
                           (tensors, numbers, lists, dicts only)
    state.json             epoch, step, best metric, config fingerprint, feature fingerprints, mmkgc version
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mmkgc._version import __version__
from mmkgc.errors import CheckpointError
from mmkgc.fileio import atomic_write_text  # noqa: F401 - re-exported

MODEL_FILE = "model.safetensors"
TRAINING_FILE = "training_state.pt"
STATE_FILE = "state.json"


def save_checkpoint(
    directory: str | Path,
    model: torch.nn.Module,
    state: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
    rng: dict[str, torch.Tensor] | None = None,
    auxiliary: dict[str, Any] | None = None,
    scheduler: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint directory atomically (write a sibling temp dir, then swap it in).

    :param state: JSON-serialisable training state (epoch, step, metrics, fingerprints).
    :param rng: named RNG states (``torch.Generator.get_state()`` byte tensors).
    :param auxiliary: state dicts of auxiliary optimisation steps (:mod:`mmkgc.training.steps`) by step name.
    :param scheduler: the learning-rate scheduler's ``state_dict()`` (numbers and lists), when the run has one.
    :returns: the checkpoint directory.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(tensors, str(tmp / MODEL_FILE))
        torch.save(
            {"optimizer": optimizer.state_dict() if optimizer is not None else None, "rng": rng or {},
             "auxiliary": auxiliary or {}, "scheduler": scheduler},
            tmp / TRAINING_FILE,
        )
        payload = dict(state, mmkgc_version=__version__)
        (tmp / STATE_FILE).write_text(json.dumps(payload, indent=2, sort_keys=True), encoding="utf-8")
        old = directory.with_name(directory.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        if directory.exists():
            os.replace(directory, old)
        os.replace(tmp, directory)
        if old.exists():
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _resolve(directory: Path) -> Path:
    if (directory / STATE_FILE).is_file():
        return directory
    old = directory.with_name(directory.name + ".old")
    if (old / STATE_FILE).is_file():  # interrupted between the two renames of save_checkpoint
        return old
    raise CheckpointError(f"{directory}: no checkpoint here (missing {STATE_FILE})")


def read_checkpoint_state(directory: str | Path) -> dict[str, Any]:
    """The JSON state of a checkpoint.

    :raises CheckpointError: missing or unreadable.
    """
    directory = _resolve(Path(directory))
    try:
        return json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{directory / STATE_FILE}: unreadable checkpoint state ({err})") from None


def load_checkpoint(
    directory: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    map_location: str | torch.device = "cpu",
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Load weights (and optimiser state) into ``model`` (and ``optimizer``).

    :returns: ``(state, rng)`` as saved.
    :raises CheckpointError: missing files, corrupt files, or weights whose names or shapes do not match the model
        (the message lists the first differences).
    """
    directory = _resolve(Path(directory))
    state = read_checkpoint_state(directory)
    try:
        weights = load_file(str(directory / MODEL_FILE), device=str(map_location))
    except (OSError, SafetensorError, ValueError) as err:
        raise CheckpointError(f"{directory / MODEL_FILE}: corrupt or unreadable weights ({err})") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong = [
        f"{k}: checkpoint {tuple(weights[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in weights and weights[k].shape != expected[k].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}")
        if wrong:
            parts.append(f"shape mismatch {wrong[:5]}")
        raise CheckpointError(
            f"{directory / MODEL_FILE}: checkpoint does not match the model built from the config: " + "; ".join(parts)
        )
    model.load_state_dict(weights)
    rng: dict[str, torch.Tensor] = {}
    path = directory / TRAINING_FILE
    if path.is_file():
        try:
            extra = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unpickling failure means a corrupt or unsafe file
            raise CheckpointError(f"{path}: corrupt or unsafe training state ({type(err).__name__}: {err})") from None
        if optimizer is not None and extra.get("optimizer") is not None:
            try:
                optimizer.load_state_dict(extra["optimizer"])
            except (ValueError, KeyError) as err:
                raise CheckpointError(f"{path}: optimizer state does not match ({err})") from None
        rng = extra.get("rng") or {}
    elif optimizer is not None:
        raise CheckpointError(f"{path}: missing; cannot resume training without the optimizer state")
    return state, rng


def _training_extra(directory: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The content of ``training_state.pt`` (``{}`` when the checkpoint has none), loaded with ``weights_only``.

    :raises CheckpointError: the file is corrupt or unsafe.
    """
    path = _resolve(Path(directory)) / TRAINING_FILE
    if not path.is_file():
        return {}
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a corrupt or unsafe file
        raise CheckpointError(f"{path}: corrupt or unsafe training state ({type(err).__name__}: {err})") from None


def read_auxiliary_state(directory: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The auxiliary-step states saved with a checkpoint (``{}`` for checkpoints without any).

    :raises CheckpointError: the training state file is corrupt or unsafe.
    """
    return _training_extra(directory, map_location).get("auxiliary") or {}


def read_scheduler_state(directory: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    """The learning-rate scheduler's ``state_dict()`` saved with a checkpoint (``None``: the run had none).

    :raises CheckpointError: the training state file is corrupt or unsafe.
    """
    return _training_extra(directory, map_location).get("scheduler")


def remove_orphan_temporaries(checkpoints: str | Path) -> list[Path]:
    """Remove the temporary directories (``.<name>.tmp-*``) that a checkpoint write killed before its rename left
    in ``checkpoints``; a clean exit or exception never leaves one (see :func:`save_checkpoint`).

    :returns: the removed paths.
    """
    checkpoints = Path(checkpoints)
    if not checkpoints.is_dir():
        return []
    removed = [p for p in checkpoints.iterdir() if p.is_dir() and p.name.startswith(".") and ".tmp-" in p.name]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed
