"""The one module that turns a validated config into model objects; every model constructor below takes plain
arguments (the layering: config and this module sit above :mod:`mmkgc.models`, docs/architecture.md).

Builders of the fused multimodal methods (``model.representation: fused``):

=================  =========================  ===========================================  ========================
method             ``model.adapter``          ``model.fusion``                             ``training.adversarial``
=================  =========================  ===========================================  ========================
AdaMF              linear (trainable tables)  attention                                    --
AdaMF-MAT          linear (trainable tables)  attention                                    ``kind: mat``
NativE             mlp (frozen tables)        attention, relation_temperature              ``kind: wgan_gp``
AFME               mlp (frozen tables)        attention, relation_temperature, l2, gate    ``kind: moien``
=================  =========================  ===========================================  ========================

methods.md §5-§8; the choices where the papers are silent are in docs/methods.md.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from mmkgc.config import ExperimentConfig, GNNConfig
from mmkgc.errors import ConfigError
from mmkgc.features.store import FeatureTable
from mmkgc.models.fused import FusedKGEModel, FusedRepresentation
from mmkgc.models.kge import KGEModel, MultimodalRepresentation
from mmkgc.models.rgcn import RGCNRepresentation
from mmkgc.nn.gnn import MessageGraph


def fill_policies(cfg: ExperimentConfig) -> dict[str, str]:
    """How the model fills absent rows, per modality name: ``model.modalities[].missing`` and, for the modality an
    enrichment writes, ``model.enrichment.missing`` (:data:`~mmkgc.models.kge.FillPolicy`).

    :raises ConfigError: an unknown enrichment policy.
    """
    fills = {m.name: m.missing for m in cfg.model.modalities}
    if cfg.model.enrichment is not None:
        from mmkgc.features.enrich.policy import enriched_modality

        fills[enriched_modality(cfg.model.enrichment)] = cfg.model.enrichment.missing
    return fills


def build_fused_model(cfg: ExperimentConfig, data, scorer: nn.Module,
                      features: Sequence[FeatureTable]) -> FusedKGEModel:
    """The fused model of ``cfg`` (an :class:`~mmkgc.models.adversarial.AdversarialFusedModel` when
    ``training.adversarial`` is set).

    :param data: the :class:`~mmkgc.pipeline.LoadedData` (for the entity and relation counts).
    :param scorer: the built scorer (its ``entity_dim`` is the fused width ``D``).
    :param features: the loaded modality tables, in ``model.modalities`` order.
    A ``model.fusion.kind`` other than ``attention`` builds that operator over structure + modalities instead
    (:func:`_operator_fused_model`).

    :raises ConfigError: attention heads that do not divide ``D``, or
        ``reciprocal`` with a relation-conditioned fusion (each message names the field).
    """
    mc, fusion = cfg.model, cfg.model.fusion
    triples = data.triples
    dim = scorer.entity_dim
    adv = cfg.training.adversarial
    if fusion.kind != "attention":
        return _operator_fused_model(cfg, data, scorer, features)
    if adv is not None and adv.generator == "moien" and dim % adv.heads:
        raise ConfigError(f"training.adversarial.heads: {adv.heads} heads do not divide the entity width {dim}")
    if mc.reciprocal and (fusion.relation_temperature or fusion.relation_gate):
        raise ConfigError("model.reciprocal: not supported with a relation-conditioned fusion")
    init_range = float(getattr(scorer, "entity_range", 0.05))  # NativE: (γ + ε) / (2d)
    rep = FusedRepresentation(
        triples.num_entities, dim, features, triples.num_relations, init=scorer.init_entity_,
        adapter=mc.adapter, adapter_hidden=mc.adapter_hidden, dropout=mc.projection_dropout,
        trainable_features=mc.trainable_features, relation_temperature=fusion.relation_temperature,
        confidence=fusion.confidence, relation_gate=fusion.relation_gate, use_masks=fusion.mask_missing,
        temperature_init_range=init_range, gate_rank=fusion.gate_rank, missing=fill_policies(cfg),
    )
    if adv is None:
        return FusedKGEModel(triples.num_entities, triples.num_relations, scorer, rep, reciprocal=mc.reciprocal)
    from mmkgc.models.adversarial import AdversarialFusedModel

    return AdversarialFusedModel(triples.num_entities, triples.num_relations, scorer, rep, adv,
                                 adversarial_temperature=cfg.training.adversarial_temperature)


def _operator_fused_model(cfg: ExperimentConfig, data, scorer: nn.Module,
                          features: Sequence[FeatureTable]) -> KGEModel:
    """``representation: fused`` with any other operator of :data:`mmkgc.nn.fusion.fusion_resolver` (e.g. ``lowrank``):
    structure + each modality adapted to ``D`` and fused by that operator, built with ``dim``, ``num_modalities`` and
    the config's extra ``model.fusion`` keys; scored like every relation-agnostic representation.

    :raises ConfigError: an adversarial method (its generators and critics are defined on the attention fusion), or
        an operator whose constructor refuses the options (naming ``model.fusion``).
    """
    from mmkgc.nn.fusion import fusion_resolver

    mc, fusion = cfg.model, cfg.model.fusion
    if cfg.training.adversarial is not None:
        raise ConfigError(f"training.adversarial: the adversarial methods need model.fusion.kind 'attention'; got "
                          f"{fusion.kind!r}")
    triples = data.triples
    dim = scorer.entity_dim
    try:
        op = fusion_resolver.make(fusion.kind, dim=dim, num_modalities=len(features) + 1, **fusion.options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model.fusion: fusion {fusion.kind!r}: {err}") from None
    rep = MultimodalRepresentation(triples.num_entities, dim, features, with_structure=True,
                                   init=scorer.init_entity_, adapter=mc.adapter, dropout=mc.projection_dropout,
                                   fusion=op, missing=fill_policies(cfg))
    return KGEModel(triples.num_entities, triples.num_relations, scorer, rep, reciprocal=mc.reciprocal)


def build_rgcn_representation(gnn_cfg, triples, dim: int, features: Sequence[FeatureTable],
                              seed: int = 0) -> RGCNRepresentation:
    """The R-GCN representation a ``model.gnn`` config section describes, over ``triples.train``.

    :param gnn_cfg: :class:`~mmkgc.config.GNNConfig` (``None``: defaults).
    :param triples: the :class:`~mmkgc.data.triples.TripleSet`; only its train split becomes message edges.
    :raises DataFormatError: ``relation_grouping: vemp_meta``/``mmkgc_meta`` on a dataset whose relations are not DB15K's.
    """
    gnn_cfg = gnn_cfg or GNNConfig()
    relation_map, num_types = None, triples.num_relations
    if gnn_cfg.relation_grouping != "none":
        from mmkgc.data.relation_groups import vemp_relation_map

        relation_map, names = vemp_relation_map(triples.relation_labels, gnn_cfg.relation_grouping)
        num_types = len(names)
    graph = MessageGraph.from_triples(triples.train, triples.num_entities, num_types, relation_map)
    return RGCNRepresentation(graph, dim, features, gnn_cfg.hidden_dims, gnn_cfg.num_bases, gnn_cfg.dropout,
                              gnn_cfg.final_activation, getattr(gnn_cfg, "fanouts", None),
                              input_dim=getattr(gnn_cfg, "input_dim", None) or dim, seed=seed,
                              relation_map=relation_map)


def check_fusion_options(cfg: ExperimentConfig) -> None:
    """Refuse operator options (``model.fusion`` keys beyond the declared ones, validated against the operator by
    the config) that the configured representation cannot pass on: today's representations build their operator
    from the declared fields only.

    :raises ConfigError: naming ``model.fusion.<key>``.
    """
    fusion = cfg.model.fusion
    if cfg.model.representation == "fused" and fusion.kind != "attention":
        return  # the operator is built from its options (_operator_fused_model)
    for key in fusion.options:
        raise ConfigError(f"model.fusion.{key}: representation {cfg.model.representation!r} builds its "
                          f"{fusion.kind!r} operator from the declared fusion fields and takes no other option")
