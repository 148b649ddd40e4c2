"""``mmkgc tune CONFIG --trials N --study-dir DIR``: hyper-parameter search with Optuna (:mod:`mmkgc.tuning`).

Registered on the main app by :mod:`mmkgc.cli`; every user error is an :class:`~mmkgc.errors.MMKGCError`, printed
by :func:`mmkgc.cli.run` as one line with exit status 2 (a missing Optuna names the ``tune`` extra).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from mmkgc.cli._common import REPORTED, console, log_line, print_error

# Without a terminal rich assumes 80 columns and would squeeze the parameter columns: allow the table's own width.


def tune_command(
    config: Path = typer.Argument(..., help="Experiment config (YAML), with a 'tune: {space: ...}' section unless "
                                            "--space is given."),
    study_dir: Path = typer.Option(..., "--study-dir", help="Study directory (study.db, trials/, trials.csv, "
                                                             "best_config.yaml); rerunning continues the study."),
    trials: Optional[int] = typer.Option(None, "--trials", min=1,
                                         help="Trials of the study in total (default: tune.trials, 20)."),
    space: Optional[Path] = typer.Option(None, "--space",
                                         help="Search space YAML instead of the config's tune section."),
    time_budget_minutes: Optional[float] = typer.Option(None, "--time-budget-minutes", min=0.001,
                                                        help="Training budget of each trial (minutes)."),
    overrides: list[str] = typer.Option([], "--set", help="Override a config value for every trial: dotted.key=value."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Local dataset copies; same as --set "
                                                                      "dataset.data_dir=DIR."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:1 or auto."),
    tracker: list[str] = typer.Option([], "--tracker", help="Report every trial to tensorboard, mlflow or wandb "
                                                            "(repeatable; same as tracking.trackers)."),
) -> None:
    """Search hyper-parameters: each trial trains like `mmkgc train`, selected on the cleaned validation MRR only."""
    from mmkgc.pipeline import check_device
    from mmkgc.tuning import tune

    if data_dir is not None:
        overrides = [*overrides, f"dataset.data_dir={json.dumps(str(data_dir.expanduser().resolve()))}"]
    if tracker:
        overrides = [*overrides, f"tracking.trackers={json.dumps(tracker)}"]
    check_device(device)
    try:
        result = tune(config, study_dir, trials=trials, overrides=overrides, space_file=space,
                      time_budget_minutes=time_budget_minutes, device=device, log=log_line)
    except KeyboardInterrupt as exc:  # Ctrl-C / SIGTERM: the running trial is marked failed, the study is kept
        print_error(f"{exc or 'interrupted'}; the study is kept in {study_dir}: rerun the same command to continue it")
        REPORTED.add("interrupt")
        raise typer.Exit(130) from None
    keys = sorted({k for r in result.trials for k in r["params"]})
    table = Table(title=f"mmkgc tune: {len(result.trials)} trial(s), selected on valid_clean MRR (best first)")
    for col in ("trial", "state", "valid MRR", "epochs"):
        table.add_column(col, justify="left" if col == "state" else "right", no_wrap=True)
    for key in keys:  # the last part of the dotted key when that is unambiguous (training.lr -> lr)
        short = key.rsplit(".", 1)[-1]
        table.add_column(short if sum(k.rsplit(".", 1)[-1] == short for k in keys) == 1 else key, justify="right",
                         no_wrap=True)
    order = sorted(result.trials, key=lambda r: (r["value"] is None, -(r["value"] or 0.0), r["number"]))
    for r in order[:15]:
        table.add_row(str(r["number"]), r["state"], "" if r["value"] is None else f"{r['value']:.4f}",
                      "" if r["epochs"] is None else str(r["epochs"]),
                      *[_show(r["params"].get(k)) for k in keys])
    console.print(table)
    if result.best is None:
        console.print("no trial finished; see the trials/ run directories")
        raise typer.Exit(1)
    best = result.best
    line = f"best: trial {best['number']}, valid_clean MRR {best['value']:.4f}"
    if best.get("test"):
        test = best["test"]
        line += "; its test MRR " + ", ".join(f"{policy} {m['mrr']:.4f}" for policy, m in test.items())
    console.print(line)
    console.print(f"best config: {study_dir / 'best_config.yaml'}; all trials: {study_dir / 'trials.csv'}")


def _show(value: object) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)
