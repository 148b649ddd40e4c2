"""Dataset registry: names, cache home, local copies, and downloads through the real pooch path.

Downloads are served by a loopback ``http.server`` (127.0.0.1, random port) from a temporary folder laid
out like the raw.githubusercontent.com URL paths; nothing leaves the machine.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import shutil
import threading
from pathlib import Path

import pytest
import torch

from mmkgc.data import registry
from mmkgc.data.formats import OPENKE_FILES, write_openke
from mmkgc.data.registry import (
    DATASETS,
    DEFAULT_BASE_URL,
    LOCK_FILE,
    NATIVE_COMMIT,
    DownloadError,
    cache_home,
    check_dataset,
    dataset_dir,
    dataset_info,
    download_dataset,
    find_local_copy,
    get_dataset_spec,
    list_datasets,
    load_dataset,
)
from mmkgc.data.triples import TripleSet
from mmkgc.errors import ConfigError, DataFormatError, UnknownNameError

URL_PREFIX = f"zjukg/NATIVE/{NATIVE_COMMIT}/benchmarks"


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """Every test gets its own cache home and no inherited data dir / mirror settings."""
    monkeypatch.setenv("MMKGC_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MMKGC_DATA_DIR", raising=False)
    monkeypatch.delenv("MMKGC_BASE_URL", raising=False)
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - signature of the base class
        pass


@pytest.fixture
def mirror(tmp_path):
    """A loopback HTTP server; yields ``(root, base_url)`` where files go under ``root/<NAME>/``."""
    served = tmp_path / "served"
    root = served / URL_PREFIX
    root.mkdir(parents=True)
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}/{URL_PREFIX}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tiny_set() -> TripleSet:
    return TripleSet(train=torch.tensor([[0, 0, 1], [1, 0, 2]]), valid=torch.tensor([[2, 0, 0]]),
                     test=torch.tensor([[0, 0, 2]]), entity_labels=["a b", "c", "d"], relation_labels=["r"])


TINY_COUNTS = {"entities": 3, "relations": 1, "train": 2, "valid": 1, "test": 1}


def registered_as_tiny(monkeypatch, name: str) -> None:
    """Make the registry expect the sizes of :func:`tiny_set` for ``name`` (a copy must match the counts)."""
    import dataclasses
    from types import MappingProxyType

    table = dict(registry.DATASETS)
    table[name] = dataclasses.replace(table[name], counts=MappingProxyType(TINY_COUNTS))
    monkeypatch.setattr(registry, "DATASETS", MappingProxyType(table))


# ---------------------------------------------------------------------------------------------- lookup
def test_known_names_aliases_and_unknown_name():
    assert list_datasets() == ["DB15K", "MKG-W", "MKG-Y", "TIVA", "Kuai16K"]
    assert get_dataset_spec("db15k").name == "DB15K"
    assert get_dataset_spec("KVC16K").name == "Kuai16K"
    with pytest.raises(UnknownNameError) as exc_info:
        get_dataset_spec("FB15k-237")
    message = str(exc_info.value)
    assert "FB15k-237" in message
    for name in list_datasets():
        assert name in message


def test_pins_and_counts():
    assert DATASETS["DB15K"].pinned and DATASETS["MKG-W"].pinned
    for name in ("MKG-Y", "TIVA", "Kuai16K"):
        assert not DATASETS[name].pinned
        assert set(DATASETS[name].sha256.values()) == {None}
    assert dict(DATASETS["DB15K"].counts) == {"entities": 12842, "relations": 279, "train": 79222,
                                              "valid": 9904, "test": 9902}
    assert DATASETS["Kuai16K"].counts["train"] == 180190
    for spec in DATASETS.values():
        assert set(spec.sha256) == set(OPENKE_FILES)
        assert "visual" in spec.modalities and "textual" in spec.modalities


def test_dataset_info_urls_and_cache_dir(tmp_path):
    info = dataset_info("mkg-w")
    assert info["name"] == "MKG-W"
    assert info["files"]["train2id.txt"]["url"] == (
        f"https://raw.githubusercontent.com/zjukg/NATIVE/{NATIVE_COMMIT}/benchmarks/MKG-W/train2id.txt")
    assert info["files"]["train2id.txt"]["sha256"] == (
        "a9f316506a20a7b5bef7de3ceaaa1e82de554b8e92e6aa26e7cb54bcd8ada53d")
    assert info["pinned"] is True and info["cached"] is False
    assert info["cache_dir"] == str(tmp_path / "home" / "datasets" / "MKG-W")
    assert json.loads(json.dumps(info)) == info
    assert DEFAULT_BASE_URL.endswith(f"{NATIVE_COMMIT}/benchmarks")


def test_cache_home_and_base_url_environment(monkeypatch, tmp_path):
    assert cache_home() == tmp_path / "home"
    monkeypatch.delenv("MMKGC_HOME")
    import platformdirs

    assert cache_home() == Path(platformdirs.user_cache_dir("mmkgc"))
    monkeypatch.setenv("MMKGC_BASE_URL", "http://mirror.example/bench/")
    assert get_dataset_spec("TIVA").url("entity2id.txt") == "http://mirror.example/bench/TIVA/entity2id.txt"
    assert get_dataset_spec("TIVA").url("x", "http://other/") == "http://other/TIVA/x"


# ---------------------------------------------------------------------------------------------- local copies
def test_find_local_copy_layouts(tmp_path, monkeypatch):
    ts = tiny_set()
    write_openke(ts, tmp_path / "data" / "MKG-Y")
    assert find_local_copy("MKG-Y", tmp_path / "data") == tmp_path / "data" / "MKG-Y"
    assert find_local_copy("MKG-Y", tmp_path / "data" / "MKG-Y") == tmp_path / "data" / "MKG-Y"
    assert find_local_copy("TIVA", tmp_path / "data") is None
    assert find_local_copy("MKG-Y") is None
    monkeypatch.setenv("MMKGC_DATA_DIR", str(tmp_path / "data"))
    assert find_local_copy("MKG-Y") == tmp_path / "data" / "MKG-Y"
    # a copy whose sizes are not those of the registered dataset is refused, naming every difference
    with pytest.raises(DataFormatError, match="not MKG-Y as registered .*entities: registry 15,000, copy 3"):
        load_dataset("MKG-Y")
    registered_as_tiny(monkeypatch, "MKG-Y")
    loaded = load_dataset("MKG-Y")  # from $MMKGC_DATA_DIR; no download, unpinned files need no permission
    assert loaded.name == "MKG-Y" and loaded.metadata["source"] == "local"
    assert loaded.entity_labels == ts.entity_labels


def test_load_from_data_dir_that_lacks_the_dataset(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFormatError, match="no OpenKE copy of DB15K"):
        load_dataset("DB15K", data_dir=tmp_path / "empty")


def test_load_shared_copy_with_verification(shared_datasets):
    ts = load_dataset("DB15K", data_dir=shared_datasets, verify=True)
    assert ts.summary()["train"] == 79222
    assert ts.metadata["sha256"]["train2id.txt"] == DATASETS["DB15K"].sha256["train2id.txt"]
    report = check_dataset("MKG-W", data_dir=shared_datasets)
    assert report.ok, report.problems
    assert [f.status for f in report.files] == ["ok"] * 5
    assert report.counts["test"] == {"expected": 4274, "observed": 4274}
    assert "All checks passed." in report.to_markdown()


def test_check_detects_tampered_local_copy(shared_dataset_dir, tmp_path):
    copy = tmp_path / "DB15K"
    shutil.copytree(shared_dataset_dir("DB15K"), copy, ignore=shutil.ignore_patterns("raw"))
    lines = (copy / "test2id.txt").read_text().splitlines()
    (copy / "test2id.txt").write_text("\n".join([str(int(lines[0]) - 1)] + lines[1:-1]) + "\n")
    report = check_dataset("DB15K", data_dir=copy)
    assert not report.ok
    statuses = {f.file: f.status for f in report.files}
    assert statuses["test2id.txt"] == "mismatch" and statuses["train2id.txt"] == "ok"
    assert report.counts["test"] == {"expected": 9902, "observed": 9901}
    assert any("test: expected 9,902, found 9,901" in p for p in report.problems)
    with pytest.raises(DataFormatError, match="does not match the registry pin"):
        load_dataset("DB15K", data_dir=copy, verify=True)


def test_check_without_copy():
    report = check_dataset("TIVA")
    assert not report.ok and "no local copy" in report.problems[0]


# ---------------------------------------------------------------------------------------------- downloads
def test_download_db15k_through_pooch_and_reject_tampered_file(shared_dataset_dir, mirror, tmp_path,
                                                                monkeypatch):
    root, base_url = mirror
    shutil.copytree(shared_dataset_dir("DB15K"), root / "DB15K", ignore=shutil.ignore_patterns("raw"))
    monkeypatch.setenv("MMKGC_BASE_URL", base_url)

    ts = load_dataset("DB15K")
    cache = tmp_path / "home" / "datasets" / "DB15K"
    assert ts.metadata["source"] == "cache" and Path(ts.metadata["path"]) == cache
    for file in OPENKE_FILES:
        assert sha(cache / file) == DATASETS["DB15K"].sha256[file]
    assert (ts.num_entities, ts.num_relations, len(ts.train), len(ts.valid), len(ts.test)) == (
        12842, 279, 79222, 9904, 9902)
    assert check_dataset("DB15K").ok
    assert dataset_info("DB15K")["cached"] is True

    # The server now serves a tampered train file.  A cached copy that is intact is used without network.
    train = root / "DB15K" / "train2id.txt"
    train.write_text(train.read_text().replace("11208 6404 117", "11208 6404 118", 1))
    assert len(load_dataset("DB15K").train) == 79222

    # A fresh cache downloads the tampered file: it is rejected with a clear error and not stored.
    monkeypatch.setenv("MMKGC_HOME", str(tmp_path / "home2"))
    with pytest.raises(DataFormatError) as exc_info:
        load_dataset("DB15K")
    message = str(exc_info.value)
    assert "train2id.txt" in message and "does not match the registry pin" in message
    assert DATASETS["DB15K"].sha256["train2id.txt"] in message
    fresh = tmp_path / "home2" / "datasets" / "DB15K"
    assert not (fresh / "train2id.txt").exists()
    assert sorted(p.name for p in fresh.iterdir() if p.is_file()) == ["entity2id.txt", "relation2id.txt"]


def test_corrupted_cache_file_is_replaced_from_the_mirror(mirror, monkeypatch):
    root, base_url = mirror
    write_openke(tiny_set(), root / "TIVA")
    registered_as_tiny(monkeypatch, "TIVA")
    download_dataset("TIVA", base_url=base_url, allow_unpinned=True)
    cached = dataset_dir("TIVA") / "valid2id.txt"
    good = cached.read_bytes()
    cached.write_text("1\n1 2 0\n")  # corrupted in the cache, the mirror still has the recorded version
    download_dataset("TIVA", base_url=base_url)
    assert cached.read_bytes() == good


def test_unpinned_files_need_permission_then_trust_on_first_use(mirror, monkeypatch):
    root, base_url = mirror
    write_openke(tiny_set(), root / "MKG-Y")
    monkeypatch.setenv("MMKGC_BASE_URL", base_url)

    with pytest.raises(ConfigError, match="allow_unpinned=True"):
        load_dataset("MKG-Y")
    assert not dataset_dir("MKG-Y").exists()  # refused before anything was downloaded

    # trust on first use trusts bytes of the registered size only: a copy of another size records nothing
    with pytest.raises(DataFormatError, match="not MKG-Y as registered .*hashes were not recorded"):
        load_dataset("MKG-Y", allow_unpinned=True)
    assert not (dataset_dir("MKG-Y") / LOCK_FILE).exists()

    registered_as_tiny(monkeypatch, "MKG-Y")
    ts = load_dataset("MKG-Y", allow_unpinned=True)
    assert ts.entity_labels == ["a b", "c", "d"] and ts.train.tolist() == [[0, 0, 1], [1, 0, 2]]
    lock = json.loads((dataset_dir("MKG-Y") / LOCK_FILE).read_text())
    assert lock["dataset"] == "MKG-Y" and lock["base_url"] == base_url
    for file in OPENKE_FILES:
        assert lock["files"][file] == sha(root / "MKG-Y" / file)

    # Later calls verify against the record and need no permission.
    assert load_dataset("MKG-Y").train.tolist() == [[0, 0, 1], [1, 0, 2]]
    report = check_dataset("MKG-Y")
    assert [f.status for f in report.files] == ["ok-lock"] * 5 and report.ok

    # The mirror changes the file and the cached copy is gone: the new version is rejected.
    (dataset_dir("MKG-Y") / "test2id.txt").unlink()
    (root / "MKG-Y" / "test2id.txt").write_text("1\n1 0 0\n")
    with pytest.raises(DataFormatError, match="recorded on first download"):
        load_dataset("MKG-Y", allow_unpinned=True)
    assert not (dataset_dir("MKG-Y") / "test2id.txt").exists()


def test_no_download_and_unreachable_mirror(tmp_path):
    with pytest.raises(DataFormatError, match="downloading is disabled"):
        load_dataset("DB15K", download=False)
    with pytest.raises(DownloadError) as failure:
        download_dataset("DB15K", base_url="http://127.0.0.1:9/nothing")
    # a short reason and where to put a local copy, not the network library's text
    message = str(failure.value)
    assert message.startswith("cannot download DB15K/") and "unreachable" in message
    assert "--data-dir" in message and "MMKGC_DATA_DIR" in message and "HTTPConnectionPool" not in message


def test_malformed_lock_file(tmp_path):
    directory = dataset_dir("TIVA")
    directory.mkdir(parents=True)
    (directory / LOCK_FILE).write_text("{not json")
    with pytest.raises(DataFormatError) as exc_info:
        download_dataset("TIVA", allow_unpinned=True, download=False)
    assert exc_info.value.path == directory / LOCK_FILE
    assert registry.LOCK_FILE == "sha256.lock.json"
