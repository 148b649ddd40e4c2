"""The run commands of ``mmkgc``: ``train``, ``evaluate``, ``predict``, ``export`` and ``demo`` (registered on the
main app by :mod:`mmkgc.cli`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from mmkgc.cli._common import (
    REPORTED,
    Checkpoint,
    ExportFormat,
    MetricsLayout,
    Split,
    console,
    log_line,
    print_error,
    progress_enabled,
)
from mmkgc.errors import ConfigError, TrainingInterrupted


def train(
    config: Path = typer.Argument(..., help="Experiment config (YAML)."),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Output directory (default runs/<name>)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --run-dir from its last checkpoint."),
    overrides: list[str] = typer.Option([], "--set", help="Override a config value: dotted.key=value."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir",
                                            help="Local dataset copies (a directory holding DB15K/, ...) instead of "
                                                 "the download cache; same as --set dataset.data_dir=DIR."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:1 or auto."),
    nproc: int = typer.Option(1, "--nproc", min=1,
                              help="Train with DDP in this many local processes (one per GPU; gloo on CPU), "
                                   "started by torchrun's launcher. Same as `torchrun --nproc-per-node N -m mmkgc "
                                   "train CONFIG ...`."),
    tracker: list[str] = typer.Option([], "--tracker", help="Also report to tensorboard, mlflow or wandb "
                                                            "(repeatable; same as tracking.trackers in the config)."),
) -> None:
    """Train a model from a config, select on validation, evaluate on test, write a run directory."""
    from mmkgc import distributed
    from mmkgc.api import pipeline as run_api_pipeline
    from mmkgc.config import load_config

    if data_dir is not None:  # resolved against the working directory, like every path given on the command line
        overrides = [*overrides, f"dataset.data_dir={json.dumps(str(data_dir.expanduser().resolve()))}"]
    if tracker:
        overrides = [*overrides, f"tracking.trackers={json.dumps(tracker)}"]
    cfg = load_config(config, overrides)
    if run_dir is None and (cfg.name in ("", ".", "..") or Path(cfg.name).name != cfg.name or "\\" in cfg.name):
        raise ConfigError(f"{config}: name: {cfg.name!r} is not a plain name (the run directory is runs/<name>); "
                          "use letters, digits, '-' and '_', or pass --run-dir")
    out = run_dir or Path("runs") / cfg.name
    from mmkgc.pipeline import check_device

    check_device(device)
    if nproc > 1 and distributed.env_world_size() == 1:
        argv = ["train", str(config), "--run-dir", str(out), "--device", device]
        argv += [f"--set={item}" for item in overrides] + (["--resume"] if resume else [])
        distributed.launch(argv, nproc)  # rank 0 prints the metrics and the run directory
        return
    created = distributed.init_distributed()
    try:
        metrics = run_api_pipeline(cfg, out, resume=resume, progress=progress_enabled(), device=device, log=log_line).metrics
    except KeyboardInterrupt as exc:  # TrainingInterrupted (Ctrl-C / SIGTERM in an epoch) or earlier
        message = str(exc) if isinstance(exc, TrainingInterrupted) else "interrupted before training started"
        if isinstance(exc, TrainingInterrupted) and exc.checkpoint is not None:
            import shlex

            sets = "".join(f" --set {shlex.quote(item)}" for item in overrides)
            message += (f"; resume with: mmkgc train {shlex.quote(str(config))} --run-dir {shlex.quote(str(out))} "
                        f"--resume{sets}")
        print_error(message)
        REPORTED.add("interrupt")
        raise typer.Exit(130) from None
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


def evaluate(
    run_dir: Path = typer.Argument(..., help="A run directory written by `mmkgc train`, or a saved model "
                                             "(`mmkgc export --format model`)."),
    split: Split = typer.Option(Split.test, "--split", help="The split to rank."),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="Queries per chunk."),
    checkpoint: Checkpoint = typer.Option(Checkpoint.best, "--checkpoint", help="A saved model has one."),
    device: str = typer.Option("auto", "--device"),
    output: Optional[Path] = typer.Option(None, "--output", help="Also write the metrics as JSON here."),
    layout: MetricsLayout = typer.Option(MetricsLayout.mmkgc, "--layout",
                                         help="--output layout: mmkgc (everything) or pykeen (side -> rank type -> metric, "
                                    "as PyKEEN's RankBasedMetricResults.to_dict())."),
) -> None:
    """Evaluate a run's model under its evaluation protocol: filtered ranks (all tie policies, per relation
    category), or the sampled protocol of a `vemp_sampled` run."""
    split, checkpoint, layout = Split(split).value, Checkpoint(checkpoint).value, MetricsLayout(layout).value
    from mmkgc.api import evaluate as evaluate_model
    from mmkgc.api import load
    from mmkgc.fileio import atomic_write_text
    from mmkgc.pipeline import check_device

    check_device(device)
    result = evaluate_model(load(run_dir, device=device, which=checkpoint), split=split, batch_size=batch_size)
    console.print(result.to_markdown())
    if output is not None:
        from mmkgc.api import pykeen_layout

        content = result.to_dict() if layout == "mmkgc" else pykeen_layout(result.to_dict()["metrics"])
        atomic_write_text(output, json.dumps(content, indent=2))


def predict(
    run_dir: Path = typer.Argument(..., help="A run directory written by `mmkgc train`, or a saved model "
                                             "(`mmkgc export --format model`)."),
    relation: str = typer.Option(..., "--relation", help="Relation label as in relation2id.txt."),
    head: Optional[str] = typer.Option(None, "--head", help="Head entity label: predict tails."),
    tail: Optional[str] = typer.Option(None, "--tail", help="Tail entity label: predict heads."),
    top_k: int = typer.Option(10, "--top-k", min=1),
    exclude_known: bool = typer.Option(False, "--exclude-known",
                                       help="Drop answers already in train/valid/test (shown and marked by default)."),
    device: str = typer.Option("auto", "--device"),
) -> None:
    """Top-k predictions for (head, relation, ?) or (?, relation, tail): labels, scores, splits that hold each."""
    from mmkgc.api import load, predict_target
    from mmkgc.pipeline import check_device

    if (head is None) == (tail is None):
        raise typer.BadParameter("give exactly one of --head and --tail", param_hint="--head / --tail")
    check_device(device)
    trained = load(run_dir, device=device)
    answers = predict_target(trained, head=head, relation=relation, tail=tail, top_k=top_k,
                             remove_known=exclude_known)
    query = f"({head}, {relation}, ?)" if head is not None else f"(?, {relation}, {tail})"
    table = Table(title=f"top {top_k} for {query}")
    table.add_column("rank", justify="right")
    table.add_column("entity", overflow="fold")  # a long URI label wraps, never cut to "..."
    table.add_column("score", justify="right")
    table.add_column("known in")
    for i, row in enumerate(answers.itertuples(index=False), 1):
        table.add_row(str(i), row.label, f"{row.score:.4f}", row.known_in)
    console.print(table)


def export(
    run_dir: Path = typer.Argument(..., help="A run directory written by `mmkgc train` (or a saved model)."),
    output: Path = typer.Option(..., "--output", "-o", help="A new directory to write."),
    fmt: ExportFormat = typer.Option(ExportFormat.model, "--format",
                            help="model: a self-contained saved model (weights, labels, feature tables, triples; "
                                 "`mmkgc evaluate/predict` and mmkgc.load read it without the dataset or the "
                                 "feature cache). pykeen: PyKEEN TriplesFactory directories + embeddings for "
                                 "TransE, DistMult, ComplEx."),
    checkpoint: Checkpoint = typer.Option(Checkpoint.best, "--checkpoint"),
    without_features: bool = typer.Option(False, "--without-features",
                                          help="model: store only the feature tables' hashes (loading then needs "
                                               "the dataset and cache to rebuild them)."),
) -> None:
    """Write a run's model as a self-contained saved model or for PyKEEN."""
    fmt, checkpoint = ExportFormat(fmt).value, Checkpoint(checkpoint).value
    from mmkgc.api import load

    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ConfigError(f"--output {output}: exists and is not an empty directory (nothing was overwritten)")
    trained = load(run_dir, device="cpu", which=checkpoint)
    if fmt == "pykeen":
        from mmkgc.interop.pykeen import export_pykeen

        export_pykeen(trained, output)
    else:
        trained.save(output, include_features=not without_features)
    console.print(f"wrote {output} ({fmt})")


def demo(
    output: Path = typer.Option(Path("runs/demo"), "--output", help="Where the demo's run directories go."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Train structure-only and multimodal models on the built-in synthetic multimodal KG and compare them."""
    from mmkgc.demo import run_demo

    rows = run_demo(output, seed=seed, progress=progress_enabled(),
                    log=log_line)
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
    for row in rows:
        if "mrr_answer_unseen" in row:
            console.print(f"{row['model']}: MRR {row['mrr_answer_unseen']:.4f} on the "
                          f"{int(row['count_answer_unseen'])} test tasks whose answer has no training triple, "
                          f"{row['mrr_seen']:.4f} on the {int(row['count_seen'])} whose entities both have")
