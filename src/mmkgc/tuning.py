"""Hyper-parameter search (``mmkgc tune``) with Optuna: trials are ordinary training runs, selected on the cleaned
validation MRR only.

A study lives in one directory::

    study.db            Optuna's SQLite storage: every trial, its parameters, state and per-epoch values (resume)
    trials/trial-0007/  the run directory of trial 7 (config.yaml, metrics.jsonl, metrics.json; checkpoints only
                        for the best trial so far)
    trials.csv          one row per trial: number, state, valid MRR, epochs, seconds, parameters
    best_config.yaml    the config of the best trial (the search's values filled in), ready for ``mmkgc train``
    best.json           the best trial: parameters, validation MRR, and its test metrics (measured once, after the
                        search, on that trial's selected checkpoint)

Each trial takes the config (after ``--set`` overrides), sets the sampled values of ``tune.space`` (dotted keys,
as ``--set``), forces the selection protocol (``evaluation.split: valid_clean``, ``metric: mrr``) and turns the
test evaluation off, then runs :func:`mmkgc.pipeline.run_experiment` -- the code path of ``mmkgc train``.  The
objective is the run's best validation MRR (the tie policy of ``evaluation.tie_policy``); every validation is
reported to Optuna, whose pruner may stop the trial after that epoch (:class:`PruningTracker`).  Test metrics are
never computed for a trial during the search, so they cannot influence it.

Rerunning with the same directory continues the study until ``--trials`` trials have completed or been pruned in
total; trials that a killed process left running are marked failed (and do not count).  The study remembers a
hash of the config, ``--set`` overrides, search space and trial budget and refuses to continue under others.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import hashlib
import io
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmkgc.config import (CategoricalParam, ExperimentConfig, FloatParam, IntParam, TuneConfig, apply_override,
                          dump_config, parse_config, read_yaml_mapping, validate_mapping)
from mmkgc.errors import ConfigError
from mmkgc.extras import require
from mmkgc.fileio import atomic_write_text
from mmkgc.training.tracking import ResultTracker

STUDY_DB = "study.db"
STUDY_MARKER = ".mmkgc-study"
STUDY_NAME = "mmkgc"
#: What ``mmkgc tune`` writes into a study directory; the only names it accepts there.
STUDY_FILES = frozenset({STUDY_DB, STUDY_MARKER, ".lock", "trials", "trials.csv", "best_config.yaml", "best.json"})
#: The selection protocol every trial is run under (set whatever the config says).
SELECTION = {"evaluation.split": "valid_clean", "evaluation.metric": "mrr", "evaluation.test": False}


@contextlib.contextmanager
def _signals_blocked(block: bool):
    """Block (or unblock) SIGINT and SIGTERM in the block (main thread, POSIX): a signal that arrives while Optuna
    writes ``study.db`` waits until training code runs again, instead of breaking the SQLite commit."""
    import signal
    import threading

    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK if block else signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class PruningTracker(ResultTracker):
    """Reports each validation of a trial to Optuna and stops the trial when the pruner says so.

    :param trial: the ``optuna.trial.Trial`` being run.
    :param metric: the key of the record's ``valid`` block that is the objective (``mrr``).
    :raises optuna.TrialPruned: from :meth:`log_metrics`, after an epoch whose validation the pruner finds poor.
    """

    def __init__(self, trial: Any, metric: str = "mrr"):
        self.trial = trial
        self.metric = metric

    def log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        valid = metrics.get("valid")
        if not valid or self.metric not in valid:
            return
        with _signals_blocked(True):  # a storage write
            self.trial.report(float(valid[self.metric]), step)
            prune = self.trial.should_prune()
        if prune:
            import optuna

            raise optuna.TrialPruned(f"validation {self.metric} {valid[self.metric]:.4f} at epoch {step}")


@dataclass
class StudyResult:
    """What :func:`tune` found.

    :param trials: one dict per trial (``number``, ``state``, ``value``, ``epochs``, ``seconds``, ``params``).
    :param best: the best finished trial's dict (``None`` when none finished) with ``run_dir``, and ``test``: its
        test metrics per tie policy (head and tail averaged), measured after the search.
    """

    trials: list[dict[str, Any]]
    best: dict[str, Any] | None


def load_tune_config(config_path: Path, overrides: list[str], space_file: Path | None) -> tuple[dict, TuneConfig]:
    """The config mapping (overrides applied, ``tune`` removed) and its search settings: the config's ``tune``
    section, or ``space_file`` (a ``tune`` mapping with ``space:``, or a bare space mapping).

    :raises ConfigError: unreadable or invalid files, an empty search space.
    """
    raw = read_yaml_mapping(config_path, overrides)
    if not isinstance(raw, dict):
        raise ConfigError(f"{config_path}: a config must be a YAML mapping")
    section: Any = raw.pop("tune", None)
    source = f"{config_path}: tune"
    if space_file is not None:
        section = read_yaml_mapping(space_file)
        source = str(space_file)
        if isinstance(section, dict) and "space" not in section:
            section = {"space": section}
    if section is None:
        raise ConfigError(f"{config_path}: no search space: add a 'tune: {{space: ...}}' section or pass --space FILE "
                          "(docs/usage.md, 'Hyper-parameter search')")
    tune_cfg = validate_mapping(TuneConfig, section, source, what="the tune section")
    if not tune_cfg.space:
        raise ConfigError(f"{source}: space: the search space is empty")
    return raw, tune_cfg


def trial_config(raw: dict, values: dict[str, Any], config_path: Path, name: str,
                 time_budget_minutes: float | None, test: bool = False) -> ExperimentConfig:
    """The validated config of one trial: ``raw`` with ``values`` set at their dotted keys, the selection protocol
    (:data:`SELECTION`), the trial's budget and ``name``.

    :param test: keep the config's ``evaluation.test`` (for ``best_config.yaml``) instead of turning it off.

    :raises ConfigError: a key that is not a config field or a value it refuses (the message names the key).
    """
    data = copy.deepcopy(raw)
    settings = {**values, **SELECTION, "name": name}
    if test:
        del settings["evaluation.test"]
    if time_budget_minutes is not None:
        settings["training.time_budget_minutes"] = time_budget_minutes
    for key, value in settings.items():
        apply_override(data, f"{key}={json.dumps(value)}", source=str(config_path))
    shown = ", ".join(f"{k}={v!r}" for k, v in values.items())
    return parse_config(data, source=f"{config_path} with {shown}" if shown else str(config_path),
                        base_dir=config_path.parent)


def _check_space(raw: dict, tune_cfg: TuneConfig, config_path: Path) -> None:
    """Every key of the space takes each end of its range (each choice) in a valid config, before any trial runs."""
    for key, spec in tune_cfg.space.items():
        values = spec.choices if isinstance(spec, CategoricalParam) else [spec.low, spec.high]
        for value in values:
            try:
                trial_config(raw, {key: value}, config_path, "check", tune_cfg.time_budget_minutes)
            except ConfigError as err:
                raise ConfigError(f"tune.space.{key}: the value {value!r} gives an invalid config: {err}") from None


def suggest(trial: Any, key: str, spec: FloatParam | IntParam | CategoricalParam) -> Any:
    """Draw the value of ``key`` for ``trial`` from its distribution (Optuna's ``suggest_*``)."""
    if isinstance(spec, FloatParam):
        return trial.suggest_float(key, spec.low, spec.high, log=spec.log, step=spec.step)
    if isinstance(spec, IntParam):
        return trial.suggest_int(key, spec.low, spec.high, log=spec.log, step=spec.step)
    return trial.suggest_categorical(key, spec.choices)


def _sampler(optuna: Any, tune_cfg: TuneConfig, seed: int) -> Any:
    if tune_cfg.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def _pruner(optuna: Any, tune_cfg: TuneConfig) -> Any:
    cls = {"median": optuna.pruners.MedianPruner, "hyperband": optuna.pruners.HyperbandPruner,
           "threshold": optuna.pruners.ThresholdPruner, "none": optuna.pruners.NopPruner}[tune_cfg.pruner]
    try:
        return cls(**tune_cfg.pruner_options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"tune.pruner_options: {tune_cfg.pruner} pruner: {err}") from None


def check_study_dir(study_dir: Path) -> None:
    """Refuse a directory that is not new, empty or a study directory of mmkgc holding only what it writes.

    :raises ConfigError: naming the directory and what is in the way.
    """
    if study_dir.exists() and not study_dir.is_dir():
        raise ConfigError(f"{study_dir}: --study-dir is a file")
    entries = sorted(p.name for p in study_dir.iterdir()) if study_dir.is_dir() else []
    if not entries:
        return
    if STUDY_MARKER not in entries:
        raise ConfigError(f"{study_dir}: --study-dir is not empty and is not an mmkgc study directory (holds "
                          f"{', '.join(entries[:5])}); choose a new or empty directory")
    foreign = [name for name in entries if name not in STUDY_FILES and not name.startswith(".")]
    if foreign:
        raise ConfigError(f"{study_dir}: the study directory holds files mmkgc did not write "
                          f"({', '.join(foreign[:5])}); choose another --study-dir")


def _fingerprint(raw: dict, tune_cfg: TuneConfig, budget: float | None) -> str:
    payload = json.dumps({"config": raw, "space": tune_cfg.model_dump(mode="json", include={"space"}),
                          "budget": budget}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _trial_dir(study_dir: Path, number: int) -> Path:
    return study_dir / "trials" / f"trial-{number:04d}"


def _row(trial: Any, study_dir: Path) -> dict[str, Any]:
    run_dir = _trial_dir(study_dir, trial.number)
    epochs, seconds = None, None
    metrics_file = run_dir / "metrics.json"
    if metrics_file.is_file():
        training = json.loads(metrics_file.read_text(encoding="utf-8"))["training"]
        epochs, seconds = training["epochs"], training["training_seconds"]
    elif trial.intermediate_values:  # pruned: the last reported epoch
        epochs = max(trial.intermediate_values)
    return {"number": trial.number, "state": trial.state.name.lower(), "value": trial.value, "epochs": epochs,
            "seconds": seconds, "params": dict(trial.params), "run_dir": str(run_dir)}


def _trials_csv(rows: list[dict[str, Any]], keys: list[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["trial", "state", "valid_clean_mrr", "epochs", "training_seconds", *keys])
    for r in rows:
        writer.writerow([r["number"], r["state"], "" if r["value"] is None else f"{r['value']:.6f}",
                         "" if r["epochs"] is None else r["epochs"],
                         "" if r["seconds"] is None else f"{r['seconds']:.1f}",
                         *[r["params"].get(k, "") for k in keys]])
    return out.getvalue()


def _keep_best_checkpoint_only(study: Any, study_dir: Path) -> None:
    """Disk: finished trials need no ``last`` checkpoint, and only the best trial keeps its ``best`` one."""
    import optuna

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.value).number if complete else None
    for trial in study.get_trials(deepcopy=False):
        if trial.state == optuna.trial.TrialState.RUNNING:
            continue
        checkpoints = _trial_dir(study_dir, trial.number) / "checkpoints"
        for which in ("last", "last.old") if trial.number == best else ("last", "last.old", "best", "best.old"):
            shutil.rmtree(checkpoints / which, ignore_errors=True)


def tune(config_path: str | Path, study_dir: str | Path, trials: int | None = None,
         overrides: list[str] | None = None, space_file: str | Path | None = None,
         time_budget_minutes: float | None = None, device: str | None = "auto",
         log: Callable[[str], None] = print) -> StudyResult:
    """Run (or continue) the study of ``config_path`` in ``study_dir`` until ``trials`` trials have finished.

    :param trials: total trials of the study (default ``tune.trials``); completed and pruned trials of earlier
        invocations count, failed ones do not.
    :param overrides: ``dotted.key=value`` applied to the config before the search (``--set``).
    :param space_file: the search space in its own YAML file instead of the config's ``tune`` section.
    :param time_budget_minutes: training budget of each trial (default ``tune.time_budget_minutes``).
    :returns: every trial and the best one, with the best trial's test metrics.
    :raises ConfigError: bad config or space, a study directory that is not free or belongs to another config or
        space, a config field the space names that does not exist.
    :raises MissingExtraError: Optuna is not installed (``pip install "mmkgc[tune]"``).
    """
    optuna = require("optuna", "mmkgc tune")
    from mmkgc.pipeline import RunLock, run_experiment

    config_path, study_dir = Path(config_path), Path(study_dir)
    raw, tune_cfg = load_tune_config(config_path, list(overrides or []), Path(space_file) if space_file else None)
    budget = time_budget_minutes if time_budget_minutes is not None else tune_cfg.time_budget_minutes
    total = trials if trials is not None else tune_cfg.trials
    base = trial_config(raw, {}, config_path, "check", budget)  # the config itself is valid
    _check_space(raw, tune_cfg, config_path)
    check_study_dir(study_dir)
    study_dir.mkdir(parents=True, exist_ok=True)
    (study_dir / STUDY_MARKER).touch()
    fingerprint = _fingerprint(raw, tune_cfg, budget)
    with RunLock(study_dir):
        optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures are reported by the objective, one line
        storage = optuna.storages.RDBStorage(f"sqlite:///{(study_dir / STUDY_DB).resolve()}")
        study = optuna.create_study(storage=storage, study_name=STUDY_NAME,
                                    direction="maximize", load_if_exists=True,
                                    sampler=_sampler(optuna, tune_cfg, base.seed), pruner=_pruner(optuna, tune_cfg))
        saved = study.user_attrs.get("fingerprint")
        if saved is None:
            study.set_user_attr("fingerprint", fingerprint)
            study.set_user_attr("config", str(config_path))
        elif saved != fingerprint:
            raise ConfigError(f"{study_dir}: the study was started with another config, --set overrides, search space "
                              f"or trial budget ({study.user_attrs.get('config')}); use a new --study-dir")
        study_id = storage.get_study_id_from_name(STUDY_NAME)
        for stale in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):  # killed earlier
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, stale.number)
            storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
            log(f"trial {stale.number}: left running by an interrupted invocation; marked failed")
        # a continued study draws new points: its sampler's seed moves on by the trials already in the study
        study.sampler = _sampler(optuna, tune_cfg, base.seed + len(study.get_trials(deepcopy=False)))
        # failed trials (killed, diverged) of earlier invocations are retried: they do not count
        finished = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,
                                                                optuna.trial.TrialState.PRUNED)))
        name = base.name

        def objective(trial: Any) -> float:
            values = {key: suggest(trial, key, spec) for key, spec in tune_cfg.space.items()}
            cfg = trial_config(raw, values, config_path, f"{name}-trial-{trial.number:04d}", budget)
            shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
            log(f"trial {trial.number}: {shown}")
            try:
                with _signals_blocked(False):  # signals are delivered while the trial trains
                    metrics = run_experiment(cfg, _trial_dir(study_dir, trial.number), device=device,
                                             log=lambda line: log(f"trial {trial.number}: {line}"),
                                             trackers=[PruningTracker(trial, "mrr")])
            except FloatingPointError as err:  # a diverging trial fails; the study goes on
                log(f"trial {trial.number}: failed: {err}")
                raise
            value = metrics["training"]["best_valid_metric"]
            if value is None:
                raise ConfigError(f"{config_path}: the dataset has no valid_clean triples to select on")
            log(f"trial {trial.number}: valid_clean MRR {value:.4f} (epoch {metrics['training']['best_epoch']})")
            return float(value)

        def after(study: Any, trial: Any) -> None:
            if trial.state == optuna.trial.TrialState.PRUNED:
                log(f"trial {trial.number}: pruned at epoch {max(trial.intermediate_values or [0])}")
            _keep_best_checkpoint_only(study, study_dir)
            _write_outputs(study, study_dir, raw, tune_cfg, config_path, budget, best_test=None)

        if total > finished:
            log(f"study {study_dir}: {finished} trial(s) finished, running {total - finished} more")
            from mmkgc.training.trainer import _sigterm_as_interrupt

            try:
                with _sigterm_as_interrupt(), _signals_blocked(True):  # Optuna's storage writes are not interrupted
                    study.optimize(objective, n_trials=total - finished, callbacks=[after],
                                   catch=(FloatingPointError,))  # a diverging trial fails; the study goes on
            except KeyboardInterrupt:  # the interrupted trial is marked failed by Optuna; record the study so far
                _keep_best_checkpoint_only(study, study_dir)
                _write_outputs(study, study_dir, raw, tune_cfg, config_path, budget, best_test=None)
                raise
        else:
            log(f"study {study_dir}: {finished} trial(s) finished already (--trials {total})")
        best_test = _best_test(study, study_dir, device)
        return _write_outputs(study, study_dir, raw, tune_cfg, config_path, budget, best_test=best_test)


def _best_test(study: Any, study_dir: Path, device: str | None) -> dict[str, Any] | None:
    """Test metrics of the best trial's selected checkpoint (computed once, after the search; cached in best.json)."""
    import optuna

    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        return None
    best = study.best_trial
    cached = study_dir / "best.json"
    if cached.is_file():
        previous = json.loads(cached.read_text(encoding="utf-8"))
        if previous.get("trial") == best.number and previous.get("test"):
            return previous["test"]
    from mmkgc.evaluation.metrics import evaluate
    from mmkgc.pipeline import headline, load_run
    from mmkgc.training.trainer import evaluation_policies

    cfg, data, model = load_run(_trial_dir(study_dir, best.number), device=device)
    result = evaluate(model.score_fn(), data.triples, split="test", batch_size=cfg.evaluation.batch_size,
                      sampled_candidates=cfg.evaluation.sampled_candidates,
                      policies=evaluation_policies(cfg.evaluation), seed=cfg.seed)
    return headline(result)


def _write_outputs(study: Any, study_dir: Path, raw: dict, tune_cfg: TuneConfig, config_path: Path,
                   budget: float | None, best_test: dict[str, Any] | None) -> StudyResult:
    """Write ``trials.csv``, ``best_config.yaml`` and (with ``best_test``) ``best.json`` atomically."""
    rows = [_row(t, study_dir) for t in study.get_trials(deepcopy=False)]
    atomic_write_text(study_dir / "trials.csv", _trials_csv(rows, list(tune_cfg.space)))
    complete = [r for r in rows if r["state"] == "complete"]
    if not complete:
        return StudyResult(rows, None)
    best_trial = study.best_trial
    best = next(r for r in rows if r["number"] == best_trial.number)
    cfg = trial_config(raw, dict(best_trial.params), config_path, str(raw.get("name", "experiment")), budget,
                       test=True)
    header = (f"# best of {len(rows)} trial(s) of mmkgc tune {config_path} (trial {best['number']}, valid_clean "
              f"MRR {best['value']:.4f}); train it with: mmkgc train best_config.yaml\n")
    atomic_write_text(study_dir / "best_config.yaml", header + dump_config(cfg))
    best = dict(best, test=best_test)
    if best_test is not None:
        atomic_write_text(study_dir / "best.json", json.dumps(
            {"trial": best["number"], "params": best["params"], "valid_clean_mrr": best["value"],
             "epochs": best["epochs"], "run_dir": best["run_dir"], "test": best_test,
             "selection": "valid_clean MRR (realistic ties unless evaluation.tie_policy says otherwise); test is "
                          "measured once, after the search, on the best trial only"}, indent=2))
    return StudyResult(rows, best)
