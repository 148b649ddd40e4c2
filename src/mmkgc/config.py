"""Experiment configuration: YAML in, validated by pydantic, with messages that name the field.

A config has five sections (all keys are checked; an unknown key is an error, so a typo never passes
silently)::

    name: db15k-rotate
    seed: 42
    dataset: {name: DB15K}                 # or {path: dir, format: openke|tsv} or {synthetic: {...}}
    model: {scorer: rotate, dim: 250, scorer_options: {margin: 12.0}, modalities: []}
    training: {loop: negative_sampling, epochs: 1000, batch_size: 1024, num_negatives: 32, ...}
    evaluation: {every: 10, patience: 5, split: valid_clean}

Relative paths inside a config file are resolved against the directory of that file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mmkgc.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


_M = TypeVar("_M", bound=BaseModel)


# ----------------------------------------------------------------------------------------------- components by name
class OptionError(ValueError):
    """A bad key inside an options mapping; the message formatter appends :attr:`key` to the field's dotted path
    (``model.fusion.temperatur: unexpected option ...``)."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


def component_resolver(module: str, attribute: str) -> Any:
    """The ``class_resolver.ClassResolver`` ``module.attribute`` (e.g. ``mmkgc.nn.fusion``, ``fusion_resolver``),
    or ``None`` where that module has none (the caller then falls back to its module's own name table)."""
    import importlib

    return getattr(importlib.import_module(module), attribute, None)


def _lookup(resolver: Any, table: dict[str, type], name: str, what: str) -> type:
    """The class ``name`` (case, ``_`` and ``-`` ignored) from ``resolver``, else from ``table``.

    :raises ValueError: an unknown name, listing the known ones.
    """
    if resolver is not None:
        try:
            return resolver.lookup(name)
        except (KeyError, ValueError, TypeError):
            known = sorted(resolver.options)
    else:
        key = str(name).lower().replace("-", "_")
        if key in table:
            return table[key]
        known = sorted(table)
    raise ValueError(f"unknown {what} {name!r}; known: {', '.join(known)}")


def check_options(cls: type, options: dict[str, Any], what: str, supplied: tuple[str, ...] = ()) -> None:
    """Check ``options`` against the keyword parameters of ``cls.__init__`` (those the builder itself passes,
    ``supplied``, excluded) before anything is built.

    :raises OptionError: the first unknown key, naming it and listing the accepted ones.
    """
    import inspect

    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if n != "self" and n not in supplied
                and p.kind is not inspect.Parameter.VAR_POSITIONAL]
    for key in options:
        if key not in accepted:
            raise OptionError(key, f"unexpected option of {what} (its options: {', '.join(accepted) or 'none'})")


def scorer_class(name: str) -> type:
    """The scorer class of ``model.scorer`` (:data:`mmkgc.nn.scorers.scorer_resolver`; ``SCORERS`` before it).

    :raises ValueError: unknown name."""
    import mmkgc.nn.scorers as scorers

    return _lookup(component_resolver("mmkgc.nn.scorers", "scorer_resolver"), getattr(scorers, "SCORERS", {}),
                   name, "scorer")


def fusion_class(name: str) -> type:
    """The vector fusion operator of ``model.fusion.kind`` (:data:`mmkgc.nn.fusion.fusion_resolver`; before that
    resolver lands, the two operators the representations build: ``concat`` and ``attention``).

    :raises ValueError: unknown name."""
    import mmkgc.nn.fusion as fusion

    table = {"concat": fusion.ConcatFusion, "attention": fusion.TanhAttentionFusion,
             "tanh_attention": fusion.TanhAttentionFusion}
    return _lookup(component_resolver("mmkgc.nn.fusion", "fusion_resolver"), table, name, "fusion")


def _fusion_name(cls: type) -> str:
    """The config's name of a fusion operator: ``concat`` and ``attention`` as the configs spell them, else the
    class name without ``Fusion``, lower case."""
    import mmkgc.nn.fusion as fusion

    known = {fusion.ConcatFusion: "concat", fusion.TanhAttentionFusion: "attention"}
    return known.get(cls, cls.__name__.removesuffix("Fusion").lower())


class SyntheticConfig(_Strict):
    """Options of :func:`mmkgc.data.synthetic.make_synthetic_mmkg` (passed through as keyword arguments)."""

    model_config = ConfigDict(extra="allow")
    seed: int = 0

    @model_validator(mode="after")
    def _known_options(self) -> "SyntheticConfig":
        import inspect

        from mmkgc.data.synthetic import make_synthetic_mmkg

        known = set(inspect.signature(make_synthetic_mmkg).parameters)
        unknown = sorted(set(self.model_extra or {}) - known)
        if unknown:
            raise ValueError(f"unknown option(s) {', '.join(unknown)} of the synthetic KG (valid: "
                             f"{', '.join(sorted(known))})")
        return self


class RandomSplitConfig(_Strict):
    """The seeded random edge split of an unsplit graph (``dataset.format: vemp_csv``: VEMP's ``entities.csv`` /
    ``relations.csv`` / ``edge_index.parquet``, split like PyG's ``RandomLinkSplit``; default 80/10/10, seed 42)."""

    valid_fraction: float = Field(0.1, ge=0.0, lt=0.5)
    test_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    seed: int = 42


class DatasetConfig(_Strict):
    """Where the triples come from: a registered dataset, a directory, or the built-in synthetic KG.

    :param name: a registered dataset (``mmkgc datasets list``); downloaded unless ``data_dir`` or the
        ``MMKGC_DATA_DIR`` environment variable points to a local copy.
    :param path: a directory in OpenKE layout (``format: openke``) or with ``train.tsv``/``valid.tsv``/
        ``test.tsv`` labeled triples (``format: tsv``).
    :param synthetic: generate the seeded synthetic multimodal KG instead.
    :param format: also ``vemp_csv``: VEMP's graph layout under ``path``, split by ``random_split``
        (:func:`mmkgc.data.formats.read_vemp_graph`).
    :param pykeen: a dataset of PyKEEN by name (``FB15k237``, ``Nations``, ...; ``pykeen.datasets``), loaded through
        PyKEEN (which downloads and caches it), when PyKEEN is installed (:mod:`mmkgc.interop.pykeen`).
    """

    name: str | None = None
    data_dir: Path | None = None
    path: Path | None = None
    format: Literal["openke", "tsv", "vemp_csv"] = "openke"
    synthetic: SyntheticConfig | None = None
    pykeen: str | None = None
    allow_unpinned: bool = False
    random_split: RandomSplitConfig | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "DatasetConfig":
        given = [k for k in ("name", "path", "synthetic", "pykeen") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of name, path, synthetic or pykeen (got {given or 'none'})")
        if self.random_split is not None and self.format != "vemp_csv":
            raise ValueError("random_split applies to format 'vemp_csv' (the other formats come split)")
        return self


class ModalityConfig(_Strict):
    """One modality feature table used by the multimodal entity representation.

    :param name: modality name (``text``, ``image``, ...); a synthetic dataset provides ``text`` and ``image``.
    :param file: a feature file (``.safetensors``, ``.npy``, ``.pth``) with one row per entity id.
    :param encoder: compute text features from entity labels with this text encoder instead of a file
        (cached on disk; see :mod:`mmkgc.features.cache`).
    :param text_source: where entity text comes from when ``encoder`` is used: ``label`` (cleaned entity
        names) or ``table`` (``table_path`` with ``table_key`` and ``table_column``).
    :param missing: how entities without this modality are represented: ``learned`` (one trainable vector per
        modality) or ``zeros``.
    :param table: a feature table written by ``mmkgc features extract`` / ``import``: a bare name (the file
        ``$MMKGC_HOME/features/<dataset>/<NAME>.safetensors``) or a path to an mmkgc table file.
    :param pool: pool a token table ``[N, L, d]`` to ``[N, d]`` (``mean`` over real tokens or ``first``);
        token tables are refused without it.
    :param dim: the expected feature width ``d`` (e.g. 4096 for DB15K's visual table); a loaded table of another
        width is a ConfigError naming this field.
    """

    name: str
    file: Path | None = None
    encoder: str | None = None
    table: str | None = None
    pool: Literal["mean", "first"] | None = None
    text_source: Literal["label", "table"] = "label"
    table_path: Path | None = None
    table_key: str | None = None
    table_column: str | None = None
    missing: Literal["learned", "zeros"] = "learned"
    dim: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _source(self) -> "ModalityConfig":
        given = [k for k in ("file", "encoder", "table") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give one of file, encoder or table for a modality, not {' and '.join(given)}")
        if self.text_source == "table" and (self.table_path is None or self.table_column is None):
            raise ValueError("text_source 'table' needs table_path and table_column")
        return self


class FusionConfig(_Strict):
    """How the per-modality entity vectors ``[B, M, D]`` become one vector (``representation: fused``).

    :param kind: ``concat`` (project the concatenation back to ``D``) or ``attention`` (softmax weights over the
        modality vectors from a shared scoring vector; AdaMF, Zhang et al. LREC-COLING 2024).
    :param relation_temperature: divide the attention logits by a per-relation temperature ``sigmoid(g_r)``
        (NativE, Zhang et al. SIGIR 2024); the representation then depends on the query relation.
    :param confidence: multiply each modality's attention logit by a confidence: ``l2`` = the L2 norm of the
        (gated) modality vector (AFME's dynamic weight allocation, Wang et al. Neural Networks 2025).
    :param relation_gate: AFME's relation-driven denoising gate ``sigmoid(W (h_m * c_r) + b) * h_m`` before fusion.
    :param mask_missing: give an entity's absent modalities zero attention weight (``true``); ``false`` lets the
        missing-modality fill vector take part in the softmax like a real modality (ablation).
    :param kind: any name :data:`mmkgc.nn.fusion.fusion_resolver` knows (``mmkgc ls fusions``); every key not
        declared here is a constructor option of that operator, checked against its signature (an unknown one is a
        ConfigError naming ``model.fusion.<key>``), so a new operator needs no change to this class.
    :param gate_rank: ``null`` (the paper's full ``D x D`` gate matrix) or a rank ``k``: ``W_g = U V`` with
        ``V: D -> k``, ``U: k -> D`` (cost ``2Dk`` instead of ``D^2`` per entity, relation and modality; a
        documented deviation for CPU budgets).
    """

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    kind: str = "concat"
    relation_temperature: bool = False
    confidence: Literal["none", "l2"] = "none"
    relation_gate: bool = False
    mask_missing: bool = True
    gate_rank: int | None = Field(None, ge=1)

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, v: str) -> str:
        return _fusion_name(fusion_class(v))

    @property
    def options(self) -> dict[str, Any]:
        """The keys beyond the declared ones: constructor options of the ``kind`` operator."""
        return dict(self.model_extra or {})

    @model_validator(mode="after")
    def _operator_options(self) -> "FusionConfig":
        check_options(fusion_class(self.kind), self.options, f"fusion {self.kind!r}",
                      supplied=("dim", "num_modalities", "num_relations", *type(self).model_fields))
        return self

    @model_validator(mode="after")
    def _attention_only(self) -> "FusionConfig":
        if self.kind != "attention" and (self.relation_temperature or self.confidence != "none" or self.relation_gate):
            raise ValueError("relation_temperature, confidence and relation_gate need fusion kind 'attention'")
        return self


class GNNConfig(_Strict):
    """R-GCN entity encoder (``representation: rgcn``; Schlichtkrull et al. 2018, VEMP stage 2).

    :param hidden_dims: output width of each layer but the last (the last layer outputs the scorer's entity width).
    :param num_bases: basis decomposition size (``None``: one weight matrix per relation type).
    :param dropout: dropout between layers.
    :param relation_grouping: ``none`` (the dataset's relations), ``vemp_meta`` (VEMP's published meta-relation
        table) or ``mmkgc_meta`` (mmkgc's own 31-group table; :mod:`mmkgc.data.relation_groups`).
    :param final_activation: ReLU on the output layer too (as VEMP).
    :param fanouts: neighbour-sampled training, one fan-out per hop (``-1`` = all); ``None`` = full batch.
    :param input_dim: width of the learned input table when ``modalities`` is empty (default: the entity width).
    """

    hidden_dims: list[int] = Field(default_factory=lambda: [256])
    num_bases: int | None = Field(None, ge=1)
    dropout: float = Field(0.5, ge=0.0, lt=1.0)
    relation_grouping: Literal["none", "vemp_meta", "mmkgc_meta"] = "none"
    final_activation: bool = True
    fanouts: list[int] | None = None
    input_dim: int | None = Field(None, ge=1)

    @field_validator("fanouts")
    @classmethod
    def _fanouts(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or any(f == 0 or f < -1 for f in v)):
            raise ValueError(f"fanouts must be a non-empty list of positive ints or -1 (all neighbours), got {v}")
        return v


class ImviaConfig(_Strict):
    """IMVIA (methods.md section 4): options of the multi-view MoE / TuckER / decision-fusion model
    (``model.method: imvia``; :class:`mmkgc.models.imvia.IMVIAModel`).  The entity width is ``model.dim``.

    :param num_experts: MoE experts ("views") per modality (published 3).
    :param relation_dim: relation width of the TuckER decoders (default ``model.dim``; published 256).
    :param structure: include the structural embedding as a modality (published: yes).
    :param modality_input: ``projected`` (frozen feature table + a per-modality linear projection to ``model.dim``;
        any feature width) or ``table`` (a trainable table initialised from the features, as published; the
        feature width after ``pooling`` must equal ``model.dim``).
    :param pooling: ``none`` or ``imvia_256`` (the published fixed reshape-pooling of 4096/768/384-d features to 256).
    :param l2_normalize_features: L2-normalise feature rows before pooling (published: yes).
    :param input_dropout, hidden_dropout1, hidden_dropout2, batch_norm: TuckER decoder (published 0.3/0.4/0.5, BN).
    :param noisy_gating, relation_temperature: MoE gating options (published: both on).
    :param expert_init: MoE expert weights at the start: ``normal`` (published ``N(0, 0.02^2)``) or ``identity``
        (``I + N(0, 0.02^2)``: each view starts as the entity's own vector; the budget configs' choice, see
        :class:`mmkgc.nn.adapters.MoEAdapter`).
    :param relation_temperature_table: ``shared`` (one ``2R x 1`` temperature table used by every branch's MoE, as
        published: ``rel_gate`` in ``models/RelMoE.py``) or ``per_branch`` (one table per branch).
    :param decision_fusion: ``mean`` (published), ``learned`` or ``relation`` (trained with a BCE term on the fused
        probabilities).
    :param decision_space: what the decision fusion averages: ``probability`` (published: each decoder's
        probabilities) or ``log_probability`` (each decoder's log-probabilities, which ranks as their geometric mean,
        a product of experts; with ``decision_fusion: mean`` only).  An arithmetic mean of probabilities lets a weak,
        flat decoder pull down a confident one; on DB15K it put IMVIA's fused score below its own structure
        decoder (docs/benchmarks.md "IMVIA against its TuckER backbone").
    :param align_weight: weight of the summed pairwise symmetric InfoNCE (published 0.01; 0 disables).
    :param align_temperature, align_learnable, align_min_temperature, align_normalize: InfoNCE temperature
        (published 0.07, learnable, unclamped, unnormalised; the library clamps at 0.01 by default).
    :param align_temperature_parameterization: ``log`` (learn ``log τ``, with the library's upper clamp at 100) or
        ``raw`` (learn ``τ`` itself with no upper clamp, as the published ``ClipLoss``; with
        ``align_min_temperature: null`` this is the published temperature exactly).
    :param align_dim: width of the per-modality alignment projections (default ``model.dim``).
    :param align_head: ``per_branch`` (one ``Linear + BatchNorm1d`` projection per branch, the default) or
        ``shared`` (one projection applied to every branch, its batch norm updated once per branch in branch
        order: the published single ``conv``/``bn`` head of ``models/RelMoE.py``, which the step parity with the
        official code needs, docs/benchmarks.md "IMVIA: one step on the same weights").
    :param align_mask_duplicates: mask pairs of the same query entity as false negatives (published: no).
    :param mi_weight: weight ``mu`` of the CLUB disentanglement term (published 1e-4; 0 disables the estimator).
    :param club_legacy_indexing: reproduce the published batch-element indexing of the expert views.
    :param club_include_logvar: include the log-variance term in the estimator's likelihood (published: no).
    :param club_pair: ``shared`` (one pair of expert indices drawn per step and used by every branch, as published:
        ``MIEstimator`` in ``models/modules.py``) or ``per_branch`` (each branch draws its own pair).
    :param label_smoothing, label_smoothing_variant: 1-N BCE targets; ``imvia`` is ``(1 - eps) y + 1/N``
        (published eps 0.1: ``0.9 y + 1/N``), ``standard`` is ``(1 - eps) y + eps/N``.
    :param branch_loss: ``bce`` (published: 1-N BCE per decoder, sigmoid probabilities averaged by the decision
        fusion) or ``softmax_ce`` (the budget variant: softmax cross-entropy over all entities per decoder, with
        ``label_smoothing`` as ``(1 - eps) y / |y| + eps / N``, and softmax probabilities averaged).  Under BCE
        every logit is first pushed towards ``1/N`` and a decoder stays near chance for its first epochs; softmax
        cross-entropy only moves the answers' logits relative to the others (Lacroix et al., 2018).
    """

    num_experts: int = Field(3, ge=1, le=64)
    relation_dim: int | None = Field(None, ge=1, le=4096)
    structure: bool = True
    modality_input: Literal["projected", "table"] = "projected"
    pooling: Literal["none", "imvia_256"] = "none"
    l2_normalize_features: bool = True
    input_dropout: float = Field(0.3, ge=0.0, lt=1.0)
    hidden_dropout1: float = Field(0.4, ge=0.0, lt=1.0)
    hidden_dropout2: float = Field(0.5, ge=0.0, lt=1.0)
    batch_norm: bool = True
    noisy_gating: bool = True
    expert_init: Literal["normal", "identity"] = "normal"
    relation_temperature: bool = True
    relation_temperature_table: Literal["shared", "per_branch"] = "shared"
    decision_fusion: Literal["mean", "learned", "relation"] = "mean"
    decision_space: Literal["probability", "log_probability"] = "probability"
    align_weight: float = Field(0.01, ge=0.0)
    align_temperature: float = Field(0.07, gt=0.0)
    align_learnable: bool = True
    align_min_temperature: float | None = Field(0.01, gt=0.0)
    align_normalize: bool = False
    align_temperature_parameterization: Literal["log", "raw"] = "log"
    align_dim: int | None = Field(None, ge=1)
    align_head: Literal["per_branch", "shared"] = "per_branch"
    align_mask_duplicates: bool = False
    mi_weight: float = Field(1e-4, ge=0.0)
    club_legacy_indexing: bool = False
    club_include_logvar: bool = True
    club_pair: Literal["shared", "per_branch"] = "shared"
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)
    label_smoothing_variant: Literal["imvia", "standard"] = "imvia"
    branch_loss: Literal["bce", "softmax_ce"] = "bce"

    @model_validator(mode="after")
    def _experts(self) -> "ImviaConfig":
        if self.mi_weight > 0 and self.num_experts < 2:
            raise ValueError("mi_weight > 0 (CLUB between expert views) needs num_experts >= 2")
        if self.decision_space == "log_probability" and self.decision_fusion != "mean":
            raise ValueError("decision_space 'log_probability' needs decision_fusion 'mean' (the trained fusion weights "
                             "are fitted with a BCE on fused probabilities)")
        return self


class EnrichmentConfig(_Strict):
    """Generated entity descriptions (Beyond Images, methods.md §3) combined with the model's modalities.

    The descriptions are produced offline (``mmkgc enrich``) or taken from the released files; the policy decides
    how they enter the model, which is otherwise unchanged (:mod:`mmkgc.features.enrich.policy`).

    :param source: released-layout ``.json`` enrichment files (original-image file first) and/or fusion journals
        (``.jsonl``); aligned to entity ids by name and encoded with ``encoder`` (cached).
    :param table: instead of ``source``: a feature table written by ``mmkgc enrich encode`` (name or path).
    :param encoder: text encoder of the generated text (and of "text + generated text" under ``concat_text``).
    :param text: ``auto`` (fused summary, else merged descriptions, else per-image captions), ``summary``,
        ``merged`` or ``images``.
    :param policy: ``extra_modality`` (I+T+G), ``replace_image`` (T+G), ``replace_text`` (I+G) or
        ``concat_text`` (existing text and generated text joined before encoding, replacing the text modality).
    :param target: the modality replaced by ``replace_*`` / ``concat_text`` (default ``image`` / ``text``).
    :param modality: name of the generated modality (``generated_text``).
    :param missing: fill of entities without generated text (``learned`` or ``zeros``).
    :param name_map: optional two-column map from the files' names (e.g. Wikidata URLs) to dataset labels.
    """

    source: list[Path] = Field(default_factory=list)
    table: str | None = None
    encoder: str = "all-MiniLM-L6-v2"
    text: Literal["auto", "summary", "merged", "images"] = "auto"
    policy: Literal["extra_modality", "replace_image", "replace_text", "concat_text"] = "extra_modality"
    target: str | None = None
    modality: str = "generated_text"
    missing: Literal["learned", "zeros"] = "learned"
    name_map: Path | None = None

    @field_validator("source", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, (str, Path)) else v

    @model_validator(mode="after")
    def _source(self) -> "EnrichmentConfig":
        if bool(self.source) == (self.table is not None):
            raise ValueError("give enrichment source or table (exactly one of them)")
        if self.policy == "concat_text" and self.table is not None:
            raise ValueError("policy 'concat_text' encodes the joined texts: give source files, not a table")
        if self.policy == "extra_modality" and self.target is not None:
            raise ValueError("target applies to replace_image, replace_text and concat_text")
        return self

    def replaced(self) -> str | None:
        """The modality this policy replaces (``None`` for ``extra_modality``)."""
        if self.policy == "extra_modality":
            return None
        return self.target or ("image" if self.policy == "replace_image" else "text")


class UnseenConfig(_Strict):
    """Representations of entities without training triples (``model.unseen``; :mod:`mmkgc.models.inductive`).

    :param mode: ``none`` (an entity without training triples keeps its untrained structural row) or ``modality``
        (its structural row is replaced by a projection of its modality vectors, trained on seen entities; used
        automatically for every entity without a training triple that has a modality).  Needs a representation with
        a structural table and modalities: ``concat`` or ``fused``.
    :param share: share of the seen entities (with a modality) drawn at every training step for the projection.
    :param dropout: replace the drawn entities' structural rows by their projection in the training step
        (structure dropout; trains the fusion and scorer to work from modalities alone).
    :param align_weight: weight of the alignment term, the relative squared error between the drawn entities'
        projection and their (detached) structural rows; it trains only the projection.  ``dropout: false`` with
        ``align_weight > 0`` leaves the training of every other parameter as without the option.
    :param projection: the map from the entity's adapted modality vectors to its substitute structural row:
        ``mlp`` (one hidden ReLU layer of the entity width; default) or ``linear``.
    :param sparsest: draw only among this share of the seen entities, the sparsest by training triples (ties at the
        cut included; ``1``: all seen entities).

    Defaults ``share: 0.3, sparsest: 0.3`` (DB15K, docs/benchmarks.md "Round 5": the other queries within 0.25 MRR
    points of the model without the option); a graph where many test triples involve unseen entities may prefer
    ``share: 0.15, sparsest: 1`` (the demo's inductive row).
    """

    mode: Literal["none", "modality"] = "none"
    share: float = Field(0.3, ge=0.0, lt=1.0)
    dropout: bool = True
    align_weight: float = Field(0.0, ge=0.0, le=100.0)
    projection: Literal["linear", "mlp"] = "mlp"
    sparsest: float = Field(0.3, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _trained(self) -> "UnseenConfig":
        if self.mode == "modality" and not self.dropout and (self.align_weight == 0 or self.share == 0):
            raise ValueError("nothing would train the modality projection: set dropout: true, or align_weight > 0 "
                             "with share > 0")
        return self


class ModelConfig(_Strict):
    """Entity representation + scorer.

    :param scorer: ``transe``, ``distmult``, ``complex`` or ``rotate``.
    :param dim: the rank hyper-parameter (RotatE/ComplEx entities have ``2 * dim`` real numbers).
    :param representation: ``structure`` (embedding table only), ``concat`` (structure and every modality,
        projected, concatenated and projected back; VEMP's "concat" baseline) or ``modality_only`` (modality
        projections without a structural embedding, e.g. text-only).
    :param reciprocal: add a reciprocal relation ``r + R`` per relation and answer head queries
        ``(?, r, t)`` as tail queries ``(t, r + R, ?)`` (Lacroix et al., 2018).
    :param representation: also ``fused`` (structure + every modality adapted to the entity width and combined by
        ``fusion``; AdaMF / NativE / AFME) and ``rgcn`` (an R-GCN over the training graph, ``gnn``; its input
        features are the modality tables or a learned table).
    :param adapter: modality adapter: ``linear`` (AdaMF) or ``mlp`` (``Linear-ReLU-Linear``, NativE / AFME) with
        ``adapter_hidden`` hidden units (default: the entity width).
    :param trainable_features: fine-tune the raw feature tables (AdaMF) instead of keeping them frozen (NativE).
    :param method: ``kge`` (one entity representation + one scorer) or ``imvia`` (per-modality decoders with
        decision fusion, options in ``imvia``).
    :param unseen: representations of entities without training triples (:class:`UnseenConfig`; default off).
    :param structure_init: start the structural entity table and the relation table from a trained
        structure-only model with the same scorer, ``dim`` and ``reciprocal`` (PyKEEN's ``PretrainedInitializer``,
        applied to the structural part of a multimodal model): a run directory (its selected checkpoint,
        ``checkpoints/best``), a checkpoint directory (e.g. ``RUN/checkpoints/last``) or that directory's
        ``model.safetensors``.  A relative path is taken from the config file's folder.  Every other parameter
        keeps its own initialisation.  Used by the warm-start rows of docs/benchmarks.md (a structure-only run
        first, then the multimodal model from its tables, the two budgets summed).
    """

    scorer: str = "rotate"
    dim: int = Field(200, ge=1, le=8192)
    scorer_options: dict[str, Any] = Field(default_factory=dict)
    representation: Literal["structure", "concat", "modality_only", "fused", "rgcn"] = "structure"
    reciprocal: bool = False
    modalities: list[ModalityConfig] = Field(default_factory=list)
    projection_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    adapter: Literal["linear", "mlp"] = "linear"
    adapter_hidden: int | None = Field(None, ge=1)
    trainable_features: bool = False
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    gnn: GNNConfig | None = None
    method: Literal["kge", "imvia"] = "kge"
    imvia: ImviaConfig | None = None
    enrichment: EnrichmentConfig | None = None
    unseen: UnseenConfig = Field(default_factory=UnseenConfig)
    structure_init: Path | None = None

    @field_validator("scorer")
    @classmethod
    def _scorer_name(cls, v: str) -> str:
        found = scorer_class(v)  # raises for an unknown name, listing the known ones
        return str(getattr(found, "name", None) or found.__name__.lower())  # stored as the scorer names itself

    @field_validator("scorer_options")
    @classmethod
    def _scorer_options(cls, v: dict[str, Any], info: Any) -> dict[str, Any]:
        if "scorer" in info.data:
            check_options(scorer_class(info.data["scorer"]), v, f"scorer {info.data['scorer']!r}", supplied=("dim",))
        return v

    @model_validator(mode="after")
    def _modalities(self) -> "ModelConfig":
        extra = self.enrichment is not None and self.enrichment.policy == "extra_modality"
        if self.enrichment is not None and self.representation == "structure" and self.method == "kge":
            raise ValueError("model.enrichment needs a representation that uses modalities (concat, modality_only, "
                             "fused, rgcn); 'structure' has none")
        if self.enrichment is not None and self.enrichment.replaced() is not None:
            if self.enrichment.replaced() not in [m.name for m in self.modalities]:
                raise ValueError(f"enrichment policy {self.enrichment.policy!r} replaces modality "
                                 f"{self.enrichment.replaced()!r}, but the modalities are "
                                 f"{', '.join(m.name for m in self.modalities) or 'none'}; add it or set "
                                 "enrichment.target")
        if self.representation not in ("structure", "rgcn") and not self.modalities and not extra:
            raise ValueError(f"representation {self.representation!r} needs at least one entry in modalities")
        if self.representation == "structure" and self.modalities and self.method == "kge":
            raise ValueError("representation 'structure' uses no modalities; set representation: concat")
        if self.representation not in ("fused",) and self.fusion.kind != "concat":
            raise ValueError(f"fusion kind {self.fusion.kind!r} needs representation 'fused' "
                             f"(got {self.representation!r})")
        if self.gnn is not None and self.representation != "rgcn":
            raise ValueError("gnn options need representation 'rgcn'")
        if self.method == "imvia" and self.imvia is None:
            self.imvia = ImviaConfig()
        if self.method == "imvia":
            if not self.reciprocal:
                raise ValueError("method 'imvia' answers head queries with reciprocal relations: set reciprocal: true")
            if not self.imvia.structure and not self.modalities:
                raise ValueError("method 'imvia' with imvia.structure: false needs at least one modality")
        elif self.imvia is not None:
            raise ValueError("imvia options need method: imvia")
        names = [m.name for m in self.modalities]
        if len(set(names)) != len(names):
            raise ValueError(f"modality names must be unique, got {names}")
        self._unseen_applies()
        if self.structure_init is not None and (self.method != "kge"
                                                or self.representation not in ("structure", "concat", "fused")):
            what = f"method {self.method!r}" if self.method != "kge" else f"representation {self.representation!r}"
            raise ValueError(f"structure_init needs a structural embedding table (representation structure, concat "
                             f"or fused with method kge); {what} has none")
        return self

    def _unseen_applies(self) -> None:
        """``unseen.mode: modality`` needs a structural table and modalities (concat or fused, method kge)."""
        if self.unseen.mode == "none":
            return
        why = {
            "structure": "representation 'structure' has no modalities to compute an unseen entity from",
            "modality_only": "representation 'modality_only' already computes every entity from its modalities",
            "rgcn": "representation 'rgcn' computes entities from the training graph, not from a structural table",
        }.get(self.representation)
        if self.method != "kge":
            why = f"method {self.method!r} has its own per-modality branches"
        if why is not None:
            raise ValueError(f"unseen.mode 'modality' needs representation 'concat' or 'fused': {why}")


class AdversarialConfig(_Strict):
    """Modality-adversarial training (methods.md sections 5-7): a generator of modality features conditioned on the
    structural embedding (and noise) and a critic; D/G steps alternate with gradients confined to their groups.

    :param kind: ``mat`` (AdaMF-MAT: fake-modality triples as extra negatives under the self-adversarial sigmoid
        loss, weight ``mu``; the generator makes them plausible), ``wgan_gp`` (NativE: WGAN-GP with the KGC scorer as
        the critic) or ``moien`` (AFME: structure-guided generator with self-attention over modality tokens and a
        self-attention discriminator; completes missing and enhances weak modalities).
    :param mu: weight of the adversarial term in the KGC (D) step; AdaMF-MAT's released scripts use 0.
    :param generator_lr: learning rate of the generator optimiser (``lrg``).
    :param noise_dim: width of the generator noise ``z`` (64 in AdaMF-MAT, NativE and the AFME sample).
    :param hidden_dim: hidden width of the MLP generators (512).
    :param generator: ``per_modality`` (AdaMF-MAT), ``shared`` (NativE) or ``moien`` (AFME); default by ``kind``.
    :param fake_types: which fake triples are built from a positive: fake ``head``, fake ``tail``, ``both``.
    :param fake_weighting: ``mat``: ``per_positive`` (each fake score weighs 1 against its positive; the paper's
        intent) or ``across_batch`` (the released code's one softmax over all fakes of the batch, methods §6.7.2).
    :param gp_weight: ``wgan_gp``: gradient-penalty coefficient (NativE 0.1).
    :param gp_target: ``wgan_gp``: where the gradient penalty is taken: ``entity`` (NativE: interpolates of the fused
        real and fake head vectors; with a RotatE critic the gradient norm is always ``sqrt(d)``, so the penalty is a
        constant and ``gp_weight`` has no effect -- a warning says so) or ``modality`` (interpolates of the head's
        real and generated modality vectors, before the fusion, where the penalty constrains the critic).
    :param layers, heads: ``moien``: self-attention layers and heads of the generator.
    :param discriminator_layers: ``moien``: self-attention layers of the discriminator.
    :param discriminator_lr: ``moien``: learning rate of the discriminator (default ``generator_lr``).
    :param adversarial_weight: ``moien``: weight of the discriminator term in the generator loss.
    :param reconstruction_weight: ``moien``: weight of ``||G(e) - x_m||^2`` on entities that have modality ``m``.
    :param complete_missing: ``moien``: fill absent modalities with the generator's (noise-free) output.
    :param complete_after_steps: ``moien`` with ``complete_missing``: generator updates before completion starts;
        until then absent modalities are masked (zero fusion weight).  ``0`` completes from the first batch (an
        untrained generator's output is then fused).  Counted in the checkpointed model, so resuming keeps it.
    :param every: run the adversarial part (the fake term of the main step, the generator step and, for
        ``moien``, the discriminator step) on every ``every``-th training batch only (the 1st, the ``every + 1``-th,
        ...); the other batches are plain KGC steps.  ``1`` (default): every batch, as published.  A CPU-budget
        option: the adversarial part's cost per epoch falls by ``every`` (docs/benchmarks.md, DB15K method table).
        The batch count is checkpointed, so resuming keeps the schedule.
    """

    kind: Literal["mat", "wgan_gp", "moien"] = "mat"
    mu: float = Field(1e-4, ge=0.0, le=10.0)
    generator_lr: float = Field(1e-4, gt=0.0, le=1.0)
    noise_dim: int = Field(64, ge=1, le=4096)
    hidden_dim: int = Field(512, ge=1, le=16384)
    generator: Literal["per_modality", "shared", "moien"] | None = None
    fake_types: list[Literal["head", "tail", "both"]] = Field(default_factory=lambda: ["head", "tail", "both"],
                                                              min_length=1)
    fake_weighting: Literal["per_positive", "across_batch"] = "per_positive"
    gp_weight: float = Field(0.1, ge=0.0, le=100.0)
    gp_target: Literal["entity", "modality"] = "entity"
    layers: int = Field(2, ge=1, le=12)
    heads: int = Field(4, ge=1, le=64)
    discriminator_layers: int = Field(1, ge=1, le=12)
    discriminator_lr: float | None = Field(None, gt=0.0, le=1.0)
    adversarial_weight: float = Field(1e-3, ge=0.0, le=100.0)
    reconstruction_weight: float = Field(1.0, ge=0.0, le=100.0)
    complete_missing: bool = True
    complete_after_steps: int = Field(0, ge=0)
    every: int = Field(1, ge=1, le=10000)

    @model_validator(mode="after")
    def _generator_default(self) -> "AdversarialConfig":
        if self.generator is None:
            self.generator = {"mat": "per_modality", "wgan_gp": "shared", "moien": "moien"}[self.kind]
        if len(set(self.fake_types)) != len(self.fake_types):
            raise ValueError(f"fake_types must not repeat entries, got {self.fake_types}")
        return self


#: Schedulers of ``torch.optim.lr_scheduler`` that a config can name (those needing callables or other
#: schedulers as arguments -- LambdaLR, MultiplicativeLR, SequentialLR, ChainedScheduler -- cannot be written in YAML).
LR_SCHEDULERS = ("ConstantLR", "CosineAnnealingLR", "CosineAnnealingWarmRestarts", "CyclicLR", "ExponentialLR",
                 "LinearLR", "MultiStepLR", "OneCycleLR", "PolynomialLR", "ReduceLROnPlateau", "StepLR")


class SchedulerConfig(_Strict):
    """A learning-rate scheduler of :mod:`torch.optim.lr_scheduler`, by class name with keyword arguments
    (``training.scheduler: {name: StepLR, kwargs: {step_size: 10, gamma: 0.5}}``).

    :param name: one of :data:`LR_SCHEDULERS` (the exact class name).
    :param kwargs: the constructor's keyword arguments except ``optimizer`` and ``last_epoch``; an unknown one is
        an error naming it.  ``ReduceLROnPlateau`` defaults to ``mode: max`` (the selection metric grows).
    :param interval: call ``scheduler.step()`` after every ``epoch`` or after every optimisation ``step``
        (e.g. ``OneCycleLR`` with ``total_steps``); ``ReduceLROnPlateau`` steps after each validation with the
        selection metric and needs ``epoch``.
    """

    name: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    interval: Literal["epoch", "step"] = "epoch"

    @model_validator(mode="after")
    def _known(self) -> "SchedulerConfig":
        import inspect

        if self.name not in LR_SCHEDULERS:
            raise ValueError(f"unknown scheduler {self.name!r}; known: {', '.join(LR_SCHEDULERS)}")
        from torch.optim import lr_scheduler

        params = set(inspect.signature(getattr(lr_scheduler, self.name)).parameters) - {"optimizer", "last_epoch"}
        unknown = sorted(set(self.kwargs) - params)
        if unknown:
            raise ValueError(f"{self.name} has no argument(s) {', '.join(unknown)} (valid: {', '.join(sorted(params))})")
        if self.name == "ReduceLROnPlateau" and self.interval != "epoch":
            raise ValueError("ReduceLROnPlateau steps on the validation metric: interval must be 'epoch'")
        return self


class LinkBCEConfig(_Strict):
    """Options of ``training.loop: link_bce`` (:class:`mmkgc.training.loops.LinkBCELoop`; VEMP stage 2, methods.md
    2.4 with the fix of bug 2.7.3).

    :param negatives: one negative per positive edge: ``binary`` (both endpoints uniform at random, unfiltered: PyG's
        binary negative sampling, which VEMP's ``LinkNeighborLoader(neg_sampling_ratio=1.0)`` uses) or ``tail``
        (the positive's source, a uniform destination).
    :param disjoint_supervision: fraction of the training edges drawn each epoch as supervision edges and removed
        from that epoch's message-passing graph; ``0`` reproduces the public code (every training edge is both a
        supervision and a message edge).
    """

    negatives: Literal["binary", "tail"] = "binary"
    disjoint_supervision: float = Field(0.3, ge=0.0, lt=1.0)


class TrainingConfig(_Strict):
    """Optimisation.

    :param loop: ``negative_sampling`` (sLCWA: each positive against ``num_negatives`` corrupted triples) or
        ``one_to_n`` (1-N scoring against all entities with BCE; needs ``reciprocal: true``).
    :param sampler: ``bernoulli`` (TransH's head-or-tail choice, Wang et al. 2014), ``openke_bernoulli`` (the same
        as OpenKE's C++ sampler applies it: the tail probability rounded up to a multiple of 1/1000, so DB15K's
        ``rdf:type`` heads are never corrupted; only to reproduce the official AdaMF-MAT / NativE code) or
        ``uniform``.
    :param filtered_negatives: redraw negatives that are training triples.
    :param positives: ``permutation`` (a shuffled pass over train) or ``with_replacement`` (OpenKE:
        ``floor(n / batch_size)`` batches drawn uniformly with replacement).
    :param loss: ``nssa`` (self-adversarial sigmoid, Sun et al. 2019), ``margin``, ``softplus`` (negative
        sampling); ``bce`` (with label smoothing, Dettmers et al. 2018) or ``softmax_ce`` (Lacroix et al. 2018) (1-N).
    :param lr: learning rate of the embedding tables (and of everything else unless ``dense_lr`` is set).
    :param dense_lr: learning rate of the non-embedding parameters (modality adapters, fusion projections).
    :param time_budget_minutes: stop training after this much training time (validation excluded).
    :param time_budget_clock: what the budget and ``training_seconds`` count: ``wall`` (elapsed time) or
        ``process_cpu`` (CPU seconds of this process, all its threads: ``time.process_time``), which other jobs on
        a shared machine barely change -- with one thread (``num_threads: 1``) it is about the wall time the run
        takes on an idle machine.  Each epoch record keeps its wall ``seconds`` either way.
    :param precision: ``fp32``; ``bf16`` (autocast to bfloat16, on CUDA and on the CPU) or ``fp16`` (autocast to
        float16 with ``torch.amp.GradScaler`` loss scaling; CUDA only -- a ConfigError on the CPU).  Parameters,
        optimiser state, losses and evaluation stay float32.
    :param sparse: sparse row-wise updates of the entity table (``nn.Embedding(sparse=True)`` with
        ``SparseAdam`` for ``adam``, sparse ``Adagrad`` for ``adagrad``); only for the plain ``structure``
        representation, the ``negative_sampling`` loop, no ``weight_decay`` and no ``gradient_clip``.
    :param distributed_negatives: under DDP (``torchrun`` / ``--nproc``): ``per_rank`` draws each rank's
        negatives from its own stream seeded by ``(seed, epoch, rank)``; ``replicated`` draws the negatives of the
        whole global batch on every rank from the shared stream and keeps the rank's slice, so the run sees the
        same batches and negatives as a single process (at ``world_size`` times the sampling cost).  The
        ``link_bce`` loop always draws the global batch's negatives from the shared stream; this option picks its
        subgraph (``gnn.fanouts``): ``replicated`` encodes the one-process subgraph of the global batch on every
        rank, ``per_rank`` samples around the rank's slice from its own stream.
    :param scheduler: an optional learning-rate scheduler (:class:`SchedulerConfig`), checkpointed and resumed.
    :param loop: also ``link_bce`` (VEMP stage 2: binary cross-entropy over each training edge and one random
        negative edge, supervision edges out of the epoch's message graph; options in ``link_bce``,
        :class:`LinkBCEConfig`; needs ``loss: bce``).
    """

    loop: Literal["negative_sampling", "one_to_n", "link_bce"] = "negative_sampling"
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(1024, ge=1)
    num_negatives: int = Field(32, ge=1)
    sampler: Literal["bernoulli", "openke_bernoulli", "uniform"] = "bernoulli"
    filtered_negatives: bool = True
    positives: Literal["permutation", "with_replacement"] = "permutation"
    loss: str = "nssa"
    adversarial_temperature: float = Field(1.0, ge=0.0)
    margin: float = Field(1.0, gt=0.0)
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    optimizer: Literal["adam", "adagrad"] = "adam"
    lr: float = Field(1e-3, gt=0.0, le=10.0)
    dense_lr: float | None = Field(None, gt=0.0, le=10.0)
    weight_decay: float = Field(0.0, ge=0.0)
    regularizer: Literal["none", "n3", "l2"] = "none"
    regularizer_weight: float = Field(0.0, ge=0.0)
    gradient_clip: float | None = Field(None, gt=0.0)
    time_budget_minutes: float | None = Field(None, gt=0.0)
    time_budget_clock: Literal["wall", "process_cpu"] = "wall"
    num_threads: int | None = Field(None, ge=1)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    sparse: bool = False
    distributed_negatives: Literal["per_rank", "replicated"] = "per_rank"
    adversarial: AdversarialConfig | None = None
    scheduler: SchedulerConfig | None = None
    link_bce: LinkBCEConfig = Field(default_factory=LinkBCEConfig)

    @field_validator("loss")
    @classmethod
    def _loss_name(cls, v: str) -> str:
        """Any name :data:`mmkgc.losses.loss_resolver` knows, stored as its first :data:`mmkgc.losses.LOSSES` name
        (``nssa``, ``margin``, ``softplus``, ``bce``, ``softmax_ce``), the spelling the trainer routes options by."""
        from mmkgc.losses import LOSSES, loss_resolver

        found = _lookup(loss_resolver, LOSSES, v, "loss")
        return next(name for name, c in LOSSES.items() if c is found)

    @model_validator(mode="after")
    def _link_bce(self) -> "TrainingConfig":
        if self.loop == "link_bce":
            if self.loss != "bce" or self.label_smoothing:
                raise ValueError("loop 'link_bce' trains with loss 'bce' (binary cross-entropy over one positive and "
                                 "one negative edge) and label_smoothing 0")
            if self.regularizer != "none" or self.sparse:
                raise ValueError("loop 'link_bce' supports neither a regularizer nor sparse: true")
        return self

    @model_validator(mode="after")
    def _loop_loss(self) -> "TrainingConfig":
        if self.loop == "one_to_n" and self.loss not in ("bce", "softmax_ce"):
            raise ValueError("loop 'one_to_n' trains with loss 'bce' or 'softmax_ce'")
        if self.loop == "link_bce":
            return self
        if self.loop == "negative_sampling" and self.loss in ("bce", "softmax_ce"):
            raise ValueError(f"loss {self.loss!r} belongs to loop 'one_to_n'; use nssa, margin or softplus")
        if self.sparse:
            if self.loop != "negative_sampling":
                raise ValueError("sparse: true needs loop 'negative_sampling' (1-N scoring uses every entity row)")
            if self.weight_decay or self.gradient_clip is not None:
                raise ValueError("sparse: true supports neither weight_decay nor gradient_clip")
            if self.scheduler is not None and self.optimizer == "adam":
                raise ValueError("sparse: true with optimizer 'adam' drives two optimisers; a scheduler needs "
                                 "optimizer 'adagrad' (or sparse: false)")
        return self


class EvaluationConfig(_Strict):
    """Validation during training and the final test.

    :param every: validate every this many epochs (and after the last one).
    :param patience: stop after this many validations without improvement of ``metric``.
    :param split: the selection split; ``valid_clean`` is the de-duplicated validation set minus train and test.
    :param tie_policy: the policy whose ``metric`` selects the model.
    :param batch_size: queries per scoring chunk, or ``auto`` to size chunks from the free device memory.
    :param sampled_candidates: rank each target against this many sampled non-answer candidates instead of all
        entities (for graphs too large for full ranking); results are reported as ``protocol: sampled`` and are
        not comparable with full ranking.
    :param report: ``selected`` (the model chosen on ``split``, tested once; the library's protocol) or
        ``legacy_best_test_per_metric`` (additionally report, for each metric separately, its best test value over
        the validation epochs -- the optimistic protocol of the MoMoK/IMVIA code, clearly labelled as such).
    :param protocol: ``filtered`` (the library's all-entity ranking, both sides; ``sampled_candidates`` optional)
        or ``vemp_sampled`` (VEMP's relation-agnostic tail ranking of each edge against ``sampled_candidates``
        (default 100) filtered random nodes, :class:`mmkgc.evaluation.sampled.VempSampledProtocol`; needs
        ``split: valid`` and the ``mlp_link`` scorer; an R-GCN passes messages along train edges for validation and
        train + valid edges for test, as VEMP).  The two are never comparable.
    :param vemp_legacy: ``vemp_sampled`` only: also report the public code's protocol (negative edges queried
        too, unfiltered candidates) in ``metrics.json`` (``legacy``); selection always uses the fixed one.
    :param max_queries: ``vemp_sampled`` only: rank at most this many edges per split (a seeded subset).
    """

    every: int = Field(10, ge=1)
    patience: int | None = Field(5, ge=1)
    split: Literal["valid_clean", "valid"] = "valid_clean"
    metric: str = "mrr"
    tie_policy: Literal["realistic", "optimistic", "pessimistic", "random"] = "realistic"
    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = 256
    test: bool = True
    sampled_candidates: int | None = Field(None, ge=1)
    report: Literal["selected", "legacy_best_test_per_metric"] = "selected"
    protocol: Literal["filtered", "vemp_sampled"] = "filtered"
    vemp_legacy: bool = False
    max_queries: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _protocol(self) -> "EvaluationConfig":
        if self.protocol == "vemp_sampled" and self.split != "valid":
            raise ValueError("protocol 'vemp_sampled' ranks the split's edges as VEMP does: set split: valid")
        if self.protocol != "vemp_sampled" and (self.vemp_legacy or self.max_queries is not None):
            raise ValueError("vemp_legacy and max_queries apply to protocol 'vemp_sampled'")
        if self.protocol == "vemp_sampled" and self.report != "selected":
            raise ValueError("protocol 'vemp_sampled' reports the selected model only (report: selected)")
        return self

    @field_validator("metric")
    @classmethod
    def _selection_metric(cls, v: str) -> str:
        from mmkgc.evaluation.metrics import SELECTION_METRICS

        if v not in SELECTION_METRICS:
            raise ValueError(f"unknown selection metric {v!r}; expected one of {', '.join(SELECTION_METRICS)}")
        return v


class TrackingConfig(_Strict):
    """Result trackers besides the run directory's own files (:mod:`mmkgc.training.tracking`; the packages come
    with ``pip install "mmkgc[trackers]"``).

    :param trackers: any of ``tensorboard`` (event files in ``<run_dir>/tensorboard``), ``mlflow``, ``wandb``.
    :param project: the MLflow experiment / W&B project (default: the config's ``name``).
    :param mlflow_tracking_uri: e.g. ``sqlite:////data/mlflow.db`` or ``http://host:5000`` (default: MLflow's own,
        ``MLFLOW_TRACKING_URI`` or ``./mlruns``).
    :param wandb_mode: ``online``, ``offline`` (files only, no network) or ``disabled``; default ``WANDB_MODE``.
    """

    trackers: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(default_factory=list)
    project: str | None = None
    mlflow_tracking_uri: str | None = None
    wandb_mode: Literal["online", "offline", "disabled"] | None = None


class FloatParam(_Strict):
    """A float hyper-parameter drawn from ``[low, high]`` (log-uniformly with ``log: true``; on a grid of ``step``)."""

    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _range(self) -> "FloatParam":
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and (self.low <= 0 or self.step is not None):
            raise ValueError("log: true needs low > 0 and no step")
        return self


class IntParam(_Strict):
    """An integer hyper-parameter in ``[low, high]`` (every ``step``-th value, or log-uniform with ``log: true``)."""

    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _range(self) -> "IntParam":
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and (self.low <= 0 or self.step != 1):
            raise ValueError("log: true needs low > 0 and step 1")
        return self


class CategoricalParam(_Strict):
    """A hyper-parameter taking one of ``choices`` (numbers, strings, booleans or null)."""

    type: Literal["categorical"]
    choices: list[None | bool | int | float | str] = Field(min_length=1)


ParamSpec = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


class TuneConfig(_Strict):
    """Hyper-parameter search with ``mmkgc tune`` (Optuna; ``pip install "mmkgc[tune]"``); ignored by ``train``.

    :param space: dotted config key -> distribution, e.g. ``training.lr: {type: float, low: 1e-3, high: 0.3,
        log: true}``, ``model.dim: {type: categorical, choices: [100, 250]}``.
    :param trials: trials of the study (including those of earlier, resumed invocations); ``--trials`` wins.
    :param time_budget_minutes: training budget of each trial (``training.time_budget_minutes``); ``--time-budget-
        minutes`` wins; ``None`` keeps the config's.
    :param sampler: ``tpe`` (Optuna's default) or ``random``; seeded with the config's ``seed``.
    :param pruner: stop poor trials early from their per-epoch validation MRR: ``median`` (Optuna's
        MedianPruner), ``hyperband``, ``threshold`` (ThresholdPruner, e.g. ``pruner_options: {lower: 0.05}``) or
        ``none``.
    :param pruner_options: keyword arguments of the pruner (``n_startup_trials``, ``n_warmup_steps``, ...).
    """

    space: dict[str, ParamSpec] = Field(default_factory=dict)
    trials: int = Field(20, ge=1)
    time_budget_minutes: float | None = Field(None, gt=0.0)
    sampler: Literal["tpe", "random"] = "tpe"
    pruner: Literal["median", "hyperband", "threshold", "none"] = "median"
    pruner_options: dict[str, Any] = Field(default_factory=dict)


class ExperimentConfig(_Strict):
    """A whole experiment: dataset, model, training and evaluation; optionally result trackers (``tracking``) and
    the search space of ``mmkgc tune`` (``tune``)."""

    name: str = "experiment"
    seed: int = 42
    dataset: DatasetConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    tune: TuneConfig | None = None

    @model_validator(mode="after")
    def _cross(self) -> "ExperimentConfig":
        if self.training.loop == "one_to_n" and not self.model.reciprocal:
            raise ValueError("training.loop 'one_to_n' needs model.reciprocal: true (head queries use r + R)")
        if self.training.sparse and self.model.representation != "structure":
            raise ValueError("training.sparse: true is only for model.representation 'structure'")
        if self.training.adversarial is not None and self.model.representation != "fused":
            raise ValueError("training.adversarial needs model.representation 'fused' (it generates modality vectors)")
        if self.training.adversarial is not None and self.training.loop != "negative_sampling":
            raise ValueError("training.adversarial needs training.loop 'negative_sampling' (fake triples score "
                             "against sampled positives)")
        fusion = self.model.fusion
        if (self.model.representation == "fused" and self.model.reciprocal
                and (fusion.relation_temperature or fusion.relation_gate)):
            raise ValueError("model.reciprocal is not supported with a relation-conditioned fusion "
                             "(relation_temperature / relation_gate)")
        if self.evaluation.protocol == "vemp_sampled" and self.model.scorer != "mlplink":
            raise ValueError("evaluation.protocol 'vemp_sampled' ranks edges relation-agnostically: it needs "
                             f"model.scorer 'mlp_link' (got {self.model.scorer!r})")
        if self.training.loop == "link_bce" and (self.model.method != "kge" or self.model.reciprocal):
            raise ValueError("training.loop 'link_bce' needs model.method 'kge' without reciprocal relations")
        if self.model.method == "imvia" and self.training.loop != "one_to_n":
            raise ValueError("model.method 'imvia' trains with training.loop 'one_to_n'")
        if self.model.scorer == "tucker" and self.training.loop != "one_to_n":
            raise ValueError("model.scorer 'tucker' (batch norm + dropout, methods.md 4.2) trains with training.loop "
                             "'one_to_n' and model.reciprocal: true")
        return self


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration ({err.error_count()} problem(s))"]
    problems = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        cause = (e.get("ctx") or {}).get("error")
        if isinstance(cause, OptionError):  # a key inside an options mapping: name it in the path
            loc, msg = f"{loc}.{cause.key}" if loc != "(top level)" else cause.key, str(cause)
            value = None
            problems.append(f"{loc}: {msg}")
            continue
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see docs/usage.md for the valid keys)"
        elif e["type"] == "missing":
            msg = "required key is missing"
        value = e.get("input")
        shown = "" if e["type"] in ("missing", "extra_forbidden") or isinstance(value, dict) else f" (got {value!r})"
        problems.append(f"{loc}: {msg}{shown}")
    if len(problems) == 1:  # one problem, one line
        return f"{source}: invalid configuration: {problems[0]}"
    return "\n".join(lines + [f"  - {p}" for p in problems])


def _resolve_paths(cfg: ExperimentConfig, base: Path) -> None:
    def fix(p: Path | None) -> Path | None:
        if p is None:
            return None
        p = Path(p).expanduser()
        return p if p.is_absolute() else (base / p).resolve()

    cfg.dataset.path = fix(cfg.dataset.path)
    cfg.dataset.data_dir = fix(cfg.dataset.data_dir)
    cfg.model.structure_init = fix(cfg.model.structure_init)
    for m in cfg.model.modalities:
        m.file = fix(m.file)
        m.table_path = fix(m.table_path)
        if m.table is not None and not _is_table_name(m.table):
            m.table = str(fix(Path(m.table)))
    en = cfg.model.enrichment
    if en is not None:
        en.source = [fix(p) for p in en.source]
        en.name_map = fix(en.name_map)
        if en.table is not None and not _is_table_name(en.table):
            en.table = str(fix(Path(en.table)))


def _is_table_name(name: str) -> bool:
    from mmkgc.features.cache import is_table_name

    return is_table_name(name)


def parse_config(data: Any, source: str = "<config>", base_dir: Path | None = None) -> ExperimentConfig:
    """Validate a config mapping.

    :raises ConfigError: naming every invalid field (dotted path) and what is wrong with it.
    """
    cfg = validate_mapping(ExperimentConfig, data, source)
    if base_dir is not None:
        _resolve_paths(cfg, base_dir)
    return cfg


def validate_mapping(model: type[_M], data: Any, source: str = "<config>", what: str = "a config") -> _M:
    """Validate a parsed YAML mapping against a strict pydantic config class.

    :raises ConfigError: ``data`` is not a mapping, or invalid fields (every one named by its dotted path).
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {what} must be a YAML mapping, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def read_yaml_mapping(path: str | Path, overrides: list[str] | None = None) -> Any:
    """Read a YAML config file and apply ``dotted.key=value`` overrides (values parsed as YAML).

    :raises ConfigError: file missing, not YAML (with the line of the problem), or empty.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory; give the config file (YAML)")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte {raw[err.start]:#04x}); save the config as UTF-8") \
            from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(err, 'problem', err)})") from None
    if data is None:
        raise ConfigError(f"{path}: config file is empty")
    for item in overrides or []:
        apply_override(data, item, source=str(path))
    return data


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read and validate a YAML config file.

    :param overrides: ``dotted.key=value`` strings applied before validation (values parsed as YAML), e.g.
        ``training.epochs=5``.
    :raises ConfigError: file missing, not YAML, or invalid (message names the file and the field).
    """
    path = Path(path)
    return parse_config(read_yaml_mapping(path, overrides), source=str(path), base_dir=path.parent)


def apply_override(data: dict, item: str, source: str = "<config>") -> None:
    """Set ``dotted.key=value`` in a nested mapping in place (value parsed as YAML)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected dotted.key=value")
    key, raw = item.split("=", 1)
    parts = key.strip().replace("[", ".").replace("]", "").split(".")  # modalities[0].table == modalities.0.table
    if not all(parts):
        raise ConfigError(f"override {item!r}: the key must be dotted.names, e.g. training.epochs=5")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"override {item!r}: the value is not valid YAML ({getattr(err, 'problem', err)}); quote "
                          "it, e.g. --set 'name=\"[x\"'") from None
    set_dotted(data, parts, value, source=source, item=item)


def set_dotted(data: dict, parts: list[str], value: Any, source: str = "<config>", item: str | None = None) -> None:
    """Set ``data[parts[0]][parts[1]]... = value`` in place, creating missing mappings (``--set`` overrides, and
    the keyword overrides of :func:`mmkgc.api.pipeline`, whose values are Python objects, not YAML text).  A part
    that meets a list is a position in it (``model.modalities.0.table``; ``apply_override`` also reads
    ``modalities[0]``).

    :raises ConfigError: a part of the path holds a value that is not a mapping (named with ``item``).
    """
    node: Any = data
    for i, p in enumerate(parts):
        last = i == len(parts) - 1
        if not isinstance(node, (dict, list)):
            raise ConfigError(f"{source}: override {item or '.'.join(parts)!r}: {parts[i - 1]} is not a mapping")
        if isinstance(node, list):  # a list entry by position: model.modalities.0.table
            if not p.isdigit() or int(p) >= len(node):
                raise ConfigError(f"{source}: override {item or '.'.join(parts)!r}: {'.'.join(parts[:i]) or p} is a "
                                  f"list of {len(node)}; {p!r} is not a position in it (0 to {len(node) - 1})")
            if last:
                node[int(p)] = value
                return
            node = node[int(p)]
            continue
        if last:
            node[p] = value
            return
        if not isinstance(node.setdefault(p, {}), (dict, list)):
            raise ConfigError(f"{source}: override {item or '.'.join(parts)!r}: {p} is not a mapping")
        node = node[p]


def dump_config(cfg: ExperimentConfig) -> str:
    """The resolved config as YAML (paths as strings), as written to a run directory."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
