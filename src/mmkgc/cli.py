"""The ``mmkgc`` command line (typer + rich).

User errors (bad files, bad configs, unknown names) are printed as one message without a traceback and exit
with status 2; ``MMKGC_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from mmkgc.errors import MMKGCError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Multi-modal knowledge graph completion.")
datasets_app = typer.Typer(no_args_is_help=True, help="Known benchmark datasets: list, describe, verify.")
app.add_typer(datasets_app, name="datasets")
from mmkgc.cli_features import features_app  # noqa: E402  (the `mmkgc features` sub-app)
app.add_typer(features_app, name="features")
from mmkgc.cli_enrich import enrich_app  # noqa: E402  (the `mmkgc enrich` sub-app)
app.add_typer(enrich_app, name="enrich")
from mmkgc.cli_vemp import vemp_app  # noqa: E402  (the `mmkgc vemp` sub-app)
app.add_typer(vemp_app, name="vemp")

console = Console()
err_console = Console(stderr=True)


def _progress() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CI")


# ----------------------------------------------------------------------------------------------- datasets
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
        load_dataset(name, download=True, allow_unpinned=allow_unpinned, progress=_progress())
    report = check_dataset(name, data_dir=data_dir)
    console.print(report.to_markdown())
    if not report.ok:
        raise typer.Exit(1)
    triples = load_dataset(name, data_dir=data_dir, download=False)
    console.print(health_report(triples).to_markdown())


# ----------------------------------------------------------------------------------------------- train / evaluate
@app.command()
def train(
    config: Path = typer.Argument(..., help="Experiment config (YAML)."),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Output directory (default runs/<name>)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --run-dir from its last checkpoint."),
    overrides: list[str] = typer.Option([], "--set", help="Override a config value: dotted.key=value."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:1 or auto."),
    nproc: int = typer.Option(1, "--nproc", min=1,
                              help="Train with DDP in this many local processes (one per GPU; gloo on CPU), "
                                   "started by torchrun's launcher. Same as `torchrun --nproc-per-node N -m mmkgc "
                                   "train CONFIG ...`."),
) -> None:
    """Train a model from a config, select on validation, evaluate on test, write a run directory."""
    from mmkgc import distributed
    from mmkgc.config import load_config
    from mmkgc.pipeline import run_experiment

    cfg = load_config(config, overrides)
    out = run_dir or Path("runs") / cfg.name
    if nproc > 1 and distributed.env_world_size() == 1:
        argv = ["train", str(config), "--run-dir", str(out), "--device", device]
        argv += [f"--set={item}" for item in overrides] + (["--resume"] if resume else [])
        distributed.launch(argv, nproc)  # rank 0 prints the metrics and the run directory
        return
    created = distributed.init_distributed()
    try:
        metrics = run_experiment(cfg, out, resume=resume, progress=_progress(), device=device,
                                 log=lambda line: err_console.print(line, markup=False, highlight=False))
    finally:
        if created:
            distributed.destroy_distributed()
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only rank 0 prints
        _print_metrics(metrics)
        console.print(f"run directory: {out}")


def _print_metrics(metrics: dict) -> None:
    for split in ("valid", "test"):
        if split not in metrics.get("summary", {}):
            continue
        table = Table(title=f"{split}: filtered link prediction (head and tail averaged)")
        table.add_column("ties")
        for col in ("MRR", "MR", "Hits@1", "Hits@3", "Hits@10"):
            table.add_column(col, justify="right")
        for policy, m in metrics["summary"][split].items():
            table.add_row(policy, f"{m['mrr']:.4f}", f"{m['mr']:.1f}", f"{m['hits@1']:.4f}",
                          f"{m['hits@3']:.4f}", f"{m['hits@10']:.4f}")
        console.print(table)


@app.command()
def evaluate(
    run_dir: Path = typer.Argument(..., help="A run directory written by `mmkgc train`."),
    split: str = typer.Option("test", "--split", help="test, valid or valid_clean."),
    batch_size: int = typer.Option(256, "--batch-size"),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best or last."),
    device: str = typer.Option("auto", "--device"),
    output: Optional[Path] = typer.Option(None, "--output", help="Also write the metrics as JSON here."),
) -> None:
    """Evaluate a run's model with filtered ranks (all tie policies, per relation category)."""
    from mmkgc.evaluation.metrics import evaluate as evaluate_fn
    from mmkgc.pipeline import load_run
    from mmkgc.fileio import atomic_write_text

    _, data, model = load_run(run_dir, device=device, which=checkpoint)
    result = evaluate_fn(model.score_fn(), data.triples, split=split, batch_size=batch_size)
    console.print(result.to_markdown())
    if output is not None:
        atomic_write_text(output, json.dumps(result.to_dict(), indent=2))


@app.command()
def predict(
    run_dir: Path = typer.Argument(..., help="A run directory written by `mmkgc train`."),
    relation: str = typer.Option(..., "--relation", help="Relation label as in relation2id.txt."),
    head: Optional[str] = typer.Option(None, "--head", help="Head entity label: predict tails."),
    tail: Optional[str] = typer.Option(None, "--tail", help="Tail entity label: predict heads."),
    top_k: int = typer.Option(10, "--top-k", min=1),
    exclude_known: bool = typer.Option(False, "--exclude-known",
                                       help="Drop answers already in train/valid/test (shown and marked by default)."),
    device: str = typer.Option("auto", "--device"),
) -> None:
    """Top-k predictions for (head, relation, ?) or (?, relation, tail), printed with entity labels."""
    from mmkgc.pipeline import load_run
    from mmkgc.pipeline import predict as predict_fn

    _, data, model = load_run(run_dir, device=device)
    answers = predict_fn(model, data.triples, head, relation, tail, top_k=top_k, filtered=exclude_known)
    query = f"({head}, {relation}, ?)" if head is not None else f"(?, {relation}, {tail})"
    table = Table(title=f"top {top_k} for {query}")
    table.add_column("rank", justify="right")
    table.add_column("entity")
    table.add_column("score", justify="right")
    table.add_column("known")
    for i, (label, score, known) in enumerate(answers, 1):
        table.add_row(str(i), label, f"{score:.4f}", "yes" if known else "")
    console.print(table)


@app.command()
def demo(
    output: Path = typer.Option(Path("runs/demo"), "--output", help="Where the demo's run directories go."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Train structure-only and multimodal models on the built-in synthetic multimodal KG and compare them."""
    from mmkgc.demo import run_demo

    rows = run_demo(output, seed=seed, progress=_progress(),
                    log=lambda line: err_console.print(line, markup=False, highlight=False))
    table = Table(title="mmkgc demo: synthetic multimodal KG, filtered test metrics (realistic ties)")
    for col in ("model", "MRR", "Hits@1", "Hits@3", "Hits@10", "train s"):
        table.add_column(col, justify="right" if col != "model" else "left")
    for row in rows:
        table.add_row(row["model"], f"{row['mrr']:.4f}", f"{row['hits@1']:.4f}", f"{row['hits@3']:.4f}",
                      f"{row['hits@10']:.4f}", f"{row['training_seconds']:.1f}")
    console.print(table)
    best_structure = max(r["mrr"] for r in rows if r["kind"] == "structure")
    best_multimodal = max(r["mrr"] for r in rows if r["kind"] == "multimodal")
    verdict = "beats" if best_multimodal > best_structure else "does NOT beat"
    console.print(f"multimodal ({best_multimodal:.4f} MRR) {verdict} structure-only ({best_structure:.4f} MRR)")


def main() -> None:
    """Console-script entry point: run the app, turning user errors into one clean message."""
    from mmkgc.allocator import keep_freed_memory

    keep_freed_memory()  # large per-batch temporaries stay in the heap instead of page-faulting back each step
    try:
        app(standalone_mode=False)
    except MMKGCError as err:
        if os.environ.get("MMKGC_DEBUG"):
            raise
        err_console.print(f"[bold red]error:[/] {err}", highlight=False)
        sys.exit(2)
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", getattr(exc, "code", 0))
        sys.exit(code or 0)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
