"""``mmkgc vemp``: the VEMP two-stage pipeline (methods.md section 2; :mod:`mmkgc.vemp`).

* ``pretrain CONFIG`` -- stage 1 (contrastive token fusion on training edges) -> ``RUN/pretrain/``.
* ``export CONFIG`` -- the four node-feature tables -> ``RUN/features/<mode>.safetensors``.
* ``linkpred CONFIG --mode M [--protocol vemp_sampled|filtered]`` -- stage 2 for one feature mode.
* ``compare CONFIG`` -- all of the above for every mode and protocol of ``compare``; ``RUN/compare.{md,json,png}``.

``RUN`` is ``--run-dir`` (default ``runs/<name>``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from mmkgc.cli._common import FeatureMode, VempProtocol, console, err_console

vemp_app = typer.Typer(no_args_is_help=True, help="VEMP: contrastive token fusion + R-GCN link prediction.")


def _setup(config: Path, overrides: list[str], run_dir: Optional[Path], device: Optional[str]):
    import torch

    from mmkgc.config_vemp import load_vemp_config

    cfg = load_vemp_config(config, overrides)
    if device is not None:
        cfg.device = device
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    out = run_dir or Path("runs") / cfg.name
    out.mkdir(parents=True, exist_ok=True)
    return cfg, out


def _log(line: str) -> None:
    err_console.print(line, markup=False, highlight=False)


_CONFIG = typer.Argument(..., help="VEMP config (YAML).")
_RUN = typer.Option(None, "--run-dir", help="Output directory (default runs/<name>).")
_SET = typer.Option([], "--set", help="Override a config value: dotted.key=value.")
_DEVICE = typer.Option(None, "--device", help="cpu, cuda or auto (default: the config's device).")


@vemp_app.command("pretrain")
def pretrain_cmd(config: Path = _CONFIG, run_dir: Optional[Path] = _RUN, overrides: list[str] = _SET,
                 device: Optional[str] = _DEVICE) -> None:
    """Stage 1: train the cross-attention token fusion on the training edges (InfoNCE text<->image + neighbour)."""
    from mmkgc.vemp import load_inputs, pretrain

    cfg, out = _setup(config, overrides, run_dir, device)
    pretrain(cfg, load_inputs(cfg), out, _log)
    console.print(f"pretrained fusion: {out / 'pretrain' / 'fusion.safetensors'}")


@vemp_app.command("export")
def export_cmd(config: Path = _CONFIG, run_dir: Optional[Path] = _RUN, overrides: list[str] = _SET,
               device: Optional[str] = _DEVICE) -> None:
    """Export the fused / text_only / image_only / concat node-feature tables of a pretrained run."""
    from mmkgc.vemp import export_features, load_inputs

    cfg, out = _setup(config, overrides, run_dir, device)
    for mode, path in export_features(cfg, load_inputs(cfg), out).items():
        console.print(f"{mode}: {path}")


@vemp_app.command("linkpred")
def linkpred_cmd(config: Path = _CONFIG, mode: FeatureMode = typer.Option(FeatureMode.fused, "--mode",
                                                                          help="Exported feature table."),
                 protocol: VempProtocol = typer.Option(VempProtocol.vemp_sampled, "--protocol"),
                 run_dir: Optional[Path] = _RUN, overrides: list[str] = _SET,
                 device: Optional[str] = _DEVICE) -> None:
    """Stage 2 for one exported feature mode under one protocol; prints the test metrics as JSON."""
    from mmkgc.errors import ConfigError
    from mmkgc.vemp import run_filtered, run_linkpred

    cfg, out = _setup(config, overrides, run_dir, device)
    mode, protocol = FeatureMode(mode).value, VempProtocol(protocol).value
    if protocol == "vemp_sampled":
        result = run_linkpred(cfg, out, mode, log=_log)["test"]
    elif protocol == "filtered":
        if cfg.graph.format != "openke":
            raise ConfigError("--protocol filtered needs graph.format 'openke' (the standard split)")
        if cfg.filtered is None:
            from mmkgc.config_vemp import FilteredConfig

            cfg.filtered = FilteredConfig()
        result = run_filtered(cfg, out, mode, log=_log)["test"]
    console.print_json(json.dumps(result))


@vemp_app.command("compare")
def compare_cmd(config: Path = _CONFIG, run_dir: Optional[Path] = _RUN, overrides: list[str] = _SET,
                device: Optional[str] = _DEVICE,
                fresh: bool = typer.Option(False, "--fresh", help="Pretrain again even if RUN/pretrain exists.")) -> None:
    """Four-way feature comparison (text_only, image_only, concat, fused): one table and one bar plot."""
    from mmkgc.vemp import compare, compare_markdown

    cfg, out = _setup(config, overrides, run_dir, device)
    summary = compare(cfg, out, _log, reuse_pretrain=not fresh)
    console.print(compare_markdown(summary["rows"]), markup=False, highlight=False)
    console.print(f"table: {out / 'compare.md'}  plot: {out / 'compare.png'}")
