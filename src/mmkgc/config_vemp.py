"""Configuration of the VEMP two-stage pipeline (``mmkgc vemp ...``; methods.md section 2).

A VEMP config file (YAML, strict: unknown keys are errors naming the field)::

    name: vemp-db15k
    seed: 42
    graph: {format: vemp_csv, path: data/DB15K/raw}   # or {format: openke, path: data/DB15K}
    features: {text_tokens: text_tokens.safetensors, image_tokens: image_tokens.safetensors}
    pretrain: {dim: 512, num_heads: 8, proj_dim: 256, batch_size: 64, epochs: 20, lr: 5.0e-5, ...}
    linkpred: {hidden_dims: [256], out_dim: 128, num_bases: 31, fanouts: [10, 5], epochs: 10, ...}
    filtered: {scorer: distmult, dim: 128, ...}                    # optional; openke graphs only
    compare: {modes: [text_only, image_only, concat, fused], protocols: [vemp_sampled, filtered]}

Published values (methods.md 2.5) are the defaults.  Relative paths resolve against the config file's directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from mmkgc.config import _Strict, read_yaml_mapping, validate_mapping

FEATURE_MODES = ("text_only", "image_only", "concat", "fused")


class VempGraphConfig(_Strict):
    """The graph: ``vemp_csv`` (VEMP's ``entities.csv`` / ``relations.csv`` / ``edge_index.parquet`` with a random
    ``valid_fraction`` / ``test_fraction`` edge split seeded by ``split_seed``) or ``openke`` (the standard DB15K
    ``train2id/valid2id/test2id`` split)."""

    format: Literal["vemp_csv", "openke"]
    path: Path
    valid_fraction: float = Field(0.1, ge=0.0, lt=0.5)
    test_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    split_seed: int = 42


class VempFeaturesConfig(_Strict):
    """Frozen token inputs of stage 1 (mmkgc feature-table files, one row per graph node, in graph order).

    :param text_tokens: token table ``[N, L_t, d_t]`` with a token mask (e.g. CLIP text last hidden state).
    :param image_tokens: token table ``[N, L_v, d_v]`` (image patch tokens, without CLS).
    :param text_pooled: pooled text table for the ``text_only`` mode (VEMP: CLIP text pooler); default: the
        masked mean of ``text_tokens``.
    :param image_pooled: pooled image table for ``image_only`` (VEMP: CLIP vision pooler); default: the mean of
        ``image_tokens``.
    """

    text_tokens: Path
    image_tokens: Path
    text_pooled: Path | None = None
    image_pooled: Path | None = None


class PretrainConfig(_Strict):
    """Stage 1: :class:`~mmkgc.nn.fusion.CrossAttentionTokenFusion` trained by
    :class:`~mmkgc.training.steps.ContrastivePretrainStep` on training edges only."""

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
    def _heads(self) -> "PretrainConfig":
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} must be divisible by num_heads {self.num_heads}")
        return self


class LinkPredConfig(_Strict):
    """Stage 2 under VEMP's protocol: R-GCN + relation-agnostic MLP decoder, binary link BCE (1 random negative per
    positive), sampled tail ranking against ``num_candidates`` nodes.

    :param relation_grouping: ``vemp_meta`` (VEMP's published 31 meta-relations, ``utils/util.py``
        ``relation_to_meta``), ``mmkgc_meta`` (mmkgc's own 31-group table) or ``none`` (the raw relations).
    :param fanouts: neighbour sampling per hop (VEMP ``[10, 5]``); ``None`` = full batch.
    :param negatives: training negatives, one per positive: ``binary`` (both endpoints drawn uniformly at random,
        unfiltered, as VEMP's ``LinkNeighborLoader(neg_sampling_ratio=1.0)``: PyG's binary negative sampling,
        ``torch_geometric/sampler/neighbor_sampler.py`` ``edge_sample``) or ``tail`` (the positive's source with a
        random destination; mmkgc's earlier form).
    :param disjoint_supervision: fraction of the training edges drawn each epoch as supervision edges and
        removed from that epoch's message-passing graph (fix of bug 2.7.3); ``0`` reproduces the public code
        (supervision edges are message edges).
    :param legacy: also report the public code's protocol (negative edges as queries, unfiltered candidates).
    :param max_queries: evaluate at most this many queries per split (a seeded subset; ``None`` = all).
    :param max_seconds: stop training after this many seconds (checked per batch).
    """

    hidden_dims: list[int] = Field(default_factory=lambda: [256])
    out_dim: int = Field(128, ge=1)
    num_bases: int | None = Field(31, ge=1)
    dropout: float = Field(0.5, ge=0.0, lt=1.0)
    decoder_hidden: int = Field(128, ge=1)
    decoder_dropout: float = Field(0.3, ge=0.0, lt=1.0)
    relation_grouping: Literal["none", "vemp_meta", "mmkgc_meta"] = "vemp_meta"
    fanouts: list[int] | None = Field(default_factory=lambda: [10, 5])
    negatives: Literal["binary", "tail"] = "binary"
    disjoint_supervision: float = Field(0.3, ge=0.0, lt=1.0)
    batch_size: int = Field(64, ge=1)
    epochs: int = Field(10, ge=1)
    lr: float = Field(1e-3, gt=0)
    eval_every: int = Field(5, ge=1)
    num_candidates: int = Field(100, ge=1)
    legacy: bool = True
    max_queries: int | None = Field(None, ge=1)
    max_seconds: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _fanouts(self) -> "LinkPredConfig":
        if self.fanouts is not None and (not self.fanouts or any(f == 0 or f < -1 for f in self.fanouts)):
            raise ValueError(f"fanouts must be positive ints or -1, got {self.fanouts}")
        return self


class FilteredConfig(_Strict):
    """Stage 2 under the library's filtered all-entity protocol: an ``ExperimentConfig`` with
    ``representation: rgcn`` over the exported feature table, trained by the ordinary Trainer.

    :param experiment: extra ``ExperimentConfig`` keys merged over the generated ones (e.g.
        ``{training: {epochs: 50}, evaluation: {split: valid_clean}}``).
    """

    scorer: Literal["distmult", "rotate", "transe", "complex"] = "distmult"
    dim: int = Field(128, ge=1)
    scorer_options: dict[str, Any] = Field(default_factory=dict)
    experiment: dict[str, Any] = Field(default_factory=dict)


class CompareConfig(_Strict):
    """The four-way feature comparison: which modes and protocols ``mmkgc vemp compare`` runs."""

    modes: list[Literal["text_only", "image_only", "concat", "fused"]] = Field(
        default_factory=lambda: list(FEATURE_MODES))
    protocols: list[Literal["vemp_sampled", "filtered"]] = Field(default_factory=lambda: ["vemp_sampled"])


class VempConfig(_Strict):
    """A whole VEMP run (see the module docstring)."""

    name: str = "vemp"
    seed: int = 42
    device: str = "auto"
    num_threads: int | None = Field(None, ge=1)
    graph: VempGraphConfig
    features: VempFeaturesConfig
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    linkpred: LinkPredConfig = Field(default_factory=LinkPredConfig)
    filtered: FilteredConfig | None = None
    compare: CompareConfig = Field(default_factory=CompareConfig)

    @model_validator(mode="after")
    def _protocols(self) -> "VempConfig":
        if "filtered" in self.compare.protocols:
            if self.graph.format != "openke":
                raise ValueError("compare.protocols 'filtered' needs graph.format 'openke' (the standard split)")
            if self.filtered is None:
                self.filtered = FilteredConfig()
        return self


def parse_vemp_config(data: Any, source: str = "<config>", base_dir: Path | None = None) -> VempConfig:
    """Validate a VEMP config mapping; relative paths are resolved against ``base_dir``.

    :raises ConfigError: naming every invalid field and what is wrong with it.
    """
    cfg = validate_mapping(VempConfig, data, source, what="a VEMP config")
    if base_dir is not None:
        def resolve(p: Path | None) -> Path | None:
            return p if p is None or p.is_absolute() else (base_dir / p).resolve()

        cfg.graph.path = resolve(cfg.graph.path)
        for key in ("text_tokens", "image_tokens", "text_pooled", "image_pooled"):
            setattr(cfg.features, key, resolve(getattr(cfg.features, key)))
    return cfg


def load_vemp_config(path: str | Path, overrides: list[str] | None = None) -> VempConfig:
    """Read a VEMP YAML config (``overrides``: ``dotted.key=value``).

    :raises ConfigError: missing file, invalid YAML or invalid fields (naming the file and field).
    """
    path = Path(path)
    return parse_vemp_config(read_yaml_mapping(path, overrides), source=str(path), base_dir=path.parent)
