"""Modality features: per-entity tables (pooled or token), presence masks, provenance, file formats,
entity texts, frozen text encoders and the on-disk feature cache.

Heavy dependencies (sentence-transformers, transformers) are imported only when an encoder is built.
"""

from mmkgc.features.cache import cached_text_features, feature_cache_key, features_dir, mmkgc_home
from mmkgc.features.entity_text import (
    EntityTexts,
    LabelTable,
    classify_label,
    entity_texts,
    label_text,
    normalize_entity_name,
)
from mmkgc.features.io import (
    align_rows,
    atomic_write,
    import_feature_file,
    load_feature_table,
    read_feature_array,
    read_manifest,
    save_feature_table,
)
from mmkgc.features.store import (
    KNOWN_MODALITIES,
    FeatureTable,
    ModalityStore,
    make_provenance,
    presence_from_values,
)
from mmkgc.features.text import (
    HFAutoModelEncoder,
    SentenceTransformerEncoder,
    TextEncoder,
    build_text_encoder,
    resolve_text_model,
)

__all__ = [
    "KNOWN_MODALITIES",
    "EntityTexts",
    "FeatureTable",
    "HFAutoModelEncoder",
    "LabelTable",
    "ModalityStore",
    "SentenceTransformerEncoder",
    "TextEncoder",
    "align_rows",
    "atomic_write",
    "build_text_encoder",
    "cached_text_features",
    "classify_label",
    "entity_texts",
    "feature_cache_key",
    "features_dir",
    "import_feature_file",
    "label_text",
    "load_feature_table",
    "make_provenance",
    "mmkgc_home",
    "normalize_entity_name",
    "presence_from_values",
    "read_feature_array",
    "read_manifest",
    "resolve_text_model",
    "save_feature_table",
]
