"""Shared pytest fixtures.

``shared_datasets``: the read-only benchmark folder ``../shared/datasets`` (relative to the repository root).
Tests that use it (directly or through another fixture) are skipped cleanly when it is absent and are marked
``shared_data`` automatically, so ``pytest -m "not shared_data"`` runs the offline-only subset.
``shared_dataset_dir``: a factory, ``shared_dataset_dir("DB15K")`` -> that folder (skips when it is absent).
``db15k`` / ``mkgw``: session-cached TripleSets read from those folders.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """``../shared/datasets``; skips the test when the folder is absent."""
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"shared benchmark data not available at {SHARED_DATASETS}")
    return SHARED_DATASETS


@pytest.fixture(scope="session")
def shared_dataset_dir(shared_datasets):
    """Factory: ``shared_dataset_dir("DB15K")`` -> the dataset folder, or skip when that dataset is absent."""

    def get(name: str) -> Path:
        path = shared_datasets / name
        if not (path / "entity2id.txt").is_file():
            pytest.skip(f"{name} not available in {shared_datasets}")
        return path

    return get


@pytest.fixture(scope="session")
def db15k(shared_dataset_dir):
    """The DB15K TripleSet read from ``../shared/datasets/DB15K`` (session-cached; do not mutate)."""
    from mmkgc.data.formats import read_openke

    return read_openke(shared_dataset_dir("DB15K"), name="DB15K")


@pytest.fixture(scope="session")
def mkgw(shared_dataset_dir):
    """The MKG-W TripleSet read from ``../shared/datasets/MKG-W`` (session-cached; do not mutate)."""
    from mmkgc.data.formats import read_openke

    return read_openke(shared_dataset_dir("MKG-W"), name="MKG-W")


def pytest_collection_modifyitems(config, items):
    """Mark every test that depends on ``shared_datasets`` with ``shared_data``."""
    for item in items:
        if "shared_datasets" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.shared_data)
