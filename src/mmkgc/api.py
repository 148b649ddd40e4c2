"""The Python API: one call from a config to a trained model, self-contained saved models, batch predictions.

::

    import mmkgc

    result = mmkgc.pipeline("configs/db15k/rotate.yaml", **{"training.epochs": 5})  # in memory, no run directory
    result.metric_frame                      # pandas DataFrame: split, policy, side, metric, value
    result.save("models/rotate")             # weights + labels + feature tables (safetensors + JSON)
    model = mmkgc.load("models/rotate")      # on another machine: no dataset files, no feature cache
    mmkgc.predict_target(model, head="<http://dbpedia.org/resource/Alabama>", relation="...", top_k=10)

The command line (``mmkgc train / evaluate / predict``) goes through these functions.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mmkgc.config import ExperimentConfig, parse_config, read_yaml_mapping, set_dotted
from mmkgc.errors import ConfigError
from mmkgc.saved_model import TrainedModel, is_saved_model, load_saved_model

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["PipelineResult", "TrainedModel", "evaluate", "load", "metric_frame", "pipeline", "pykeen_layout",
           "pykeen_metrics", "predict_target", "predict_triples", "resolve_config"]


def resolve_config(config: str | Path | dict | ExperimentConfig, overrides: dict[str, Any] | None = None
                   ) -> ExperimentConfig:
    """A validated config from a YAML path, a mapping or a config object, with ``overrides`` applied.

    :param overrides: ``{"training.epochs": 5, "model.scorer_options.margin": 6.0}``: the dotted keys of
        ``mmkgc train --set``; ``training__epochs`` (``__`` for ``.``) also works, so keywords can be written as
        plain Python arguments.  Values are Python objects (not YAML text).
    :raises ConfigError: a missing or invalid file, an invalid value (the message names the field).
    """
    items = [(key.replace("__", "."), value) for key, value in (overrides or {}).items()]
    if isinstance(config, ExperimentConfig):
        if not items:
            return config
        data, source, base = config.model_dump(mode="json"), "<config object>", None
    elif isinstance(config, dict):
        data, source, base = copy.deepcopy(config), "<config mapping>", None
    elif isinstance(config, (str, Path)):
        path = Path(config)
        data, source, base = read_yaml_mapping(path), str(path), path.parent
    else:
        raise ConfigError(f"config: expected a YAML path, a mapping or an ExperimentConfig, got "
                          f"{type(config).__name__}")
    if not isinstance(data, dict):
        return parse_config(data, source=source, base_dir=base)  # raises: a config must be a mapping
    for key, value in items:
        parts = key.split(".")
        if not all(parts):
            raise ConfigError(f"override {key!r}: the key must be dotted.names, e.g. training.epochs")
        set_dotted(data, parts, str(value) if isinstance(value, Path) else value, source=source, item=key)
    return parse_config(data, source=source, base_dir=base)


@dataclass
class PipelineResult:
    """What :func:`pipeline` returns.

    :param model: the selected model with its labels and feature tables (:class:`TrainedModel`).
    :param metrics: the content of ``metrics.json`` (``summary``, ``valid``, ``test``, ``training``).
    :param run_dir: the run directory, or ``None`` for an in-memory run.
    """

    model: TrainedModel
    metrics: dict[str, Any]
    run_dir: Path | None = None

    def __repr__(self) -> str:
        summary = self.metrics.get("summary", {})
        split = "test" if "test" in summary else "valid"
        mrr = summary.get(split, {}).get("realistic", {}).get("mrr")
        shown = f"{split} MRR {mrr:.4f} (realistic ties)" if mrr is not None else "not evaluated"
        return f"PipelineResult({shown}, run_dir={self.run_dir}, model={self.model!r})"

    @property
    def config(self) -> ExperimentConfig:
        return self.model.config

    @property
    def metric_frame(self) -> "pd.DataFrame":
        """The overall metrics of every evaluated split as a long DataFrame (:func:`metric_frame`)."""
        return metric_frame(self.metrics)

    def save(self, directory: str | Path, include_features: bool = True) -> Path:
        """Save the model self-contained (:meth:`TrainedModel.save`)."""
        return self.model.save(directory, include_features=include_features)


def pipeline(
    config: str | Path | dict | ExperimentConfig,
    run_dir: str | Path | None = None,
    *,
    resume: bool = False,
    device: str | None = "auto",
    progress: bool = False,
    log: Callable[[str], None] | None = print,
    **overrides: Any,
) -> PipelineResult:
    """Train, select on validation, test: :func:`mmkgc.pipeline.run_pipeline` from any form of config.

    :param config: a YAML path, a mapping or an :class:`~mmkgc.config.ExperimentConfig`.
    :param run_dir: write the run directory there (``mmkgc train``'s layout); ``None`` (default) keeps the run in
        memory and writes no file.
    :param resume: continue the run in ``run_dir`` from its last checkpoint.
    :param log: receives the log lines (``None``: silent).
    :param overrides: dotted config keys (see :func:`resolve_config`): ``pipeline(cfg, **{"training.epochs": 3})``
        or ``pipeline(cfg, training__epochs=3)``.
    :returns: the model, the metrics and the run directory.
    :raises ConfigError: invalid config or override, a run directory that is not free, a bad device.
    :raises TrainingInterrupted: Ctrl-C or SIGTERM during training.
    """
    from mmkgc.pipeline import run_pipeline
    from mmkgc.training.checkpoint import read_checkpoint_state

    cfg = resolve_config(config, overrides)
    metrics, module, data = run_pipeline(cfg, run_dir, resume=resume, progress=progress, device=device,
                                         log=log or (lambda line: None))
    state: dict[str, Any] = {"epoch": metrics["training"]["epochs"], "best_epoch": metrics["training"]["best_epoch"]}
    if run_dir is not None:
        best = Path(run_dir) / "checkpoints" / "best"
        if best.exists() or best.with_name("best.old").exists():
            state = read_checkpoint_state(best)
    model = TrainedModel(cfg, data.triples, module, list(data.model_features or []), state=state,
                         source=Path(run_dir) if run_dir is not None else None)
    return PipelineResult(model, metrics, Path(run_dir) if run_dir is not None else None)


def load(path: str | Path, device: str | None = "auto", which: str = "best") -> TrainedModel:
    """Load a saved model directory (:meth:`TrainedModel.save`, ``mmkgc export --format model``) or the
    ``best`` / ``last`` checkpoint of a run directory.

    A saved model needs neither the dataset nor the feature cache; a run directory rebuilds its model from its
    config (dataset and feature tables must be there, and their fingerprints match the run's).

    :raises MMKGCError: neither a run directory nor a saved model, and the errors of
        :func:`mmkgc.saved_model.load_saved_model` / :func:`mmkgc.pipeline.load_run`.
    """
    from mmkgc.pipeline import load_run
    from mmkgc.training.checkpoint import read_checkpoint_state

    path = Path(path)
    if is_saved_model(path):
        return load_saved_model(path, device=device)
    if not (path / "config.yaml").is_file():
        raise ConfigError(f"{path}: not a run directory (no config.yaml) and not a saved model (no mmkgc_model.json)")
    cfg, data, module = load_run(path, device=device, which=which)
    ckpt = path / "checkpoints" / which
    if not (ckpt.exists() or ckpt.with_name(f"{which}.old").exists()):
        ckpt = path / "checkpoints" / "last"
    return TrainedModel(cfg, data.triples, module, list(data.model_features or []),
                        state=read_checkpoint_state(ckpt), source=path)


def evaluate(model: TrainedModel, split: str = "test", batch_size: int | str | None = 256,
             protocol: str | None = None, **options: Any) -> Any:
    """Ranks of a model's split under its run's evaluation protocol (``evaluation.protocol``): the filtered
    all-entity ranking (all tie policies, per side, per relation category; :func:`mmkgc.evaluation.metrics.evaluate`
    on the model's score function and triples), or for a ``vemp_sampled`` run VEMP's sampled tail ranking with the
    run's seed, candidates and message graphs (:func:`mmkgc.pipeline.protocol_evaluator`), as its ``metrics.json``.

    :param split: ``test``, ``valid`` or ``valid_clean`` (``vemp_sampled``: ``test`` or ``valid``).
    :param protocol: ``None`` = the run's; ``filtered`` ranks any model against all entities.
    :param options: further keywords of :func:`mmkgc.evaluation.metrics.evaluate` (``policies``, ``ks``, ...;
        filtered protocol only).
    :returns: an :class:`~mmkgc.evaluation.metrics.EvaluationResult` (``to_dict()``, ``to_markdown()``,
        ``get("mrr", side="both", policy="realistic")``).
    :raises ConfigError: an unknown protocol, options with the sampled protocol, or a split it does not rank.
    """
    from mmkgc.evaluation.metrics import evaluate as evaluate_fn

    protocol = protocol or model.config.evaluation.protocol
    model.module.eval()
    if protocol == "filtered":
        return evaluate_fn(model.module.score_fn(), model.triples, split=split, batch_size=batch_size, **options)
    if protocol != "vemp_sampled":
        raise ConfigError(f"protocol: unknown evaluation protocol {protocol!r} (filtered or vemp_sampled)")
    if options:
        raise ConfigError(f"{', '.join(sorted(options))}: options of the filtered protocol; this run is evaluated "
                          "with vemp_sampled (pass protocol='filtered' to rank against all entities)")
    from mmkgc.pipeline import protocol_evaluator

    cfg = model.config.model_copy(deep=True)
    cfg.evaluation.protocol = "vemp_sampled"
    try:
        return protocol_evaluator(cfg, model.module, model.triples).evaluate(split)
    except ValueError as err:
        raise ConfigError(f"split {split!r}: {err}") from None


# ------------------------------------------------------------------------------------------------ predictions
def _entity_id(model: TrainedModel, entity: str | int, what: str = "entity") -> int:
    from mmkgc.data.labels import resolve_label

    t = model.triples
    labels, mapping, count = ((t.entity_labels, t.entity_to_id, t.num_entities) if what == "entity"
                              else (t.relation_labels, t.relation_to_id, t.num_relations))
    if isinstance(entity, (int, torch.Tensor)) and not isinstance(entity, bool):
        i = int(entity)
        if not 0 <= i < count:
            raise ConfigError(f"{what} id {i} out of range [0, {count})")
        return i
    return resolve_label(str(entity), labels, mapping, what)


def _scores_of(model: TrainedModel, queries: torch.Tensor, side: str, candidates: torch.Tensor | None
               ) -> torch.Tensor:
    """``[B, N]`` scores of all candidates (``candidates=None``) or ``[B, C]`` of the given ones."""
    module = model.module
    module.eval()
    fn = module.score_fn()
    with torch.no_grad():
        if candidates is not None and hasattr(fn, "score_candidates"):
            return fn.score_candidates(queries, side, candidates).float().cpu()
        scores = fn(queries, side).float().cpu()
        return scores if candidates is None else scores.gather(1, candidates.cpu())


def predict_target(model: TrainedModel, *, relation: str | int, head: str | int | None = None,
                   tail: str | int | None = None, top_k: int | None = None, remove_known: bool = False
                   ) -> "pd.DataFrame":
    """The answers of ``(head, relation, ?)`` (give ``head``) or ``(?, relation, tail)`` (give ``tail``), best
    first, as PyKEEN's ``predict_target`` does.

    :param head, relation, tail: labels (or integer ids).
    :param top_k: keep the ``k`` best (``None``: every entity).
    :param remove_known: drop answers already known in train / valid / test (the filtered setting).
    :returns: DataFrame with columns ``id``, ``label``, ``score`` (higher is better; the scorer's raw score),
        ``known`` (bool: the triple is in some split) and ``known_in`` (the splits that contain it, e.g.
        ``"train"`` or ``"valid, test"``; ``""`` when unknown).
    :raises ConfigError: neither or both of head and tail, an unknown label (with suggestions: for URI labels
        the local name such as ``Alabama`` matches too), a label several entities share, ``top_k < 1``.
    """
    import pandas as pd

    if (head is None) == (tail is None):
        raise ConfigError("give exactly one of head and tail")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"top_k: must be at least 1, got {top_k}")
    r = _entity_id(model, relation, "relation")
    side = "tail" if head is not None else "head"
    e = _entity_id(model, head if head is not None else tail)
    query = torch.tensor([[e, r, 0]] if side == "tail" else [[0, r, e]])
    scores = _scores_of(model, query, side, None)[0]
    n = scores.shape[0]
    ids = torch.arange(n)
    candidates = torch.stack([torch.full((n,), e), torch.full((n,), r), ids], 1) if side == "tail" else \
        torch.stack([ids, torch.full((n,), r), torch.full((n,), e)], 1)
    known_in = model.known_in(candidates)
    known = torch.tensor([bool(k) for k in known_in])
    if remove_known:
        scores = scores.masked_fill(known, float("-inf"))
    k = min(top_k or n, int(torch.isfinite(scores).sum()))
    values, order = torch.topk(scores, k)
    order = order.tolist()
    labels = model.triples.entity_labels
    return pd.DataFrame({"id": order, "label": [labels[i] for i in order], "score": values.tolist(),
                         "known": [bool(known_in[i]) for i in order],
                         "known_in": [", ".join(known_in[i]) for i in order]})


def predict_triples(model: TrainedModel, triples: "torch.Tensor | Sequence[Sequence[Any]] | pd.DataFrame"
                    ) -> "pd.DataFrame":
    """Scores of a batch of triples.

    :param triples: int64 ``[n, 3]`` ids (h, r, t), a sequence of ``(head, relation, tail)`` labels (or ids), or a
        DataFrame whose first three columns are head, relation, tail.
    :returns: DataFrame with ``head``, ``relation``, ``tail`` (labels), ``head_id``, ``relation_id``, ``tail_id``,
        ``score`` (the score of the tail query ``(h, r, ?)`` at ``t``, the value evaluation ranks), ``known`` and
        ``known_in`` (as in :func:`predict_target`).
    :raises ConfigError: unknown labels or ids out of range (named), not ``[n, 3]``.
    """
    import pandas as pd

    if isinstance(triples, pd.DataFrame):
        rows: Iterable = triples.iloc[:, :3].itertuples(index=False, name=None)
    elif isinstance(triples, torch.Tensor):
        if triples.ndim != 2 or triples.shape[1] != 3:
            raise ConfigError(f"triples: expected [n, 3] ids, got shape {tuple(triples.shape)}")
        rows = triples.tolist()
    else:
        rows = triples
    ids = []
    for row in rows:
        if len(row) != 3:
            raise ConfigError(f"triples: expected (head, relation, tail), got {row!r}")
        ids.append([_entity_id(model, row[0]), _entity_id(model, row[1], "relation"), _entity_id(model, row[2])])
    batch = torch.tensor(ids, dtype=torch.long).reshape(-1, 3)
    scores = _scores_of(model, batch, "tail", batch[:, 2:3])[:, 0] if len(batch) else torch.empty(0)
    known_in = model.known_in(batch)
    ents, rels = model.triples.entity_labels, model.triples.relation_labels
    h, r, t = (batch[:, i].tolist() for i in range(3))
    return pd.DataFrame({"head": [ents[i] for i in h], "relation": [rels[i] for i in r], "tail": [ents[i] for i in t],
                         "head_id": h, "relation_id": r, "tail_id": t, "score": scores.tolist(),
                         "known": [bool(k) for k in known_in], "known_in": [", ".join(k) for k in known_in]})


# ------------------------------------------------------------------------------------------------ metrics
def metric_frame(metrics: dict[str, Any]) -> "pd.DataFrame":
    """The overall metrics of ``metrics.json`` (``valid`` and ``test`` blocks) as a long DataFrame with columns
    ``split``, ``policy``, ``side``, ``metric``, ``value`` (one row per value)."""
    import pandas as pd

    rows = [(split, policy, side, metric, value)
            for split in ("valid", "test") if split in metrics
            for policy, sides in metrics[split]["metrics"].items()
            for side, values in sides.items()
            for metric, value in values.items()]
    return pd.DataFrame(rows, columns=["split", "policy", "side", "metric", "value"])


#: mmkgc metric names -> PyKEEN's (``pykeen.evaluation.RankBasedMetricResults``).
PYKEEN_METRIC_NAMES = {"mrr": "inverse_harmonic_mean_rank", "mr": "arithmetic_mean_rank", "count": "count",
                       "amri": "adjusted_arithmetic_mean_rank_index"}


def pykeen_metrics(metrics: dict[str, Any], split: str = "test") -> dict[str, dict[str, dict[str, float]]]:
    """One split's overall metrics of ``metrics.json`` in PyKEEN's layout (:func:`pykeen_layout`).

    :raises ConfigError: ``split`` was not evaluated.
    """
    if split not in metrics:
        have = ", ".join(k for k in ("valid", "test") if k in metrics) or "none"
        raise ConfigError(f"split {split!r}: not in the metrics (have {have})")
    return pykeen_layout(metrics[split]["metrics"])


def pykeen_layout(values: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """mmkgc's ``policy -> side -> metric`` (``EvaluationResult.metrics``) in PyKEEN's layout, ``side -> rank
    type -> metric``: ``{"both": {"realistic": {"inverse_harmonic_mean_rank": ..., "hits_at_10": ...}}}`` (sides
    ``head``, ``tail``, ``both``; rank types ``optimistic``, ``realistic``, ``pessimistic``; mmkgc's ``random``
    policy has no PyKEEN rank type and is left out), so scripts written for PyKEEN's
    ``RankBasedMetricResults.to_dict()`` read them."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for policy, sides in values.items():
        if policy not in ("optimistic", "realistic", "pessimistic"):
            continue
        for side, by_metric in sides.items():
            named = {}
            for metric, value in by_metric.items():
                if metric.startswith("hits@"):
                    named[f"hits_at_{metric[5:]}"] = value
                elif metric in PYKEEN_METRIC_NAMES:
                    named[PYKEEN_METRIC_NAMES[metric]] = value
            out.setdefault(side, {})[policy] = named
    return out
