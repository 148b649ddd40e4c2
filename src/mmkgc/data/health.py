"""Data-health report: duplicates, split overlaps, unseen entities and the cleaned validation set.

Benchmarks in this field carry defects that silently change results (methods.md §1.6): DB15K's
``valid2id.txt`` has 9,904 rows but only 7,481 unique triples, 6,584 of which are also in train and 824 in
test, so early stopping on it would select models on training and test data.  :func:`health_report` measures
such problems for any :class:`~mmkgc.data.triples.TripleSet` and phrases them as warnings; model selection in
mmkgc uses :attr:`TripleSet.valid_clean <mmkgc.data.triples.TripleSet.valid_clean>` (validation minus
duplicates and minus everything in train or test).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np

from mmkgc.data.triples import SPLITS, TripleSet

__all__ = ["HealthReport", "SplitStats", "UnseenStats", "health_report"]


@dataclass
class SplitStats:
    """Row counts of one split.

    :param rows: number of rows in the file (duplicates included).
    :param unique: number of distinct (h, r, t) triples.
    :param duplicates: ``rows - unique``.
    :param self_loops: rows with ``head == tail``.
    """

    rows: int
    unique: int
    duplicates: int
    self_loops: int


@dataclass
class UnseenStats:
    """Triples of an evaluation split whose entities or relation never occur in train.

    :param triples_with_unseen_entity: rows whose head or tail is absent from train.
    :param unseen_entities: distinct entities of the split absent from train.
    :param triples_with_unseen_relation: rows whose relation is absent from train.
    :param unseen_relations: distinct relations of the split absent from train.
    """

    triples_with_unseen_entity: int
    unseen_entities: int
    triples_with_unseen_relation: int
    unseen_relations: int


@dataclass
class HealthReport:
    """Result of :func:`health_report`.

    :param name: dataset name.
    :param num_entities, num_relations: sizes of the id maps.
    :param splits: ``train`` / ``valid`` / ``test`` -> :class:`SplitStats`.
    :param overlaps: ``"train&valid"``, ``"train&test"``, ``"valid&test"`` -> number of distinct triples in both.
    :param unseen: ``valid`` / ``test`` -> :class:`UnseenStats` (relative to train).
    :param valid_clean: size of the cleaned validation set (the default selection split).
    :param selection: what model selection uses, in words (``evaluation.split`` / ``evaluation.protocol``).
    :param entities_without_train_triples: entities that occur in no train triple (isolated in training).
    :param repeated_entity_labels, repeated_relation_labels: labels shared by more than one id.
    :param warnings: human-readable findings, most important first.
    """

    name: str
    num_entities: int
    num_relations: int
    splits: dict[str, SplitStats]
    overlaps: dict[str, int]
    unseen: dict[str, UnseenStats]
    valid_clean: int
    entities_without_train_triples: int
    repeated_entity_labels: int = 0
    repeated_relation_labels: int = 0
    selection: str = "the cleaned validation set"
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no warning was raised."""
        return not self.warnings

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dictionary (nested dataclasses become dicts)."""
        return asdict(self)

    def to_markdown(self) -> str:
        """A short Markdown report: a table per topic and the warnings as a list."""
        lines = [f"## Data health: {self.name}", "",
                 f"{self.num_entities:,} entities, {self.num_relations:,} relations.", "",
                 "| split | rows | unique | duplicates | self-loops |", "|---|---:|---:|---:|---:|"]
        for split, s in self.splits.items():
            lines.append(f"| {split} | {s.rows:,} | {s.unique:,} | {s.duplicates:,} | {s.self_loops:,} |")
        lines += ["", "| overlap (unique triples) | count |", "|---|---:|"]
        lines += [f"| {k.replace('&', ' ∩ ')} | {v:,} |" for k, v in self.overlaps.items()]
        lines += ["", "| split | triples with an entity unseen in train | unseen entities "
                  "| triples with a relation unseen in train | unseen relations |",
                  "|---|---:|---:|---:|---:|"]
        for split, u in self.unseen.items():
            lines.append(f"| {split} | {u.triples_with_unseen_entity:,} | {u.unseen_entities:,} "
                         f"| {u.triples_with_unseen_relation:,} | {u.unseen_relations:,} |")
        lines += ["", f"Cleaned validation set: {self.valid_clean:,} triples. Model selection uses {self.selection}.",
                  f"Entities without any train triple: {self.entities_without_train_triples:,}.", ""]
        if self.warnings:
            lines.append("**Warnings**")
            lines.append("")
            lines += [f"- {w}" for w in self.warnings]
        else:
            lines.append("No problems found.")
        return "\n".join(lines) + "\n"


def _keys(x: np.ndarray, num_entities: int, num_relations: int) -> np.ndarray:
    """One int64 key per (h, r, t) row; equal keys <=> equal triples."""
    n, r = max(num_entities, 1), max(num_relations, 1)
    if n * n * r < 2**62:
        return (x[:, 0] * r + x[:, 1]) * n + x[:, 2]
    # Too large for one int64: fall back to a byte view of the row (equality is all that matters).
    return np.ascontiguousarray(x).view(np.dtype((np.void, 3 * x.itemsize))).ravel()


def _repeated(labels: list[str]) -> int:
    return sum(c - 1 for c in Counter(labels).values() if c > 1)


#: How the health report words the selection split (``evaluation.split``).
SELECTION_WORDS = {
    "valid_clean": "the cleaned validation set",
    "valid": "the validation split as given (duplicates and triples shared with train or test included)",
}


def health_report(triples: TripleSet, selection_split: str = "valid_clean", protocol: str = "filtered"
                  ) -> HealthReport:
    """Measure duplicates, split overlaps and unseen entities of a dataset.

    All counts are exact.  Overlaps count distinct triples present in both splits; unseen counts are relative
    to the *train* split (an entity or relation is "seen" when it occurs in at least one train triple, as
    head or tail for entities).

    :param triples: the dataset.
    :param selection_split: the split model selection ranks (``evaluation.split``: ``valid_clean`` or ``valid``);
        the warnings say which one a run uses.
    :param protocol: ``evaluation.protocol`` (``filtered``, or ``vemp_sampled``: ranked against sampled
        candidates, said in the report).
    :raises ValueError: an unknown ``selection_split``.
    :returns: a :class:`HealthReport`; ``report.warnings`` lists every finding in words, for example for
        DB15K: ``"valid has 9,904 rows but 7,481 unique triples; 6,584 also in train, 824 in test; model
        selection uses the cleaned validation set of 73 triples"``.
    """
    N, R = triples.num_entities, triples.num_relations
    arrays = {s: triples.split(s).numpy() for s in SPLITS}
    keys = {s: np.unique(_keys(a, N, R)) for s, a in arrays.items()}

    splits = {
        s: SplitStats(rows=int(a.shape[0]), unique=int(keys[s].shape[0]),
                      duplicates=int(a.shape[0] - keys[s].shape[0]),
                      self_loops=int((a[:, 0] == a[:, 2]).sum()) if a.shape[0] else 0)
        for s, a in arrays.items()
    }
    overlaps = {
        f"{a}&{b}": int(np.intersect1d(keys[a], keys[b], assume_unique=True).shape[0])
        for a, b in (("train", "valid"), ("train", "test"), ("valid", "test"))
    }

    train = arrays["train"]
    seen_entity = np.zeros(N, dtype=bool)
    seen_entity[train[:, 0]] = True
    seen_entity[train[:, 2]] = True
    seen_relation = np.zeros(R, dtype=bool)
    seen_relation[train[:, 1]] = True
    unseen: dict[str, UnseenStats] = {}
    for s in ("valid", "test"):
        a = arrays[s]
        bad_h, bad_t = ~seen_entity[a[:, 0]], ~seen_entity[a[:, 2]]
        bad_r = ~seen_relation[a[:, 1]]
        unseen_ents = np.union1d(a[bad_h, 0], a[bad_t, 2])
        unseen[s] = UnseenStats(
            triples_with_unseen_entity=int((bad_h | bad_t).sum()),
            unseen_entities=int(unseen_ents.shape[0]),
            triples_with_unseen_relation=int(bad_r.sum()),
            unseen_relations=int(np.unique(a[bad_r, 1]).shape[0]),
        )
    valid_clean = int(triples.valid_clean.shape[0])

    report = HealthReport(
        name=triples.name,
        num_entities=N,
        num_relations=R,
        splits=splits,
        overlaps=overlaps,
        unseen=unseen,
        valid_clean=valid_clean,
        entities_without_train_triples=int((~seen_entity).sum()),
        repeated_entity_labels=_repeated(triples.entity_labels),
        repeated_relation_labels=_repeated(triples.relation_labels),
        selection=_selection_words(selection_split, protocol),
    )
    report.warnings = _warnings(report, selection_split)
    return report


def _n(count: int, singular: str, plural: str | None = None) -> str:
    """``"1 triple"`` / ``"3 triples"`` with a thousands separator."""
    return f"{count:,} {singular if count == 1 else (plural or singular + 's')}"


def _selection_words(split: str, protocol: str) -> str:
    if split not in SELECTION_WORDS:
        raise ValueError(f"unknown selection split {split!r} (expected one of {', '.join(SELECTION_WORDS)})")
    words = SELECTION_WORDS[split]
    return words if protocol == "filtered" else f"{words}, ranked by the {protocol} protocol"


def _warnings(rep: HealthReport, selection_split: str = "valid_clean") -> list[str]:
    out: list[str] = []
    v = rep.splits["valid"]
    in_train, in_test = rep.overlaps["train&valid"], rep.overlaps["valid&test"]
    if v.rows and (v.duplicates or in_train or in_test):
        out.append(
            f"valid has {v.rows:,} rows but {v.unique:,} unique triples; {in_train:,} also in train, "
            f"{in_test:,} in test; "
            + (f"model selection uses the cleaned validation set of {rep.valid_clean:,} triples"
               if selection_split == "valid_clean" else f"model selection uses {rep.selection}")
        )
    if v.rows and rep.valid_clean == 0 and selection_split == "valid_clean":
        out.append("the cleaned validation set is empty: validation-based model selection is impossible")
    if v.rows == 0:
        out.append("there is no validation split: model selection must use the final epoch")
    if rep.overlaps["train&test"]:
        out.append(f"test shares {_n(rep.overlaps['train&test'], 'unique triple')} with train (test leakage)")
    for split in ("train", "test"):
        s = rep.splits[split]
        if s.duplicates:
            out.append(f"{split} has {s.rows:,} rows but {s.unique:,} unique triples ({s.duplicates:,} duplicates)")
    for split in ("test", "valid"):
        u = rep.unseen[split]
        rows = rep.splits[split].rows
        if u.triples_with_unseen_entity:
            share = 100.0 * u.triples_with_unseen_entity / rows
            verb = "involves" if u.triples_with_unseen_entity == 1 else "involve"
            out.append(
                f"{_n(u.triples_with_unseen_entity, split + ' triple')} ({share:.1f}%) {verb} an entity never seen"
                f" in train ({_n(u.unseen_entities, 'distinct entity', 'distinct entities')}); they stay in the"
                f" {split} set and are ranked like the others"
            )
        if u.triples_with_unseen_relation:
            verb = "uses" if u.triples_with_unseen_relation == 1 else "use"
            out.append(
                f"{_n(u.triples_with_unseen_relation, split + ' triple')} {verb} a relation never seen in train"
                f" ({_n(u.unseen_relations, 'distinct relation')})"
            )
    if rep.repeated_entity_labels:
        out.append(f"entity labels are not unique ({_n(rep.repeated_entity_labels, 'id')} reuse an earlier label)")
    if rep.repeated_relation_labels:
        out.append(f"relation labels are not unique ({_n(rep.repeated_relation_labels, 'id')} reuse an earlier label)")
    return out
