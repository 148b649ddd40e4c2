"""Models: compositions of representations, fusion operators and scorers.

One model class, :class:`KGEModel`, scores every representation through one interface
(:class:`EntityRepresentation`: all entities, distinct ids, or (entity, relation) occurrences as
:class:`Occurrences`; per-relation all-entity tables as :class:`EntityTables`).
"""

from mmkgc.models.kge import (
    EmbeddingRepresentation,
    EntityRepresentation,
    EntityTables,
    KGEModel,
    MultimodalRepresentation,
    Occurrences,
)

__all__ = [
    "EmbeddingRepresentation",
    "EntityRepresentation",
    "EntityTables",
    "KGEModel",
    "MultimodalRepresentation",
    "Occurrences",
]
