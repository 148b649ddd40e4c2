"""``mmkgc sweep``: one experiment config run over a grid of values, each an ordinary run directory, then a
comparison table of the selected (validation) and test metrics.

It replaces the VEMP-only ``vemp compare`` (e.g. ``--param model.modalities.0.table=vemp_fused,vemp_text_only,
vemp_image_only,vemp_concat`` over the stage-1 tables) and works for any config.

Sweep directory::

    .mmkgc-sweep            marker: the config, the parameters and their values (checked by --resume)
    runs/<NN>-<key>=<value>[,...]/   one ordinary run directory per grid point (``mmkgc train``'s layout)
    sweep.json, sweep.md    one row per grid point: the values, selection-split and test metrics
    sweep.png               test (and validation) MRR per grid point, when matplotlib is installed

A value list is split at the commas outside brackets and quotes, and every value is parsed as YAML, exactly as a
``--set`` override (``model.gnn.hidden_dims=[16],[32]`` is two values).
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmkgc.errors import ConfigError

MARKER = ".mmkgc-sweep"
#: What a sweep writes into its directory (the only names ``--force`` removes).
SWEEP_FILES = frozenset({MARKER, "runs", "sweep.json", "sweep.md", "sweep.png"})
_METRICS = ("mrr", "hits@1", "hits@3", "hits@10")


@dataclass(frozen=True)
class SweepPoint:
    """One grid point: ``values`` (key -> the override's value text, in ``--param`` order), its run ``label``."""

    values: tuple[tuple[str, str], ...]
    label: str

    @property
    def overrides(self) -> list[str]:
        return [f"{k}={v}" for k, v in self.values]


def split_values(text: str) -> list[str]:
    """``"a,[1,2],'x,y'"`` -> ``["a", "[1,2]", "'x,y'"]``: commas outside brackets, braces and quotes separate."""
    parts, depth, quote, cur = [], 0, None, []
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur).strip())
    return parts


def parse_params(params: Sequence[str]) -> list[tuple[str, list[str]]]:
    """``["KEY=V1,V2", ...]`` -> ``[(KEY, [V1, V2]), ...]``.

    :raises ConfigError: no parameter, no ``=``, an empty key or value, a key given twice, or a value given twice
        for one key (naming the ``--param``).
    """
    if not params:
        raise ConfigError("--param: give at least one KEY=V1,V2,... to sweep over")
    out: list[tuple[str, list[str]]] = []
    for item in params:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or not all(key.split(".")):
            raise ConfigError(f"--param {item!r}: expected dotted.key=V1,V2,... (e.g. training.lr=0.01,0.001)")
        values = split_values(raw)
        if any(v == "" for v in values):
            raise ConfigError(f"--param {item!r}: an empty value (check the commas)")
        if len(set(values)) != len(values):
            raise ConfigError(f"--param {item!r}: a value is given twice")
        if key in [k for k, _ in out]:
            raise ConfigError(f"--param {key}: given twice; list all its values in one --param")
        out.append((key, values))
    return out


def _label(index: int, values: Sequence[tuple[str, str]], width: int) -> str:
    text = ",".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in values)
    text = re.sub(r"[^A-Za-z0-9_.=,+-]+", "_", text).strip("._")[:80]
    return f"{index:0{width}d}-{text}"


def grid(params: Sequence[tuple[str, list[str]]]) -> list[SweepPoint]:
    """Every combination of the values (the last parameter varies fastest), labelled ``NN-key=value,...``."""
    combos = list(itertools.product(*[[(k, v) for v in vs] for k, vs in params]))
    width = len(str(len(combos)))
    return [SweepPoint(tuple(c), _label(i + 1, c, width)) for i, c in enumerate(combos)]


def load_point_configs(config: Path, points: Sequence[SweepPoint], overrides: Sequence[str] = ()) -> list[Any]:
    """The validated :class:`~mmkgc.config.ExperimentConfig` of every grid point (``overrides`` first, then the
    point's values), all checked before anything runs.

    :raises ConfigError: naming the grid point and the field.
    """
    from mmkgc.config import load_config

    configs = []
    for p in points:
        try:
            configs.append(load_config(config, [*overrides, *p.overrides]))
        except ConfigError as err:
            raise ConfigError(f"sweep point {p.label}: {err}") from None
    return configs


def prepare_dir(out: Path, spec: dict[str, Any], resume: bool, force: bool) -> None:
    """Check (and with ``force`` empty) the sweep directory, then write the marker.

    * new or empty: used;
    * non-empty: refused unless ``resume`` (a sweep of the same config and grid: finished runs are kept, an
      interrupted one resumes from its checkpoint) or ``force`` (a sweep directory holding only a sweep's files:
      they are removed and the sweep starts again).  Another program's directory is never touched.

    :raises ConfigError: naming the directory and what to do.
    """
    if resume and force:
        raise ConfigError("--resume and --force exclude each other")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file; give a directory")
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    marker = out / MARKER
    if entries:
        if MARKER not in entries:
            shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            raise ConfigError(f"--out {out}: not empty and not a sweep directory (holds {shown}); choose a new or "
                              "empty --out")
        foreign = [e for e in entries if e not in SWEEP_FILES and not e.startswith(".sweep")]
        if foreign:
            raise ConfigError(f"--out {out}: holds files mmkgc sweep did not write ({', '.join(foreign[:5])}); "
                              "choose a new or empty --out")
        if not (resume or force):
            raise ConfigError(f"--out {out}: already holds a sweep; pass --resume to continue it or --force to start "
                              "it again (its runs are deleted)")
        if resume:
            try:
                before = json.loads(marker.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                before = None
            if before != spec:
                raise ConfigError(f"--out {out}: the sweep there was started with another config or --param/--set "
                                  "values; --resume needs the same ones (or use --force, or another --out)")
        if force:
            for e in entries:
                path = out / e
                if e == MARKER:
                    continue
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    from mmkgc.fileio import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(marker, json.dumps(spec, indent=1, sort_keys=True))


def run_sweep(config: Path, params: Sequence[str], out: Path, overrides: Sequence[str] = (), resume: bool = False,
              force: bool = False, device: str | None = "auto", log: Callable[[str], None] = print,
              runner: Callable[..., dict[str, Any]] | None = None) -> dict[str, Any]:
    """Run every grid point as an ordinary run (``out/runs/<label>``) and write the comparison.

    :param runner: ``(cfg, run_dir, resume=..., device=..., log=...) -> metrics`` (default
        :func:`mmkgc.pipeline.run_experiment`).
    :returns: the content of ``sweep.json``.
    :raises ConfigError: a bad ``--param`` / config value (before anything runs) or an unusable ``--out``.
    :raises TrainingInterrupted: Ctrl-C / SIGTERM in a run (the finished runs and the last checkpoint are kept).
    """
    from mmkgc.pipeline import check_device, has_checkpoint, run_experiment

    parsed = parse_params(params)
    points = grid(parsed)
    configs = load_point_configs(config, points, overrides)
    check_device(device)
    spec = {"config": str(Path(config).resolve()), "params": [[k, vs] for k, vs in parsed],
            "overrides": list(overrides)}
    prepare_dir(out, spec, resume, force)
    runner = runner or run_experiment
    rows = []
    for i, (point, cfg) in enumerate(zip(points, configs), 1):
        run_dir = out / "runs" / point.label
        done = run_dir / "metrics.json"
        if resume and done.is_file():
            log(f"[sweep {i}/{len(points)}] {point.label}: finished earlier, kept")
            metrics = json.loads(done.read_text(encoding="utf-8"))
        else:
            again = resume and has_checkpoint(run_dir)
            log(f"[sweep {i}/{len(points)}] {point.label}: {'resuming' if again else 'training'}")
            metrics = runner(cfg, run_dir, resume=again, device=device, log=log)
        rows.append(summary_row(point, cfg, metrics, run_dir, out))
        write_summary(out, spec, rows, log)
    return json.loads((out / "sweep.json").read_text(encoding="utf-8"))


def summary_row(point: SweepPoint, cfg: Any, metrics: dict[str, Any], run_dir: Path, out: Path) -> dict[str, Any]:
    """One comparison row: the point's values, the protocol, the selection split's and the test metrics under the
    config's tie policy (head and tail averaged; tail only under ``vemp_sampled``), the legacy VEMP metrics when
    reported, the selected epoch and the training seconds."""
    policy = cfg.evaluation.tie_policy
    summary = metrics.get("summary", {})
    row: dict[str, Any] = {"label": point.label, "values": dict(point.values),
                           "run_dir": str(run_dir.relative_to(out)), "protocol": cfg.evaluation.protocol,
                           "selection": metrics.get("training", {}).get("selection"),
                           "best_epoch": metrics.get("training", {}).get("best_epoch"),
                           "training_seconds": metrics.get("training", {}).get("training_seconds")}
    for split in ("valid", "test"):
        values = summary.get(split, {}).get(policy)
        if values is not None:
            row[split] = {k: values[k] for k in _METRICS if k in values}
    legacy = metrics.get("protocol", {}).get("legacy", {}).get("test", {}).get(policy)
    if legacy is not None:
        row["test_legacy"] = {k: legacy[k] for k in _METRICS if k in legacy}
    return row


def sweep_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The comparison as a markdown table (one row per grid point)."""
    keys = list(rows[0]["values"]) if rows else []
    cols = [("valid", "mrr", "valid MRR"), ("valid", "hits@10", "valid H@10"), ("test", "mrr", "test MRR"),
            ("test", "hits@1", "test H@1"), ("test", "hits@3", "test H@3"), ("test", "hits@10", "test H@10")]
    if any("test_legacy" in r for r in rows):
        cols += [("test_legacy", "mrr", "legacy test MRR"), ("test_legacy", "hits@10", "legacy test H@10")]
    head = ["run", *keys, "protocol", *[c[2] for c in cols], "best epoch"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["label"], *[str(r["values"][k]) for k in keys], str(r["protocol"])]
        cells += [f"{r[s][m]:.4f}" if s in r and m in r[s] else "" for s, m, _ in cols]
        cells.append("" if r["best_epoch"] is None else str(r["best_epoch"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_summary(out: Path, spec: dict[str, Any], rows: Sequence[dict[str, Any]],
                  log: Callable[[str], None] = print) -> None:
    """``sweep.json`` and ``sweep.md`` (atomically), and ``sweep.png`` when matplotlib is installed."""
    from mmkgc.extras import MissingExtraError
    from mmkgc.fileio import atomic_write_text

    atomic_write_text(out / "sweep.json", json.dumps({**spec, "rows": list(rows)}, indent=1))
    atomic_write_text(out / "sweep.md", sweep_markdown(rows))
    try:
        plot_sweep(rows, out / "sweep.png")
    except MissingExtraError as err:
        log(f"sweep.png not written: {err}")


def plot_sweep(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Bar plot of the test and validation MRR of every grid point (PNG, written atomically).

    :raises MissingExtraError: matplotlib is not installed (``pip install "mmkgc[plots]"``).
    """
    from mmkgc.extras import require

    matplotlib = require("matplotlib", "the sweep plot", extra="plots")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mmkgc.plotting import save_figure

    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(rows) + 2), 4), dpi=100)
    xs = list(range(len(rows)))
    for j, (split, label) in enumerate((("valid", "selection split"), ("test", "test"))):
        ax.bar([x + (j - 0.5) * 0.4 for x in xs], [r.get(split, {}).get("mrr", 0.0) for r in rows], 0.4,
               label=f"{label} MRR")
    ax.set_xticks(xs, [",".join(str(v) for v in r["values"].values()) for r in rows], rotation=20, ha="right")
    ax.set_ylabel("MRR")
    ax.set_title("mmkgc sweep")
    ax.legend()
    return save_figure(fig, path)
