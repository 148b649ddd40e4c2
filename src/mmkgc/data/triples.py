"""Triples, label maps, the filter index and relation categories.

Everything inside mmkgc stores triples as int64 tensors of shape ``[n, 3]`` in **(head, relation, tail)**
column order, whatever order the file on disk used (OpenKE files are ``head tail relation``; see
:mod:`mmkgc.data.formats`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import numpy as np
import torch

Side = Literal["head", "tail"]
SPLITS = ("train", "valid", "test")

#: Relation category codes, in the order OpenKE's ``n-n.py`` numbers them.
CATEGORY_NAMES = ("1-1", "1-N", "N-1", "N-N")


def _as_triples(x: torch.Tensor | None, name: str) -> torch.Tensor:
    if x is None:
        return torch.empty(0, 3, dtype=torch.long)
    x = torch.as_tensor(x)
    if x.ndim != 2 or x.shape[1] != 3:
        raise ValueError(f"{name} triples must have shape [n, 3], got {tuple(x.shape)}")
    return x.to(torch.long).contiguous()


class KeyValueIndex:
    """Compressed (CSR-like) map from an integer key to the list of integer values seen with it.

    Built from parallel int64 tensors ``keys [M]`` and ``values [M]``; duplicate (key, value) pairs are
    removed.  Lookups are vectorised with :func:`torch.searchsorted`, so a batch of ``B`` queries costs
    ``O(B log M + answers)``.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, value_range: int):
        keys = keys.to(torch.long)
        values = values.to(torch.long)
        # One sort on the combined key gives a unique, key-major ordering.
        combined = torch.unique(keys * value_range + values)
        self.value_range = int(value_range)
        self.combined = combined
        self.keys = torch.div(combined, value_range, rounding_mode="floor")
        self.values = combined - self.keys * value_range

    def __len__(self) -> int:
        return int(self.keys.numel())

    def lookup(self, query_keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All values stored under each query key.

        :param query_keys: int64 ``[B]``.
        :returns: ``(rows, values)``, two int64 tensors of equal length ``A`` (total number of answers):
            ``values[i]`` is stored under ``query_keys[rows[i]]``.  Rows are in ascending order.
        """
        query_keys = query_keys.to(torch.long).reshape(-1)
        if query_keys.device.type != "cpu" or self.keys.device.type != "cpu":
            return self._lookup_torch(query_keys)
        # NumPy's searchsorted/repeat are several times faster than torch's on CPU for this access pattern.
        keys = self.keys.numpy()
        q = query_keys.numpy()
        start = np.searchsorted(keys, q, side="left")
        counts = np.searchsorted(keys, q, side="right") - start
        total = int(counts.sum())
        rows = np.repeat(np.arange(q.shape[0], dtype=np.int64), counts)
        if total == 0:
            return torch.from_numpy(rows), torch.empty(0, dtype=torch.long)
        first = np.cumsum(counts) - counts
        positions = np.arange(total, dtype=np.int64) - np.repeat(first - start, counts)
        return torch.from_numpy(rows), torch.from_numpy(self.values.numpy()[positions])

    def _lookup_torch(self, query_keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        start = torch.searchsorted(self.keys, query_keys, right=False)
        end = torch.searchsorted(self.keys, query_keys, right=True)
        counts = end - start
        total = int(counts.sum())
        rows = torch.repeat_interleave(torch.arange(query_keys.numel(), device=query_keys.device), counts)
        if total == 0:
            return rows, torch.empty(0, dtype=torch.long, device=query_keys.device)
        first = torch.cumsum(counts, 0) - counts
        offsets = torch.arange(total, device=query_keys.device) - torch.repeat_interleave(first, counts)
        return rows, self.values[start[rows] + offsets]

    def counts(self, query_keys: torch.Tensor) -> torch.Tensor:
        """Number of values stored under each query key, int64 ``[B]``."""
        query_keys = query_keys.to(torch.long).reshape(-1)
        return torch.searchsorted(self.keys, query_keys, right=True) - torch.searchsorted(
            self.keys, query_keys, right=False
        )

    def contains(self, query_keys: torch.Tensor, query_values: torch.Tensor) -> torch.Tensor:
        """Whether each (key, value) pair is stored, bool ``[B]``."""
        q = query_keys.to(torch.long) * self.value_range + query_values.to(torch.long)
        if len(self.combined) == 0:
            return torch.zeros_like(q, dtype=torch.bool)
        pos = torch.searchsorted(self.combined, q).clamp_max(len(self.combined) - 1)
        return self.combined[pos] == q


class FilterIndex:
    """Known answers of (head, relation, ?) and (?, relation, tail) queries over a set of triples.

    Used for the *filtered* setting of link prediction (Bordes et al., 2013): when ranking the true
    tail of ``(h, r, t)``, every other ``e`` with ``(h, r, e)`` in the index is removed from the candidates.
    The index over train+valid+test is the standard filter; an index over train only gives 1-N labels and
    train-filtered negative sampling.

    :param triples: int64 ``[n, 3]`` in (h, r, t) order.
    :param num_entities: ``N``; entity ids must lie in ``[0, N)``.
    :param num_relations: ``R``; relation ids must lie in ``[0, R)``.
    """

    def __init__(self, triples: torch.Tensor, num_entities: int, num_relations: int):
        triples = _as_triples(triples, "filter")
        self.num_entities = int(num_entities)
        self.num_relations = int(num_relations)
        h, r, t = triples.unbind(1)
        self._tails = KeyValueIndex(h * self.num_relations + r, t, self.num_entities)
        self._heads = KeyValueIndex(r * self.num_entities + t, h, self.num_entities)

    def tail_key(self, h: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return h.to(torch.long) * self.num_relations + r.to(torch.long)

    def head_key(self, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return r.to(torch.long) * self.num_entities + t.to(torch.long)

    def known(self, queries: torch.Tensor, side: Side) -> tuple[torch.Tensor, torch.Tensor]:
        """Known answers for a batch of queries.

        :param queries: int64 ``[B, 3]`` (h, r, t); for ``side="tail"`` the tail column is ignored, for
            ``side="head"`` the head column is ignored.
        :returns: ``(rows, entities)``: entity ``entities[i]`` is a known answer of query ``rows[i]``.
        """
        if side == "tail":
            return self._tails.lookup(self.tail_key(queries[:, 0], queries[:, 1]))
        if side == "head":
            return self._heads.lookup(self.head_key(queries[:, 1], queries[:, 2]))
        raise ValueError(f"side must be 'head' or 'tail', got {side!r}")

    def num_known(self, queries: torch.Tensor, side: Side) -> torch.Tensor:
        """Number of known answers per query, int64 ``[B]``."""
        if side == "tail":
            return self._tails.counts(self.tail_key(queries[:, 0], queries[:, 1]))
        if side == "head":
            return self._heads.counts(self.head_key(queries[:, 1], queries[:, 2]))
        raise ValueError(f"side must be 'head' or 'tail', got {side!r}")

    def contains(self, triples: torch.Tensor) -> torch.Tensor:
        """Whether each triple ``[B, 3]`` is in the index, bool ``[B]``."""
        triples = _as_triples(triples, "query")
        return self._tails.contains(self.tail_key(triples[:, 0], triples[:, 1]), triples[:, 2])


def relation_statistics(
    triples: torch.Tensor, num_relations: int, count_duplicates: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tails per head (tph) and heads per tail (hpt) of every relation.

    ``tph(r)`` is the number of triples of ``r`` divided by the number of distinct (h, r) pairs, ``hpt(r)`` the
    number of triples of ``r`` divided by the number of distinct (r, t) pairs (Wang et al., 2014, TransH).
    Relations absent from ``triples`` get ``tph = hpt = 1``.

    :param triples: int64 ``[n, 3]`` (h, r, t).
    :param num_relations: ``R``; relation ids must lie in ``[0, R)``.
    :param count_duplicates: ``False`` counts a repeated row once (the mean number of distinct tails per head);
        ``True`` counts every row in the numerator, as OpenKE's ``benchmarks/*/n-n.py`` does (it appends each
        row's tail to the list of its (h, r) pair, repeats included, and divides the summed list lengths by the
        number of pairs).  The denominators are distinct pairs in both cases.
    :returns: two float64 tensors ``[R]``.
    """
    triples = _as_triples(triples, "statistics")
    if triples.numel() == 0:
        ones = torch.ones(num_relations, dtype=torch.float64)
        return ones, ones.clone()
    h, r, t = triples.unbind(1)
    # Distinct rows through 1-D keys (a sort of int64 scalars; unique(dim=0) is far slower on millions of rows).
    n_ent = int(torch.maximum(h.max(), t.max())) + 1
    key_hr = r * n_ent + h
    key_rt = r * n_ent + t
    if count_duplicates:
        n_triples = torch.bincount(r, minlength=num_relations)
    else:
        if (int(r.max()) + 1) * n_ent * n_ent < 2**62:
            distinct_r = torch.div(torch.unique(key_hr * n_ent + t), n_ent * n_ent, rounding_mode="floor")
        else:  # the combined key would overflow int64
            distinct_r = torch.unique(triples, dim=0)[:, 1]
        n_triples = torch.bincount(distinct_r, minlength=num_relations)
    n_hr = torch.bincount(torch.div(torch.unique(key_hr), n_ent, rounding_mode="floor"), minlength=num_relations)
    n_rt = torch.bincount(torch.div(torch.unique(key_rt), n_ent, rounding_mode="floor"), minlength=num_relations)
    n_triples, n_hr, n_rt = n_triples.double(), n_hr.double(), n_rt.double()
    tph = torch.where(n_hr > 0, n_triples / n_hr.clamp_min(1), torch.ones_like(n_hr))
    hpt = torch.where(n_rt > 0, n_triples / n_rt.clamp_min(1), torch.ones_like(n_rt))
    return tph, hpt


def relation_categories(
    triples: torch.Tensor, num_relations: int, threshold: float = 1.5, count_duplicates: bool = True
) -> torch.Tensor:
    """Category of each relation: 0 = 1-1, 1 = 1-N, 2 = N-1, 3 = N-N (Bordes et al., 2013).

    Rule of OpenKE's ``benchmarks/*/n-n.py``: 1-1 if tph < 1.5 and hpt < 1.5; 1-N if tph >= 1.5 and hpt < 1.5;
    N-1 if tph < 1.5 and hpt >= 1.5; N-N otherwise, with tph/hpt from :func:`relation_statistics`.  OpenKE
    computes them over train + valid + test with repeated rows counted (``count_duplicates=True``, the default
    here); pass those triples (:attr:`TripleSet.all_triples`) to reproduce its ``test2id_all.txt`` codes.

    :param triples: int64 ``[n, 3]`` (h, r, t) the statistics are taken from.
    :param count_duplicates: see :func:`relation_statistics`.
    :returns: int64 ``[R]``; names in :data:`CATEGORY_NAMES`.  Relations absent from ``triples`` are 1-1.
    """
    tph, hpt = relation_statistics(triples, num_relations, count_duplicates=count_duplicates)
    many_tails = tph >= threshold
    many_heads = hpt >= threshold
    return many_tails.long() + 2 * many_heads.long()


@dataclass
class TripleSet:
    """A knowledge graph split into train / valid / test, with its entity and relation labels.

    :param train, valid, test: int64 ``[n, 3]`` (h, r, t).  ``valid``/``test`` may be empty.
    :param entity_labels: ``N`` names; ``entity_labels[i]`` names entity id ``i``.
    :param relation_labels: ``R`` names.
    :param name: dataset name used in reports and cache keys.
    :raises ValueError: on a wrong shape or an id out of range.
    """

    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    entity_labels: list[str]
    relation_labels: list[str]
    name: str = "unnamed"
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.train = _as_triples(self.train, "train")
        self.valid = _as_triples(self.valid, "valid")
        self.test = _as_triples(self.test, "test")
        self.entity_labels = list(self.entity_labels)
        self.relation_labels = list(self.relation_labels)
        for split in SPLITS:
            x = getattr(self, split)
            if x.numel() == 0:
                continue
            for col, limit, what in ((0, self.num_entities, "head"), (1, self.num_relations, "relation"),
                                     (2, self.num_entities, "tail")):
                lo, hi = int(x[:, col].min()), int(x[:, col].max())
                if lo < 0 or hi >= limit:
                    raise ValueError(
                        f"{self.name} {split}: {what} id out of range [0, {limit}): min {lo}, max {hi}"
                    )

    # ------------------------------------------------------------------ sizes and maps
    @property
    def num_entities(self) -> int:
        return len(self.entity_labels)

    @property
    def num_relations(self) -> int:
        return len(self.relation_labels)

    def split(self, name: str) -> torch.Tensor:
        """The triples of split ``name`` (``train``, ``valid``, ``valid_clean`` or ``test``)."""
        if name == "valid_clean":
            return self.valid_clean
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS + ('valid_clean',)}")
        return getattr(self, name)

    @cached_property
    def entity_to_id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.entity_labels)}

    @cached_property
    def relation_to_id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.relation_labels)}

    # ------------------------------------------------------------------ derived structures
    @cached_property
    def all_triples(self) -> torch.Tensor:
        """train + valid + test, int64 ``[n, 3]`` (duplicates kept)."""
        return torch.cat([self.train, self.valid, self.test], 0)

    @cached_property
    def filter_index(self) -> FilterIndex:
        """The standard filter over train + valid + test."""
        return FilterIndex(self.all_triples, self.num_entities, self.num_relations)

    @cached_property
    def train_index(self) -> FilterIndex:
        """Known answers over train only (1-N labels, train-filtered negative sampling)."""
        return FilterIndex(self.train, self.num_entities, self.num_relations)

    @cached_property
    def valid_clean(self) -> torch.Tensor:
        """The validation split de-duplicated and minus every triple that is also in train or test.

        Model selection uses this set: DB15K's ``valid2id.txt`` has 9,904 rows but only 7,481 unique
        triples, 6,584 of which are in train and 824 in test (see ``docs/benchmarks.md``).
        """
        if self.valid.numel() == 0:
            return self.valid
        valid = torch.unique(self.valid, dim=0)
        other = FilterIndex(torch.cat([self.train, self.test], 0), self.num_entities, self.num_relations)
        return valid[~other.contains(valid)]

    @cached_property
    def relation_categories(self) -> torch.Tensor:
        """1-1/1-N/N-1/N-N code of each relation (int64 ``[R]``), by OpenKE's ``n-n.py`` rule.

        Statistics over train + valid + test with repeated rows counted, as OpenKE computes the categories of its
        ``1-1.txt`` ... ``n-n.txt`` and ``test2id_all.txt`` files, so per-category tables compare with
        OpenKE-based papers (on DB15K and MKG-W the codes equal NativE's shipped ``test2id_all.txt``).
        """
        return relation_categories(self.all_triples, self.num_relations, count_duplicates=True)

    @cached_property
    def tail_corruption_probability(self) -> torch.Tensor:
        """Bernoulli negative sampling: probability of replacing the tail, ``hpt / (tph + hpt)``, float ``[R]``.

        From Wang et al. (2014), TransH, as used by OpenKE; statistics from train.
        """
        tph, hpt = relation_statistics(self.train, self.num_relations)
        return (hpt / (tph + hpt)).float()

    def with_reciprocal(self, triples: torch.Tensor) -> torch.Tensor:
        """Append the reciprocal triple ``(t, r + R, h)`` of every triple; int64 ``[2n, 3]``."""
        inverse = torch.stack([triples[:, 2], triples[:, 1] + self.num_relations, triples[:, 0]], 1)
        return torch.cat([triples, inverse], 0)

    def summary(self) -> dict:
        """Counts for reports: entities, relations and the size of each split."""
        return {
            "name": self.name,
            "entities": self.num_entities,
            "relations": self.num_relations,
            "train": int(self.train.shape[0]),
            "valid": int(self.valid.shape[0]),
            "valid_clean": int(self.valid_clean.shape[0]),
            "test": int(self.test.shape[0]),
        }
