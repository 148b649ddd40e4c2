"""``mmkgc sweep CONFIG --param KEY=V1,V2,... [--param ...] --out DIR``: a config over a grid of values
(:mod:`mmkgc.sweep`), each an ordinary run directory, then a comparison table (``sweep.md``, ``sweep.json``,
``sweep.png``).

Registered on the main app by :mod:`mmkgc.cli`; a bad ``--param``, config value or ``--out`` is an
:class:`~mmkgc.errors.MMKGCError` printed by :func:`mmkgc.cli.run` as one line with exit status 2, before any run
starts; Ctrl-C exits 130 and says how to resume.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import typer

from mmkgc.cli._common import REPORTED, console, log_line, print_error


def sweep_command(
    config: Path = typer.Argument(..., help="Experiment config (YAML)."),
    params: list[str] = typer.Option([], "--param", help="KEY=V1,V2,...: a dotted config key and its values (YAML "
                                     "each, commas inside brackets kept); repeat for a grid over several keys."),
    out: Path = typer.Option(..., "--out", help="Sweep directory: runs/<point>/ (ordinary run directories), "
                             "sweep.md, sweep.json, sweep.png."),
    overrides: list[str] = typer.Option([], "--set", help="Override a config value for every run: dotted.key=value."),
    resume: bool = typer.Option(False, "--resume", help="Continue the sweep in --out: finished runs are kept, an "
                                "interrupted one resumes from its checkpoint."),
    force: bool = typer.Option(False, "--force", help="Start the sweep in --out again, deleting its runs."),
    data_dir: Path = typer.Option(None, "--data-dir", help="Local dataset copies; same as --set dataset.data_dir=DIR."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:1 or auto."),
) -> None:
    """Run a config over every combination of --param values and compare the selected and test metrics."""
    from mmkgc.errors import TrainingInterrupted
    from mmkgc.sweep import run_sweep, sweep_markdown

    if data_dir is not None:
        overrides = [*overrides, f"dataset.data_dir={json.dumps(str(data_dir.expanduser().resolve()))}"]
    try:
        summary = run_sweep(config, params, out, overrides=overrides, resume=resume, force=force, device=device,
                            log=log_line)
    except KeyboardInterrupt as exc:
        message = str(exc) if isinstance(exc, TrainingInterrupted) else "interrupted"
        argv = ["mmkgc", "sweep", str(config), *[f"--param={p}" for p in params], "--out", str(out),
                *[f"--set={s}" for s in overrides], "--resume"]
        print_error(f"{message}; finished runs are kept in {out}; continue with: {shlex.join(argv)}")
        REPORTED.add("interrupt")
        raise typer.Exit(130) from None
    console.print(sweep_markdown(summary["rows"]))
    console.print(f"sweep directory: {out} (sweep.md, sweep.json{', sweep.png' if (out / 'sweep.png').is_file() else ''})")
