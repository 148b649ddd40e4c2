"""mmkgc.data: triples, file formats, the dataset registry, data-health reports and a synthetic generator.

Main entry points:

* :class:`TripleSet`, :class:`FilterIndex` (:mod:`mmkgc.data.triples`): int64 (h, r, t) splits, label maps,
  the filter index and relation categories.
* :func:`read_openke` / :func:`write_openke`, :func:`read_labeled_tsv` / :func:`write_labeled_tsv`
  (:mod:`mmkgc.data.formats`).
* :func:`resolve_dataset` (a name or a directory: the one loader of train, features and enrich),
  :func:`load_dataset`, :func:`list_datasets`, :func:`dataset_info`, :func:`check_dataset`
  (:mod:`mmkgc.data.registry`): DB15K, MKG-W, MKG-Y, TIVA, Kuai16K from pinned URLs with sha256 checks.
* :func:`health_report` (:mod:`mmkgc.data.health`): duplicates, split overlaps, unseen entities.
* :func:`make_synthetic_mmkg` (:mod:`mmkgc.data.synthetic`): a seeded multi-modal KG for demos and tests.
"""

from mmkgc.data.formats import (
    read_id_map,
    read_labeled_tsv,
    read_openke,
    read_openke_triples,
    write_id_map,
    write_labeled_tsv,
    write_openke,
    write_openke_triples,
)
from mmkgc.data.health import HealthReport, health_report
from mmkgc.data.registry import (
    DatasetCheck,
    DatasetSpec,
    DownloadError,
    cache_home,
    check_dataset,
    dataset_info,
    download_dataset,
    get_dataset_spec,
    list_datasets,
    load_dataset,
    resolve_dataset,
)
from mmkgc.data.synthetic import SyntheticMMKG, make_synthetic_mmkg
from mmkgc.data.triples import CATEGORY_NAMES, SPLITS, FilterIndex, TripleSet, relation_categories

__all__ = [
    "CATEGORY_NAMES",
    "SPLITS",
    "DatasetCheck",
    "DatasetSpec",
    "DownloadError",
    "FilterIndex",
    "HealthReport",
    "SyntheticMMKG",
    "TripleSet",
    "cache_home",
    "check_dataset",
    "dataset_info",
    "download_dataset",
    "get_dataset_spec",
    "health_report",
    "list_datasets",
    "load_dataset",
    "resolve_dataset",
    "make_synthetic_mmkg",
    "read_id_map",
    "read_labeled_tsv",
    "read_openke",
    "read_openke_triples",
    "relation_categories",
    "write_id_map",
    "write_labeled_tsv",
    "write_openke",
    "write_openke_triples",
]
