"""``benchmarks/db15k_methods.py``: the row's variant string and the merge of new rows into the method table."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
_spec = importlib.util.spec_from_file_location("db15k_methods", BENCH / "db15k_methods.py")
methods = importlib.util.module_from_spec(_spec)
sys.modules["db15k_methods"] = methods
_spec.loader.exec_module(methods)


def test_variant_names_batch_negatives_lr_and_the_adversarial_schedule():
    plain = {"training": {"batch_size": 4096, "num_negatives": 64, "lr": 0.002}}
    assert methods.variant(plain) == "batch 4096, 64 negatives, lr 0.002"
    mat = {"training": {"batch_size": 4096, "num_negatives": 64, "lr": 0.002,
                        "adversarial": {"kind": "mat", "mu": 0.004, "every": 4}}}
    assert methods.variant(mat) == "batch 4096, 64 negatives, lr 0.002, mat mu 0.004 every 4"
    one_to_n = {"training": {"loop": "one_to_n", "batch_size": 1024, "lr": 0.01}}
    assert methods.variant(one_to_n) == "batch 1024, lr 0.01"


def test_merge_keeps_old_rows_and_marks_the_replaced_one():
    previous = [{"config": "a", "test_mrr": 0.1}, {"config": "b", "test_mrr": 0.2, "current": False}]
    merged = methods.merge(previous, [{"config": "a", "test_mrr": 0.3}, {"config": "c", "test_mrr": 0.4}])
    assert merged == [{"config": "a", "test_mrr": 0.1, "current": False},
                      {"config": "b", "test_mrr": 0.2, "current": False},
                      {"config": "a", "test_mrr": 0.3, "current": True},
                      {"config": "c", "test_mrr": 0.4, "current": True}]
