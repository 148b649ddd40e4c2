"""IMVIA step parity: the official model's initial weights copied into mmkgc's, then one step compared term by term.

``benchmarks/parity.py --method imvia`` trains both sides from their own seeds; one official epoch at the only size
the official code accepts (dim = r_dim = 256) takes more than 10 CPU minutes, so that comparison needs a GPU.  This
script instead checks, on the CPU, that the two implementations compute the same function:

1. the **official** side runs in its own process (``--worker``) inside a scratch copy of the checkout (the user's
   ``--reference`` is never written to; the inputs are written there by ``parity.prepare_reference``): the
   official loader and ``ConvECorpus``, ``models/RelMoE.py`` ``RelMoE`` and ``models/modules.py`` ``MIEstimator``
   built as ``train.py`` builds them (its default arguments, the parity learning rate), on the CPU.  The worker
   saves the initial weights, the first ``--steps`` batches of ``ConvECorpus.get_batch`` (after one
   ``shuffle``), and what the model computes on them (below);
2. the **mmkgc** side builds the model ``parity.mmkgc_config("imvia", ...)`` describes, copies the official
   weights in (:data:`WEIGHT_MAP`, :func:`copy_official_weights`), converts each batch to mmkgc's 1-N inputs
   (:func:`official_batch_to_one_to_n`) and computes the same quantities; the training steps run through mmkgc's
   own ``Trainer`` step (``Trainer._epoch`` over one replayed batch: main Adam step, then the CLUB estimator step).

Compared (max abs / max rel difference each): per-branch probabilities (structure, image, text) of the first batch
in training mode, the decision-fused scores in eval mode (initial weights), the per-branch BCE terms, the three
pairwise alignment (InfoNCE) terms, the CLUB term, the total loss, the gradient of every mapped parameter, the
parameters after one Adam step, the estimator's loss, gradients and parameters after its step, then the losses of
``--steps`` steps of both training loops on the same batches and the parameters after them.

Randomness is made equal, not removed where it can be shared: the MoE gate noise ``eps`` of every MoE call is the
same tensor on both sides (drawn from a seeded generator keyed by step, branch and row count,
:func:`gate_noise`, and injected in place of ``torch.randn_like``); CLUB's expert pair and its three batch
permutations are fixed per step (:func:`club_draws`; injected in place of ``random.sample`` / ``torch.randperm``).
Dropout is disabled (``p = 0`` on every ``nn.Dropout`` of both models) while the models stay in training mode, so
batch norms use batch statistics as in training.

Four mmkgc variants (:data:`VARIANTS`) run against the same official record:

* ``exact``: parity.py's config (``align_temperature_parameterization: raw``, ``align_head: shared``): one
  alignment head for the three branches (the official single ``Conv2d(256, 256, 1) + BatchNorm2d(256)``); everything should agree to float32
  noise;
* ``per_branch_heads``: raw temperature, mmkgc's separate per-branch heads (initialised from the official head):
  parity.py's config as it is;
* ``log_temperature``: tied heads, mmkgc's default ``log tau`` parameterisation;
* ``parity_config``: per-branch heads and ``log tau``: parity.py's config before it set the raw temperature (the
  name is kept for the recorded reports).

The last three quantify the deliberate deviations.  Adam's first step moves every parameter by about ``lr sign(g)``,
so a gradient entry that is float32 noise (``|g|`` near Adam's ``eps``) can move by up to ``lr`` on one side only;
:func:`adam_sign_noise` lists such entries with their gradients, and :func:`exact_verdict` accepts them only when
the official gradient there is below ``1e-6``.

Usage (CPU; about 6 minutes on a 2-core machine shared with other jobs, at the published size, batch 1024)::

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/parity_imvia_step.py \\
        --reference /path/to/ICASSP2025_IMVIA_Code --data-dir ../shared/datasets \\
        --text-table db15k_name_text.safetensors --steps 5 \\
        --json docs/results/parity_imvia_step.json --json-key five_steps

``--json-key`` stores the report under that key of the file's JSON object (other keys kept); without it the file is
replaced.  ``--variants`` picks variants; ``--batch-size`` (default 1024) and ``--out`` (scratch directory).

Exit codes: 0 every exact-variant quantity within float32 noise (:data:`TOLERANCE`), 1 one is not, 2 bad input
(missing or wrong ``--reference``, missing files, bad numbers), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

HERE = Path(__file__).resolve().parent
#: the real draws (SharedRandomness replaces the torch attributes while active)
_RANDPERM, _RANDN = torch.randperm, torch.randn

#: the three mapped branches in mmkgc's order (``parity.mmkgc_config``: structure, then visual, then textual)
BRANCHES = ("structure", "visual", "textual")
#: official MoE / decoder / tables / estimator of each branch, in :data:`BRANCHES` order
OFFICIAL_BRANCH = {
    "structure": {"moe": "structure_moe", "tucker": "TuckER_S", "ent": "entity_embeddings",
                  "rel": "relation_embeddings", "est": "str_estimator"},
    "visual": {"moe": "visual_moe", "tucker": "TuckER_I", "ent": "img_entity_embeddings",
               "rel": "img_relation_embeddings", "est": "img_estimator"},
    "textual": {"moe": "text_moe", "tucker": "TuckER_D", "ent": "txt_entity_embeddings",
                "rel": "txt_relation_embeddings", "est": "txt_estimator"},
}
#: official parameters with no mmkgc counterpart, and why (RelMoE.py line numbers of kernelLZ/ICASSP2025_IMVIA_Code
#: a9308e6)
UNMAPPED_OFFICIAL = {
    "TuckER_MM": "the multi-modal decoder: its prediction is computed (RelMoE.py:374, 383) but left out of the loss "
                 "(RelMoE.py:420) and of the ensemble (data_loader.py:175), so it never trains or scores",
    "fuse_e": "fusion of the multi-modal branch (RelMoE.py:367, 379); feeds only TuckER_MM",
    "fuse_r": "fusion of the multi-modal branch's relations (RelMoE.py:368); feeds only TuckER_MM",
    "mm_moe": "never called (RelMoE.py:331)",
    "bias": "never used (RelMoE.py:350)",
}
#: max |difference| accepted as float32 noise, relative to max(1, |official|) of the quantity
TOLERANCE = 1e-4


#: mmkgc variants: (raw temperature, tied alignment heads); see the module docstring
VARIANTS = {"exact": (True, True), "per_branch_heads": (True, False), "log_temperature": (False, True),
            "parity_config": (False, False)}


class StepParityError(Exception):
    """A usage error (exit code 2); the message names the option or file."""


# ------------------------------------------------------------------------------------------ weight mapping
def weight_map(num_experts: int = 3) -> list[tuple[str, str, str]]:
    """``(official parameter/buffer, mmkgc state-dict key, transform)`` for every mapped entry.

    ``transform``: ``"same"`` (copied as is), ``"t"`` (an official ``Linear(in, out)`` weight ``[out, in]`` into
    mmkgc's expert tensor slice ``[in, out]``), ``"conv1x1"`` (``[256, 256, 1, 1]`` into a ``Linear`` weight
    ``[256, 256]``), ``"log"`` (the official raw temperature into ``log tau``).  mmkgc keys with an ``[k]`` suffix
    are slices of the stacked expert tensors.  The alignment head is listed for head 0 only; see
    :func:`copy_official_weights` for the other heads.
    """
    rows: list[tuple[str, str, str]] = [("rel_gate.weight", "relation_gate.weight", "same")]
    for i, name in enumerate(BRANCHES):
        o = OFFICIAL_BRANCH[name]
        ent = "entities.embedding.weight" if i == 0 else f"extra_tables.{i - 1}.embedding.weight"
        rel = "relations.weight" if i == 0 else f"extra_relations.{i - 1}.weight"
        dec = "scorer" if i == 0 else f"extra_decoders.{i - 1}"
        rows += [(f"{o['ent']}.weight", ent, "same"), (f"{o['rel']}.weight", rel, "same"),
                 (f"{o['tucker']}.W", f"{dec}.core", "same")]
        for bn in ("bn0", "bn1"):
            rows += [(f"{o['tucker']}.{bn}.{p}", f"{dec}.{bn}.{p}", "same")
                     for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]
        for k in range(num_experts):
            rows += [(f"{o['moe']}.experts.{k}.lin.weight", f"adapters.{i}.expert_weight[{k}]", "t"),
                     (f"{o['moe']}.experts.{k}.bias", f"adapters.{i}.expert_bias[{k}]", "same")]
        rows += [(f"{o['moe']}.w_gate", f"adapters.{i}.gate", "same"),
                 (f"{o['moe']}.w_noise", f"adapters.{i}.noise", "same")]
    rows += [("conv.weight", "align_heads.0.0.weight", "conv1x1")]
    rows += [(f"bn.{p}", f"align_heads.0.1.{p}", "same")
             for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]
    rows += [("cliploss.temp", "align_loss.log_temperature", "log")]
    return rows


def estimator_map() -> list[tuple[str, str]]:
    """``(official MIEstimator key, mmkgc key)`` of the three CLUB estimators (``p_mu``/``p_logvar`` ->
    ``mu``/``logvar``, same layer layout)."""
    rows = []
    for i, name in enumerate(BRANCHES):
        est = OFFICIAL_BRANCH[name]["est"]
        for net, ours in (("p_mu", "mu"), ("p_logvar", "logvar")):
            for layer in ("0", "2"):
                for p in ("weight", "bias"):
                    rows.append((f"{est}.{net}.{layer}.{p}", f"estimators.{i}.{ours}.{layer}.{p}"))
    return rows


def _split_key(key: str) -> tuple[str, int | None]:
    if key.endswith("]"):
        base, idx = key[:-1].split("[")
        return base, int(idx)
    return key, None


def to_mmkgc_value(value: torch.Tensor, transform: str, raw_temperature: bool = False) -> torch.Tensor:
    """An official tensor in mmkgc's layout (see :func:`weight_map` for ``transform``); ``raw_temperature``: the
    mmkgc model stores ``tau`` itself (``align_temperature_parameterization: raw``), so ``"log"`` copies as is."""
    if transform == "t":
        return value.t()
    if transform == "conv1x1":
        return value.reshape(value.shape[0], value.shape[1])
    if transform == "log":
        return value.clone() if raw_temperature else value.log()
    return value


def mmkgc_key(model: torch.nn.Module, key: str) -> str:
    """``key`` adjusted to the model: the raw temperature's parameter name when the model stores ``tau``."""
    if key == "align_loss.log_temperature" and hasattr(model.align_loss, "raw_temperature"):
        return "align_loss.raw_temperature"
    return key


def mmkgc_entry(model: torch.nn.Module, key: str) -> torch.Tensor:
    """The mmkgc state-dict tensor (or expert slice) named by a :func:`weight_map` key (a view: writable)."""
    base, idx = _split_key(mmkgc_key(model, key))
    tensor = model.state_dict(keep_vars=True)[base]
    return tensor[idx] if idx is not None else tensor


def copy_official_weights(model: torch.nn.Module, official: dict[str, torch.Tensor],
                          estimators: dict[str, torch.Tensor] | None = None, num_experts: int = 3) -> list[str]:
    """Copy the official model's state (``RelMoE.state_dict()``; optionally ``MIEstimator.state_dict()``) into an
    mmkgc :class:`~mmkgc.models.imvia.IMVIAModel` built by ``parity.mmkgc_config("imvia", ...)``.

    The single official alignment head (``conv``/``bn``) is copied into every mmkgc alignment head (they are
    separate per-branch heads in mmkgc, or its one shared head, ``model.imvia.align_head: shared``).

    :returns: the official keys copied.
    :raises KeyError: an official key of :func:`weight_map` is missing.
    :raises ValueError: a shape differs after the layout transform.
    """
    raw = hasattr(model.align_loss, "raw_temperature")
    copied = []
    with torch.no_grad():
        for okey, mkey, transform in weight_map(num_experts):
            value = to_mmkgc_value(official[okey], transform, raw)
            targets = [mkey]
            if mkey.startswith("align_heads.0."):
                targets = [mkey.replace("align_heads.0.", f"align_heads.{h}.") for h in range(len(model.align_heads))]
            for target in targets:
                dest = mmkgc_entry(model, target)
                if tuple(dest.shape) != tuple(value.shape):
                    raise ValueError(f"{okey} {tuple(value.shape)} does not fit {target} {tuple(dest.shape)}")
                dest.copy_(value.to(dest.dtype))
            copied.append(okey)
        if estimators is not None:
            for okey, mkey in estimator_map():
                dest = mmkgc_entry(model, mkey)
                if tuple(dest.shape) != tuple(estimators[okey].shape):
                    raise ValueError(f"{okey} does not fit {mkey}")
                dest.copy_(estimators[okey])
                copied.append(okey)
    return copied


def official_view(model: torch.nn.Module, grads: bool = False, num_experts: int = 3,
                  estimators: bool = False) -> dict[str, torch.Tensor]:
    """mmkgc's mapped parameters (or their gradients) in the official layout, keyed by official name: the inverse
    of :func:`copy_official_weights`.  Alignment heads: the sum of the heads' gradients (one shared official
    head receives the sum), or head 0's values.  Temperature: ``tau`` (values), ``dL/dtau`` (gradients; under
    ``log tau``: ``dL/dlog tau / tau``).  Parameters without a gradient map to zeros.  Buffers are skipped for
    gradients."""
    out: dict[str, torch.Tensor] = {}
    raw = hasattr(model.align_loss, "raw_temperature")
    sd = model.state_dict(keep_vars=True)

    def get(key: str) -> torch.Tensor | None:
        base, idx = _split_key(mmkgc_key(model, key))
        t = sd[base]
        if grads:
            if not isinstance(t, torch.nn.Parameter):
                return None
            g = t.grad if t.grad is not None else torch.zeros_like(t)
            return g[idx] if idx is not None else g
        return t[idx] if idx is not None else t

    for okey, mkey, transform in weight_map(num_experts):
        if mkey.startswith("align_heads.0."):
            vals = [get(mkey.replace("align_heads.0.", f"align_heads.{h}.")) for h in range(len(model.align_heads))]
            heads = {id(h) for h in model.align_heads}
            if vals[0] is None:
                continue
            v = sum(vals[: len(heads)]) if grads else vals[0]
        else:
            v = get(mkey)
            if v is None:
                continue
        v = v.detach().clone()
        if transform == "t":
            v = v.t()
        elif transform == "conv1x1":
            v = v.reshape(v.shape[0], v.shape[1], 1, 1)
        elif transform == "log" and not raw:
            tau = sd["align_loss.log_temperature"].detach().exp()
            v = v / tau if grads else tau.clone()
        out[okey] = v
    if estimators:
        for okey, mkey in estimator_map():
            v = get(mkey)
            if v is not None:
                out[okey] = v.detach().clone()
    return out


def disable_dropout(model: torch.nn.Module) -> int:
    """Set ``p = 0`` on every ``nn.Dropout*`` of ``model``; returns how many."""
    n = 0
    for m in model.modules():
        if isinstance(m, torch.nn.modules.dropout._DropoutNd):
            m.p = 0.0
            n += 1
    return n


# ------------------------------------------------------------------------------------------ shared randomness
def _seed_of(*parts: Any) -> int:
    return zlib.crc32("/".join(str(p) for p in parts).encode())


def gate_noise(seed: int, step: int, branch: int, rows: int, experts: int) -> torch.Tensor:
    """The ``eps ~ N(0, 1)`` ``[rows, experts]`` of one noisy MoE call: a function of (seed, step, branch, rows),
    so both sides get the same tensor for the same call (query rows: the batch size; candidate rows: ``N``)."""
    g = torch.Generator().manual_seed(_seed_of("noise", seed, step, branch, rows))
    return _RANDN(rows, experts, generator=g)


def club_draws(seed: int, step: int, phase: str, experts: int = 3) -> tuple[tuple[int, int], list[list[int]]]:
    """CLUB's random choices of one step and phase (``"bound"``: the model step's bound, ``"estimator"``: the
    estimator step): the expert pair ``(a, b)`` and one permutation of ``experts`` rows per branch (the legacy
    indexing compares the ``n`` expert outputs of batch rows ``a`` and ``b``, so the bound permutes ``n`` rows)."""
    g = torch.Generator().manual_seed(_seed_of("club", seed, step, phase))
    a, b = _RANDPERM(experts, generator=g)[:2].tolist()
    perms = [_RANDPERM(experts, generator=g).tolist() for _ in BRANCHES]
    return (a, b), perms


class SharedRandomness:
    """Injects :func:`gate_noise` and :func:`club_draws` into one side's calls.

    ``attach(moe_modules)`` registers forward pre-hooks on the branch MoEs (list index = branch): each call sets
    the noise its ``torch.randn_like`` will return.  Inside :meth:`active`, ``torch.randn_like`` returns the pending
    noise (once, shape-checked) and ``torch.randperm`` the queued CLUB permutations; ``pair()`` gives the step's
    expert pair.  Anything else falls through to the real functions.
    """

    def __init__(self, seed: int, experts: int = 3):
        self.seed, self.experts, self.step, self.phase = seed, experts, 0, "bound"
        self.pending: torch.Tensor | None = None
        self.perms: list[list[int]] = []
        self.noise_calls = 0
        self.perm_calls = 0

    def attach(self, modules: list[torch.nn.Module]) -> None:
        for branch, module in enumerate(modules):
            module.register_forward_pre_hook(self._hook(branch))

    def _hook(self, branch: int) -> Callable:
        def hook(module, inputs):
            self.pending = gate_noise(self.seed, self.step, branch, int(inputs[0].shape[0]), self.experts)
        return hook

    def set_phase(self, step: int, phase: str) -> None:
        self.step, self.phase, self.pending = step, phase, None
        self.perms = list(club_draws(self.seed, step, phase, self.experts)[1])

    def pair(self) -> tuple[int, int]:
        return club_draws(self.seed, self.step, self.phase, self.experts)[0]

    @contextmanager
    def active(self) -> Iterator[None]:
        real_randn_like, real_randperm = torch.randn_like, torch.randperm

        def randn_like(t, *a, **k):
            if self.pending is not None and not a and not k and tuple(self.pending.shape) == tuple(t.shape):
                out, self.pending = self.pending.to(t.dtype), None
                self.noise_calls += 1
                return out
            return real_randn_like(t, *a, **k)

        def randperm(n, *a, **k):
            if self.perms and int(n) == self.experts:
                self.perm_calls += 1
                return torch.tensor(self.perms.pop(0), dtype=torch.long)
            return real_randperm(n, *a, **k)

        torch.randn_like, torch.randperm = randn_like, randperm
        try:
            yield
        finally:
            torch.randn_like, torch.randperm = real_randn_like, real_randperm


# ------------------------------------------------------------------------------------------ batches
def official_batch_to_one_to_n(indices: torch.Tensor, label_rows: torch.Tensor, label_cols: torch.Tensor,
                               num_entities: int, num_relations: int):
    """An official ``ConvECorpus.get_batch`` batch as mmkgc's 1-N batch tensors.

    :param indices: int64 ``[B, 3]`` rows ``(e, r, -1)``, ``r`` in ``[0, 2R)`` (``r >= R``: the reciprocal of
        ``r - R``, a head query of ``(?, r - R, e)``).
    :param label_rows, label_cols: the positions of the 1s of the 0/1 label matrix before smoothing (the official
        batch values are ``0.9 y + 1/N``).
    :returns: ``(entities [B], relations [B] in [0, R), predict_tail [B] bool, labels [B, N] float 0/1)``, the
        tensors of mmkgc's ``OneToNLoop`` (``Trainer._step_loss``).
    :raises ValueError: a relation outside ``[0, 2R)`` or a label position outside the matrix.
    """
    e, r = indices[:, 0].long(), indices[:, 1].long()
    if (r < 0).any() or (r >= 2 * num_relations).any():
        raise ValueError(f"relations must be in [0, {2 * num_relations})")
    b = indices.shape[0]
    if (label_rows >= b).any() or (label_cols >= num_entities).any() or (label_rows < 0).any():
        raise ValueError("label position outside the [B, N] label matrix")
    labels = torch.zeros(b, num_entities)
    labels[label_rows.long(), label_cols.long()] = 1.0
    tail = r < num_relations
    return e, torch.where(tail, r, r - num_relations), tail, labels


class LazyBatches:
    """The worker's batches (``batch<i>.safetensors``) as mmkgc 1-N batch tensors, converted when indexed (a dense
    ``[B, N]`` label matrix per batch would not fit in memory for a whole epoch)."""

    def __init__(self, job_dir: Path, count: int, num_entities: int, num_relations: int):
        self.job_dir, self.count, self.num_entities, self.num_relations = job_dir, count, num_entities, num_relations

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int):
        b = _load(self.job_dir / f"batch{i}.safetensors")
        return official_batch_to_one_to_n(b["indices"], b["label_rows"], b["label_cols"], self.num_entities,
                                          self.num_relations)


# ------------------------------------------------------------------------------------------ comparison
def diff(official: torch.Tensor | float, ours: torch.Tensor | float) -> dict[str, float]:
    """``{"max_abs", "max_rel", "max_official"}`` of ``ours - official`` (rel: ``|d| / max(|official|, 1e-6)``, the
    largest over entries); shapes must match.

    :raises ValueError: different shapes.
    """
    a = torch.as_tensor(official, dtype=torch.float64)
    b = torch.as_tensor(ours, dtype=torch.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: official {tuple(a.shape)} vs mmkgc {tuple(b.shape)}")
    if a.numel() == 0:
        return {"max_abs": 0.0, "max_rel": 0.0, "max_official": 0.0}
    d = (b - a).abs()
    rel = d / a.abs().clamp_min(1e-6)
    return {"max_abs": float(d.max()), "max_rel": float(rel.max()), "max_official": float(a.abs().max())}


def within_noise(entry: dict[str, float], tolerance: float = TOLERANCE) -> bool:
    """Whether a :func:`diff` entry is float32 noise: ``max_abs <= tolerance * max(1, max_official)``."""
    return entry["max_abs"] <= tolerance * max(1.0, entry["max_official"])


def compare_dicts(official: dict[str, torch.Tensor], ours: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    """:func:`diff` of every key of ``official`` present in ``ours`` (keys missing from ``ours`` are an error).

    :raises KeyError: a key of ``official`` is not in ``ours``.
    """
    missing = [k for k in official if k not in ours]
    if missing:
        raise KeyError(f"mmkgc side lacks {missing[:5]}")
    return {k: diff(official[k], ours[k]) for k in official}


def adam_sign_noise(official: dict[str, torch.Tensor], ours: dict[str, torch.Tensor],
                    official_grads: dict[str, torch.Tensor], threshold: float = 1e-5) -> dict[str, dict[str, float]]:
    """Where parameters after the first Adam step differ by more than ``threshold``: how many entries, and the
    largest ``|official gradient|`` among them.  Adam's first step is ``lr g / (|g| + eps)``, about ``lr sign(g)``,
    so a gradient entry that is float32 noise (``|g|`` near ``eps = 1e-8``) can move by up to ``lr`` on one side and
    not the other; such entries have tiny gradients.  Keys without a gradient are skipped.

    :returns: ``{key: {"entries", "of", "max_abs_grad_there"}}`` for the keys with such entries.
    """
    out = {}
    for key, grad in official_grads.items():
        if key not in official or key not in ours:
            continue
        d = (ours[key].double() - official[key].double()).abs()
        mask = d > threshold
        if mask.any():
            out[key] = {"entries": int(mask.sum()), "of": int(mask.numel()),
                        "max_abs_grad_there": float(grad.double().abs()[mask].max())}
    return out


def worst(entries: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The largest ``max_abs`` (and its key) and the largest ``max_rel`` over a :func:`compare_dicts` result."""
    if not entries:
        return {"max_abs": 0.0, "max_rel": 0.0, "key": None, "count": 0}
    key = max(entries, key=lambda k: entries[k]["max_abs"])
    return {"max_abs": entries[key]["max_abs"], "key": key,
            "max_rel": max(e["max_rel"] for e in entries.values()), "count": len(entries),
            "within_noise": all(within_noise(e) for e in entries.values())}


# ------------------------------------------------------------------------------------------ official worker
OFFICIAL_ARGS = {  # train.py's defaults that the model reads, with parity.py's learning rate
    "lr": 1e-3, "weight_decay": 0.0, "dim": 256, "r_dim": 256, "n_exp": 3, "dataset": "DB15K", "pre_trained": 0,
    "mu": 1e-4, "temp": 0.07, "batch_size": 1024, "image_features": 1, "text_features": 1, "gamma": 1.0,
}


def _save(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()}, str(path))


def _load(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def worker(job_dir: Path) -> int:
    """The official side (run with the checkout copy as working directory, see the module docstring)."""
    import functools
    from types import SimpleNamespace

    import numpy as np
    import torch.nn.functional as F

    job = json.loads((job_dir / "job.json").read_text())
    torch.set_num_threads(1)
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    torch.nn.Module.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    torch.load = functools.partial(torch.load, weights_only=True)  # the official loader reads plain tensors
    sys.path.insert(0, str(Path.cwd()))
    from models.RelMoE import RelMoE  # noqa: E402  (the official code, imported from the checkout copy)
    from models.modules import MIEstimator  # noqa: E402
    from utils.data_loader import ConvECorpus  # noqa: E402
    from utils.data_util import load_data  # noqa: E402

    seed, steps, batch = job["seed"], job["steps"], job["batch_size"]
    args = SimpleNamespace(**{**OFFICIAL_ARGS, "lr": job["lr"], "batch_size": batch, "seed": seed, "cuda": -1,
                              "device": "cpu"})
    np.random.seed(seed)
    torch.manual_seed(seed)
    random.seed(seed)
    entity2id, relation2id, img, txt, train, valid, test = load_data(args.dataset)
    corpus = ConvECorpus(args, train, valid, test, entity2id, relation2id)
    args.img = F.normalize(torch.Tensor(img), p=2, dim=1)
    args.desp = F.normalize(torch.Tensor(txt), p=2, dim=1)
    args.entity2id, args.relation2id = entity2id, relation2id
    model = RelMoE(args)
    args.img_dim, args.txt_dim = model.img_dim, model.txt_dim
    estimator = MIEstimator(args)
    _save(job_dir / "official_init.safetensors", model.state_dict())
    _save(job_dir / "official_estimator_init.safetensors", estimator.state_dict())
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    optimizer_mi = torch.optim.Adam(estimator.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    corpus.batch_size = batch
    corpus.shuffle()
    batches = []
    for i in range(steps):
        idx, values = corpus.get_batch(i)
        idx = torch.as_tensor(idx, dtype=torch.long)
        pos = (values > 0.5).nonzero()
        y = torch.zeros_like(values)
        y[pos[:, 0], pos[:, 1]] = 1.0
        if not torch.allclose(values, 0.9 * y + 1.0 / len(entity2id)):
            raise RuntimeError("ConvECorpus.get_batch values are not 0.9 y + 1/N")
        batches.append(idx)  # the values are taken again from get_batch at each step (deterministic)
        _save(job_dir / f"batch{i}.safetensors", {"indices": idx, "label_rows": pos[:, 0], "label_cols": pos[:, 1]})
    dropouts = disable_dropout(model) + disable_dropout(estimator)
    rng = SharedRandomness(seed, args.n_exp)
    rng.attach([model.structure_moe, model.visual_moe, model.text_moe, model.mm_moe])
    import models.modules as official_modules

    def fixed_sample(population, k):
        return list(rng.pair())

    official_modules.random = SimpleNamespace(sample=fixed_sample)  # MIEstimator's pair draw
    record: dict[str, torch.Tensor] = {}
    mapped = _mapped_keys(args.n_exp)
    with rng.active():
        # eval-mode decision-fused scores with the initial weights (the ensemble of data_loader.py:175)
        model.eval()
        with torch.no_grad():
            preds, _, _ = model(batches[0])
        record["eval/fused"] = (preds[0] + preds[1] + preds[2]) / 3.0
        for name, p in zip(BRANCHES, preds[:3]):
            record[f"eval/prob_{name}"] = p
        losses, est_losses, align_sums, bce_sums, temperatures = [], [], [], [], []
        for step in range(steps):
            idx, target = batches[step], corpus.get_batch(step)[1]
            model.train()
            estimator.eval()
            optimizer.zero_grad()
            rng.set_phase(step, "bound")
            output, embeddings, features = model(idx)
            bce = [model.bceloss(output[i], target) for i in range(3)]
            clip = [model.cliploss(features[0], features[1]), model.cliploss(features[0], features[2]),
                    model.cliploss(features[1], features[2])]
            mi = estimator(embeddings)
            loss = model.loss_func(output, target, features) + args.mu * mi
            loss.backward()
            if step == 0:
                for name, p in zip(BRANCHES, output[:3]):
                    record[f"step0/prob_{name}"] = p.detach()
                for name, v in zip(BRANCHES, bce):
                    record[f"step0/bce_{name}"] = v.detach()
                for pair, v in zip(("structure-visual", "structure-textual", "visual-textual"), clip):
                    record[f"step0/align_{pair}"] = v.detach()
                record["step0/mi"] = mi.detach()
                record["step0/loss"] = loss.detach()
                for k, p in model.named_parameters():
                    if p.grad is not None:
                        record[f"grad/{k}"] = p.grad.detach().clone()
            optimizer.step()
            estimator.train()
            optimizer_mi.zero_grad()
            rng.set_phase(step, "estimator")
            with torch.no_grad():
                embeddings = model.get_batch_embeddings(idx)
            est_loss = estimator.train_estimator(embeddings)
            est_loss.backward()
            if step == 0:
                record["step0/estimator_loss"] = est_loss.detach()
                for k, p in estimator.named_parameters():
                    record[f"estimator_grad/{k}"] = p.grad.detach().clone()
                for k, v in model.state_dict().items():
                    if k in mapped:
                        record[f"after1/{k}"] = v.detach().clone()
            optimizer_mi.step()
            if step == 0:
                for k, v in estimator.state_dict().items():
                    record[f"estimator_after1/{k}"] = v.detach().clone()
            losses.append(float(loss.detach()))
            est_losses.append(float(est_loss.detach()))
            align_sums.append(float(sum(clip)))
            temperatures.append(float(model.cliploss.temp))
            bce_sums.append(float(sum(bce)))
        for k, v in model.state_dict().items():
            if k in mapped:
                record[f"final/{k}"] = v
        for k, v in estimator.state_dict().items():
            record[f"estimator_final/{k}"] = v
        model.eval()
        with torch.no_grad():
            preds, _, _ = model(batches[0])
        record["final_eval/fused"] = (preds[0] + preds[1] + preds[2]) / 3.0
    _save(job_dir / "official_record.safetensors", record)
    (job_dir / "official.json").write_text(json.dumps({
        "losses": losses, "estimator_losses": est_losses, "align_sums": align_sums, "bce_sums": bce_sums,
        "temperatures": temperatures, "dropouts_disabled": dropouts,
        "noise_calls": rng.noise_calls, "perm_calls": rng.perm_calls, "num_entities": len(entity2id),
        "num_relations": len(relation2id), "batches": [int(b.shape[0]) for b in batches]}))
    return 0


def run_official(copy: Path, job_dir: Path, job: dict[str, Any]) -> dict[str, Any]:
    """Run :func:`worker` in ``copy`` (a prepared checkout copy); returns its JSON summary.

    :raises RuntimeError: the worker failed (the tail of its output is in the message).
    """
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "job.json").write_text(json.dumps(job))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", str(job_dir)], cwd=copy,
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the official worker failed (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")
    return json.loads((job_dir / "official.json").read_text())


# ------------------------------------------------------------------------------------------ mmkgc side
def build_mmkgc(variant: str, settings: dict[str, Any], seed: int, vis_file: Path, txt_file: Path, data_dir: Path):
    """mmkgc's ``Trainer`` (CPU) on the IMVIA parity config, with the raw temperature and/or the tied alignment
    heads of ``variant`` (:data:`VARIANTS`; see the module docstring)."""
    sys.path.insert(0, str(HERE))
    import parity

    from mmkgc.config import parse_config
    from mmkgc.pipeline import build_model, load_data
    from mmkgc.training.trainer import Trainer

    cfg_map = parity.mmkgc_config("imvia", settings, seed, vis_file, txt_file)
    cfg_map["dataset"]["data_dir"] = str(data_dir)
    raw, tied = VARIANTS[variant]
    cfg_map["model"]["imvia"]["align_temperature_parameterization"] = "raw" if raw else "log"
    # tied: the published single head (model.imvia.align_head: shared; the reported runs tied three per-branch
    # modules to one instead, the same computation); untied: mmkgc's per-branch heads
    cfg_map["model"]["imvia"]["align_head"] = "shared" if tied else "per_branch"
    cfg = parse_config(cfg_map, source=f"parity-imvia-step-{variant}")
    data = load_data(cfg)
    model = build_model(cfg, data)
    return Trainer(model, data.triples, cfg.training, cfg.evaluation, seed=seed, device="cpu"), data


def run_mmkgc(variant: str, settings, seed, vis_file, txt_file, data_dir, job_dir: Path, summary: dict[str, Any]
              ) -> dict[str, Any]:
    """The mmkgc side of one variant against the official record in ``job_dir``; returns the comparison."""
    import mmkgc.models.imvia as imvia_module

    trainer, data = build_mmkgc(variant, settings, seed, vis_file, txt_file, data_dir)
    model = trainer.model
    n_exp = settings["num_experts"]
    copy_official_weights(model, _load(job_dir / "official_init.safetensors"),
                          _load(job_dir / "official_estimator_init.safetensors"), n_exp)
    dropouts = disable_dropout(model)
    rng = SharedRandomness(seed, n_exp)
    rng.attach(list(model.adapters))
    real_pair = imvia_module.draw_expert_pair
    imvia_module.draw_expert_pair = lambda n, generator=None: rng.pair()
    ref = _load(job_dir / "official_record.safetensors")
    nE, nR = summary["num_entities"], summary["num_relations"]
    batches = LazyBatches(job_dir, len(summary["batches"]), nE, nR)
    out: dict[str, Any] = {"variant": variant, "dropouts_disabled": dropouts}
    try:
        with rng.active():
            out.update(_mmkgc_steps(trainer, model, batches, ref, rng, n_exp, summary))
    finally:
        imvia_module.draw_expert_pair = real_pair
    out["noise_calls"], out["perm_calls"] = rng.noise_calls, rng.perm_calls
    return out


def _fused_eval(model, batch) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Eval-mode fused probabilities ``[B, N]`` of a 1-N batch through the public scoring path
    (``branch_score_fn``), rows in batch order; and each branch's probabilities."""
    e, r, tail, _ = batch
    model.eval()
    q = torch.stack([e, r, e], 1)
    fns = [model.branch_score_fn(i) for i in range(model.num_branches)] + [model.branch_score_fn(None)]
    outs = []
    for fn in fns:
        res = torch.empty(e.shape[0], model.num_entities)
        if tail.any():
            res[tail] = fn(q[tail], "tail")
        if (~tail).any():
            res[~tail] = fn(q[~tail], "head")
        outs.append(res)
    return outs[-1], outs[:-1]


def _mmkgc_steps(trainer, model, batches, ref, rng: SharedRandomness, n_exp: int, summary) -> dict[str, Any]:
    res: dict[str, Any] = {}
    fused, branch_probs = _fused_eval(model, batches[0])
    res["eval_fused"] = diff(ref["eval/fused"], fused)
    res["eval_prob"] = {n: diff(ref[f"eval/prob_{n}"], p) for n, p in zip(BRANCHES, branch_probs)}
    # step 0, term by term: one training forward through one_to_n_loss, recording what it computes
    model.train()
    e, r, tail, labels = batches[0]
    captured: dict[str, list] = {"logits": [], "q": []}
    real_branch_logits = model.branch_logits

    def recording(i, entities, relations, candidates=None):
        out = real_branch_logits(i, entities, relations, candidates)
        captured["logits"].append(out[0])
        return out

    aligned: list[torch.Tensor] = []
    hooks = [h.register_forward_hook(lambda m, i, o: aligned.append(o)) for h in dict.fromkeys(model.align_heads)]
    model.branch_logits = recording
    trainer.optimizer.zero_grad(set_to_none=True)
    rng.set_phase(0, "bound")
    loss = trainer._step_loss(e, r, tail, labels)
    terms = trainer._terms
    trainer._terms = {}
    del model.branch_logits
    for h in hooks:
        h.remove()
    loss.backward()
    res["prob"] = {n: diff(ref[f"step0/prob_{n}"], torch.sigmoid(lg.detach()))
                   for n, lg in zip(BRANCHES, captured["logits"])}
    res["bce"] = {n: diff(ref[f"step0/bce_{n}"], terms[f"bce_{n}"]) for n in BRANCHES}
    with torch.no_grad():
        pairs = {"structure-visual": (0, 1), "structure-textual": (0, 2), "visual-textual": (1, 2)}
        res["align"] = {k: diff(ref[f"step0/align_{k}"], model.align_loss(aligned[a], aligned[b]))
                        for k, (a, b) in pairs.items()}
    res["align_sum"] = diff(sum(ref[f"step0/align_{k}"] for k in pairs), terms["align"])
    res["mi"] = diff(ref["step0/mi"], terms["mi"])
    res["loss"] = diff(ref["step0/loss"], loss.detach())
    res["loss_values"] = {"official": float(ref["step0/loss"]), "mmkgc": float(loss.detach())}
    res["mi_values"] = {"official": float(ref["step0/mi"]), "mmkgc": float(terms["mi"])}
    off_grads = {k[len("grad/"):]: v for k, v in ref.items() if k.startswith("grad/")}
    ours = official_view(model, grads=True, num_experts=n_exp)
    mapped = {k: v for k, v in off_grads.items() if k in ours}
    res["grad"] = compare_dicts(mapped, ours)
    res["grad_unmapped_official"] = sorted(k for k in off_grads if k not in ours)
    trainer.optimizer.step()
    # the estimator step of step 0 (the trainer's auxiliary step)
    aux = trainer.aux_steps[0]
    rng.set_phase(0, "estimator")
    for p in aux.params:
        p.grad = None
    est_loss = aux.loss(e, r, tail, labels)
    est_loss.backward()
    off_est_grads = {k[len("estimator_grad/"):]: v for k, v in ref.items() if k.startswith("estimator_grad/")}
    our_est = {ok: mmkgc_entry(model, mk).grad for ok, mk in estimator_map()}
    res["estimator_loss"] = diff(ref["step0/estimator_loss"], est_loss.detach())
    res["estimator_grad"] = compare_dicts(off_est_grads, our_est)
    res["after1"] = compare_dicts({k[len("after1/"):]: v for k, v in ref.items() if k.startswith("after1/")
                                   and k[len("after1/"):] in _mapped_keys(n_exp)},
                                  official_view(model, num_experts=n_exp))
    res["after1_adam_sign_noise"] = adam_sign_noise(
        {k[len("after1/"):]: v for k, v in ref.items() if k.startswith("after1/")},
        official_view(model, num_experts=n_exp), off_grads)
    aux.optimizer.step()
    res["estimator_after1"] = compare_dicts(
        {k[len("estimator_after1/"):]: v for k, v in ref.items() if k.startswith("estimator_after1/")},
        official_view(model, num_experts=n_exp, estimators=True))
    # steps 1.. through the trainer's own step loop, one replayed batch per call
    losses = [float(loss.detach())]
    est_losses = [float(est_loss.detach())]
    align_sums = [float(terms["align"])]
    bce_sums = [float(sum(terms[f"bce_{n}"] for n in BRANCHES))]
    temperatures = [float(model.align_loss.temperature.detach())]
    estimator_step = trainer.aux_steps[0].step
    current = [0]

    def aux_step(*tensors, **kw):  # the estimator step draws the step's "estimator" pair, as the worker does
        rng.set_phase(current[0], "estimator")
        return estimator_step(*tensors, **kw)

    trainer.aux_steps[0].step = aux_step
    for step in range(1, len(batches)):
        rng.set_phase(step, "bound")
        current[0] = step
        queue = iter([(batches[step], 1.0)])
        trainer._local_batches = lambda q=queue: q
        mean_loss, _ = trainer._epoch(None)
        losses.append(mean_loss)
        est_losses.append(trainer.epoch_terms.get("club_estimator", float("nan")))
        align_sums.append(trainer.epoch_terms["align"])
        bce_sums.append(sum(trainer.epoch_terms[f"bce_{n}"] for n in BRANCHES))
        temperatures.append(float(model.align_loss.temperature.detach()))
    res["losses"] = {"official": summary["losses"], "mmkgc": losses,
                     "max_abs": max(abs(a - b) for a, b in zip(summary["losses"], losses))}
    res["estimator_losses"] = {"official": summary["estimator_losses"], "mmkgc": est_losses,
                               "max_abs": max(abs(a - b) for a, b in zip(summary["estimator_losses"], est_losses))}
    res["align_sums"] = {"official": summary["align_sums"], "mmkgc": align_sums}
    res["bce_sums"] = {"official": summary["bce_sums"], "mmkgc": bce_sums}
    res["temperatures"] = {"official": summary["temperatures"], "mmkgc": temperatures}
    final_ref = {k[len("final/"):]: v for k, v in ref.items() if k.startswith("final/")}
    res["final"] = compare_dicts({k: v for k, v in final_ref.items() if k in _mapped_keys(n_exp)},
                                 official_view(model, num_experts=n_exp))
    res["estimator_final"] = compare_dicts(
        {k[len("estimator_final/"):]: v for k, v in ref.items() if k.startswith("estimator_final/")},
        official_view(model, num_experts=n_exp, estimators=True))
    fused, _ = _fused_eval(model, batches[0])
    res["final_eval_fused"] = diff(ref["final_eval/fused"], fused)
    return res


def _mapped_keys(n_exp: int) -> set[str]:
    return {o for o, _, _ in weight_map(n_exp)}


#: quantities of the first step that must agree to float32 noise in the ``exact`` variant
STRICT = ("eval_fused", "eval_prob", "prob", "bce", "align", "align_sum", "mi", "loss", "grad", "estimator_loss",
          "estimator_grad", "estimator_after1")


def exact_verdict(result: dict[str, Any], sign_noise_grad: float = 1e-6) -> list[str]:
    """The quantities of an ``exact`` comparison that fail: a :data:`STRICT` quantity beyond float32 noise;
    parameters after one Adam step differing where the official gradient is not noise-sized (``|g| >=
    sign_noise_grad``, see :func:`adam_sign_noise`); a per-step loss or estimator loss differing by more than
    ``1e-3`` relative (the sign noise of the first steps compounds over the later ones)."""
    summary = summarise(result)
    bad = [k for k in STRICT if k in summary and not summary[k].get("within_noise", True)]
    if any(e["max_abs_grad_there"] >= sign_noise_grad for e in result.get("after1_adam_sign_noise", {}).values()):
        bad.append("after1")
    for key in ("losses", "estimator_losses"):
        pair = result.get(key)
        if pair and any(abs(a - b) > 1e-3 * max(1.0, abs(a)) for a, b in zip(pair["official"], pair["mmkgc"])):
            bad.append(key)
    return bad


def summarise(variant: dict[str, Any]) -> dict[str, Any]:
    """One line per quantity: ``{quantity: {"max_abs", "max_rel", "within_noise"}}`` of a variant's comparison
    (dicts of per-name diffs are reduced with :func:`worst`)."""
    out: dict[str, Any] = {}
    for key, value in variant.items():
        if key == "after1_adam_sign_noise":
            continue
        if isinstance(value, dict) and {"max_abs", "max_rel"} <= set(value):
            out[key] = {**value, "within_noise": within_noise(value)}
        elif isinstance(value, dict) and value and all(isinstance(v, dict) and "max_abs" in v for v in value.values()):
            out[key] = worst(value)
    return out


# ------------------------------------------------------------------------------------------ driver
def build_parser() -> argparse.ArgumentParser:
    """The command line (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="parity_imvia_step.py", description=__doc__.splitlines()[0])
    ap.add_argument("--reference", type=Path, help="a local checkout of kernelLZ/ICASSP2025_IMVIA_Code")
    ap.add_argument("--data-dir", type=Path, default=HERE.parent.parent / "shared" / "datasets",
                    help="directory holding DB15K/ (OpenKE files); default ../shared/datasets")
    ap.add_argument("--text-table", type=Path, help="the DB15K name-text table as an mmkgc feature-table file "
                    "(default: mmkgc's feature cache)")
    ap.add_argument("--steps", type=int, default=5, help="training steps compared (default 5)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--batch-size", type=int, default=1024, help="queries per batch (published 1024)")
    ap.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS),
                    help="mmkgc variants to compare (default: all four)")
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "mmkgc-parity-imvia-step",
                    help="scratch directory (the checkout copy and the exchanged tensors)")
    ap.add_argument("--json", type=Path, help="write the report to this JSON file (atomically)")
    ap.add_argument("--json-key", help="store the report under this key of the --json file's object (other keys are "
                    "kept) instead of replacing the file")
    return ap


def check_args(args: argparse.Namespace) -> None:
    """:raises StepParityError: a missing/wrong ``--reference``, a missing data or text file, bad numbers, or a
    ``--json`` path whose directory does not exist."""
    if args.reference is None:
        raise StepParityError("--reference is required: a checkout of kernelLZ/ICASSP2025_IMVIA_Code")
    if args.steps < 1:
        raise StepParityError(f"--steps: must be at least 1, got {args.steps}")
    if args.batch_size < 4:
        raise StepParityError(f"--batch-size: must be at least 4 (CLUB's legacy indexing needs 3 rows), "
                              f"got {args.batch_size}")
    if not (Path(args.data_dir) / "DB15K" / "train2id.txt").is_file():
        raise StepParityError(f"--data-dir: {Path(args.data_dir) / 'DB15K' / 'train2id.txt'} does not exist")
    if args.text_table is not None and not Path(args.text_table).is_file():
        raise StepParityError(f"--text-table: {args.text_table} does not exist")
    if args.json is not None and not Path(args.json).resolve().parent.is_dir():
        raise StepParityError(f"--json: directory {Path(args.json).resolve().parent} does not exist")
    if args.json_key is not None and args.json is None:
        raise StepParityError("--json-key needs --json")
    if args.json_key is not None and Path(args.json).is_file():
        try:
            ok = isinstance(json.loads(Path(args.json).read_text()), dict)
        except json.JSONDecodeError:
            ok = False
        if not ok:
            raise StepParityError(f"--json: {args.json} does not hold a JSON object (needed for --json-key)")


def run(args: argparse.Namespace) -> int:
    """Prepare the checkout copy and inputs, run the official worker, compare every variant, print a summary and
    write ``--json``.  Returns 0 when the exact variant agrees (:func:`exact_verdict`), else 1.

    :raises StepParityError: bad arguments (:func:`check_args`) or a wrong ``--reference``.
    :raises RuntimeError: the official worker failed.
    """
    sys.path.insert(0, str(HERE))
    import parity

    check_args(args)
    try:
        reference = parity.check_reference("imvia", args.reference)
    except parity.ParityError as exc:
        raise StepParityError(str(exc)) from None
    data_dir = Path(args.data_dir).resolve()
    settings = parity.merge_settings("imvia", {"epochs": 1, "lr": 1e-3, "batch_size": args.batch_size})
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    triples, text = parity.load_text_table(data_dir, args.text_table)
    tables = parity.stand_in_tables("imvia", text, "zeros")
    copy = parity.prepare_reference("imvia", reference, out, triples, tables)
    vis_file, txt_file = copy / "datasets/DB15K/img_features.pth", copy / "datasets/DB15K/text_features.pth"
    job_dir = out / "job"
    if job_dir.exists():
        shutil.rmtree(job_dir)
    job = {"seed": args.seed, "steps": args.steps, "batch_size": args.batch_size, "lr": settings["lr"]}
    print(f"official side ({args.steps} steps, batch {args.batch_size}) ...", flush=True)
    summary = run_official(copy, job_dir, job)
    t_official = time.perf_counter() - t0
    report: dict[str, Any] = {
        "settings": settings, "seed": args.seed, "steps": args.steps, "batch_size": args.batch_size,
        "official_commit": parity._git_commit(reference), "mmkgc_commit": parity._git_commit(HERE.parent),
        "machine": parity._machine(), "threads": 1, "load_average": list(os.getloadavg()),
        "command": "python benchmarks/parity_imvia_step.py " + " ".join(sys.argv[1:]),
        "randomness": "dropout p=0 in training mode on both sides; MoE gate noise and CLUB pair/permutations "
                      "shared (same tensors injected on both sides)",
        "unmapped_official": UNMAPPED_OFFICIAL, "official": summary, "variants": {},
        "seconds": {"official": t_official},
    }
    verdict = 0
    for variant in args.variants:
        print(f"mmkgc side, variant {variant} ...", flush=True)
        t1 = time.perf_counter()
        result = run_mmkgc(variant, settings, args.seed, vis_file, txt_file, data_dir, job_dir, summary)
        report["seconds"][variant] = time.perf_counter() - t1
        report["variants"][variant] = {"summary": summarise(result), "detail": result}
        for key, entry in summarise(result).items():
            print(f"  {key:<20} max abs {entry['max_abs']:.3g}  max rel {entry['max_rel']:.3g}"
                  f"{'' if entry.get('within_noise', True) else '   <-- beyond float32 noise'}")
        print(f"  losses official {['%.6f' % x for x in result['losses']['official']]}")
        print(f"  losses mmkgc    {['%.6f' % x for x in result['losses']['mmkgc']]}")
        print(f"  align official  {['%.4f' % x for x in result['align_sums']['official']]}")
        print(f"  align mmkgc     {['%.4f' % x for x in result['align_sums']['mmkgc']]}")
        print(f"  tau official    {['%.5f' % x for x in result['temperatures']['official']]}")
        print(f"  tau mmkgc       {['%.5f' % x for x in result['temperatures']['mmkgc']]}")
        if variant == "exact":
            bad = exact_verdict(result)
            report["exact_within_noise"] = not bad
            report["exact_beyond_noise"] = bad
            verdict = 1 if bad else 0
    if args.json:
        from mmkgc.fileio import atomic_write_text

        data: Any = report
        if args.json_key:
            data = {}
            if Path(args.json).is_file():
                try:
                    data = json.loads(Path(args.json).read_text())
                except json.JSONDecodeError as exc:
                    raise StepParityError(f"--json: {args.json} is not valid JSON ({exc})") from None
                if not isinstance(data, dict):
                    raise StepParityError(f"--json: {args.json} does not hold a JSON object")
            data[args.json_key] = report
        atomic_write_text(Path(args.json), json.dumps(data, indent=2) + "\n")
    return verdict


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``--worker DIR`` runs the official side; otherwise exit codes 0 / 1 / 2 / 130 (module docstring)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        return worker(Path(argv[1]))
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    sys.path.insert(0, str(HERE))
    import parity

    return parity.guarded("parity_imvia_step.py", StepParityError, lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
