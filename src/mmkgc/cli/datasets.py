"""``mmkgc datasets``: list, describe and verify the registered benchmark datasets (:mod:`mmkgc.data.registry`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from mmkgc.cli._common import console

datasets_app = typer.Typer(no_args_is_help=True, help="Known benchmark datasets: list, describe, verify.")


@datasets_app.command("list")
def datasets_list() -> None:
    """List the registered datasets with their sizes."""
    from mmkgc.data.registry import dataset_info, list_datasets

    table = Table(title="mmkgc datasets")
    for col in ("name", "entities", "relations", "train", "valid", "test", "modalities", "hashes pinned"):
        table.add_column(col)
    for name in list_datasets():
        info = dataset_info(name)
        counts = info.get("counts", {})
        table.add_row(
            name,
            *(f"{counts.get(k, '?'):,}" if isinstance(counts.get(k), int) else "?" for k in
              ("entities", "relations", "train", "valid", "test")),
            ", ".join(info.get("modalities", [])),
            "yes" if info.get("pinned") else "no (trust on first use)",
        )
    console.print(table)


@datasets_app.command("info")
def datasets_info(name: str) -> None:
    """Show everything the registry knows about a dataset (sources, hashes, counts, notes)."""
    from mmkgc.data.registry import dataset_info

    console.print_json(json.dumps(dataset_info(name), default=str))


@datasets_app.command("check")
def datasets_check(
    name: str,
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Local copy instead of the download cache."),
    download: bool = typer.Option(False, "--download", help="Download (and verify) missing files first."),
    allow_unpinned: bool = typer.Option(False, "--allow-unpinned",
                                        help="Accept files without a pinned sha256 (trust on first use)."),
) -> None:
    """Verify a dataset copy (sha256 of every file, counts) and print its data-health report."""
    from mmkgc.data.health import health_report
    from mmkgc.data.registry import check_dataset, load_dataset

    if download and data_dir is None:
        load_dataset(name, download=True, allow_unpinned=allow_unpinned, progress=True)  # bar or lines
    report = check_dataset(name, data_dir=data_dir)
    console.print(report.to_markdown())
    if not report.ok:
        raise typer.Exit(1)
    triples = load_dataset(name, data_dir=data_dir, download=False)
    console.print(health_report(triples).to_markdown())
