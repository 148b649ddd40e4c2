"""VEMP stage 1 as a feature producer (Sela et al., "Vision-Enhanced Message Passing"; methods.md section 2):
``mmkgc features extract DATASET --encoder vemp``.

A :class:`~mmkgc.nn.fusion.CrossAttentionTokenFusion` over frozen text / image token tables is trained by
:class:`~mmkgc.training.steps.ContrastivePretrainStep` (text <-> image InfoNCE + neighbour InfoNCE, methods.md 2.3)
on the dataset's **training edges only** (bug 2.7.2 fixed: the validation/test pairs are refused per batch), then
the four node-feature tables VEMP compares are written as ordinary mmkgc feature tables with provenance:

* ``fused`` -- the fusion MLP output before the projection heads ``[N, dim]`` (methods.md 2.8);
* ``text_only`` / ``image_only`` -- the pooled tables given (VEMP: the CLIP poolers), else the masked mean of the
  text tokens / the mean of the image tokens;
* ``concat`` -- ``[text_only; image_only]``.

Stage 2 is an ordinary experiment config over one of these tables (``representation: rgcn``, ``training.loop:
link_bce``, ``model.scorer: mlp_link``, ``evaluation.protocol: vemp_sampled``; ``configs/vemp/``), and the
comparison of the four tables is ``mmkgc sweep`` over ``model.modalities.0.table``.

This module sits on top (it drives a training step); its options are :class:`VempExtractOptions` (YAML file
``--vemp-options``, strict).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import Field, model_validator

from mmkgc.config import _Strict, read_yaml_mapping, validate_mapping
from mmkgc.data.triples import TripleSet
from mmkgc.errors import ConfigError
from mmkgc.nn.fusion import CrossAttentionTokenFusion

#: The node-feature tables stage 1 writes (``--table``).
FEATURE_MODES = ("text_only", "image_only", "concat", "fused")


class VempExtractOptions(_Strict):
    """Stage-1 options (the ``--vemp-options`` YAML file; every key optional, published values are the defaults,
    methods.md 2.5): the fusion module (``dim``, ``num_heads``, ``ffn_dim`` (default ``2 dim``), ``proj_dim``,
    ``dropout``), the contrastive pretraining (``batch_size`` edges, ``epochs``, AdamW ``lr`` / ``weight_decay``,
    ``temperature`` τ and ``learnable_temperature``, ``graph_weight`` λ, ``amp`` on CUDA, ``mask_duplicates``: mask
    the known false negatives of a batch, ``max_seconds``: stop early, recorded in the provenance) and the export
    (``export_batch_size`` nodes per forward pass)."""

    dim: int = Field(512, ge=1)
    num_heads: int = Field(8, ge=1)
    ffn_dim: int | None = Field(None, ge=1)
    proj_dim: int = Field(256, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    batch_size: int = Field(64, ge=2)
    epochs: int = Field(20, ge=1)
    lr: float = Field(5e-5, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    temperature: float = Field(0.07, gt=0)
    learnable_temperature: bool = False
    graph_weight: float = Field(1.0, ge=0)
    amp: bool = True
    mask_duplicates: bool = True
    max_seconds: float | None = Field(None, gt=0)
    export_batch_size: int = Field(256, ge=1)

    @model_validator(mode="after")
    def _heads(self) -> "VempExtractOptions":
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} must be divisible by num_heads {self.num_heads}")
        return self


def load_options(path: Path | None, overrides: Sequence[str] = ()) -> VempExtractOptions:
    """The options of ``--vemp-options FILE`` with ``--set key=value`` overrides (defaults without a file).

    :raises ConfigError: a missing or invalid file, an unknown key or a bad value (naming the file and key).
    """
    if path is None:
        data: dict[str, Any] = {}
        from mmkgc.config import apply_override

        for item in overrides:
            apply_override(data, item, source="--set")
        return validate_mapping(VempExtractOptions, data, "--set", what="VEMP options")
    return validate_mapping(VempExtractOptions, read_yaml_mapping(path, list(overrides)), str(path),
                            what="VEMP options")


# ------------------------------------------------------------------------------------------------ inputs
@dataclass
class VempInputs:
    """The graph and the frozen token tables of stage 1.

    ``text [N, L_t, d_t]``, ``text_mask [N, L_t]`` (bool), ``image [N, L_v, d_v]``, pooled ``text_pooled [N, d_t']``
    and ``image_pooled [N, d_v']``.
    """

    triples: TripleSet
    text: torch.Tensor
    text_mask: torch.Tensor
    image: torch.Tensor
    text_pooled: torch.Tensor
    image_pooled: torch.Tensor


def load_inputs(triples: TripleSet, text_tokens: Path, image_tokens: Path, text_pooled: Path | None = None,
                image_pooled: Path | None = None) -> VempInputs:
    """The token (and optional pooled) tables, checked against the graph.

    :raises ConfigError: a file that is missing, pooled where tokens are expected (or the reverse), or with a row
        count other than the graph's node count (naming the option: ``--text-tokens`` ...).
    """
    from mmkgc.features.io import load_feature_table

    n = triples.num_entities

    def table(option: str, path: Path, tokens: bool):
        if not Path(path).is_file():
            raise ConfigError(f"{option}: {path} does not exist")
        t = load_feature_table(path)
        if t.is_tokens != tokens:
            raise ConfigError(f"{option}: {path} is a {'token' if t.is_tokens else 'pooled'} table "
                              f"{list(t.values.shape)}; expected a {'token' if tokens else 'pooled'} table")
        if t.num_entities != n:
            raise ConfigError(f"{option}: {path} has {t.num_entities} rows but {triples.name} has {n} entities")
        return t

    text = table("--text-tokens", text_tokens, True)
    image = table("--image-tokens", image_tokens, True)
    tp = table("--text-pooled", text_pooled, False).values if text_pooled else text.pooled("mean").values
    ip = table("--image-pooled", image_pooled, False).values if image_pooled else image.pooled("mean").values
    return VempInputs(triples, text.values, text.token_mask, image.values, tp, ip)


def _edges(triples: torch.Tensor) -> torch.Tensor:
    """``(h, r, t)`` ``[n, 3]`` -> ``(src, dst)`` ``[n, 2]``."""
    return triples[:, [0, 2]]


def held_out_pairs(triples: TripleSet) -> torch.Tensor:
    """``(src, dst)`` pairs ``[F, 2]`` of validation/test edges that are not also training pairs: stage 1 never
    trains on them."""
    n = triples.num_entities
    train = _edges(triples.train)
    held = torch.cat([_edges(triples.valid), _edges(triples.test)])
    train_keys = torch.unique(train[:, 0] * n + train[:, 1])
    return held[~torch.isin(held[:, 0] * n + held[:, 1], train_keys)]


# ------------------------------------------------------------------------------------------------ stage 1
def build_fusion(options: VempExtractOptions, inputs: VempInputs) -> CrossAttentionTokenFusion:
    """The fusion module for the token widths of ``inputs``."""
    o = options
    return CrossAttentionTokenFusion(inputs.text.shape[-1], inputs.image.shape[-1], o.dim, o.num_heads, o.ffn_dim,
                                     o.proj_dim, o.dropout)


def pretrain(options: VempExtractOptions, inputs: VempInputs, seed: int = 42, device: str | torch.device = "cpu",
             log: Callable[[str], None] = print) -> tuple[CrossAttentionTokenFusion, dict[str, Any]]:
    """Stage 1 on the training edges: epochs shuffle them (seeded) and drop the last incomplete batch (VEMP);
    ``max_seconds`` stops early.

    :returns: the trained module (eval mode) and its record (``history`` per epoch: mean ``loss`` / ``mm`` /
        ``graph`` terms, steps, seconds; ``stopped_by_time``, ``train_edges``, ``held_out_edges_excluded``).
    :raises ConfigError: ``batch_size`` larger than the number of training edges.
    """
    from mmkgc.training.steps import ContrastivePretrainStep

    o = options
    device = torch.device(device)
    torch.manual_seed(seed)
    fusion = build_fusion(o, inputs).to(device)
    train = _edges(inputs.triples.train)
    forbidden = held_out_pairs(inputs.triples)
    steps_per_epoch = train.shape[0] // o.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(f"batch_size: {o.batch_size} exceeds the {train.shape[0]} training edges")
    step = ContrastivePretrainStep(fusion, inputs.text.to(device), inputs.text_mask.to(device),
                                   inputs.image.to(device), o.temperature, o.learnable_temperature, o.graph_weight,
                                   o.lr, o.weight_decay, o.amp, o.mask_duplicates, forbidden)
    gen = torch.Generator().manual_seed(seed)
    history, start, stopped = [], time.monotonic(), False
    for epoch in range(1, o.epochs + 1):
        perm = torch.randperm(train.shape[0], generator=gen)
        sums = {"loss": 0.0, "mm": 0.0, "graph": 0.0}
        done = 0
        for b in range(steps_per_epoch):
            batch = train[perm[b * o.batch_size:(b + 1) * o.batch_size]]
            out = step.step(batch[:, 0].to(device), batch[:, 1].to(device))
            for k in sums:
                sums[k] += out[k]
            done += 1
            if o.max_seconds is not None and time.monotonic() - start > o.max_seconds:
                stopped = True
                break
        rec = {"epoch": epoch, "steps": done, **{k: v / max(done, 1) for k, v in sums.items()},
               "seconds": round(time.monotonic() - start, 2)}
        history.append(rec)
        log(f"pretrain epoch {epoch}: loss {rec['loss']:.4f} (mm {rec['mm']:.4f}, graph {rec['graph']:.4f}) "
            f"{done} steps, {rec['seconds']} s")
        if stopped:
            log(f"pretrain: stopped by max_seconds={o.max_seconds} in epoch {epoch}")
            break
    record = {"history": history, "stopped_by_time": stopped, "train_edges": int(train.shape[0]),
              "held_out_edges_excluded": int(forbidden.shape[0]), "device": str(device)}
    return fusion.eval(), record


def node_features(inputs: VempInputs, fusion: CrossAttentionTokenFusion | None,
                  batch_size: int = 256) -> dict[str, torch.Tensor]:
    """The four VEMP feature modes ``{mode: float32 [N, d]}``; ``fused`` only with a ``fusion`` module (its
    :meth:`~mmkgc.nn.fusion.CrossAttentionTokenFusion.encode` output before the heads)."""
    feats = {"text_only": inputs.text_pooled.float(), "image_only": inputs.image_pooled.float()}
    feats["concat"] = torch.cat([feats["text_only"], feats["image_only"]], 1)
    if fusion is not None:
        device = next(fusion.parameters()).device
        rows = []
        fusion.eval()
        with torch.no_grad():
            for s in range(0, inputs.text.shape[0], batch_size):
                f, _, _ = fusion.encode(inputs.text[s:s + batch_size].to(device),
                                        inputs.text_mask[s:s + batch_size].to(device),
                                        inputs.image[s:s + batch_size].to(device))
                rows.append(f.float().cpu())
        feats["fused"] = torch.cat(rows)
    return feats


def extract_tables(inputs: VempInputs, options: VempExtractOptions, modes: Sequence[str] = FEATURE_MODES,
                   seed: int = 42, device: str | torch.device = "cpu", sources: dict[str, str] | None = None,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    """Stage 1 (only when ``fused`` is asked for) and the tables of ``modes``: ``{mode: FeatureTable}`` (modality
    name = the mode) with provenance (``source: mmkgc features extract --encoder vemp``, the options, the seed, the
    input files ``sources`` and, for ``fused``, the pretraining record).

    :raises ConfigError: an unknown mode.
    """
    from mmkgc.features.store import FeatureTable, make_provenance

    unknown = [m for m in modes if m not in FEATURE_MODES]
    if unknown:
        raise ConfigError(f"--table: unknown table(s) {', '.join(unknown)}; expected {', '.join(FEATURE_MODES)}")
    fusion, record = None, None
    if "fused" in modes:
        fusion, record = pretrain(options, inputs, seed=seed, device=device, log=log)
    feats = node_features(inputs, fusion, options.export_batch_size)
    out = {}
    for mode in modes:
        extra: dict[str, Any] = {"mode": mode, "dataset": inputs.triples.name, "seed": seed, **(sources or {})}
        if mode == "fused":
            extra.update(options=options.model_dump(mode="json"), pretrain=record)
        out[mode] = FeatureTable(feats[mode].contiguous(), mode,
                                 provenance=make_provenance("mmkgc features extract --encoder vemp", **extra))
    return out
