"""Known benchmark datasets: where their files come from, their sha256 pins, counts and local copies.

The five OpenKE-layout benchmarks used by AdaMF-MAT, NativE and AFME (methods.md §1.1) are fetched from the
public repository ``zjukg/NATIVE`` **pinned to commit** :data:`NATIVE_COMMIT`::

    https://raw.githubusercontent.com/zjukg/NATIVE/<commit>/benchmarks/<NAME>/<file>

for ``<file>`` in ``entity2id.txt relation2id.txt train2id.txt valid2id.txt test2id.txt``.

Integrity.  DB15K and MKG-W have a sha256 pin for every file; a download whose hash differs is rejected and
deleted by :func:`pooch.retrieve`.  The files of MKG-Y, TIVA and Kuai16K could not be hashed when this
registry was written, so they are *unpinned* (``sha256=None``): :func:`download_dataset` refuses them unless
the caller passes ``allow_unpinned=True`` (CLI ``--allow-unpinned``).  Then the first download is trusted
("trust on first use"): its sha256 is recorded in the lock file ``<cache>/datasets/<NAME>/sha256.lock.json``,
and every later use verifies the cached or re-downloaded file against that record.

Where files live.

* Cache home: environment variable ``MMKGC_HOME``, else ``platformdirs.user_cache_dir("mmkgc")``; downloads
  go to ``<home>/datasets/<NAME>/``.
* Local copies: ``load_dataset(name, data_dir=...)`` or the environment variable ``MMKGC_DATA_DIR`` name a
  directory that holds ``<NAME>/`` sub-folders, or directly the dataset folder.
* Base URL: argument ``base_url``, else environment variable ``MMKGC_BASE_URL``, else :data:`DEFAULT_BASE_URL`
  (a mirror must use the same ``<base>/<NAME>/<file>`` layout).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import MappingProxyType

from mmkgc.data.formats import OPENKE_FILES, atomic_write_text, read_openke
from mmkgc.data.triples import TripleSet
from mmkgc.fileio import cache_home
from mmkgc.errors import ConfigError, DataFormatError, MMKGCError, UnknownNameError

__all__ = [
    "DATASETS",
    "DEFAULT_BASE_URL",
    "LOCK_FILE",
    "NATIVE_COMMIT",
    "DatasetCheck",
    "DatasetSpec",
    "DownloadError",
    "FileCheck",
    "cache_home",
    "check_dataset",
    "dataset_dir",
    "dataset_info",
    "download_dataset",
    "find_local_copy",
    "get_dataset_spec",
    "list_datasets",
    "load_dataset",
    "resolve_base_url",
    "sha256_file",
]

#: Commit of github.com/zjukg/NATIVE that every URL is pinned to.
NATIVE_COMMIT = "c5c864ec4749cbe70f654faa93361822c64bb353"
#: Default download location; ``<base>/<NAME>/<file>``.
DEFAULT_BASE_URL = f"https://raw.githubusercontent.com/zjukg/NATIVE/{NATIVE_COMMIT}/benchmarks"
#: Name of the trust-on-first-use record inside ``<home>/datasets/<NAME>/``.
LOCK_FILE = "sha256.lock.json"

ENV_HOME = "MMKGC_HOME"
ENV_DATA_DIR = "MMKGC_DATA_DIR"
ENV_BASE_URL = "MMKGC_BASE_URL"


class DownloadError(MMKGCError):
    """A dataset file could not be downloaded (network error, HTTP error, unreachable mirror)."""


@dataclass(frozen=True)
class DatasetSpec:
    """One registered benchmark.

    :param name: canonical name (also the folder name under the base URL and in the cache).
    :param sha256: file name -> lowercase hex sha256, or ``None`` for an unpinned file (see module docstring).
    :param counts: expected ``entities``, ``relations``, ``train``, ``valid``, ``test`` (rows, duplicates
        included), from methods.md §1.1; :func:`check_dataset` compares a copy against them.
    :param modalities: modalities for which the community ships pre-extracted feature tables.
    :param source: where the files come from.
    :param licence: licence / terms note.
    :param aliases: other names accepted by :func:`get_dataset_spec` (case-insensitive).
    :param notes: known quirks.
    """

    name: str
    sha256: Mapping[str, str | None]
    counts: Mapping[str, int]
    modalities: tuple[str, ...]
    source: str
    licence: str
    aliases: tuple[str, ...] = ()
    notes: str = ""

    @property
    def pinned(self) -> bool:
        """True when every file has a sha256 pin."""
        return all(h is not None for h in self.sha256.values())

    def url(self, file: str, base_url: str | None = None) -> str:
        """Download URL of ``file``: ``<base>/<name>/<file>``."""
        return f"{resolve_base_url(base_url)}/{self.name}/{file}"


def _spec(name, hashes, counts, modalities, source, licence, aliases=(), notes=""):
    return DatasetSpec(
        name=name,
        sha256=MappingProxyType(dict(zip(OPENKE_FILES, hashes))),
        counts=MappingProxyType(dict(zip(("entities", "relations", "train", "valid", "test"), counts))),
        modalities=tuple(modalities),
        source=source,
        licence=licence,
        aliases=tuple(aliases),
        notes=notes,
    )


_NATIVE = f"github.com/zjukg/NATIVE@{NATIVE_COMMIT[:12]} benchmarks/"

#: The registry, canonical name -> spec.
DATASETS: Mapping[str, DatasetSpec] = MappingProxyType({
    s.name: s for s in (
        _spec(
            "DB15K",
            ("8f8d070f1bb24d07ed3050e4e4e780cb7f2245d0b14db3346e8db4fa55981728",
             "25e5a975ee079dbd5b8d22ffe23575a9e3135d263e0a3763224777bf526c1a74",
             "d41f9b9ab5c0e6eed393e0f93febb4258dc02e5e4a4e2a99c49410d167522804",
             "dc7ed39aa14e35a2f7ac09a0ff046067ee0e0d7953f8a204f04e7c09776095b1",
             "15f28535d04f3711b739a49d824f2346167384283cde57123376392d418ad6de"),
            (12842, 279, 79222, 9904, 9902),
            ("visual", "textual", "numeric"),
            _NATIVE + "DB15K (identical in zjukg/AdaMF-MAT); DBpedia subset of MMKB (Liu et al., 2019, "
            "'MMKG: Multi-Modal Knowledge Graphs', ESWC), split as used by MMRNS",
            "MMKB data, BSD-3-Clause; entity names are DBpedia URIs (CC BY-SA)",
            aliases=("DB15k",),
            notes="valid2id.txt has 9,904 rows but 7,481 unique triples, 6,584 also in train and 824 in test; "
                  "model selection uses the cleaned validation set (methods.md §1.6)",
        ),
        _spec(
            "MKG-W",
            ("d94b546efcb535d8253821626dd32f3ee876b2f263b727a4a446bc74697785df",
             "204203e03a92d4f973ee815449695bcfaae1b6917fcb08b65f3b0fb071a47f61",
             "a9f316506a20a7b5bef7de3ceaaa1e82de554b8e92e6aa26e7cb54bcd8ada53d",
             "34dd556893b8e4832600298864dbd18012529a1f172793c21e45ad7bdee9d189",
             "0e1294b1f95c8ef80ad422aeefafea321d16c1d127570e6bb566882b2e053989"),
            (15000, 169, 34196, 4276, 4274),
            ("visual", "textual"),
            _NATIVE + "MKG-W (identical in zjukg/AdaMF-MAT); Wikidata subset from MMRNS (Xu et al., 2022, "
            "ACM MM)",
            "Wikidata content is CC0; check the MMRNS / NATIVE repositories for the terms of the split",
            aliases=("MKGW", "MKG_W"),
            notes="306 test triples involve an entity never seen in train; images exist for ~62% of entities",
        ),
        _spec(
            "MKG-Y",
            (None, None, None, None, None),
            (15000, 28, 21310, 2665, 2663),
            ("visual", "textual"),
            _NATIVE + "MKG-Y (identical in zjukg/AdaMF-MAT); YAGO subset from MMRNS (Xu et al., 2022, ACM MM)",
            "YAGO content is CC BY 4.0; check the MMRNS / NATIVE repositories for the terms of the split",
            aliases=("MKGY", "MKG_Y"),
            notes="unpinned: needs allow_unpinned=True (trust on first use); 388 test triples involve an entity "
                  "never seen in train (methods.md §1.1)",
        ),
        _spec(
            "TIVA",
            (None, None, None, None, None),
            (11858, 16, 20071, 2000, 2000),
            ("visual", "textual", "audio", "video"),
            _NATIVE + "TIVA; subset of TIVA-KG (Wang et al., 2023, ACM MM) built for NativE's WildKGC benchmark "
            "(Zhang et al., 2024, SIGIR)",
            "check the TIVA-KG and NATIVE repositories for terms of use",
            aliases=("TIVA-KG",),
            notes="unpinned: needs allow_unpinned=True (trust on first use); names contain spaces and are "
                  "tab-separated from the id",
        ),
        _spec(
            "Kuai16K",
            (None, None, None, None, None),
            (16015, 4, 180190, 22523, 22525),
            ("visual", "textual", "audio", "video"),
            _NATIVE + "Kuai16K; short-video knowledge graph from Kuaishou data built for NativE's WildKGC "
            "benchmark (Zhang et al., 2024, SIGIR); called KVC16K in papers",
            "check the NATIVE repository for terms of use",
            aliases=("KVC16K", "Kuai-16K"),
            notes="unpinned: needs allow_unpinned=True (trust on first use); names are tab-separated from the id",
        ),
    )
})


# ---------------------------------------------------------------------------------------------- lookup
def list_datasets() -> list[str]:
    """Canonical names of the registered datasets, in registry order."""
    return list(DATASETS)


def get_dataset_spec(name: str) -> DatasetSpec:
    """The spec of dataset ``name`` (canonical name or alias, case-insensitive).

    :raises UnknownNameError: the name is not registered; the message lists the known names.
    """
    wanted = str(name).strip().lower()
    for spec in DATASETS.values():
        if wanted == spec.name.lower() or wanted in (a.lower() for a in spec.aliases):
            return spec
    raise UnknownNameError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")


def dataset_dir(name: str) -> Path:
    """Cache folder of a dataset: ``<home>/datasets/<NAME>``."""
    return cache_home() / "datasets" / get_dataset_spec(name).name


def resolve_base_url(base_url: str | None = None) -> str:
    """``base_url``, else ``$MMKGC_BASE_URL``, else :data:`DEFAULT_BASE_URL`; without a trailing slash."""
    url = base_url or os.environ.get(ENV_BASE_URL) or DEFAULT_BASE_URL
    return url.rstrip("/")


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Lowercase hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _has_openke_files(directory: Path) -> bool:
    return (directory / "entity2id.txt").is_file()


def find_local_copy(name: str, data_dir: str | Path | None = None) -> Path | None:
    """Folder of a local copy of dataset ``name``, or ``None``.

    ``data_dir`` (else ``$MMKGC_DATA_DIR``) may hold a ``<NAME>/`` (or alias) sub-folder, or be the dataset
    folder itself (recognised by its ``entity2id.txt``).  The download cache is not searched.
    """
    spec = get_dataset_spec(name)
    root = data_dir if data_dir is not None else os.environ.get(ENV_DATA_DIR)
    if not root:
        return None
    root = Path(root).expanduser()
    for sub in (spec.name, *spec.aliases):
        if _has_openke_files(root / sub):
            return root / sub
    if _has_openke_files(root):
        return root
    return None


def dataset_info(name: str) -> dict:
    """Everything the registry knows about a dataset, as a JSON-serialisable dict.

    Keys: ``name``, ``aliases``, ``files`` (file -> ``{"url", "sha256"}``), ``pinned``, ``counts``,
    ``modalities``, ``source``, ``licence``, ``notes``, ``cache_dir`` and ``cached`` (all files present in
    the cache).

    :raises UnknownNameError: unknown dataset.
    """
    spec = get_dataset_spec(name)
    cache = dataset_dir(spec.name)
    return {
        "name": spec.name,
        "aliases": list(spec.aliases),
        "files": {f: {"url": spec.url(f), "sha256": h} for f, h in spec.sha256.items()},
        "pinned": spec.pinned,
        "counts": dict(spec.counts),
        "modalities": list(spec.modalities),
        "source": spec.source,
        "licence": spec.licence,
        "notes": spec.notes,
        "cache_dir": str(cache),
        "cached": all((cache / f).is_file() for f in OPENKE_FILES),
    }


# ---------------------------------------------------------------------------------------------- lock file
def _read_lock(directory: Path) -> dict[str, str]:
    path = directory / LOCK_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        files = data["files"]
        if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
            raise TypeError("'files' must map file names to hex strings")
    except (ValueError, KeyError, TypeError) as exc:
        raise DataFormatError(path, None, f"malformed lock file ({exc}); delete it to re-trust the files") from None
    return dict(files)


def _write_lock(directory: Path, spec: DatasetSpec, files: dict[str, str], base_url: str) -> None:
    record = {
        "dataset": spec.name,
        "base_url": base_url,
        "note": "sha256 recorded on first download (trust on first use); later downloads must match",
        "files": dict(sorted(files.items())),
    }
    atomic_write_text(directory / LOCK_FILE, json.dumps(record, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------- download
def download_dataset(
    name: str,
    *,
    base_url: str | None = None,
    allow_unpinned: bool = False,
    progress: bool = False,
    download: bool = True,
) -> Path:
    """Make sure the cache holds a verified copy of dataset ``name``; return its folder.

    Every file is passed through :func:`pooch.retrieve` into ``<home>/datasets/<NAME>/``: files already in the
    cache are verified against their hash and kept, missing or mismatching ones are (re-)downloaded from
    ``<base_url>/<NAME>/<file>`` and verified before they are moved into place.  The expected hash is the
    registry pin, or, for an unpinned file, the hash recorded in the lock file on first download.

    :param base_url: mirror root (see :func:`resolve_base_url`).
    :param allow_unpinned: allow files without a registry pin and without a lock record: the first download
        is trusted and its sha256 recorded in ``sha256.lock.json`` (trust on first use); later calls verify
        against the record.  Without it such files are refused before anything is downloaded.
    :param progress: report download progress (tqdm's bar on a terminal if installed, else lines every 30 s).
    :param download: when ``False`` nothing is fetched; a missing file is an error.
    :returns: the cache folder.
    :raises UnknownNameError: unknown dataset.
    :raises ConfigError: an unpinned file without lock record and ``allow_unpinned=False``.
    :raises DataFormatError: a downloaded or cached file whose sha256 differs from the pin or the lock record
        (the download is deleted), a malformed lock file, a missing file with ``download=False``.
    :raises DownloadError: network or HTTP failure.
    """
    import pooch
    import requests

    spec = get_dataset_spec(name)
    base = resolve_base_url(base_url)
    directory = dataset_dir(spec.name)
    lock = _read_lock(directory)

    expected: dict[str, str | None] = {}
    for file, pin in spec.sha256.items():
        expected[file] = pin or lock.get(file)
        if expected[file] is None and not allow_unpinned:
            raise ConfigError(
                f"{spec.name}/{file} has no pinned sha256 and no hash recorded in {directory / LOCK_FILE}; "
                "pass allow_unpinned=True (CLI: --allow-unpinned) to trust the first download and record its hash"
            )

    if not download:
        missing = [f for f in OPENKE_FILES if not (directory / f).is_file()]
        if missing:
            raise DataFormatError(directory / missing[0], None,
                                  f"{spec.name} is not in the cache ({len(missing)} files missing) and "
                                  "downloading is disabled")

    directory.mkdir(parents=True, exist_ok=True)
    from mmkgc.progress import download_progressbar

    recorded = dict(lock)
    changed = False
    for file in OPENKE_FILES:
        url = spec.url(file, base)
        want = expected[file]
        target = directory / file
        if not download:
            observed = sha256_file(target)
            if want is not None and observed != want:
                raise DataFormatError(target, None, _mismatch(spec, file, want, observed, directory, pinned=bool(
                    spec.sha256[file])))
        else:
            # a tqdm bar on a terminal when tqdm is installed, progress lines otherwise (mmkgc.progress)
            downloader = pooch.HTTPDownloader(progressbar=download_progressbar(progress, f"{spec.name}/{file}"),
                                              timeout=60)
            try:
                pooch.retrieve(url, known_hash=f"sha256:{want}" if want else None, fname=file, path=directory,
                               downloader=downloader)
            except ValueError as exc:
                raise DataFormatError(
                    target, None,
                    _mismatch(spec, file, want, None, directory, pinned=bool(spec.sha256[file]))
                    + f" (download from {url} rejected and deleted; pooch: {exc})",
                ) from None
            except (requests.exceptions.RequestException, OSError) as exc:
                raise DownloadError(_download_failure(spec, file, url, exc)) from None
        if want is None:
            recorded[file] = sha256_file(target)
            changed = True
    if changed:
        # trust on first use trusts the bytes, never a copy of another size: the registry's counts must agree
        # before the hashes are recorded
        mismatch = count_mismatches(spec, read_openke(directory, name=spec.name))
        if mismatch:
            raise DataFormatError(directory, None, f"the downloaded files are not {spec.name} as registered "
                                  f"({'; '.join(mismatch)}); their hashes were not recorded")
        _write_lock(directory, spec, recorded, base)
    return directory


def _download_failure(spec: DatasetSpec, file: str, url: str, exc: BaseException) -> str:
    """One line for a failed download: what, the reason in a few words (not the network library's text), and
    how to use a local copy instead."""
    import requests

    if isinstance(exc, requests.exceptions.HTTPError) and exc.response is not None:
        reason = f"HTTP {exc.response.status_code}"
    elif isinstance(exc, requests.exceptions.Timeout):
        reason = "timed out"
    elif isinstance(exc, requests.exceptions.ConnectionError):
        reason = "no network connection or the host is unreachable"
    else:
        reason = type(exc).__name__
    return (f"cannot download {spec.name}/{file} ({reason}; {url}); to use a local copy pass --data-dir DIR or "
            f"set {ENV_DATA_DIR}=DIR (a directory holding {spec.name}/entity2id.txt ...)")


def count_mismatches(spec: DatasetSpec, triples: TripleSet) -> list[str]:
    """How a copy's sizes differ from the registry's counts (``[]`` when they agree).

    :returns: e.g. ``["entities: registry 12,842, copy 240"]``.
    """
    observed = {"entities": triples.num_entities, "relations": triples.num_relations,
                "train": int(triples.train.shape[0]), "valid": int(triples.valid.shape[0]),
                "test": int(triples.test.shape[0])}
    return [f"{key}: registry {spec.counts[key]:,}, copy {value:,}" for key, value in observed.items()
            if spec.counts.get(key) is not None and value != spec.counts[key]]


def _mismatch(spec: DatasetSpec, file: str, want: str | None, got: str | None, directory: Path,
              pinned: bool) -> str:
    origin = "the registry pin" if pinned else f"the hash recorded on first download in {directory / LOCK_FILE}"
    got_text = f", got {got}" if got else ""
    return f"sha256 of {spec.name}/{file} does not match {origin}: expected {want}{got_text}"


def _verify_directory(spec: DatasetSpec, directory: Path) -> dict[str, str]:
    """sha256 of every file of a local copy; raises DataFormatError on a pin mismatch."""
    observed: dict[str, str] = {}
    for file, pin in spec.sha256.items():
        path = directory / file
        if not path.is_file():
            raise DataFormatError(path, None, "file not found")
        observed[file] = sha256_file(path)
        if pin is not None and observed[file] != pin:
            raise DataFormatError(path, None, _mismatch(spec, file, pin, observed[file], directory, pinned=True))
    return observed


# ---------------------------------------------------------------------------------------------- load
def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    verify: bool = False,
    download: bool = True,
    base_url: str | None = None,
    allow_unpinned: bool = False,
    progress: bool = False,
    random_split: tuple[float, float, int] = (0.1, 0.1, 42),
) -> TripleSet:
    """Load a registered benchmark as a :class:`~mmkgc.data.triples.TripleSet`.

    Resolution order: (1) ``data_dir`` if given (it must hold the dataset, as ``<data_dir>/<NAME>/`` or
    directly); (2) ``$MMKGC_DATA_DIR`` if it holds the dataset; (3) the download cache, via
    :func:`download_dataset` (which verifies every file's sha256 and fetches what is missing).

    :param verify: for a local copy (1, 2), also check the sha256 of every pinned file (cache copies are
        always verified).
    :param download: allow network access for (3).
    :param base_url, allow_unpinned, progress: passed to :func:`download_dataset`.
    :returns: the TripleSet, named with the canonical name; ``metadata`` has ``source`` (``"local"`` or
        ``"cache"``), ``path`` and, when computed, ``sha256`` (file -> hash).
    :raises UnknownNameError: unknown dataset.
    :raises DataFormatError: ``data_dir`` does not hold the dataset, a malformed file, a hash mismatch.
    :raises ConfigError, DownloadError: see :func:`download_dataset`.
    """
    spec = get_dataset_spec(name)
    local = find_local_copy(spec.name, data_dir)
    if data_dir is not None and local is None:
        root = Path(data_dir)
        raise DataFormatError(
            root, None,
            f"no OpenKE copy of {spec.name} here (looked for {root / spec.name / 'entity2id.txt'} and "
            f"{root / 'entity2id.txt'})",
        )
    hashes: dict[str, str] | None = None
    if local is not None:
        if verify:
            hashes = _verify_directory(spec, local)
        source, directory = "local", local
    else:
        directory = download_dataset(spec.name, base_url=base_url, allow_unpinned=allow_unpinned,
                                     progress=progress, download=download)
        source = "cache"
    triples = read_openke(directory, name=spec.name)
    mismatch = count_mismatches(spec, triples)
    if mismatch:  # a copy of another dataset (or a truncated one) under this name would train silently wrong
        raise DataFormatError(directory, None, f"this copy is not {spec.name} as registered ({'; '.join(mismatch)}); "
                              f"point --data-dir / {ENV_DATA_DIR} at a copy of {spec.name}")
    triples.metadata.update({"source": source, "path": str(directory), "dataset": spec.name})
    if hashes is not None:
        triples.metadata["sha256"] = hashes
    return triples


# ---------------------------------------------------------------------------------------------- check
@dataclass
class FileCheck:
    """Integrity of one file of a copy.

    :param status: ``"ok"`` (matches the pin), ``"ok-lock"`` (matches the trust-on-first-use record),
        ``"unpinned"`` (no pin and no record), ``"mismatch"`` or ``"missing"``.
    """

    file: str
    path: str
    expected_sha256: str | None
    observed_sha256: str | None
    status: str


@dataclass
class DatasetCheck:
    """Result of :func:`check_dataset`.

    :param counts: ``entities`` / ``relations`` / ``train`` / ``valid`` / ``test`` ->
        ``{"expected": int, "observed": int | None}``.
    :param problems: every finding in words; empty when the copy is intact.
    """

    name: str
    directory: str | None
    files: list[FileCheck] = field(default_factory=list)
    counts: dict[str, dict[str, int | None]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every file is present, no hash mismatches and all counts agree."""
        return not self.problems

    def to_dict(self) -> dict:
        """JSON-serialisable dict (with ``ok``)."""
        return {**asdict(self), "ok": self.ok}

    def to_markdown(self) -> str:
        """A short Markdown report."""
        lines = [f"## Check: {self.name}", "", f"Copy: `{self.directory}`", "",
                 "| file | status | sha256 |", "|---|---|---|"]
        lines += [f"| {f.file} | {f.status} | {(f.observed_sha256 or '-')[:16]} |" for f in self.files]
        lines += ["", "| count | expected | observed |", "|---|---:|---:|"]
        lines += [f"| {k} | {v['expected']:,} | {'-' if v['observed'] is None else format(v['observed'], ',')} |"
                  for k, v in self.counts.items()]
        lines += [""] + ([f"- {p}" for p in self.problems] if self.problems else ["All checks passed."])
        return "\n".join(lines) + "\n"


def check_dataset(name: str, data_dir: str | Path | None = None) -> DatasetCheck:
    """Check a local copy of a dataset against the registry: sha256 of every file and the counts.

    The copy is looked up like :func:`load_dataset` does (``data_dir``, ``$MMKGC_DATA_DIR``, then the cache)
    but nothing is downloaded.  Unpinned files are compared with the lock record when the copy is the cache.

    :returns: a :class:`DatasetCheck`; ``check.ok`` is ``False`` when a file is missing, a hash differs, a file
        cannot be parsed or a count differs from the registry.
    :raises UnknownNameError: unknown dataset.
    """
    spec = get_dataset_spec(name)
    directory = find_local_copy(spec.name, data_dir)
    if directory is None and data_dir is None:
        directory = dataset_dir(spec.name)
    report = DatasetCheck(name=spec.name, directory=str(directory) if directory else None)
    report.counts = {k: {"expected": v, "observed": None} for k, v in spec.counts.items()}
    if directory is None or not directory.is_dir():
        where = data_dir if data_dir is not None else dataset_dir(spec.name)
        report.problems.append(f"no local copy of {spec.name} found in {where}")
        return report

    try:
        lock = _read_lock(directory) if directory == dataset_dir(spec.name) else {}
    except DataFormatError as exc:
        report.problems.append(str(exc))
        lock = {}
    for file, pin in spec.sha256.items():
        path = directory / file
        expected = pin or lock.get(file)
        if not path.is_file():
            report.files.append(FileCheck(file, str(path), expected, None, "missing"))
            report.problems.append(f"{file} is missing")
            continue
        observed = sha256_file(path)
        if expected is None:
            status = "unpinned"
        elif observed == expected:
            status = "ok" if pin else "ok-lock"
        else:
            status = "mismatch"
            report.problems.append(_mismatch(spec, file, expected, observed, directory, pinned=bool(pin)))
        report.files.append(FileCheck(file, str(path), expected, observed, status))

    if any(f.status == "missing" for f in report.files):
        return report
    try:
        triples = read_openke(directory, name=spec.name)
    except DataFormatError as exc:
        report.problems.append(f"cannot read the copy: {exc}")
        return report
    observed_counts = {
        "entities": triples.num_entities, "relations": triples.num_relations,
        "train": int(triples.train.shape[0]), "valid": int(triples.valid.shape[0]),
        "test": int(triples.test.shape[0]),
    }
    for key, value in observed_counts.items():
        report.counts[key]["observed"] = value
        if value != spec.counts[key]:
            report.problems.append(f"{key}: expected {spec.counts[key]:,}, found {value:,}")
    return report


def resolve_dataset(
    spec: str | Path,
    *,
    data_dir: str | Path | None = None,
    format: str = "openke",
    allow_unpinned: bool = False,
    progress: bool = False,
    random_split: tuple[float, float, int] = (0.1, 0.1, 42),
) -> TripleSet:
    """The one way ``train`` (a config's ``dataset.name`` / ``dataset.path``), ``features`` and ``enrich`` read
    their triples.

    :param spec: a :class:`~pathlib.Path`: a directory in ``format`` (``openke``: ``entity2id.txt`` ... ; ``tsv``:
        ``train.tsv``/``valid.tsv``/``test.tsv`` labeled triples; ``vemp_csv``: VEMP's unsplit graph, split by
        ``random_split = (valid_fraction, test_fraction, seed)``), named after the directory.  A ``str``: a
        registered dataset name (:func:`load_dataset`: ``data_dir``, ``$MMKGC_DATA_DIR``, then the download
        cache), else an OpenKE directory when it is one (holds ``entity2id.txt``).
    :raises UnknownNameError: an unknown dataset name.
    :raises DataFormatError: missing or malformed files (naming file and line), a hash mismatch.
    :raises ValueError: an unknown ``format``.
    """
    from mmkgc.data.formats import read_labeled_tsv

    if isinstance(spec, Path):
        if format == "openke":
            return read_openke(spec)
        if format == "tsv":
            return read_labeled_tsv(spec)
        if format == "vemp_csv":
            from mmkgc.data.formats import read_vemp_graph

            valid_fraction, test_fraction, seed = random_split
            return read_vemp_graph(spec, valid_fraction, test_fraction, seed)[0]
        raise ValueError(f"unknown dataset format {format!r}; expected openke, tsv or vemp_csv")
    try:
        get_dataset_spec(spec)
    except UnknownNameError:
        path = Path(spec).expanduser()
        if path.is_dir() and (path / "entity2id.txt").is_file():
            return read_openke(path, name=path.resolve().name)
        raise
    return load_dataset(spec, data_dir=data_dir, allow_unpinned=allow_unpinned, progress=progress)
