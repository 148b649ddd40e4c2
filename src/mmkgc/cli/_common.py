"""Helpers shared by the ``mmkgc`` sub-commands (:mod:`mmkgc.cli`): the consoles, error printing, the progress
switch, dataset loading for the commands that take a ``DATASET`` argument, feature-table output, and the typed
choices that make ``--help`` list the valid values.

Everything here is public to the package: a sub-command module imports from here, never another sub-command's
private helper.
"""

from __future__ import annotations

import json
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Any, Optional

from rich.console import Console
from rich.table import Table
from rich.text import Text

from mmkgc.errors import ConfigError
from mmkgc.progress import is_terminal

# markup off: labels and paths such as "[/x]" print as they are; soft_wrap: long lines are not hard-wrapped.
# Without a terminal (piped, CI, a log file) rich would lay tables out for 80 columns and squeeze or cut their
# cells; 200 columns keep a metrics or `ls` table one row per line there.
console = Console(markup=False, highlight=False, soft_wrap=True, width=None if is_terminal() else 200)
# soft_wrap: messages and log lines are never hard-wrapped at the console width (80 columns without a terminal).
err_console = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)

#: What a command has already reported itself (so :func:`mmkgc.cli.run` does not print it again).
REPORTED: set[str] = set()


def log_line(line: str) -> None:
    """Print a training log line to stderr verbatim (no markup, no wrapping)."""
    err_console.print(line, markup=False, highlight=False, soft_wrap=True)


def print_error(message: str) -> None:
    """``error: <message>`` on stderr; the message is plain text (a ``[/x]`` in a label prints as it is)."""
    err_console.print(Text.assemble(("error:", "bold red"), " ", str(message)), soft_wrap=True)


def progress_enabled() -> bool:
    """Whether to draw progress bars: stderr is a terminal and ``$CI`` is unset."""
    return sys.stderr.isatty() and not os.environ.get("CI")


# ----------------------------------------------------------------------------------------------- typed choices
class Split(StrEnum):
    """The evaluation split of ``mmkgc evaluate``."""

    test = "test"
    valid = "valid"
    valid_clean = "valid_clean"


class Checkpoint(StrEnum):
    """Which checkpoint of a run directory to load."""

    best = "best"
    last = "last"


class MetricsLayout(StrEnum):
    """``mmkgc evaluate --output`` layout."""

    mmkgc = "mmkgc"
    pykeen = "pykeen"


class ExportFormat(StrEnum):
    """``mmkgc export --format``."""

    model = "model"
    pykeen = "pykeen"


class Modality(StrEnum):
    """``mmkgc features extract --modality``."""

    text = "text"
    image = "image"


class ImageLayout(StrEnum):
    """How an image folder maps to entities (``--layout``)."""

    auto = "auto"
    folders = "folders"
    flat = "flat"
    table = "table"


class ImageOutput(StrEnum):
    """What an image encoder writes (``--output-kind``)."""

    pooled = "pooled"
    projected = "projected"
    tokens = "tokens"


class ImageAggregate(StrEnum):
    """How several images of an entity combine (``--aggregate``)."""

    mean = "mean"
    max = "max"
    first = "first"
    set = "set"


class CaptionSource(StrEnum):
    """Which image set a caption run reads (source priority when merging: original first)."""

    original = "original"
    new = "new"


class DType(StrEnum):
    """Weights dtype of a captioning / fusion model (``--dtype``)."""

    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"


class EnrichText(StrEnum):
    """Which text ``mmkgc enrich encode`` encodes (``auto``: summary, else merged, else captions)."""

    auto = "auto"
    summary = "summary"
    merged = "merged"
    images = "images"


class Presence(StrEnum):
    """How an imported table's presence mask is derived (:func:`mmkgc.features.store.presence_from_values`)."""

    all = "all"
    nonzero = "nonzero"
    not_equal_fill = "not_equal_fill"


class MultiVector(StrEnum):
    """How ``.h5`` entries with several vectors become a row (``--multi``)."""

    mean = "mean"
    first = "first"
    tokens = "tokens"


class DatasetFormat(StrEnum):
    """``--dataset-format``: how a ``DATASET`` directory is laid out (:func:`mmkgc.data.resolve_dataset`)."""

    openke = "openke"
    tsv = "tsv"
    vemp_csv = "vemp_csv"


class FeatureMode(StrEnum):
    """A node-feature table written by VEMP's stage 1 (``features extract --encoder vemp --table``;
    :data:`mmkgc.vemp.FEATURE_MODES`)."""

    text_only = "text_only"
    image_only = "image_only"
    concat = "concat"
    fused = "fused"


# ----------------------------------------------------------------------------------------------- datasets, tables
def load_triples(dataset: str, data_dir: Optional[Path]):
    """The :class:`~mmkgc.data.triples.TripleSet` of a ``DATASET`` argument (:func:`mmkgc.data.resolve_dataset`:
    a registered name, local copy via ``--data-dir`` / ``$MMKGC_DATA_DIR`` else the download cache, or an OpenKE
    directory given by path).

    :raises ConfigError: unknown name; :raises DataFormatError: unreadable files.
    """
    from mmkgc.data.registry import resolve_dataset

    return resolve_dataset(dataset, data_dir=data_dir, progress=True)


def output_path(dataset: str, output: Optional[str], default: str) -> Path:
    """Where ``--output`` (a table NAME in the dataset's feature folder or a path) points.

    :raises ConfigError: an invalid name, naming ``--output``.
    """
    from mmkgc.features.cache import table_path

    try:
        return table_path(dataset, output or default)
    except ValueError as exc:
        raise ConfigError(f"--output: {exc}") from None


def save_table(table, out: Path) -> None:
    """Write a feature table atomically to ``out``; a refused path or format becomes a ConfigError naming
    ``--output``."""
    from mmkgc.features.io import save_feature_table

    try:
        save_feature_table(table, out)
    except ValueError as exc:
        raise ConfigError(f"--output {out}: {exc}") from None


def read_map(names: Optional[Path], labels) -> tuple[Optional[dict], Optional[dict]]:
    """The ``--names`` map (key -> entity) and its report; ``(None, None)`` without one."""
    if names is None:
        return None, None
    from mmkgc.features.io import read_name_map

    return read_name_map(names, labels)


def coverage_table(title: str, rows: dict[str, Any]) -> Table:
    """A two-column field/value table (dicts and lists shown as JSON)."""
    table = Table(title=title, show_header=False)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    for key, value in rows.items():
        shown = json.dumps(value, default=str) if isinstance(value, (dict, list)) else str(value)
        table.add_row(key, shown)
    return table
