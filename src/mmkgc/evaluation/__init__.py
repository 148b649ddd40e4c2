"""mmkgc.evaluation: filtered ranks from any score function, tie policies, and rank-based metrics.

:mod:`mmkgc.evaluation.ranking` turns score matrices into optimistic / pessimistic / realistic / random
ranks (chunked, device-aware, NaN-guarded); :mod:`mmkgc.evaluation.metrics` aggregates them into MR, MRR,
Hits@k and AMRI per side, tie policy, relation category, relation and arbitrary query group.
"""

from mmkgc.evaluation.metrics import (
    DEFAULT_KS,
    DEFAULT_POLICIES,
    EvaluationResult,
    evaluate,
    grouped_rank_metrics,
    rank_metrics,
)
from mmkgc.evaluation.ranking import (
    SIDES,
    TIE_POLICIES,
    RankResult,
    SideRanks,
    auto_max_memory_bytes,
    batch_size_for_memory,
    compute_ranks,
    gather_rank_results,
    rank_targets,
    tie_break,
)
from mmkgc.evaluation.sampled import SAMPLE_BLOCK, compute_sampled_ranks, sample_candidates

__all__ = [
    "DEFAULT_KS",
    "DEFAULT_POLICIES",
    "EvaluationResult",
    "RankResult",
    "SIDES",
    "SideRanks",
    "TIE_POLICIES",
    "SAMPLE_BLOCK",
    "auto_max_memory_bytes",
    "batch_size_for_memory",
    "compute_sampled_ranks",
    "gather_rank_results",
    "sample_candidates",
    "compute_ranks",
    "evaluate",
    "grouped_rank_metrics",
    "rank_metrics",
    "rank_targets",
    "tie_break",
]
