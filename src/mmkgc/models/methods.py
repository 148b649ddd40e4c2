"""Builders of the fused multimodal methods from a validated config (``model.representation: fused``).

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

from mmkgc.config import ExperimentConfig
from mmkgc.errors import ConfigError
from mmkgc.models.fused import FusedKGEModel, FusedRepresentation
from mmkgc.models.kge import ModalityFeatures


def build_fused_model(cfg: ExperimentConfig, data, scorer: nn.Module,
                      features: Sequence[ModalityFeatures]) -> FusedKGEModel:
    """The fused model of ``cfg`` (an :class:`~mmkgc.models.adversarial.AdversarialFusedModel` when
    ``training.adversarial`` is set).

    :param data: the :class:`~mmkgc.pipeline.LoadedData` (for the entity and relation counts).
    :param scorer: the built scorer (its ``entity_dim`` is the fused width ``D``).
    :param features: the loaded modality tables, in ``model.modalities`` order.
    :raises ConfigError: a fusion kind other than ``attention``, attention heads that do not divide ``D``, or
        ``reciprocal`` with a relation-conditioned fusion (each message names the field).
    """
    mc, fusion = cfg.model, cfg.model.fusion
    triples = data.triples
    if fusion.kind != "attention":
        raise ConfigError(f"model.fusion.kind: representation 'fused' combines modalities by attention; got "
                          f"{fusion.kind!r} (use model.representation: concat for the concatenation baseline)")
    dim = scorer.entity_dim
    adv = cfg.training.adversarial
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
        temperature_init_range=init_range, gate_rank=fusion.gate_rank,
    )
    if adv is None:
        return FusedKGEModel(triples.num_entities, triples.num_relations, scorer, rep, reciprocal=mc.reciprocal)
    from mmkgc.models.adversarial import AdversarialFusedModel

    return AdversarialFusedModel(triples.num_entities, triples.num_relations, scorer, rep, adv,
                                 adversarial_temperature=cfg.training.adversarial_temperature)
