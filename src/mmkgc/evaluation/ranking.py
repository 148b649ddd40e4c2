"""Filtered ranks of the true entity among all candidates, chunked, with explicit tie handling.

The evaluator never sees a model.  It takes a *score function*

    ``score_fn(queries: LongTensor[B, 3], side: "head" | "tail") -> FloatTensor[B, N]``

where **higher is better** (distance models return negated distances).  For ``side="tail"`` row ``b`` holds
the score of ``(h_b, r_b, e)`` for every candidate entity ``e``; for ``side="head"`` the score of
``(e, r_b, t_b)``.  Whether the model answers head queries natively or with a reciprocal relation is the
score function's business.

Rank of the target ``x`` among the candidates ``C`` (all ``N`` entities minus the *other* known answers when
filtering, Bordes et al., 2013), with ``s`` the scores and ``s_x`` the target's score:

* optimistic  = ``1 + |{e in C : s_e >  s_x}|`` -- OpenKE ``base/Test.h`` (strict comparison on distances);
* pessimistic = ``1 + |{e in C, e != x : s_e >= s_x}|``;
* realistic   = ``(optimistic + pessimistic) / 2``, the expected rank when ties are broken uniformly at random
  (PyKEEN ``pykeen.evaluation.ranks.Ranks``; Berrendorf et al., 2020, "Interpretable and Fair Comparison of
  Link Prediction or Entity Alignment Methods");
* random      = a uniformly random integer in ``[optimistic, pessimistic]`` drawn from a seeded generator; this
  is the IMVIA / MoMoK protocol (the target is re-inserted at a random position among its ties), and its
  expectation is the realistic rank.

Ranks are computed by comparing every score with the target score -- no sort, and the score matrix is never
copied or modified.  On the CPU the matrix is read once, in cache-sized row blocks, by NumPy; on other devices
(CUDA) two PyTorch comparisons are used.  Filtering costs ``O(A)`` for ``A`` known answers: their contributions
to the counts are subtracted afterwards.  The cost per batch is ``O(B * N + A)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Literal, Sequence

import numpy as np
import torch

from mmkgc.data.triples import FilterIndex

Side = Literal["head", "tail"]
TiePolicy = Literal["optimistic", "pessimistic", "realistic", "random"]

#: Sides in the order they are evaluated and reported.
SIDES: tuple[str, ...] = ("head", "tail")
#: Tie policies understood by :func:`tie_break`.
TIE_POLICIES: tuple[str, ...] = ("optimistic", "pessimistic", "realistic", "random")
#: Column of the query triple that holds the target of each side.
TARGET_COLUMN = {"head": 0, "tail": 2}
#: Default bound on the memory taken by one chunk of scores plus ranking temporaries (bytes).
DEFAULT_MAX_MEMORY_BYTES = 256 * 2**20

ScoreFn = Callable[[torch.Tensor, str], torch.Tensor]


def check_side(side: str) -> str:
    """``side`` itself when it is ``"head"`` or ``"tail"``.

    :raises ValueError: any other value.
    """
    if side not in TARGET_COLUMN:
        raise ValueError(f"side must be 'head' or 'tail', got {side!r}")
    return side


#: Bytes of one row block in the CPU counting loop: small enough that the block stays in the L2 cache while it
#: is compared twice with the target scores and checked for NaN, so the matrix is read from memory once.
_CPU_BLOCK_BYTES = 512 * 2**10


def _nan_rows(scores: torch.Tensor) -> torch.Tensor:
    """Bool ``[B]``: which rows of ``scores`` contain a NaN.

    A row sum is NaN whenever the row holds a NaN, so one cheap reduction clears almost every row; only rows
    whose sum is NaN (a NaN, or +inf and -inf together) are inspected element-wise.
    """
    suspicious = torch.isnan(scores.sum(dim=1))
    if not bool(suspicious.any()):
        return suspicious
    rows = suspicious.nonzero().squeeze(1)
    suspicious[rows] = torch.isnan(scores[rows]).any(dim=1)
    return suspicious


def _count_cpu(scores: torch.Tensor, target_score: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(#(s > t), #(s >= t), row has NaN)`` per row of a CPU float32/float64 matrix.

    Works on NumPy views (no copy) in row blocks of about :data:`_CPU_BLOCK_BYTES`: each block is read from memory
    once and then compared twice and checked for NaN in cache.  PyTorch's eager CPU ``(x > t).sum(1)`` is several
    times slower (a full pass over memory per step, and a slow boolean row reduction).
    """
    x = scores.numpy()
    t = target_score.numpy()
    num_rows, num_entities = x.shape
    block = max(1, _CPU_BLOCK_BYTES // max(1, num_entities * x.itemsize))
    # Row sums of 0/1 bytes: a narrow accumulator is much faster, and a count never exceeds N.
    count_dtype = np.uint16 if num_entities < 2**16 else np.uint32 if num_entities < 2**32 else np.uint64
    greater = np.empty(num_rows, dtype=np.int64)
    greater_equal = np.empty(num_rows, dtype=np.int64)
    nan = np.zeros(num_rows, dtype=bool)
    buffer = np.empty((min(block, num_rows), num_entities), dtype=bool)
    with np.errstate(invalid="ignore"):
        for start in range(0, num_rows, block):
            stop = min(num_rows, start + block)
            xb, tb, mask = x[start:stop], t[start:stop], buffer[: stop - start]
            np.greater(xb, tb, out=mask)
            greater[start:stop] = mask.view(np.uint8).sum(axis=1, dtype=count_dtype)
            np.greater_equal(xb, tb, out=mask)
            greater_equal[start:stop] = mask.view(np.uint8).sum(axis=1, dtype=count_dtype)
            if np.isnan(xb.max()):  # max propagates NaN: one cheap pass over the cached block
                nan[start:stop] = np.isnan(xb).any(axis=1)
    return torch.from_numpy(greater), torch.from_numpy(greater_equal), torch.from_numpy(nan)


def _use_numpy(scores: torch.Tensor) -> bool:
    """Whether ``scores`` takes the NumPy path (CPU float32/float64; everything else uses PyTorch ops)."""
    return scores.device.type == "cpu" and scores.dtype in (torch.float32, torch.float64)


def _count(scores: torch.Tensor, target_score: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(greater [B], greater_equal [B], nan [B])`` int64/int64/bool on the device of ``scores``."""
    if _use_numpy(scores):
        return _count_cpu(scores, target_score)
    nan = _nan_rows(scores)
    return (scores > target_score).sum(dim=1), (scores >= target_score).sum(dim=1), nan


def _check_pairs(num_rows: int, num_entities: int, row_range: tuple[int, int], col_range: tuple[int, int]) -> None:
    if row_range[0] < 0 or row_range[1] >= num_rows:
        raise ValueError(f"filter_rows must lie in [0, {num_rows}), got min {row_range[0]}, max {row_range[1]}")
    if col_range[0] < 0 or col_range[1] >= num_entities:
        raise ValueError(f"filter_cols must lie in [0, {num_entities}), got min {col_range[0]}, max {col_range[1]}")


# Both helpers below compute, per row and among the known answers *other than the target*, how many score
# ``>`` and ``>=`` the target and how many there are.  The pairs are turned into flat keys ``row * N + col``,
# de-duplicated unless already strictly increasing (FilterIndex.known returns them so; checking is one pass),
# and then -- being sorted by row -- counted per row as differences of running sums at the row boundaries.
# Each row holds at most one pair equal to its target; those are found by binary search on the keys, so no
# per-pair "is this the target" mask is needed: the target's own pair is never strictly better, always ``>=``.


def _filtered_counts_numpy(
    scores: torch.Tensor, target_score: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CPU version on NumPy views (PyTorch's eager CPU int64 kernels are several times slower here).

    :returns: ``(greater, greater_equal, count)``, three int64 ``[B]`` tensors.
    """
    num_rows, num_entities = scores.shape
    r, c = rows.numpy(), cols.numpy()
    keys = r * num_entities + c
    if keys.size > 1 and not bool((keys[1:] > keys[:-1]).all()):
        _check_pairs(num_rows, num_entities, (int(r.min()), int(r.max())), (int(c.min()), int(c.max())))
        keys = np.unique(keys)
        r = keys // num_entities
    else:  # sorted: the row range is given by the ends
        _check_pairs(num_rows, num_entities, (int(r[0]), int(r[-1])), (int(c.min()), int(c.max())))
    x = scores.numpy()
    if x.flags.c_contiguous:
        pair_scores = x.reshape(-1).take(keys)
    else:
        pair_scores = x[r, keys - r * num_entities]
    pair_target = target_score.numpy().reshape(-1).take(r)
    bounds = np.searchsorted(r, np.arange(num_rows + 1))
    target_keys = np.arange(num_rows, dtype=np.int64) * num_entities + targets.numpy()
    position = np.minimum(np.searchsorted(keys, target_keys), keys.size - 1)
    has_target = (keys[position] == target_keys).astype(np.int64)
    running = np.empty(keys.size + 1, dtype=np.int32 if keys.size < 2**31 else np.int64)
    running[0] = 0

    def per_row(mask: np.ndarray) -> np.ndarray:
        np.cumsum(mask, out=running[1:])
        return running[bounds[1:]].astype(np.int64) - running[bounds[:-1]]

    greater = per_row(pair_scores > pair_target)
    greater_equal = per_row(pair_scores >= pair_target) - has_target
    count = (bounds[1:] - bounds[:-1]) - has_target
    return torch.from_numpy(greater), torch.from_numpy(greater_equal), torch.from_numpy(count.astype(np.int64))


def _filtered_counts_torch(
    scores: torch.Tensor, target_score: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Same as :func:`_filtered_counts_numpy` with PyTorch ops on the device of ``scores`` (e.g. CUDA)."""
    num_rows, num_entities = scores.shape
    row_min, row_max = torch.aminmax(rows)
    col_min, col_max = torch.aminmax(cols)
    _check_pairs(num_rows, num_entities, (int(row_min), int(row_max)), (int(col_min), int(col_max)))
    keys = rows * num_entities + cols
    if keys.numel() > 1 and not bool((keys[1:] > keys[:-1]).all()):
        keys = torch.unique(keys)
        rows = torch.div(keys, num_entities, rounding_mode="floor")
    return _filtered_counts_sorted(scores, target_score, targets, rows, keys)


def _filtered_counts_sorted(
    scores: torch.Tensor, target_score: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor, keys: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The counts of :func:`_filtered_counts_torch` from checked, strictly increasing keys ``row * N + col`` and
    their rows, with PyTorch ops and no host synchronisation."""
    num_rows, num_entities = scores.shape
    device = scores.device
    pair_scores = scores.reshape(-1)[keys] if scores.is_contiguous() else scores[rows, keys - rows * num_entities]
    pair_target = target_score.reshape(-1)[rows]
    bounds = torch.searchsorted(rows, torch.arange(num_rows + 1, device=device))
    target_keys = torch.arange(num_rows, device=device) * num_entities + targets
    position = torch.searchsorted(keys, target_keys).clamp_max(keys.numel() - 1)
    has_target = (keys[position] == target_keys).long()
    zero = torch.zeros(1, dtype=torch.long, device=device)

    def per_row(mask: torch.Tensor) -> torch.Tensor:
        running = torch.cat([zero, torch.cumsum(mask, 0)])
        return running[bounds[1:]] - running[bounds[:-1]]

    greater = per_row(pair_scores > pair_target)
    greater_equal = per_row(pair_scores >= pair_target) - has_target
    count = (bounds[1:] - bounds[:-1]) - has_target
    return greater, greater_equal, count


def to_device_nonblocking(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``; a host tensor goes to a CUDA device through pinned memory with ``non_blocking=True`` (a
    copy from pageable memory waits for everything queued on the GPU before it: a host synchronisation).  Used by
    the ranking code and the trainer's batches."""
    if t.device == device:
        return t
    if t.device.type == "cpu" and device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _host_pair_keys(rows: torch.Tensor, cols: torch.Tensor, num_rows: int, num_entities: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Host filter pairs (int64 ``[A]`` each, CPU) checked and turned into strictly increasing keys
    ``row * N + col`` and their rows, still on the host (reading them back costs no device synchronisation).

    :raises ValueError: a pair outside ``[0, num_rows) x [0, num_entities)``.
    """
    _check_pairs(num_rows, num_entities, (int(rows.min()), int(rows.max())), (int(cols.min()), int(cols.max())))
    keys = rows * num_entities + cols
    if keys.numel() > 1 and not bool((keys[1:] > keys[:-1]).all()):
        keys = torch.unique(keys)
    return torch.div(keys, num_entities, rounding_mode="floor"), keys


def _rank_targets_torch(scores: torch.Tensor, targets: torch.Tensor, filter_rows, filter_cols
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`rank_targets` with PyTorch ops on the device of ``scores`` (CUDA, or CPU scores of another dtype),
    with **one** host synchronisation: the target range, the NaN check and (for filter pairs given on the device)
    their range and order are read back together as one small tensor; pairs given on the host (what
    :meth:`~mmkgc.data.triples.FilterIndex.known` returns) are checked, de-duplicated and keyed there and sent with a
    non-blocking copy.  The same counts and errors as the NumPy path."""
    num_rows, num_entities = scores.shape
    device = scores.device
    targets = to_device_nonblocking(targets.long(), device)
    if (filter_rows is None) != (filter_cols is None):
        raise ValueError("filter_rows and filter_cols must both be given or both be None")
    rows = keys = None
    device_pairs = False
    if filter_rows is not None:
        rows = torch.as_tensor(filter_rows).long().reshape(-1)
        cols = torch.as_tensor(filter_cols).long().reshape(-1)
        if rows.numel() != cols.numel():
            raise ValueError(
                f"filter_rows and filter_cols must have equal length, got {rows.numel()} and {cols.numel()}"
            )
        if rows.numel() == 0:
            rows = None
        elif rows.device.type == "cpu" and cols.device.type == "cpu":
            rows, keys = _host_pair_keys(rows, cols, num_rows, num_entities)
            rows, keys = to_device_nonblocking(rows, device), to_device_nonblocking(keys, device)
        else:
            device_pairs = True
            rows, cols = rows.to(device), cols.to(device)
    # targets are clamped for the gather (an out-of-range index would abort a CUDA kernel) and checked below
    target_score = scores.gather(1, targets.clamp(0, num_entities - 1).unsqueeze(1))  # [B, 1]
    greater, greater_equal = (scores > target_score).sum(dim=1), (scores >= target_score).sum(dim=1)
    # a row sum is NaN when the row holds a NaN (or +inf and -inf together: then the exact check below decides)
    suspicious = torch.isnan(scores.sum(dim=1))
    stats = [targets.min(), targets.max(), suspicious.sum()]
    if device_pairs:
        stats += [rows.min(), rows.max(), cols.min(), cols.max()]
    values = torch.stack([v.long() for v in stats]).tolist()  # the one host synchronisation
    if values[0] < 0 or values[1] >= num_entities:
        raise ValueError(f"target ids must lie in [0, {num_entities}) (the number of score columns); "
                         f"got min {values[0]}, max {values[1]}")
    if values[2] > 0:  # only on the error path (or with infinities of both signs): the exact NaN rows
        _raise_on_nan_rows(_nan_rows(scores))
    num_candidates = torch.full((num_rows,), num_entities, dtype=torch.long, device=device)
    if rows is not None:
        if device_pairs:
            filtered = _filtered_counts_torch(scores, target_score, targets, rows, cols)
        else:
            filtered = _filtered_counts_sorted(scores, target_score, targets, rows, keys)
        return _without_filtered(greater, greater_equal, num_candidates, filtered)
    return greater + 1, greater_equal, num_candidates


def rank_targets(
    scores: torch.Tensor,
    targets: torch.Tensor,
    filter_rows: torch.Tensor | None = None,
    filter_cols: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Filtered optimistic and pessimistic rank of each target among all candidates.

    Known answers other than the target (pairs ``(filter_rows[i], filter_cols[i])``, e.g. the output of
    :meth:`mmkgc.data.triples.FilterIndex.known`, which may include the target itself and may hold
    duplicates) are removed from the candidates.  The score matrix is **not modified**: the comparisons are
    counted over the whole row and the filtered entries' contributions subtracted afterwards.

    OpenKE ``base/Test.h`` counts ``1 + #{e != x, not filtered : d_e < d_x}`` on distances ``d``; with
    ``scores = -d`` that is exactly the optimistic rank returned here.  PyKEEN's
    ``Ranks.from_scores`` (with filtered scores set to NaN) gives the same optimistic and pessimistic ranks and
    the same ``number_of_options``.

    :param scores: float ``[B, N]``, higher is better, on any device.  ``+inf``/``-inf`` are ordinary ordered
        values (equal infinities tie); NaN is rejected.
    :param targets: int64 ``[B]``, the true entity of each row, in ``[0, N)``.
    :param filter_rows: int64 ``[A]``, row of each known answer, in ``[0, B)``; ``None`` for raw ranks.
    :param filter_cols: int64 ``[A]``, entity of each known answer, in ``[0, N)``; ``None`` for raw ranks.
    :returns: ``(optimistic, pessimistic, num_candidates)``, three int64 ``[B]`` tensors on the device of
        ``scores``.  ``num_candidates`` counts the target plus every unfiltered other entity, so
        ``1 <= optimistic <= pessimistic <= num_candidates``.
    :raises ValueError: on wrong shapes, a target or filter id out of range, or any NaN in ``scores``
        (the message gives the number of rows with NaN; OpenKE would silently report rank 1).
    """
    if scores.ndim != 2:
        raise ValueError(f"scores must have shape [B, N], got {tuple(scores.shape)}")
    if not scores.is_floating_point():
        raise ValueError(f"scores must be a floating-point tensor, got dtype {scores.dtype}")
    num_rows, num_entities = scores.shape
    device = scores.device
    targets = torch.as_tensor(targets).reshape(-1)
    if targets.numel() != num_rows:
        raise ValueError(f"targets must have shape [{num_rows}] to match scores, got {tuple(targets.shape)}")
    if num_rows == 0:
        empty = torch.empty(0, dtype=torch.long, device=device)
        return empty, empty.clone(), empty.clone()
    if not _use_numpy(scores):
        return _rank_targets_torch(scores.detach(), targets, filter_rows, filter_cols)
    targets = targets.to(device=device, dtype=torch.long)
    if int(targets.min()) < 0 or int(targets.max()) >= num_entities:
        raise ValueError(
            f"target ids must lie in [0, {num_entities}) (the number of score columns); "
            f"got min {int(targets.min())}, max {int(targets.max())}"
        )
    if (filter_rows is None) != (filter_cols is None):
        raise ValueError("filter_rows and filter_cols must both be given or both be None")
    scores = scores.detach()
    target_score = scores.gather(1, targets.unsqueeze(1))  # [B, 1]
    # ``>=`` counts the target itself (its score is not NaN), which supplies the "1 +" of the pessimistic rank.
    greater, greater_equal, nan = _count(scores, target_score)
    _raise_on_nan_rows(nan)
    num_candidates = torch.full((num_rows,), num_entities, dtype=torch.long, device=device)

    if filter_rows is not None and filter_cols is not None:
        rows = torch.as_tensor(filter_rows).to(device=device, dtype=torch.long).reshape(-1)
        cols = torch.as_tensor(filter_cols).to(device=device, dtype=torch.long).reshape(-1)
        if rows.numel() != cols.numel():
            raise ValueError(
                f"filter_rows and filter_cols must have equal length, got {rows.numel()} and {cols.numel()}"
            )
        if rows.numel() > 0:
            if _use_numpy(scores):
                filtered = _filtered_counts_numpy(scores, target_score, targets, rows, cols)
            else:
                filtered = _filtered_counts_torch(scores, target_score, targets, rows, cols)
            return _without_filtered(greater, greater_equal, num_candidates, filtered)
    return greater + 1, greater_equal, num_candidates


def _raise_on_nan_rows(nan: torch.Tensor) -> None:
    """:raises ValueError: a row of ``nan [B]`` (bool, rows whose scores hold NaN) is set, naming the first."""
    if bool(nan.any()):
        raise ValueError(
            f"scores contain NaN in {int(nan.sum())} of {nan.shape[0]} rows (first such row: "
            f"{int(nan.nonzero()[0, 0])}); a NaN cannot be ranked (OpenKE would silently report rank 1)"
        )


def _without_filtered(greater: torch.Tensor, greater_equal: torch.Tensor, num_candidates: torch.Tensor,
                      filtered: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The raw counts ``[B]`` less the filtered known triples' (``filtered``: their ``>``, ``>=`` and candidate
    counts): ``(optimistic rank, pessimistic rank, candidates)`` of the filtered setting."""
    return greater - filtered[0] + 1, greater_equal - filtered[1], num_candidates - filtered[2]


def tie_break(
    optimistic: torch.Tensor,
    pessimistic: torch.Tensor,
    policy: str = "realistic",
    seed: int = 0,
) -> torch.Tensor:
    """Rank under a tie policy, from the optimistic and pessimistic ranks.

    :param optimistic: int64 ``[Q]`` (see :func:`rank_targets`).
    :param pessimistic: int64 ``[Q]``, elementwise ``>= optimistic``.
    :param policy: ``"optimistic"`` (OpenKE), ``"pessimistic"``, ``"realistic"`` (mean of the two, PyKEEN) or
        ``"random"`` (uniform integer in ``[optimistic, pessimistic]``; IMVIA/MoMoK).
    :param seed: seed of the CPU generator used by ``"random"``; the same seed and inputs give the same ranks.
    :returns: int64 ``[Q]`` for optimistic, pessimistic and random; float64 ``[Q]`` for realistic.  Same device
        as the inputs.
    :raises ValueError: on an unknown policy or mismatched shapes.
    """
    if optimistic.shape != pessimistic.shape:
        raise ValueError(
            f"optimistic and pessimistic ranks differ in shape: {tuple(optimistic.shape)} vs "
            f"{tuple(pessimistic.shape)}"
        )
    if policy == "optimistic":
        return optimistic.long()
    if policy == "pessimistic":
        return pessimistic.long()
    if policy == "realistic":
        return (optimistic.double() + pessimistic.double()) / 2
    if policy == "random":
        generator = torch.Generator().manual_seed(int(seed))
        u = torch.rand(optimistic.shape, generator=generator, dtype=torch.float64).to(optimistic.device)
        width = (pessimistic - optimistic + 1).double()
        offset = torch.minimum(torch.floor(u * width), width - 1).long()
        return optimistic.long() + offset
    raise ValueError(f"unknown tie policy {policy!r}; expected one of {TIE_POLICIES}")


@dataclass
class SideRanks:
    """Ranks of one side (head or tail prediction) for ``Q`` queries.

    :param optimistic: int64 ``[Q]``.
    :param pessimistic: int64 ``[Q]``.
    :param num_candidates: int64 ``[Q]``, candidates each target was ranked among (target included).
    """

    optimistic: torch.Tensor
    pessimistic: torch.Tensor
    num_candidates: torch.Tensor

    @property
    def realistic(self) -> torch.Tensor:
        """Expected rank under uniformly random tie-breaking, float64 ``[Q]``."""
        return tie_break(self.optimistic, self.pessimistic, "realistic")

    def ranks(self, policy: str = "realistic", seed: int = 0) -> torch.Tensor:
        """Ranks under ``policy`` (see :func:`tie_break`)."""
        return tie_break(self.optimistic, self.pessimistic, policy, seed)


@dataclass
class RankResult:
    """Ranks of every query on every evaluated side (CPU tensors).

    :param queries: int64 ``[Q, 3]`` (h, r, t), in the order they were given.
    :param sides: ``{"head": SideRanks, "tail": SideRanks}`` (only the evaluated sides).
    :param num_entities: ``N``, number of score columns.
    :param filtered: whether known answers were removed from the candidates.
    :param sampled_candidates: ``None`` for full ranking against all ``N`` entities; ``k`` when each target was
        ranked against only ``k`` sampled candidates (:mod:`mmkgc.evaluation.sampled`).  Sampled ranks are a
        different protocol and are never concatenated with full ranks.
    """

    queries: torch.Tensor
    sides: dict[str, SideRanks] = field(default_factory=dict)
    num_entities: int = 0
    filtered: bool = True
    sampled_candidates: int | None = None

    def __len__(self) -> int:
        return int(self.queries.shape[0])

    def side(self, side: str) -> SideRanks:
        """The :class:`SideRanks` of ``side``; raises ``KeyError`` if that side was not evaluated."""
        if side not in self.sides:
            raise KeyError(f"side {side!r} was not evaluated; available: {sorted(self.sides)}")
        return self.sides[side]

    def ranks(self, side: str, policy: str = "realistic", seed: int = 0) -> torch.Tensor:
        """Ranks of ``side`` under ``policy``, ``[Q]`` (float64 for realistic, int64 otherwise).

        For ``policy="random"`` the head side uses ``seed`` and the tail side ``seed + 1``, so the two sides get
        independent draws that do not depend on how the queries were chunked.
        """
        check_side(side)
        return self.side(side).ranks(policy, seed + SIDES.index(side))

    @classmethod
    def concatenate(cls, results: Sequence["RankResult"]) -> "RankResult":
        """Join results computed on disjoint query shards (e.g. DDP ranks), in the given order.

        :raises ValueError: if the shards disagree on sides, ``num_entities``, ``filtered`` or
            ``sampled_candidates`` (full and sampled ranks are never mixed).
        """
        if not results:
            raise ValueError("concatenate needs at least one RankResult")
        first = results[0]
        for other in results[1:]:
            if other.sampled_candidates != first.sampled_candidates:
                raise ValueError(
                    "cannot concatenate ranks of different protocols (sampled_candidates "
                    f"{first.sampled_candidates} vs {other.sampled_candidates}; None means full ranking)"
                )
            if set(other.sides) != set(first.sides) or other.num_entities != first.num_entities or (
                other.filtered != first.filtered
            ):
                raise ValueError("RankResult shards differ in sides, num_entities or filtered")
        sides = {
            name: SideRanks(
                optimistic=torch.cat([r.sides[name].optimistic for r in results]),
                pessimistic=torch.cat([r.sides[name].pessimistic for r in results]),
                num_candidates=torch.cat([r.sides[name].num_candidates for r in results]),
            )
            for name in first.sides
        }
        return cls(
            queries=torch.cat([r.queries for r in results]),
            sides=sides,
            num_entities=first.num_entities,
            filtered=first.filtered,
            sampled_candidates=first.sampled_candidates,
        )


def batch_size_for_memory(num_entities: int, max_memory_bytes: int, element_size: int = 4) -> int:
    """Largest number of query rows whose scores and ranking temporaries fit in ``max_memory_bytes``.

    Per row the evaluator holds the ``N`` scores (``element_size`` bytes each) and, on CUDA, one boolean
    comparison result (``N`` bytes) at a time (on the CPU only a cache-sized block of it); a second byte per
    entity is reserved for the score function's and the reductions' temporaries.  Memory the score function
    needs internally (e.g. ``[B, N, d]`` intermediates) is not covered: pass an explicit ``batch_size`` for
    such scorers.

    :returns: at least 1.
    :raises ValueError: if ``num_entities`` or ``max_memory_bytes`` is not positive.
    """
    if num_entities <= 0:
        raise ValueError(f"num_entities must be positive, got {num_entities}")
    if max_memory_bytes <= 0:
        raise ValueError(f"max_memory_bytes must be positive, got {max_memory_bytes}")
    return max(1, int(max_memory_bytes) // (int(num_entities) * (int(element_size) + 2)))


def auto_max_memory_bytes(device: torch.device | str | None = None, fraction: float = 0.25,
                          cpu_cap_bytes: int = 2 * 2**30) -> int:
    """A chunk-memory bound derived from the memory that is free right now (``batch_size: auto``).

    * CUDA: ``fraction`` of the free device memory reported by :func:`torch.cuda.mem_get_info`;
    * CPU: ``fraction`` of the available physical memory (``psutil.virtual_memory().available`` when psutil is
      installed, else ``os.sysconf("SC_AVPHYS_PAGES") * SC_PAGE_SIZE``), capped at ``cpu_cap_bytes`` (larger
      chunks are not faster on a CPU: ranking streams through cache-sized blocks) and divided by the number of
      processes on this node (``LOCAL_WORLD_SIZE``, set by torchrun), which share that memory.

    :returns: at least 16 MiB.
    """
    import os

    device = torch.device(device) if device is not None else torch.device("cpu")
    floor = 16 * 2**20
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return max(floor, int(free * fraction))
    try:
        import psutil

        available = int(psutil.virtual_memory().available)
    except ImportError:
        available = int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    try:
        local_procs = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        local_procs = 1
    return max(floor, min(int(available * fraction), int(cpu_cap_bytes)) // local_procs)


def gather_rank_results(local: RankResult, queries: torch.Tensor) -> RankResult:
    """Join the ranks that every process computed on its contiguous shard of ``queries`` (rank order = query
    order), on every rank.  The integer ranks travel through :func:`mmkgc.distributed.all_gather_variable`, so
    the result is bit for bit the single-process result.  In a single process ``local`` is returned unchanged.

    :param local: this rank's :class:`RankResult` (its ``queries`` are the rank's shard).
    :param queries: int64 ``[Q, 3]``, all queries in global order.
    :raises ValueError: the gathered shards do not add up to ``Q`` queries.
    """
    from mmkgc.distributed import all_gather_variable, is_distributed

    if not is_distributed():
        return local
    sides = {}
    for name in SIDES:
        if name not in local.sides:
            continue
        part = local.sides[name]
        stacked = torch.stack([part.optimistic, part.pessimistic, part.num_candidates], 1).long()
        joined = torch.cat(all_gather_variable(stacked))
        if joined.shape[0] != queries.shape[0]:
            raise ValueError(f"gathered {joined.shape[0]} {name} ranks for {queries.shape[0]} queries")
        sides[name] = SideRanks(joined[:, 0].clone(), joined[:, 1].clone(), joined[:, 2].clone())
    return RankResult(queries=queries.cpu().long().clone(), sides=sides, num_entities=local.num_entities,
                      filtered=local.filtered, sampled_candidates=local.sampled_candidates)


def _progress_bar(enabled: bool):
    """A transient ``rich`` progress bar, or ``None`` when disabled."""
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("ranking {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=True,
    )


def compute_ranks(
    score_fn: ScoreFn,
    queries: torch.Tensor,
    filter_index: FilterIndex | None = None,
    sides: Iterable[str] = SIDES,
    batch_size: int | None = None,
    *,
    max_memory_bytes: int | None = None,
    num_entities: int | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> RankResult:
    """Filtered (or raw) ranks of the true head and/or tail of every query.

    The queries are scored in chunks of ``batch_size`` rows, so the evaluator holds at most
    ``batch_size * N`` scores at a time.  Ranks are integer counts, hence identical for every chunk size and
    every device.

    :param score_fn: ``score_fn(queries [B, 3] int64, side) -> [B, N]`` float scores, higher is better (see
        the module docstring).  It is called under ``torch.no_grad()`` and may return CUDA tensors; ranking
        then runs on that device.  The returned tensor is only read, never modified.  A score function with
        ``query_order = "relation"`` receives the queries sorted by relation (stable); results are reported in
        the given order.  A score function with an attribute ``score_sides(queries, sides) -> {side: [B, N]}`` is
        asked for all sides of a chunk at once (chunks then hold ``len(sides)`` score matrices within the memory
        bound); it must return what ``score_fn(queries, side)`` returns for each side.
    :param queries: int64 ``[Q, 3]`` (h, r, t) triples whose head/tail are ranked.
    :param filter_index: known answers to remove (usually ``TripleSet.filter_index`` over train+valid+test);
        ``None`` gives raw ranks.
    :param sides: any of ``"head"``, ``"tail"``; default both.
    :param batch_size: queries per chunk.  Give at most one of ``batch_size`` and ``max_memory_bytes``; with
        neither, the chunk is sized for :data:`DEFAULT_MAX_MEMORY_BYTES`.
    :param max_memory_bytes: bound on the bytes of one chunk's scores plus ranking temporaries (see
        :func:`batch_size_for_memory`).
    :param num_entities: ``N``, the expected score width, used to size chunks; defaults to
        ``filter_index.num_entities``.  When unknown, the first query is scored alone to learn ``N``.
    :param device: if given, each query chunk is moved to this device before ``score_fn`` is called and the
        scores are ranked there; otherwise queries are passed as given and ranked where the scores live.
    :param progress: show a ``rich`` progress bar.
    :returns: :class:`RankResult` with CPU int64 ranks.
    :raises ValueError: on bad shapes or options, a score matrix whose shape does not match the chunk or
        whose width changes between chunks, or NaN scores (the message names the side and query range).
    """
    queries = torch.as_tensor(queries)
    if queries.ndim != 2 or queries.shape[1] != 3:
        raise ValueError(f"queries must have shape [Q, 3], got {tuple(queries.shape)}")
    if queries.is_floating_point():
        raise ValueError(f"queries must be integer ids, got dtype {queries.dtype}")
    queries = queries.long()
    sides = tuple(sides)
    if not sides:
        raise ValueError("sides must name at least one of 'head', 'tail'")
    for side in sides:
        check_side(side)
    if len(set(sides)) != len(sides):
        raise ValueError(f"sides must not repeat, got {sides}")
    if batch_size is not None and max_memory_bytes is not None:
        raise ValueError("give at most one of batch_size and max_memory_bytes")
    if batch_size is not None and int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if num_entities is None and filter_index is not None:
        num_entities = filter_index.num_entities
    if device is not None:
        device = torch.device(device)

    order = None
    if getattr(score_fn, "query_order", None) == "relation":
        # the score function's cost depends on the relation (relation-conditioned fusion recomputes all entity
        # vectors per relation): score the queries grouped by relation, report them in the given order
        order = torch.argsort(queries[:, 1].cpu(), stable=True)
        queries = queries[order.to(queries.device)]
    num_queries = int(queries.shape[0])
    queries_cpu = queries.cpu()
    parts: dict[str, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {side: [] for side in sides}
    bar = _progress_bar(progress)
    task = bar.add_task("queries", total=num_queries * len(sides)) if bar is not None else None
    if bar is not None:
        bar.start()
    width: int | None = None
    element_size = 4
    # a score function that scores both sides of a chunk in one pass (``score_sides``, relation-conditioned fusion:
    # one fused table per relation for both sides) holds the scores of all sides at once: chunks are sized for that
    score_sides = getattr(score_fn, "score_sides", None) if len(sides) > 1 else None
    try:
        # chunks outermost, sides innermost: a score function whose cost depends on the chunk (relation-conditioned
        # fusion builds the fused table of each relation in the chunk) sees each chunk once for both sides
        start = 0
        while start < num_queries:
            if batch_size is not None:
                size = int(batch_size)
            elif width is None and num_entities is None:
                size = 1
            else:
                size = batch_size_for_memory(
                    width if width is not None else int(num_entities),
                    max_memory_bytes if max_memory_bytes is not None else DEFAULT_MAX_MEMORY_BYTES,
                    element_size,
                )
                if score_sides is not None:
                    size = max(1, size // len(sides))
            stop = min(num_queries, start + size)
            chunk_cpu = queries_cpu[start:stop]
            chunk = queries[start:stop]
            if device is not None:
                chunk = chunk.to(device)
            both = None
            if score_sides is not None:
                with torch.no_grad():
                    both = score_sides(chunk, sides)
            for side in sides:
                column = TARGET_COLUMN[side]
                if both is not None:
                    scores = both.pop(side)
                else:
                    with torch.no_grad():
                        scores = score_fn(chunk, side)
                if not isinstance(scores, torch.Tensor):
                    raise ValueError(f"score_fn must return a torch.Tensor, got {type(scores).__name__}")
                if scores.ndim != 2 or scores.shape[0] != stop - start:
                    raise ValueError(
                        f"score_fn returned shape {tuple(scores.shape)} for {stop - start} {side} queries; "
                        f"expected [{stop - start}, N]"
                    )
                if width is None:
                    width = int(scores.shape[1])
                    element_size = scores.element_size()
                    if filter_index is not None and width != filter_index.num_entities:
                        raise ValueError(
                            f"score_fn returned {width} candidates but the filter index has "
                            f"{filter_index.num_entities} entities"
                        )
                    if num_entities is not None and width != int(num_entities):
                        raise ValueError(
                            f"score_fn returned {width} candidates but num_entities is {int(num_entities)}"
                        )
                elif scores.shape[1] != width:
                    raise ValueError(
                        f"score_fn returned {scores.shape[1]} candidates for {side} queries {start}..{stop - 1} "
                        f"but {width} before"
                    )
                if device is not None and scores.device != device:
                    scores = scores.to(device)
                if filter_index is not None:
                    rows, cols = filter_index.known(chunk_cpu, side)  # type: ignore[arg-type]
                else:
                    rows = cols = None
                try:
                    optimistic, pessimistic, candidates = rank_targets(
                        scores, chunk_cpu[:, column], rows, cols
                    )
                except ValueError as err:
                    raise ValueError(f"{side} queries {start}..{stop - 1}: {err}") from None
                # kept where they were computed: one transfer per side at the end, not a wait per chunk
                parts[side].append((optimistic, pessimistic, candidates))
                del scores
                if bar is not None:
                    bar.advance(task, stop - start)
            start = stop
    finally:
        if bar is not None:
            bar.stop()

    empty = torch.empty(0, dtype=torch.long)
    result_sides = {}
    for side in sides:
        chunks = parts[side]
        if chunks:
            joined = torch.stack([torch.cat([c[i] for c in chunks]).long() for i in range(3)]).cpu()
            result_sides[side] = SideRanks(optimistic=joined[0], pessimistic=joined[1], num_candidates=joined[2])
        else:
            result_sides[side] = SideRanks(optimistic=empty.clone(), pessimistic=empty.clone(),
                                           num_candidates=empty.clone())
    if order is not None:  # back to the caller's query order
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel())
        queries_cpu = queries_cpu[inverse]
        result_sides = {side: SideRanks(optimistic=r.optimistic[inverse], pessimistic=r.pessimistic[inverse],
                                        num_candidates=r.num_candidates[inverse])
                        for side, r in result_sides.items()}
    if width is None:
        width = int(num_entities) if num_entities is not None else 0
    return RankResult(queries=queries_cpu.clone(), sides=result_sides, num_entities=width,
                      filtered=filter_index is not None)
