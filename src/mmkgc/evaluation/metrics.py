"""Rank-based link-prediction metrics and the evaluation result with its breakdowns.

Metrics over ranks ``r_1 .. r_n`` (Bordes et al., 2013; Nickel et al., 2016; PyKEEN ``pykeen.metrics.ranking``):

* ``mr``      mean rank, ``mean(r)`` (lower is better);
* ``mrr``     mean reciprocal rank, ``mean(1 / r)``;
* ``hits@k``  ``mean(r <= k)``;
* ``amri``    adjusted mean rank index, ``1 - (MR - 1) / (E[MR] - 1)`` with ``E[MR] = mean((n_i + 1) / 2)`` the
  expected mean rank of a random scorer over ``n_i`` candidates (Berrendorf et al., 2020, "Interpretable and
  Fair Comparison of Link Prediction or Entity Alignment Methods"; PyKEEN ``AdjustedArithmeticMeanRankIndex``).
  It is 1 for a perfect model and 0 in expectation for a random one; that expectation holds for realistic
  (or random) ranks only, since optimistic ranks reward ties.
* ``count``   number of ranking tasks.

Sides: ``head`` and ``tail`` are each averaged over their queries; ``both`` is computed over the
concatenation of the head and tail ranking tasks (PyKEEN's convention).  When the two sides have the same
queries -- always the case for the overall numbers and the per-category and per-relation breakdowns -- this is
exactly OpenKE's ``base/Test.h`` report, the plain average of the head-side and tail-side values, for MR, MRR
and Hits@k (AMRI, being non-linear, is computed on the concatenation).  With per-side group labels the two
sides of a group can differ in size; ``both`` is then the average over all ranking tasks in the group.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from mmkgc.data.triples import CATEGORY_NAMES, TripleSet
from mmkgc.evaluation.ranking import SIDES, TIE_POLICIES, RankResult, ScoreFn, compute_ranks

#: Hits@k cut-offs reported by default (OpenKE, PyKEEN).
DEFAULT_KS: tuple[int, ...] = (1, 3, 10)
#: Tie policies reported by :func:`evaluate` by default; the first is the headline.
DEFAULT_POLICIES: tuple[str, ...] = ("realistic", "optimistic", "pessimistic")
#: The headline metrics of a result, in display order (summaries in ``metrics.json``, CLI tables, reports).
HEADLINE_METRICS: tuple[str, ...] = ("mrr", "mr", "hits@1", "hits@3", "hits@10")
#: The headline metrics where higher is better: what ``evaluation.metric`` may select on, and what the demo and
#: comparison tables show.
SELECTION_METRICS: tuple[str, ...] = tuple(m for m in HEADLINE_METRICS if m != "mr")
#: Sides of an :class:`EvaluationResult`: the two prediction directions and their combination.
RESULT_SIDES: tuple[str, ...] = ("head", "tail", "both")


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if any(k < 1 for k in ks):
        raise ValueError(f"hits@k cut-offs must be positive integers, got {ks}")
    return ks


def grouped_rank_metrics(
    ranks: torch.Tensor,
    groups: torch.Tensor,
    num_groups: int,
    ks: Sequence[int] = DEFAULT_KS,
    num_candidates: torch.Tensor | None = None,
) -> list[dict[str, float] | None]:
    """:func:`rank_metrics` of every group at once (one weighted ``bincount`` per statistic).

    :param ranks: ``[n]`` ranks (>= 1).
    :param groups: int ``[n]``, group id of each rank in ``[0, num_groups)``.
    :param num_groups: number of groups ``G``.
    :param ks: Hits@k cut-offs.
    :param num_candidates: int ``[n]`` or ``None`` (see :func:`rank_metrics`).
    :returns: a list of ``G`` metric dictionaries, ``None`` for a group without ranks.
    :raises ValueError: on mismatched lengths, a rank < 1 or NaN, or a group id out of range.
    """
    ks = _check_ks(ks)
    r = torch.as_tensor(ranks).detach().cpu().double().reshape(-1).numpy()
    g = torch.as_tensor(groups).detach().cpu().long().reshape(-1).numpy()
    if r.size != g.size:
        raise ValueError(f"groups has {g.size} entries for {r.size} ranks")
    if np.isnan(r).any() or bool((r < 1).any()):
        raise ValueError("ranks must be >= 1 and not NaN")
    if g.size and (int(g.min()) < 0 or int(g.max()) >= num_groups):
        raise ValueError(f"group ids must lie in [0, {num_groups})")

    def total(weights: np.ndarray | None) -> np.ndarray:
        return np.bincount(g, weights=weights, minlength=num_groups)[:num_groups]

    count = total(None)
    safe = np.maximum(count, 1)
    columns = {"mr": total(r) / safe, "mrr": total(1.0 / r) / safe}
    for k in ks:
        columns[f"hits@{k}"] = total((r <= k).astype(np.float64)) / safe
    if num_candidates is not None:
        c = torch.as_tensor(num_candidates).detach().cpu().double().reshape(-1).numpy()
        if c.size != r.size:
            raise ValueError(f"num_candidates has {c.size} entries for {r.size} ranks")
        expected_mr = total((c + 1.0) / 2.0) / safe
        with np.errstate(divide="ignore", invalid="ignore"):
            # A single candidate everywhere makes every ranking trivial: AMRI is undefined (NaN).
            columns["amri"] = np.where(expected_mr > 1.0, 1.0 - (columns["mr"] - 1.0) / (expected_mr - 1.0), np.nan)
    out: list[dict[str, float] | None] = []
    for i in range(num_groups):
        if count[i] == 0:
            out.append(None)
            continue
        row: dict[str, float] = {"count": int(count[i])}
        row.update({name: float(values[i]) for name, values in columns.items()})
        out.append(row)
    return out


def rank_metrics(
    ranks: torch.Tensor,
    ks: Sequence[int] = DEFAULT_KS,
    num_candidates: torch.Tensor | None = None,
) -> dict[str, float]:
    """MR, MRR, Hits@k (and AMRI) of a set of ranks.

    :param ranks: ``[n]`` ranks (int or float, 1-based; realistic ranks may be half-integers).
    :param ks: Hits@k cut-offs.
    :param num_candidates: int ``[n]``, the number of candidates of each ranking task (target included);
        when given, ``amri`` is added (NaN when every task has a single candidate).
    :returns: ``{"count": n, "mr": ..., "mrr": ..., "hits@1": ..., ..., ["amri": ...]}``, Python floats
        (``count`` an int).  Computed in float64.
    :raises ValueError: if ``ranks`` is empty, holds a rank < 1 or NaN, or ``num_candidates`` does not match.
    """
    ranks = torch.as_tensor(ranks).reshape(-1)
    if ranks.numel() == 0:
        raise ValueError("rank_metrics needs at least one rank")
    result = grouped_rank_metrics(ranks, torch.zeros(ranks.numel(), dtype=torch.long), 1, ks, num_candidates)[0]
    assert result is not None
    return result


def _normalise_metric(name: str) -> str:
    key = name.strip().lower().replace(" ", "")
    for prefix in ("hits_at_", "hits_at", "hitsat", "hits@", "h@"):
        if key.startswith(prefix):
            return "hits@" + key[len(prefix):]
    aliases = {"mean_rank": "mr", "mean_reciprocal_rank": "mrr", "n": "count"}
    return aliases.get(key, key)


def _json_float(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


@dataclass
class EvaluationResult:
    """Metrics of one evaluation, for each tie policy and side, with breakdowns.

    Layout of the nested dictionaries (all keys strings):

    * ``metrics[policy][side][metric]`` -- overall;
    * ``by_category[category][policy][side][metric]`` -- category of the query's relation
      (``"1-1"``, ``"1-N"``, ``"N-1"``, ``"N-N"``; :data:`mmkgc.data.triples.CATEGORY_NAMES`);
    * ``by_relation[str(relation_id)][policy][side][metric]``;
    * ``by_group[label][policy][side][metric]`` -- arbitrary per-query labels (e.g. which modalities the
      target entity has);
    * ``by_seen["seen" | "unseen"][policy][side][metric]`` -- queries whose triple involves an entity without
      any training triple (head, tail, and so the answer of either side) against the rest; ``count`` says how
      many.  Entities unseen in training keep whatever the model gives an untrained entity, so their
      metrics are reported apart (present when the evaluation knew the training entities).

    ``policy`` is one of ``optimistic``, ``pessimistic``, ``realistic``, ``random``; ``side`` one of ``head``,
    ``tail``, ``both`` (see the module docstring for how ``both`` is formed); ``metric`` one of ``count``,
    ``mr``, ``mrr``, ``hits@k``, ``amri``.  Groups, categories and relations without queries are absent.

    :param primary_policy: the headline tie policy (``realistic`` by default).
    :param ranks: the underlying :class:`RankResult` (not serialised by :meth:`to_dict`).
    """

    metrics: dict[str, dict[str, dict[str, float]]]
    by_category: dict[str, dict[str, dict[str, dict[str, float]]]] = field(default_factory=dict)
    by_relation: dict[str, dict[str, dict[str, dict[str, float]]]] = field(default_factory=dict)
    by_group: dict[str, dict[str, dict[str, dict[str, float]]]] = field(default_factory=dict)
    by_seen: dict[str, dict[str, dict[str, dict[str, float]]]] = field(default_factory=dict)
    primary_policy: str = "realistic"
    ks: tuple[int, ...] = DEFAULT_KS
    filtered: bool = True
    num_entities: int = 0
    num_queries: int = 0
    split: str | None = None
    dataset: str | None = None
    seed: int = 0
    relation_labels: list[str] | None = None
    ranks: RankResult | None = field(default=None, repr=False, compare=False)
    #: ``None`` for full ranking; ``k`` for sampled-candidate ranking (a different, non-comparable protocol).
    sampled_candidates: int | None = None

    @property
    def protocol(self) -> str:
        """``"full"`` (every entity is a candidate) or ``"sampled"`` (``k`` sampled candidates per query)."""
        return "full" if self.sampled_candidates is None else "sampled"

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_ranks(
        cls,
        ranks: RankResult,
        *,
        ks: Sequence[int] = DEFAULT_KS,
        policies: Sequence[str] = DEFAULT_POLICIES,
        relation_categories: torch.Tensor | None = None,
        relation_labels: Sequence[str] | None = None,
        group_labels: Sequence[Any] | Mapping[str, Sequence[Any]] | None = None,
        per_relation: bool = True,
        seed: int = 0,
        split: str | None = None,
        dataset: str | None = None,
        seen_entities: torch.Tensor | None = None,
    ) -> "EvaluationResult":
        """Aggregate a :class:`RankResult` into metrics and breakdowns.

        :param ranks: per-query ranks from :func:`mmkgc.evaluation.ranking.compute_ranks`.
        :param ks: Hits@k cut-offs.
        :param policies: tie policies to report; the first is the headline (:attr:`primary_policy`).
        :param relation_categories: int64 ``[R]`` category code of every relation (``TripleSet.relation_categories``),
            or ``None`` for no category breakdown.
        :param relation_labels: names of the relations, kept for display.
        :param group_labels: one label per query (``[Q]``, used for both sides), or ``{"head": [Q], "tail": [Q]}``
            with a label per side (e.g. the modalities of the entity being predicted); ``None`` for no group
            breakdown.  Labels are converted with ``str``.
        :param per_relation: whether to compute the per-relation breakdown.
        :param seed: seed of the ``random`` tie policy (see :meth:`RankResult.ranks`).
        :param seen_entities: bool ``[N]``, whether each entity occurs in a training triple; gives the
            :attr:`by_seen` breakdown (``None``: none).
        :raises ValueError: on an unknown policy, no queries, labels of the wrong length, or ``seen_entities``
            shorter than the largest entity id of the queries.
        """
        ks = _check_ks(ks)
        policies = tuple(policies)
        if not policies:
            raise ValueError("policies must name at least one tie policy")
        for policy in policies:
            if policy not in TIE_POLICIES:
                raise ValueError(f"unknown tie policy {policy!r}; expected one of {TIE_POLICIES}")
        num_queries = len(ranks)
        if num_queries == 0:
            raise ValueError("cannot compute metrics without queries")
        sides = [side for side in SIDES if side in ranks.sides]

        rank_by_policy = {
            policy: {side: ranks.ranks(side, policy, seed) for side in sides} for policy in policies
        }
        candidates = {side: ranks.side(side).num_candidates for side in sides}

        def breakdown(group_ids: Mapping[str, torch.Tensor], names: Sequence[str]) -> dict[str, Any]:
            """``{name: {policy: {side: metrics}}}`` for per-side group ids ``[Q]`` in ``[0, len(names))``.

            ``both`` is formed over the concatenated head and tail tasks of the group; groups without any
            task are left out, and a side without tasks in a group is absent from that group.
            """
            tree: dict[str, Any] = {name: {} for name in names}
            for policy in policies:
                per_side = {
                    side: grouped_rank_metrics(
                        rank_by_policy[policy][side], group_ids[side], len(names), ks, candidates[side]
                    )
                    for side in sides
                }
                if len(sides) == 2:
                    per_side["both"] = grouped_rank_metrics(
                        torch.cat([rank_by_policy[policy][side].double() for side in sides]),
                        torch.cat([group_ids[side] for side in sides]),
                        len(names),
                        ks,
                        torch.cat([candidates[side] for side in sides]),
                    )
                for i, name in enumerate(names):
                    values = {side: rows[i] for side, rows in per_side.items() if rows[i] is not None}
                    if values:
                        tree[name][policy] = values
            return {name: value for name, value in tree.items() if value}

        relations = ranks.queries[:, 1]
        zeros = torch.zeros(num_queries, dtype=torch.long)
        metrics = breakdown({side: zeros for side in sides}, ["all"])["all"]

        by_category: dict[str, Any] = {}
        if relation_categories is not None:
            relation_categories = torch.as_tensor(relation_categories).long().cpu()
            if int(relations.max()) >= relation_categories.numel():
                raise ValueError(
                    f"relation_categories has {relation_categories.numel()} entries but the queries use relation "
                    f"id {int(relations.max())}"
                )
            query_category = relation_categories[relations]
            by_category = breakdown({side: query_category for side in sides}, list(CATEGORY_NAMES))

        by_relation: dict[str, Any] = {}
        if per_relation:
            unique, inverse = torch.unique(relations, return_inverse=True)
            by_relation = breakdown({side: inverse for side in sides}, [str(x) for x in unique.tolist()])

        by_group: dict[str, Any] = {}
        if group_labels is not None:
            if isinstance(group_labels, Mapping):
                unknown = set(group_labels) - set(SIDES)
                if unknown:
                    raise ValueError(f"group_labels keys must be 'head'/'tail', got {sorted(unknown)}")
                missing = [side for side in sides if side not in group_labels]
                if missing:
                    raise ValueError(f"group_labels has no labels for side(s) {missing}")
                labels = {side: [str(x) for x in _as_list(group_labels[side])] for side in sides}
            else:
                shared = [str(x) for x in _as_list(group_labels)]
                labels = {side: shared for side in sides}
            for side, values in labels.items():
                if len(values) != num_queries:
                    raise ValueError(f"group_labels[{side!r}] has {len(values)} labels for {num_queries} queries")
            names = sorted({label for values in labels.values() for label in values})
            codes = {name: i for i, name in enumerate(names)}
            coded = {
                side: torch.tensor([codes[x] for x in values], dtype=torch.long) for side, values in labels.items()
            }
            by_group = breakdown(coded, names)

        by_seen: dict[str, Any] = {}
        if seen_entities is not None:
            seen = torch.as_tensor(seen_entities).bool().reshape(-1).cpu()
            ents = ranks.queries[:, [0, 2]].long().cpu()
            if int(ents.max()) >= seen.numel():
                raise ValueError(f"seen_entities has {seen.numel()} entries but the queries use entity id "
                                 f"{int(ents.max())}")
            unseen = (~seen[ents]).any(1).long()  # 1 = the triple involves an entity without training triples
            by_seen = breakdown({side: unseen for side in sides}, ["seen", "unseen"])

        return cls(
            metrics=metrics,
            by_category=by_category,
            by_relation=by_relation,
            by_group=by_group,
            by_seen=by_seen,
            primary_policy=policies[0],
            ks=ks,
            filtered=ranks.filtered,
            num_entities=ranks.num_entities,
            num_queries=num_queries,
            split=split,
            dataset=dataset,
            seed=int(seed),
            relation_labels=list(relation_labels) if relation_labels is not None else None,
            ranks=ranks,
            sampled_candidates=ranks.sampled_candidates,
        )

    # ------------------------------------------------------------------ access
    @property
    def policies(self) -> tuple[str, ...]:
        return tuple(self.metrics)

    @property
    def sides(self) -> tuple[str, ...]:
        first = next(iter(self.metrics.values()))
        return tuple(side for side in RESULT_SIDES if side in first)

    @property
    def default_side(self) -> str:
        """``both`` when both sides were evaluated, else the single evaluated side."""
        sides = self.sides
        return "both" if "both" in sides else sides[0]

    def get(
        self,
        metric: str,
        side: str | None = None,
        policy: str | None = None,
        *,
        category: str | None = None,
        relation: int | str | None = None,
        group: str | None = None,
        seen: str | None = None,
    ) -> float:
        """One metric value, e.g. ``result.get("mrr", side="both", policy="realistic")``.

        :param metric: ``mr``, ``mrr``, ``hits@k`` (also ``hits_at_k``, ``h@k``), ``amri`` or ``count``;
            case-insensitive.
        :param side: ``head``, ``tail`` or ``both``; default :attr:`default_side`.
        :param policy: tie policy; default :attr:`primary_policy`.
        :param category: restrict to one relation category (``"1-1"``, ``"1-N"``, ``"N-1"``, ``"N-N"``).
        :param relation: restrict to one relation id.
        :param group: restrict to one group label.
        :param seen: ``"seen"`` or ``"unseen"``: restrict to the queries whose entities all occur in training, or
            to those with an entity that does not (:attr:`by_seen`).
        :raises KeyError: naming the missing metric, side, policy or breakdown key.
        """
        if sum(x is not None for x in (category, relation, group, seen)) > 1:
            raise ValueError("give at most one of category, relation, group and seen")
        side = side if side is not None else self.default_side
        policy = policy if policy is not None else self.primary_policy
        if category is not None:
            table = _lookup(self.by_category, category, "category")
        elif relation is not None:
            table = _lookup(self.by_relation, str(relation), "relation")
        elif group is not None:
            table = _lookup(self.by_group, str(group), "group")
        elif seen is not None:
            table = _lookup(self.by_seen, str(seen), "seen/unseen group")
        else:
            table = self.metrics
        per_side = _lookup(table, policy, "policy")
        values = _lookup(per_side, side, "side")
        return float(_lookup(values, _normalise_metric(metric), "metric"))

    # ------------------------------------------------------------------ output
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dictionary (plain str/int/float/None; non-finite floats become ``None``)."""

        def clean(tree: Any) -> Any:
            if isinstance(tree, dict):
                return {str(k): clean(v) for k, v in tree.items()}
            return _json_float(float(tree)) if not isinstance(tree, int) else int(tree)

        return {
            "dataset": self.dataset,
            "split": self.split,
            "filtered": self.filtered,
            "protocol": self.protocol,
            "sampled_candidates": self.sampled_candidates,
            "num_entities": int(self.num_entities),
            "num_queries": int(self.num_queries),
            "primary_policy": self.primary_policy,
            "ks": list(self.ks),
            "seed": int(self.seed),
            "metrics": clean(self.metrics),
            "by_category": clean(self.by_category),
            "by_relation": clean(self.by_relation),
            "by_group": clean(self.by_group),
            "by_seen": clean(self.by_seen),
            "relation_labels": list(self.relation_labels) if self.relation_labels is not None else None,
        }

    def _columns(self) -> list[str]:
        columns = ["count", "mr", "mrr"] + [f"hits@{k}" for k in self.ks]
        first = next(iter(next(iter(self.metrics.values())).values()))
        if "amri" in first:
            columns.append("amri")
        return columns

    @staticmethod
    def _format(metric: str, value: float) -> str:
        if metric == "count":
            return str(int(value))
        if value is None or not math.isfinite(value):
            return "n/a"
        if metric == "mr":
            return f"{value:.1f}"
        return f"{value:.4f}"

    def table(self, policies: Sequence[str] | None = None) -> list[list[str]]:
        """Overall metrics as rows ``[policy, side, count, MR, MRR, Hits@k..., AMRI]`` with a header row first."""
        columns = self._columns()
        header = ["policy", "side"] + [_display(c) for c in columns]
        rows = [header]
        for policy in policies if policies is not None else self.policies:
            for side in self.sides:
                values = self.metrics[policy][side]
                rows.append([policy, side] + [self._format(c, values.get(c, math.nan)) for c in columns])
        return rows

    def to_markdown(self, breakdown: bool = True) -> str:
        """Markdown report: overall table for every policy, and the per-category / per-group tables of the
        primary policy when ``breakdown`` is true (the per-relation breakdown is left to :meth:`to_dict`)."""
        title = "filtered" if self.filtered else "raw"
        if self.sampled_candidates is not None:
            title += (f", SAMPLED: {self.sampled_candidates} candidates per query, not comparable with "
                      "full-ranking numbers")
        what = " ".join(x for x in (self.dataset, self.split) if x)
        lines = [f"### Link prediction ({title}){': ' + what if what else ''}", ""]
        lines += _markdown_rows(self.table())
        columns = self._columns()
        for heading, tree in (("relation category", self.by_category), ("group", self.by_group),
                              ("entities seen in training", self.by_seen)):
            if not breakdown or not tree:
                continue
            lines += ["", f"#### By {heading} ({self.primary_policy} ranks)", ""]
            rows = [[heading, "side"] + [_display(c) for c in columns]]
            for key, per_policy in tree.items():
                for side, values in per_policy.get(self.primary_policy, {}).items():
                    rows.append([key, side] + [self._format(c, values.get(c, math.nan)) for c in columns])
            lines += _markdown_rows(rows)
        return "\n".join(lines) + "\n"

    def __str__(self) -> str:
        return self.to_markdown(breakdown=False)


def _display(metric: str) -> str:
    """Column title of a metric key: ``mrr`` -> ``MRR``, ``hits@10`` -> ``Hits@10``."""
    if metric.startswith("hits@"):
        return "Hits@" + metric[len("hits@"):]
    return metric.upper() if metric in ("mr", "mrr", "amri") else metric.capitalize()


def _as_list(values: Any) -> list:
    if isinstance(values, torch.Tensor):
        return values.reshape(-1).tolist()
    return list(values)


def _lookup(tree: Mapping[str, Any], key: str, what: str) -> Any:
    if key not in tree:
        raise KeyError(f"no {what} {key!r} in the evaluation result; available: {sorted(tree)}")
    return tree[key]


def _markdown_rows(rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join("---" for _ in rows[0]) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return out


def evaluate(
    score_fn: ScoreFn,
    triples: TripleSet,
    split: str = "test",
    *,
    filtered: bool = True,
    sides: Sequence[str] = SIDES,
    ks: Sequence[int] = DEFAULT_KS,
    policies: Sequence[str] = DEFAULT_POLICIES,
    seed: int = 0,
    group_labels: Sequence[Any] | Mapping[str, Sequence[Any]] | None = None,
    per_relation: bool = True,
    batch_size: int | str | None = None,
    max_memory_bytes: int | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
    sampled_candidates: int | None = None,
    distributed: bool | None = None,
) -> EvaluationResult:
    """Link-prediction evaluation of ``score_fn`` on one split of a :class:`TripleSet`.

    Queries are the split's triples (``"test"``, ``"valid"``, ``"valid_clean"`` for model selection, or
    ``"train"``); the filter is ``triples.filter_index`` (train + valid + test, OpenKE ``Test.h``) unless
    ``filtered=False``; categories are ``triples.relation_categories`` (OpenKE ``n-n.py``: tph/hpt over train +
    valid + test, repeated rows counted, threshold 1.5).  The headline is the realistic rank
    (expected rank under random tie-breaking), with optimistic (OpenKE) and pessimistic alongside.

    :param score_fn: see :func:`mmkgc.evaluation.ranking.compute_ranks`.
    :param triples: the dataset.
    :param split: which split to rank.
    :param filtered: remove other known answers (filtered setting) or not (raw).
    :param sides: ``("head", "tail")`` by default.
    :param ks: Hits@k cut-offs.
    :param policies: tie policies to report, headline first (add ``"random"`` for the IMVIA protocol).
    :param seed: seed of the ``random`` policy.
    :param group_labels: per-query (or per side and query) labels for a group breakdown.
    :param per_relation: compute the per-relation breakdown.
    :param batch_size, max_memory_bytes, device, progress: passed to :func:`compute_ranks`;
        ``batch_size="auto"`` sizes the chunks from the memory free right now
        (:func:`mmkgc.evaluation.ranking.auto_max_memory_bytes` on ``device``, or on ``score_fn.device`` when the
        score function has that attribute, as :meth:`KGEModel.score_fn`'s has).
    :param sampled_candidates: ``k`` to rank each target against ``k`` sampled non-answer candidates instead of
        all entities (:mod:`mmkgc.evaluation.sampled`; needs ``score_fn.score_candidates``).  The result is
        marked ``protocol == "sampled"`` and is not comparable with full-ranking results.
    :param distributed: shard the queries over the ranks of the initialised process group and gather the ranks
        (identical, bit for bit, to a single-process evaluation); ``None`` does so whenever a multi-process group
        is initialised.  Every rank must call :func:`evaluate` with the same arguments and gets the full result.
    :raises ValueError: on an unknown split, an empty split, NaN scores, or ``sampled_candidates`` with a score
        function that cannot score candidate sets.
    """
    from mmkgc import distributed as dist_helpers
    from mmkgc.evaluation.ranking import auto_max_memory_bytes, gather_rank_results
    from mmkgc.evaluation.sampled import SAMPLE_BLOCK, compute_sampled_ranks

    queries = triples.split(split)
    if queries.shape[0] == 0:
        raise ValueError(f"{triples.name}: split {split!r} has no triples to evaluate")
    if batch_size == "auto":
        batch_size = None
        if max_memory_bytes is None:
            max_memory_bytes = auto_max_memory_bytes(device if device is not None
                                                     else getattr(score_fn, "device", None))
    elif isinstance(batch_size, str):
        raise ValueError(f"batch_size must be a positive integer or 'auto', got {batch_size!r}")
    shard = dist_helpers.is_distributed() if distributed is None else bool(distributed)
    shard = shard and dist_helpers.is_distributed()
    start, stop = 0, int(queries.shape[0])
    if shard:
        align = SAMPLE_BLOCK if sampled_candidates is not None else 1
        start, stop = dist_helpers.shard_bounds(stop, dist_helpers.get_rank(), dist_helpers.get_world_size(), align)
    filter_index = triples.filter_index if filtered else None
    if sampled_candidates is not None:
        score_candidates = getattr(score_fn, "score_candidates", None)
        if score_candidates is None:
            raise ValueError("sampled_candidates needs a score function with a score_candidates attribute "
                             "(KGEModel.score_fn() provides one)")
        ranks = compute_sampled_ranks(score_candidates, queries[start:stop], triples.num_entities,
                                      int(sampled_candidates), filter_index, sides=sides, seed=seed,
                                      query_offset=start)
    else:
        ranks = compute_ranks(
            score_fn,
            queries[start:stop],
            filter_index,
            sides=sides,
            batch_size=batch_size,
            max_memory_bytes=max_memory_bytes,
            num_entities=triples.num_entities,
            device=device,
            progress=progress and dist_helpers.is_main_process(),
        )
    if shard:
        ranks = gather_rank_results(ranks, queries)
    return EvaluationResult.from_ranks(
        ranks,
        ks=ks,
        policies=policies,
        relation_categories=triples.relation_categories,
        relation_labels=triples.relation_labels,
        group_labels=group_labels,
        per_relation=per_relation,
        seed=seed,
        split=split,
        dataset=triples.name,
        seen_entities=seen_in_training(triples),
    )


def seen_in_training(triples: TripleSet) -> torch.Tensor:
    """Bool ``[N]``: whether each entity is the head or tail of at least one training triple."""
    seen = torch.zeros(triples.num_entities, dtype=torch.bool)
    train = torch.as_tensor(triples.train)
    if train.numel():
        seen[train[:, [0, 2]].reshape(-1).long().cpu()] = True
    return seen


def answer_seen_labels(triples: TripleSet, split: str = "test") -> dict[str, list[str]]:
    """Per ranking task of ``split``, whether the entity to *predict* and the known entity occur in training, as
    ``group_labels`` for :func:`evaluate`: ``{"head": [Q], "tail": [Q]}`` with ``answer_unseen`` (the answer has no
    training triple), ``query_unseen`` (the known entity has none, the answer has) or ``seen`` (both have).

    Finer than :attr:`EvaluationResult.by_seen`, which puts both tasks of a triple with an unseen entity in one
    group: the two tasks ask different things of a model (rank an entity it never trained on, or answer from one).
    """
    seen = seen_in_training(triples).tolist()
    rows = triples.split(split).tolist()

    def label(answer: int, query: int) -> str:
        if not seen[answer]:
            return "answer_unseen"
        return "seen" if seen[query] else "query_unseen"

    return {"head": [label(h, t) for h, _, t in rows], "tail": [label(t, h) for h, _, t in rows]}
