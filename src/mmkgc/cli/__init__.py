"""The ``mmkgc`` command line (typer + rich).

Exit statuses: 0 success, 1 a check that found a problem (``datasets check``), 2 a usage or user error (bad
options, files, configs, unknown names, unwritable outputs), 130 interrupted (Ctrl-C, SIGTERM).  A user error is
printed as one message, never interpreted as rich markup and never hard-wrapped; ``MMKGC_DEBUG=1`` shows the
traceback.
"""

from __future__ import annotations

import os

# Before torch is imported: idle OpenMP worker threads spin only briefly (GOMP_SPINCOUNT=10000, libgomp's default
# is 300000) before they sleep.  Long spinning steals the cores of other processes on a shared machine, short
# spinning keeps the quiet case fast (docs/benchmarks.md "OpenMP wait policy": RotatE on DB15K, 2 threads, 8.3 s
# per epoch against the runtime default's 8.1 quiet, 17.5 against 27.7 beside a busy process; PASSIVE, which
# never spins, was 9.3 quiet and 14.0 busy).  A value the user set for OMP_WAIT_POLICY or GOMP_SPINCOUNT is kept;
# an empty OMP_WAIT_POLICY means the runtime's own default.
if os.environ.get("OMP_WAIT_POLICY") == "":
    del os.environ["OMP_WAIT_POLICY"]
elif "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")

import errno  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Optional  # noqa: E402

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from rich.text import Text  # noqa: E402

from mmkgc.errors import ConfigError, MMKGCError, TrainingInterrupted  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Multi-modal knowledge graph completion.")
datasets_app = typer.Typer(no_args_is_help=True, help="Known benchmark datasets: list, describe, verify.")
app.add_typer(datasets_app, name="datasets")
from mmkgc.cli_features import features_app  # noqa: E402  (the `mmkgc features` sub-app)
app.add_typer(features_app, name="features")
from mmkgc.cli_enrich import enrich_app  # noqa: E402  (the `mmkgc enrich` sub-app)
app.add_typer(enrich_app, name="enrich")
from mmkgc.cli_vemp import vemp_app  # noqa: E402  (the `mmkgc vemp` sub-app)
app.add_typer(vemp_app, name="vemp")
from mmkgc.cli_tune import tune_command  # noqa: E402  (`mmkgc tune`, Optuna)
app.command("tune")(tune_command)

# markup off: labels and paths such as "[/x]" print as they are; soft_wrap: long lines are not hard-wrapped
console = Console(markup=False, highlight=False, soft_wrap=True)
# soft_wrap: messages and log lines are never hard-wrapped at the console width (80 columns without a terminal).
err_console = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)


def log_line(line: str) -> None:
    """Print a training log line to stderr verbatim (no markup, no wrapping)."""
    err_console.print(line, markup=False, highlight=False, soft_wrap=True)


def print_error(message: str) -> None:
    """``error: <message>`` on stderr; the message is plain text (a ``[/x]`` in a label prints as it is)."""
    err_console.print(Text.assemble(("error:", "bold red"), " ", str(message)), soft_wrap=True)


def _progress() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CI")


def _print_version(value: bool) -> None:
    if value:
        from mmkgc import __version__

        console.print(f"mmkgc {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main_options(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the mmkgc version and exit."),
) -> None:
    """Multi-modal knowledge graph completion."""


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
        load_dataset(name, download=True, allow_unpinned=allow_unpinned, progress=True)  # bar or lines
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
        metrics = run_api_pipeline(cfg, out, resume=resume, progress=_progress(), device=device, log=log_line).metrics
    except KeyboardInterrupt as exc:  # TrainingInterrupted (Ctrl-C / SIGTERM in an epoch) or earlier
        message = str(exc) if isinstance(exc, TrainingInterrupted) else "interrupted before training started"
        if isinstance(exc, TrainingInterrupted) and exc.checkpoint is not None:
            import shlex

            sets = "".join(f" --set {shlex.quote(item)}" for item in overrides)
            message += (f"; resume with: mmkgc train {shlex.quote(str(config))} --run-dir {shlex.quote(str(out))} "
                        f"--resume{sets}")
        print_error(message)
        _REPORTED.add("interrupt")
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


SPLITS = ("test", "valid", "valid_clean")
CHECKPOINTS = ("best", "last")


def _choice(option: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(allowed)}", param_hint=option)
    return value


@app.command()
def evaluate(
    run_dir: Path = typer.Argument(..., help="A run directory written by `mmkgc train`, or a saved model "
                                             "(`mmkgc export --format model`)."),
    split: str = typer.Option("test", "--split", help="test, valid or valid_clean."),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="Queries per chunk."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best or last (a saved model has one)."),
    device: str = typer.Option("auto", "--device"),
    output: Optional[Path] = typer.Option(None, "--output", help="Also write the metrics as JSON here."),
    layout: str = typer.Option("mmkgc", "--layout",
                               help="--output layout: mmkgc (everything) or pykeen (side -> rank type -> metric, "
                                    "as PyKEEN's RankBasedMetricResults.to_dict())."),
) -> None:
    """Evaluate a run's model with filtered ranks (all tie policies, per relation category)."""
    _choice("--split", split, SPLITS)
    _choice("--checkpoint", checkpoint, CHECKPOINTS)
    _choice("--layout", layout, ("mmkgc", "pykeen"))
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


@app.command()
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


EXPORT_FORMATS = ("model", "pykeen")


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="A run directory written by `mmkgc train` (or a saved model)."),
    output: Path = typer.Option(..., "--output", "-o", help="A new directory to write."),
    fmt: str = typer.Option("model", "--format",
                            help="model: a self-contained saved model (weights, labels, feature tables, triples; "
                                 "`mmkgc evaluate/predict` and mmkgc.load read it without the dataset or the "
                                 "feature cache). pykeen: PyKEEN TriplesFactory directories + embeddings for "
                                 "TransE, DistMult, ComplEx."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best or last."),
    without_features: bool = typer.Option(False, "--without-features",
                                          help="model: store only the feature tables' hashes (loading then needs "
                                               "the dataset and cache to rebuild them)."),
) -> None:
    """Write a run's model as a self-contained saved model or for PyKEEN."""
    _choice("--format", fmt, EXPORT_FORMATS)
    _choice("--checkpoint", checkpoint, CHECKPOINTS)
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


@app.command()
def demo(
    output: Path = typer.Option(Path("runs/demo"), "--output", help="Where the demo's run directories go."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Train structure-only and multimodal models on the built-in synthetic multimodal KG and compare them."""
    from mmkgc.demo import run_demo

    rows = run_demo(output, seed=seed, progress=_progress(),
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


#: What a command has already reported itself (so :func:`run` does not print it again).
_REPORTED: set[str] = set()


def _os_error_message(exc: OSError) -> str:
    """One line for a failed file operation: the file, what failed, and what to do for the usual causes."""
    where = exc.filename if exc.filename is not None else ""
    if exc.filename2 is not None:
        where = f"{where} -> {exc.filename2}"
    what = exc.strerror or str(exc)
    hint = {
        errno.ENOSPC: "no space left on device; free some space (a half-written file was removed and the last "
                      "good checkpoint is kept), then rerun (train: --resume)",
        errno.EDQUOT: "disk quota exceeded; free some space, then rerun (train: --resume)",
        errno.EROFS: "the location is on a read-only file system; choose another output location",
        errno.EACCES: "permission denied; choose a location you can write (or read)",
        errno.EPERM: "operation not permitted; choose another location",
        errno.EEXIST: "a file is in the way of a directory of that path",
        errno.ENOTDIR: "a part of the path is a file, not a directory",
    }.get(exc.errno or -1)
    text = f"{where}: {what}" if where else what
    return f"{text} ({hint})" if hint else text


def run(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit status instead of exiting (the tests call this).

    :returns: 0 success, 1 a check found a problem, 2 usage or user error, 130 interrupted.
    """
    debug = bool(os.environ.get("MMKGC_DEBUG"))
    _REPORTED.clear()
    try:
        rv = app(args=argv, prog_name="mmkgc", standalone_mode=False)
        if rv == 130 and "interrupt" not in _REPORTED:  # typer turns Ctrl-C in a command into a bare Exit(130)
            print_error("interrupted")
        return rv if isinstance(rv, int) else 0
    except typer.TyperException as exc:  # typer's bundled click: usage errors, bad option values, no command
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            print_error(str(exc))
        return int(getattr(exc, "exit_code", 2) or 2)
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        print_error("aborted")
        return 130
    except KeyboardInterrupt as exc:
        print_error(str(exc) or "interrupted")
        return 130
    except MMKGCError as err:
        if debug:
            raise
        print_error(str(err))
        return 2
    except OSError as exc:  # unwritable output, full disk, missing or unreadable input outside the readers
        if debug:
            raise
        print_error(_os_error_message(exc))
        return 2
    except FloatingPointError as exc:  # the trainer's "training loss became nan" (learning rate, features)
        if debug:
            raise
        print_error(str(exc))
        return 2
    except MemoryError as exc:
        if debug:
            raise
        print_error(f"out of memory ({exc or 'host memory'}); lower training.batch_size / evaluation.batch_size")
        return 2
    except RuntimeError as exc:
        if type(exc).__name__ != "OutOfMemoryError" or debug:  # torch.cuda.OutOfMemoryError; other bugs show
            raise
        print_error(f"out of GPU memory; lower training.batch_size / evaluation.batch_size "
                    f"({str(exc).splitlines()[0]})")
        return 2
    except UnicodeDecodeError as exc:
        if debug:
            raise
        print_error(f"a file is not UTF-8 text ({exc})")
        return 2


def main() -> None:
    """Console-script entry point (``mmkgc``): run the app and exit with its status."""
    # --- process-wide tuning set by the entry point, before any work ---
    from mmkgc.allocator import keep_freed_memory

    keep_freed_memory()  # large per-batch temporaries stay in the heap instead of page-faulting back each step
    sys.exit(run())


if __name__ == "__main__":
    main()
