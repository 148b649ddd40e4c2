"""Models: compositions of representations, fusion operators and scorers."""

from mmkgc.models.kge import (
    EmbeddingRepresentation,
    EntityRepresentation,
    KGEModel,
    ModalityFeatures,
    MultimodalRepresentation,
)

__all__ = [
    "EmbeddingRepresentation",
    "EntityRepresentation",
    "KGEModel",
    "ModalityFeatures",
    "MultimodalRepresentation",
]
