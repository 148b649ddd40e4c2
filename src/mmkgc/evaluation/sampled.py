"""Sampled-candidate ranking for graphs too large for full ranking.

Full ranking scores every query against all ``N`` entities.  When ``N`` is in the millions and there are many
queries, a cheaper estimate ranks the true entity against ``k`` sampled candidates instead (the protocol of
e.g. the OGB ``wikikg2`` leaderboard, Hu et al., 2020, "Open Graph Benchmark", which ranks against fixed
sampled negatives).  Here, for each query and side, ``k`` candidates are drawn uniformly **with replacement**
from the entities that are *not* known answers of the query (filtered: the target and every other answer in
``filter_index`` are excluded; rejection sampling, then an exact draw from the complement, as the training
negative sampler does), and the target is ranked among itself and those ``k`` draws with the usual optimistic /
pessimistic / realistic tie handling (:func:`mmkgc.evaluation.ranking.rank_targets`).

Sampled ranks are **not comparable** with full ranks: MRR and Hits@k are much higher with ``k << N``.  The
result carries ``sampled_candidates = k``; :class:`~mmkgc.evaluation.metrics.EvaluationResult` reports the
protocol in every output, and :meth:`RankResult.concatenate` refuses to mix the two.

Determinism: the draws for queries ``[b * B, (b + 1) * B)`` (``B`` = :data:`SAMPLE_BLOCK`) of side ``s`` come
from a generator seeded with ``(seed, s, b)``, so the candidates of a query do not depend on how the queries
are split across processes (shards start at multiples of ``B``).
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import torch

from mmkgc.data.triples import FilterIndex
from mmkgc.evaluation.ranking import SIDES, TARGET_COLUMN, RankResult, SideRanks, check_side, rank_targets

#: Queries per seeded block of candidate draws (shards of a sampled evaluation are aligned to it).
SAMPLE_BLOCK = 1024

#: ``score_candidates(queries [B, 3], side, candidates [B, C]) -> [B, C]`` float scores, higher is better.
CandidateScoreFn = Callable[[torch.Tensor, str, torch.Tensor], torch.Tensor]


def _block_generator(seed: int, side: str, block: int) -> torch.Generator:
    state = np.random.SeedSequence([int(seed), SIDES.index(side), int(block)]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def sample_candidates(queries: torch.Tensor, side: str, num_candidates: int, num_entities: int,
                      filter_index: FilterIndex | None, generator: torch.Generator) -> torch.Tensor:
    """``k`` candidate entities per query that are not known answers (with replacement).

    :param queries: int64 ``[B, 3]``.
    :param side: ``"head"`` or ``"tail"``: which column is replaced.
    :param num_candidates: ``k`` >= 1.
    :param num_entities: ``N``.
    :param filter_index: known answers to exclude (usually train+valid+test); ``None`` draws from all entities.
    :returns: int64 ``[B, k]``.
    """
    from mmkgc.data.sampling import UniformNegativeSampler

    sampler = UniformNegativeSampler(num_entities, num_candidates, corruption=check_side(side),
                                     filtered_by=filter_index, generator=generator)
    return sampler.sample(queries).entities


def compute_sampled_ranks(
    score_candidates: CandidateScoreFn,
    queries: torch.Tensor,
    num_entities: int,
    num_candidates: int,
    filter_index: FilterIndex | None = None,
    sides: Iterable[str] = SIDES,
    seed: int = 0,
    query_offset: int = 0,
) -> RankResult:
    """Rank each target among itself and ``k`` sampled non-answer candidates.

    :param score_candidates: ``(queries [B, 3], side, candidates [B, C]) -> [B, C]`` scores, higher is better
        (e.g. ``KGEModel.score_fn().score_candidates``); called under ``torch.no_grad()``.
    :param queries: int64 ``[Q, 3]``.
    :param num_entities: ``N``.
    :param num_candidates: ``k`` >= 1 sampled candidates per query and side.
    :param filter_index: known answers excluded from the draws; ``None`` for unfiltered draws.
    :param sides: sides to rank.
    :param seed: seeds the draws (see the module docstring).
    :param query_offset: global index of ``queries[0]`` when this is one process's shard; a multiple of
        :data:`SAMPLE_BLOCK`.
    :returns: :class:`RankResult` with ``sampled_candidates = k`` and ``num_candidates`` = ``k + 1`` per task.
    :raises ValueError: bad shapes, ``k < 1``, a misaligned offset, or NaN scores.
    """
    queries = torch.as_tensor(queries).long().cpu()
    if queries.ndim != 2 or queries.shape[1] != 3:
        raise ValueError(f"queries must have shape [Q, 3], got {tuple(queries.shape)}")
    if int(num_candidates) < 1:
        raise ValueError(f"num_candidates must be >= 1, got {num_candidates}")
    if query_offset % SAMPLE_BLOCK:
        raise ValueError(f"query_offset must be a multiple of {SAMPLE_BLOCK}, got {query_offset}")
    k = int(num_candidates)
    sides = tuple(check_side(s) for s in sides)
    result = {}
    for side in sides:
        column = TARGET_COLUMN[side]
        parts = []
        for start in range(0, queries.shape[0], SAMPLE_BLOCK):
            block = queries[start:start + SAMPLE_BLOCK]
            gen = _block_generator(seed, side, (query_offset + start) // SAMPLE_BLOCK)
            drawn = sample_candidates(block, side, k, num_entities, filter_index, gen)
            candidates = torch.cat([block[:, column:column + 1], drawn], 1)  # target first
            with torch.no_grad():
                scores = score_candidates(block, side, candidates)
            if scores.shape != candidates.shape:
                raise ValueError(f"score_candidates returned {tuple(scores.shape)} for candidates "
                                 f"{tuple(candidates.shape)}")
            scores = scores.float().cpu()
            try:
                parts.append(rank_targets(scores, torch.zeros(block.shape[0], dtype=torch.long)))
            except ValueError as err:
                raise ValueError(f"{side} queries {query_offset + start}..: {err}") from None
        empty = torch.empty(0, dtype=torch.long)
        result[side] = SideRanks(
            optimistic=torch.cat([p[0] for p in parts]) if parts else empty.clone(),
            pessimistic=torch.cat([p[1] for p in parts]) if parts else empty.clone(),
            num_candidates=torch.cat([p[2] for p in parts]) if parts else empty.clone(),
        )
    return RankResult(queries=queries.clone(), sides=result, num_entities=int(num_entities),
                      filtered=filter_index is not None, sampled_candidates=k)


def vemp_link_ranks(
    score_pairs: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    positive_edges: torch.Tensor,
    num_nodes: int,
    known_edges: torch.Tensor | None = None,
    negative_edges: torch.Tensor | None = None,
    num_candidates: int = 100,
    legacy: bool = False,
    seed: int = 0,
) -> RankResult:
    """VEMP's relation-agnostic, tail-only sampled protocol (Sela et al.; methods.md sections 1.5 and 2.7).

    Each query edge ``(u, v)`` ranks ``v`` among itself and ``k`` sampled destination nodes by the decoder score
    ``s(u, ·)``.

    * Fixed (default): the queries are the positive edges only, and the ``k`` candidates of ``(u, v)`` are drawn
      uniformly with replacement from the nodes ``w`` with no known edge ``(u, *, w)`` in ``known_edges`` (the
      filtered setting, relation-agnostic).
    * ``legacy=True`` reproduces the public code: the queries are the positive **and** the negative edges of the
      split (the negatives' sampled "targets" are ranked as if they were answers; bug 2.7.1) and the candidates are
      drawn from all nodes, unfiltered, with replacement (they may contain the target or other answers; bug
      2.7.5).  Ties are resolved by the usual tie policies instead of ``argsort`` order.

    :param score_pairs: ``(src [B], dst [B, C]) -> [B, C]`` scores, higher is better.
    :param positive_edges: int64 ``[E, 2]`` (src, dst) query edges of the split.
    :param num_nodes: ``N``.
    :param known_edges: int64 ``[E', 2]`` every known edge (train + valid + test) for the filter; required unless
        ``legacy``.
    :param negative_edges: int64 ``[E'', 2]``: the split's negative edges (only used, and required, with ``legacy``).
    :param num_candidates: ``k`` (VEMP: 100).
    :param seed: seeds the candidate draws.
    :returns: a tail-only :class:`RankResult` whose queries are ``(u, 0, v)``; ``sampled_candidates = k``;
        ``filtered`` is ``not legacy``.
    :raises ValueError: missing ``known_edges`` (fixed) or ``negative_edges`` (legacy), or bad shapes.
    """

    def edges(x: torch.Tensor, what: str) -> torch.Tensor:
        x = torch.as_tensor(x).long().cpu()
        if x.ndim != 2 or x.shape[1] != 2:
            raise ValueError(f"{what} must have shape [E, 2] (src, dst), got {tuple(x.shape)}")
        return x

    def as_queries(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x[:, 0], torch.zeros_like(x[:, 0]), x[:, 1]], 1)

    queries = edges(positive_edges, "positive_edges")
    filter_index = None
    if legacy:
        if negative_edges is None:
            raise ValueError("the legacy VEMP protocol needs the split's negative_edges (they are queried too)")
        queries = torch.cat([queries, edges(negative_edges, "negative_edges")])
    else:
        if known_edges is None:
            raise ValueError("the fixed VEMP protocol needs known_edges to filter the candidates")
        filter_index = FilterIndex(as_queries(edges(known_edges, "known_edges")), num_nodes, 1)

    def score_candidates(q: torch.Tensor, side: str, candidates: torch.Tensor) -> torch.Tensor:
        return score_pairs(q[:, 0], candidates)

    return compute_sampled_ranks(score_candidates, as_queries(queries), num_nodes, num_candidates,
                                 filter_index=filter_index, sides=("tail",), seed=seed)


def random_negative_edges(positive_edges: torch.Tensor, num_nodes: int, known_edges: torch.Tensor,
                          generator: torch.Generator) -> torch.Tensor:
    """``len(positive_edges)`` random ``(src, dst)`` pairs that are not known edges: the negative edges PyG's
    ``RandomLinkSplit`` adds to a validation/test split (``negative_sampling``), which the legacy VEMP protocol
    queries.  Pairs are drawn ``2 E`` at a time, uniformly, and kept in draw order until ``E`` are found.

    :param positive_edges: int64 ``[E, 2]`` (only the count is used).
    :param known_edges: int64 ``[E', 2]`` pairs to avoid.
    :returns: int64 ``[E, 2]``.
    """
    keys = torch.unique(known_edges[:, 0] * num_nodes + known_edges[:, 1])
    out = torch.empty(0, 2, dtype=torch.long)
    while out.shape[0] < positive_edges.shape[0]:
        cand = torch.randint(num_nodes, (2 * positive_edges.shape[0], 2), generator=generator)
        cand = cand[~torch.isin(cand[:, 0] * num_nodes + cand[:, 1], keys)]
        out = torch.cat([out, cand])
    return out[:positive_edges.shape[0]]


class VempSampledProtocol:
    """``evaluation.protocol: vemp_sampled``: VEMP's relation-agnostic, tail-only sampled ranking
    (:func:`vemp_link_ranks`) of a dataset's validation and test edges, with the queries and the legacy negative
    edges drawn once, when the protocol is built, so every evaluation of a run ranks the same queries.

    Draw order (as VEMP stage 2 in mmkgc before the protocol became an evaluation option): with ``max_queries``,
    the valid then the test subset from a generator seeded ``seed + 1``; the legacy negative edges of valid then
    test from a generator seeded ``seed + 2`` (avoiding every known edge); the candidates of each evaluation from
    ``seed`` (:func:`compute_sampled_ranks`).

    :param triples: the dataset (a :class:`~mmkgc.data.triples.TripleSet`); ``(h, r, t)`` rows become ``(h, t)``
        edges, and the known edges are those of train + valid + test.
    :param num_candidates: ``k`` sampled candidates per query (VEMP: 100).
    :param seed: the run's seed.
    :param max_queries: at most this many queries per split (a seeded subset; ``None``: all).
    """

    def __init__(self, triples, num_candidates: int = 100, seed: int = 0, max_queries: int | None = None):
        self.num_nodes = int(triples.num_entities)
        self.num_candidates = int(num_candidates)
        self.seed = int(seed)
        self.known = torch.cat([triples.train, triples.valid, triples.test])[:, [0, 2]]
        select = torch.Generator().manual_seed(self.seed + 1)
        self.queries: dict[str, torch.Tensor] = {}
        for split in ("valid", "test"):
            edges = triples.split(split)[:, [0, 2]]
            if max_queries is not None and edges.shape[0] > max_queries:
                edges = edges[torch.randperm(edges.shape[0], generator=select)[:max_queries]]
            self.queries[split] = edges
        negatives = torch.Generator().manual_seed(self.seed + 2)
        self.negatives = {split: random_negative_edges(q, self.num_nodes, self.known, negatives)
                          for split, q in self.queries.items()}

    def ranks(self, score_pairs: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], split: str,
              legacy: bool = False) -> RankResult:
        """The tail ranks of ``split``'s queries under the fixed protocol (or the public code's, ``legacy``).

        :param score_pairs: ``(src [B], dst [B, C]) -> [B, C]`` scores, higher is better.
        :raises ValueError: a split other than ``valid`` / ``test``, or no query in it.
        """
        if split not in self.queries:
            raise ValueError(f"the vemp_sampled protocol ranks the valid or test split, not {split!r}")
        if self.queries[split].shape[0] == 0:
            raise ValueError(f"the {split} split has no edges to rank")
        return vemp_link_ranks(score_pairs, self.queries[split], self.num_nodes, known_edges=self.known,
                               negative_edges=self.negatives[split] if legacy else None,
                               num_candidates=self.num_candidates, legacy=legacy, seed=self.seed)
