"""An independent, loop-based filtered MRR for checking the MRR a run reports (tests only).

For every test triple (h, r, t) and each side, the candidates are all entities except the other known answers
(train + valid + test); optimistic rank = 1 + #{candidates scoring strictly higher than the answer}, pessimistic
rank = 1 + #{candidates scoring at least as high, the answer excluded}, realistic = their mean.  MRR "both" is the
mean reciprocal realistic rank over the 2n head and tail queries (OpenKE's head/tail average).
"""

from __future__ import annotations

import torch


def brute_force_mrr(score_fn, triples, split: str = "test") -> float:
    """Realistic filtered MRR over head and tail queries of ``split``; ``score_fn(queries [B, 3], side) -> [B, N]``."""
    known = {tuple(x) for x in triples.all_triples.tolist()}
    queries = triples.split(split)
    reciprocal = []
    with torch.no_grad():
        for side in ("tail", "head"):
            scores = score_fn(queries, side).detach().cpu().double()
            for row, (h, r, t) in zip(scores, queries.tolist()):
                answer = t if side == "tail" else h
                target = float(row[answer])
                higher = ties = 0
                for e in range(row.shape[0]):
                    if e == answer or ((h, r, e) if side == "tail" else (e, r, t)) in known:
                        continue
                    s = float(row[e])
                    higher += s > target
                    ties += s == target
                opt, pess = 1 + higher, 1 + higher + ties
                reciprocal.append(1.0 / ((opt + pess) / 2))
    return sum(reciprocal) / len(reciprocal)
