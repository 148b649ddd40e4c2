"""``benchmarks/db15k_budget_curves.py``: the equal-epoch / equal-CPU-time numbers, against hand-written run logs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmark_modules import load_benchmark as _load


curves = _load("db15k_budget_curves")


def _run(tmp_path: Path, name: str, records: list[dict]) -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return d


def _epochs(cpu: list[float], valid: dict[int, float], partial_last: bool = False) -> list[dict]:
    out, total = [], 0.0
    for i, c in enumerate(cpu, start=1):
        total += c
        rec = {"epoch": i, "loss": 0.1, "training_seconds": total, "cpu_seconds": c,
               "partial": partial_last and i == len(cpu)}
        if i in valid:
            rec["valid"] = {"mrr": valid[i]}
        out.append(rec)
    return out


def test_cost_equal_epoch_and_equal_time_values(tmp_path):
    # fast: 10 s epochs, validated at 2 and 4; slow: 30 s epochs (the third cut by the budget at 5 s)
    fast = _run(tmp_path, "fast", _epochs([10, 12, 10, 14], {2: 0.10, 4: 0.20}))
    slow = _run(tmp_path, "slow", _epochs([30, 30, 5], {2: 0.30, 3: 0.25}, partial_last=True))
    runs = [curves.read_run(fast), curves.read_run(slow)]
    assert runs[0].cpu_per_epoch == pytest.approx(11.0)  # median of 10, 12, 10, 14
    assert runs[1].cpu_per_epoch == pytest.approx(30.0)  # the budget-cut 5 s epoch left out
    assert runs[0].mrr_at_epoch(4) == pytest.approx(20.0) and runs[0].mrr_at_epoch(3) is None
    assert runs[1].mrr_at_epoch(2) == pytest.approx(30.0)
    # within 40 s: fast validated at 22 s (10 %), slow not yet (its epoch 2 ends at 60 s)
    assert runs[0].best_within(40) == pytest.approx(10.0) and runs[1].best_within(40) is None
    # within 65 s: slow's best is epoch 2's 30 % (its epoch 3, 25 %, ends at 65 s too: the best is kept)
    assert runs[1].best_within(65) == pytest.approx(30.0)
    assert runs[0].best_within(float("inf")) == pytest.approx(20.0)
    text = curves.tables(runs, [2, 4], [40, 65])
    assert "| slow | 3 | 30.0 | 2.73 |" in text  # 30 / 11
    assert "| fast | 10.0 | 20.0 |" in text
    assert "| slow | - | 30.0 | 30.0 |" in text  # within 40 s, 65 s, end


def test_wall_clock_run_is_refused(tmp_path):
    d = _run(tmp_path, "wall", [{"epoch": 1, "training_seconds": 5.0, "seconds": 5.0}])
    with pytest.raises(SystemExit, match="process_cpu"):
        curves.read_run(d)


def test_cli_writes_json_and_checks_labels(tmp_path, capsys):
    a = _run(tmp_path, "a", _epochs([10, 10], {2: 0.5}))
    out = tmp_path / "c.json"
    assert curves.main([str(a), "--epochs", "2", "--seconds", "15", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())
    assert row["valid_mrr_at_epoch"] == {"2": 50.0}
    assert row["best_valid_mrr_within_cpu_seconds"] == {"15": None}
    assert curves.main([str(a), "--labels", "x", "y"]) == 2
    assert "one label per run" in capsys.readouterr().err
