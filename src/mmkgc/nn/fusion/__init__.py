"""Fusion operators, one per module, and their resolver.

The four kinds and their contracts are in :mod:`mmkgc.nn.fusion.base`: vector fusion (:class:`Fusion`: ``x [B, M, D],
present [B, M], relation [B] | None -> (fused [B, D], weights [B, M])``), modality gates (:class:`ModalityGate`),
decision fusion (:class:`ScoreFusion`) and token encoders (:class:`TokenFusionEncoder`).

:data:`fusion_resolver` knows every :class:`Fusion` subclass defined in a module of this package: every module here is
imported below, so adding an operator is one new file (plus its test class in ``tests/test_fusion_operators.py``,
which a meta-test demands).  Look operators up by name (``fusion_resolver.lookup("concat")``) or build them with
``fusion_resolver.make(name, dim=D, num_modalities=M, ...)``; ``list(fusion_resolver.options)`` lists the names.
"""

from __future__ import annotations

import importlib
import pkgutil

from class_resolver import ClassResolver

from mmkgc.nn.fusion.base import (
    Fusion,
    ModalityGate,
    ScoreFusion,
    TokenFusionEncoder,
    masked_softmax,
)
from mmkgc.nn.fusion.concat import ConcatFusion
from mmkgc.nn.fusion.decision import DecisionFusion
from mmkgc.nn.fusion.gated_pairs import (
    _GatedPairMixturesKernel,
    _GatedPairs,
    _GatedPairsKernel,
    gated_pair_logits,
    gated_pair_mixtures,
)
from mmkgc.nn.fusion.relation_gate import RelationGate
from mmkgc.nn.fusion.self_attention import ModalitySelfAttention, self_attention
from mmkgc.nn.fusion.tanh_attention import TanhAttentionFusion
from mmkgc.nn.fusion.token_encoder import CrossAttentionTokenFusion

# Import every operator module of the package (a new operator file registers itself by existing).
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

#: Every vector fusion operator of this package, by name (``concat``, ``tanhattention`` / ``attention``, ...).
fusion_resolver: ClassResolver[Fusion] = ClassResolver.from_subclasses(
    Fusion, suffix="Fusion", location="mmkgc.nn.fusion.fusion_resolver"
)

__all__ = [
    "ConcatFusion",
    "CrossAttentionTokenFusion",
    "DecisionFusion",
    "Fusion",
    "ModalityGate",
    "ModalitySelfAttention",
    "RelationGate",
    "ScoreFusion",
    "TanhAttentionFusion",
    "TokenFusionEncoder",
    "_GatedPairMixturesKernel",
    "_GatedPairs",
    "_GatedPairsKernel",
    "fusion_resolver",
    "gated_pair_logits",
    "gated_pair_mixtures",
    "masked_softmax",
    "self_attention",
]
