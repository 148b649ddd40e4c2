"""Result trackers: where a run's parameters and per-epoch metrics go.

The interface is four calls, made by :func:`mmkgc.pipeline.run_experiment` (start, parameters, end) and by the
:class:`~mmkgc.training.trainer.Trainer` (one ``log_metrics`` per epoch, on rank 0 only)::

    tracker.start_run(name, run_dir)
    tracker.log_params(flat_config)                 # {"training.lr": 0.1, "model.dim": 250, ...}
    tracker.log_metrics(record, step=epoch)         # the metrics.jsonl record of the epoch
    tracker.end_run("finished" | "failed" | "interrupted")

:class:`FileTracker` (always on) is the run directory's ``metrics.jsonl``; the parameters are the run's
``config.yaml``.  TensorBoard, MLflow and Weights & Biases are optional (``pip install "mmkgc[trackers]"``) and
selected with ``tracking.trackers`` in the config or ``--tracker`` on the command line; each gets the numeric
metrics flattened to ``valid/mrr``, ``loss``, ``terms/adv``, ... with the epoch as the step.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from class_resolver import ClassResolver

from mmkgc.extras import require

#: Status names passed to :meth:`ResultTracker.end_run`.
RUN_STATUSES = ("finished", "failed", "interrupted")


def flatten(record: dict[str, Any], prefix: str = "", sep: str = "/") -> dict[str, Any]:
    """Nested dicts as one level: ``{"valid": {"mrr": 0.3}}`` -> ``{"valid/mrr": 0.3}`` (lists and other values
    are kept as they are)."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flatten(value, name, sep))
        else:
            out[name] = value
    return out


def numeric(record: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a (nested) record, flattened; booleans and non-finite values are left out."""
    return {k: float(v) for k, v in flatten(record).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}


class ResultTracker:
    """Receives a run's parameters and metrics.  Subclasses override what they need; every method is a no-op
    here, so a tracker that only wants metrics implements only :meth:`log_metrics`."""

    def start_run(self, name: str, run_dir: Path | None = None) -> None:
        """A run named ``name`` begins (``run_dir``: its run directory, when there is one)."""

    def log_params(self, params: dict[str, Any]) -> None:
        """The run's hyper-parameters, flattened with dotted keys (``training.lr``)."""

    def log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        """The metrics of epoch ``step`` (1-based): the nested ``metrics.jsonl`` record."""

    def end_run(self, status: str = "finished") -> None:
        """The run ended with ``status`` (one of :data:`RUN_STATUSES`)."""


class FileTracker(ResultTracker):
    """The default tracker: appends each epoch's record as one JSON line to ``run_dir/metrics.jsonl``.

    :param run_dir: the run directory (created when missing).
    """

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)

    def log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(metrics) + "\n")


class TensorBoardTracker(ResultTracker):
    """Scalars for TensorBoard (``torch.utils.tensorboard.SummaryWriter``; needs the ``tensorboard`` package).

    :param log_dir: event-file directory (default: ``<run_dir>/tensorboard``).
    """

    def __init__(self, log_dir: str | Path | None = None):
        require("tensorboard", "the tensorboard tracker")
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.writer: Any = None

    def start_run(self, name: str, run_dir: Path | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        log_dir = self.log_dir or (Path(run_dir) / "tensorboard" if run_dir is not None else Path("tensorboard") / name)
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def log_params(self, params: dict[str, Any]) -> None:
        text = "\n".join(f"    {k}: {v}" for k, v in sorted(params.items()))  # indented: markdown code block
        self.writer.add_text("config", text, 0)

    def log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        for key, value in numeric(metrics).items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def end_run(self, status: str = "finished") -> None:
        if self.writer is not None:
            self.writer.add_text("status", status, 0)
            self.writer.close()
            self.writer = None


class MLflowTracker(ResultTracker):
    """An MLflow run: parameters, metrics per epoch (``@`` written ``_at_``: ``valid/hits_at_10``), status
    (``mlflow`` package).

    :param tracking_uri: e.g. ``sqlite:////path/mlflow.db`` or ``http://host:5000``; ``None`` keeps MLflow's own
        default (``MLFLOW_TRACKING_URI`` or ``./mlruns``).
    :param experiment: MLflow experiment name (default: the run's name).
    """

    _STATUS = {"finished": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}

    def __init__(self, tracking_uri: str | None = None, experiment: str | None = None):
        self.mlflow = require("mlflow", "the mlflow tracker")
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.active = False

    def start_run(self, name: str, run_dir: Path | None = None) -> None:
        if self.tracking_uri is not None:
            self.mlflow.set_tracking_uri(self.tracking_uri)
        self.mlflow.set_experiment(self.experiment or name)
        self.mlflow.start_run(run_name=name)
        self.active = True

    def log_params(self, params: dict[str, Any]) -> None:
        # MLflow keeps parameters as strings of bounded length
        self.mlflow.log_params({k: str(v)[:500] for k, v in params.items()})

    def log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        # MLflow names allow letters, digits, _ - . space : / only: hits@10 -> hits_at_10
        self.mlflow.log_metrics({k.replace("@", "_at_"): v for k, v in numeric(metrics).items()}, step=step)

    def end_run(self, status: str = "finished") -> None:
        if self.active:
            self.mlflow.end_run(status=self._STATUS.get(status, "FAILED"))
            self.active = False


class WandbTracker(ResultTracker):
    """A Weights & Biases run (``wandb`` package); ``mode: offline`` writes it under ``dir`` without a network.

    :param project: W&B project (default: the run's name).
    :param mode: ``online``, ``offline`` or ``disabled``; ``None`` follows ``WANDB_MODE``.
    :param directory: where W&B writes its files (default: the run directory).
    """

    def __init__(self, project: str | None = None, mode: str | None = None, directory: str | Path | None = None):
        self.wandb = require("wandb", "the wandb tracker")
        self.project = project
        self.mode = mode
        self.directory = directory
        self.run: Any = None

    def start_run(self, name: str, run_dir: Path | None = None) -> None:
        directory = self.directory if self.directory is not None else run_dir
        self.run = self.wandb.init(project=self.project or name, name=name, mode=self.mode,
                                   dir=str(directory) if directory is not None else None, reinit=True)

    def log_params(self, params: dict[str, Any]) -> None:
        self.run.config.update(params, allow_val_change=True)

    def log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        self.run.log(numeric(metrics), step=step)

    def end_run(self, status: str = "finished") -> None:
        if self.run is not None:
            self.run.finish(exit_code=0 if status == "finished" else 1)
            self.run = None


#: Tracker names accepted by ``tracking.trackers`` and ``--tracker``.
TRACKERS = ("tensorboard", "mlflow", "wandb")

#: Every tracker class by name (``file``, ``tensorboard``, ``mlflow``, ``wandb``; class name without ``Tracker``,
#: normalised).  ``file`` is the run directory's ``metrics.jsonl``, added by the trainer or the pipeline itself.
tracker_resolver: ClassResolver[ResultTracker] = ClassResolver(
    [FileTracker, TensorBoardTracker, MLflowTracker, WandbTracker], base=ResultTracker, suffix="Tracker")


def build_trackers(names: list[str], *, tensorboard_dir: str | Path | None = None,
                   mlflow_tracking_uri: str | None = None,
                   project: str | None = None, wandb_mode: str | None = None,
                   wandb_dir: str | Path | None = None) -> list[ResultTracker]:
    """The optional trackers named (in order); the run directory's :class:`FileTracker` is added by the caller.

    :raises ValueError: an unknown name.
    :raises MissingExtraError: the tracker's package is not installed (``pip install "mmkgc[trackers]"``).
    """
    options: dict[str, dict[str, Any]] = {
        "tensorboard": {"log_dir": tensorboard_dir},
        "mlflow": {"tracking_uri": mlflow_tracking_uri, "experiment": project},
        "wandb": {"project": project, "mode": wandb_mode, "directory": wandb_dir},
    }
    out: list[ResultTracker] = []
    for name in names:
        if name not in options:
            raise ValueError(f"unknown tracker {name!r}; known: {', '.join(TRACKERS)}")
        out.append(tracker_resolver.make(name, options[name]))
    return out
