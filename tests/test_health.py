"""Data-health report (mmkgc.data.health) on hand-made graphs and on the real DB15K / MKG-W files."""

from __future__ import annotations

import json

import pytest
import torch

from mmkgc.data.health import health_report
from mmkgc.data.triples import TripleSet


def toy() -> TripleSet:
    # 6 entities, 2 relations.  Entity 5 and relation 1 never occur in train.
    train = torch.tensor([[0, 0, 1], [1, 0, 2], [2, 0, 3], [3, 0, 4], [0, 0, 1], [4, 0, 4]])
    valid = torch.tensor([[0, 0, 1],   # also in train
                          [1, 0, 3],   # clean
                          [1, 0, 3],   # duplicate of the previous row
                          [2, 0, 4],   # also in test
                          [3, 0, 2]])  # clean
    test = torch.tensor([[2, 0, 4], [4, 0, 5], [0, 1, 2], [5, 1, 5]])
    return TripleSet(train=train, valid=valid, test=test,
                     entity_labels=["a", "b", "c", "d", "e", "b"], relation_labels=["r", "s"], name="toy")


def test_counts_on_a_hand_made_graph():
    rep = health_report(toy())
    assert rep.num_entities == 6 and rep.num_relations == 2
    assert (rep.splits["train"].rows, rep.splits["train"].unique, rep.splits["train"].duplicates) == (6, 5, 1)
    assert rep.splits["train"].self_loops == 1
    assert (rep.splits["valid"].rows, rep.splits["valid"].unique) == (5, 4)
    assert rep.overlaps == {"train&valid": 1, "train&test": 0, "valid&test": 1}
    # test rows with entity 5: [4,0,5] and [5,1,5]; relation 1: [0,1,2] and [5,1,5]
    assert rep.unseen["test"].triples_with_unseen_entity == 2
    assert rep.unseen["test"].unseen_entities == 1
    assert rep.unseen["test"].triples_with_unseen_relation == 2
    assert rep.unseen["test"].unseen_relations == 1
    assert rep.unseen["valid"].triples_with_unseen_entity == 0
    assert rep.valid_clean == 2  # {(1,0,3), (3,0,2)}
    assert rep.entities_without_train_triples == 1
    assert rep.repeated_entity_labels == 1 and rep.repeated_relation_labels == 0
    text = "\n".join(rep.warnings)
    assert ("valid has 5 rows but 4 unique triples; 1 also in train, 1 in test; model selection uses the "
            "cleaned validation set of 2 triples") in text
    assert "train has 6 rows but 5 unique triples (1 duplicate" in text
    assert "2 test triples (50.0%) involve an entity never seen in train (1 distinct entity)" in text
    assert "2 test triples use a relation never seen in train (1 distinct relation)" in text
    assert "entity labels are not unique" in text
    assert not rep.ok


def test_clean_graph_has_no_warnings_and_serialises():
    ts = TripleSet(train=torch.tensor([[0, 0, 1], [1, 0, 2], [2, 0, 0]]), valid=torch.tensor([[0, 0, 2]]),
                   test=torch.tensor([[1, 0, 0]]), entity_labels=["a", "b", "c"], relation_labels=["r"])
    rep = health_report(ts)
    assert rep.ok and rep.warnings == []
    d = rep.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["splits"]["train"] == {"rows": 3, "unique": 3, "duplicates": 0, "self_loops": 0}
    assert "No problems found." in rep.to_markdown()


def test_missing_validation_split_is_reported():
    ts = TripleSet(train=torch.tensor([[0, 0, 1]]), valid=None, test=torch.tensor([[1, 0, 0]]),
                   entity_labels=["a", "b"], relation_labels=["r"])
    rep = health_report(ts)
    assert rep.splits["valid"].rows == 0
    assert any("no validation split" in w for w in rep.warnings)


def test_test_leakage_is_reported():
    ts = TripleSet(train=torch.tensor([[0, 0, 1], [1, 0, 0]]), valid=torch.tensor([[0, 0, 0]]),
                   test=torch.tensor([[1, 0, 0]]), entity_labels=["a", "b"], relation_labels=["r"])
    rep = health_report(ts)
    assert rep.overlaps["train&test"] == 1
    assert any("test shares 1 unique triple with train (test leakage)" in w for w in rep.warnings)


def test_db15k_defects_exact_numbers(db15k):
    rep = health_report(db15k)
    assert rep.splits["valid"].rows == 9904
    assert rep.splits["valid"].unique == 7481
    assert rep.overlaps == {"train&valid": 6584, "train&test": 0, "valid&test": 824}
    assert rep.splits["train"].duplicates == 0 and rep.splits["test"].duplicates == 0
    assert rep.valid_clean == 73
    # methods.md §1.1: 77 DB15K test triples have an entity unseen in train.
    assert rep.unseen["test"].triples_with_unseen_entity == 77
    assert rep.unseen["test"].unseen_entities == 57
    assert rep.warnings[0] == (
        "valid has 9,904 rows but 7,481 unique triples; 6,584 also in train, 824 in test; "
        "model selection uses the cleaned validation set of 73 triples"
    )
    md = rep.to_markdown()
    assert "| valid | 9,904 | 7,481 | 2,423 |" in md


def test_mkgw_unseen_entities(mkgw):
    rep = health_report(mkgw)
    # methods.md §1.1: 306 MKG-W test triples have an entity unseen in train; the splits are otherwise clean.
    assert rep.unseen["test"].triples_with_unseen_entity == 306
    assert rep.overlaps == {"train&valid": 0, "train&test": 0, "valid&test": 0}
    assert rep.valid_clean == 4276
    assert not any(w.startswith("valid has") for w in rep.warnings)


def test_the_warning_names_the_selection_split_the_run_uses():
    """``evaluation.split: valid`` (or the sampled protocol) must not be reported as the cleaned validation set."""
    ts = TripleSet(train=torch.tensor([[0, 0, 1], [1, 0, 2]]), valid=torch.tensor([[0, 0, 1], [2, 0, 0]]),
                   test=torch.tensor([[1, 0, 0]]), entity_labels=["a", "b", "c"], relation_labels=["r"])
    clean = health_report(ts)
    assert clean.valid_clean == 1
    assert clean.warnings[0] == ("valid has 2 rows but 2 unique triples; 1 also in train, 0 in test; model "
                                 "selection uses the cleaned validation set of 1 triples")
    raw = health_report(ts, "valid")
    assert raw.warnings[0] == ("valid has 2 rows but 2 unique triples; 1 also in train, 0 in test; model selection "
                               "uses the validation split as given (duplicates and triples shared with train or "
                               "test included)")
    assert "Model selection uses the validation split as given" in raw.to_markdown()
    sampled = health_report(ts, "valid_clean", "vemp_sampled")
    assert sampled.selection == "the cleaned validation set, ranked by the vemp_sampled protocol"
    with pytest.raises(ValueError, match="unknown selection split 'test'"):
        health_report(ts, "test")
    # an empty cleaned set only matters when selection uses it
    empty = TripleSet(train=torch.tensor([[0, 0, 1]]), valid=torch.tensor([[0, 0, 1]]), test=torch.tensor([[1, 0, 0]]),
                      entity_labels=["a", "b"], relation_labels=["r"])
    assert any("cleaned validation set is empty" in w for w in health_report(empty).warnings)
    assert not any("cleaned validation set is empty" in w for w in health_report(empty, "valid").warnings)
