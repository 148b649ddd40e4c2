"""Every ``mmkgc`` command of the README runs as written (issue 15.6): the commands are read from the README's
``bash`` blocks, so a README edit is tested too.

Budgets are made tiny without changing what a command does: ``train`` gets ``--set`` overrides (a 1-second time
budget, no test evaluation), and the method presets of the "Methods" block train on the built-in synthetic KG
(``--set dataset.synthetic=...``) instead of DB15K.  DB15K comes from ``../shared/datasets`` through
``MMKGC_DATA_DIR``, as the README says to use a local copy; nothing is downloaded.  Commands that need inputs the
README says to prepare first (VEMP's ``features extract --encoder vemp`` and ``sweep``: token tables; ``mmkgc enrich all``: images and a captioning
model) and ``mmkgc demo`` (run in full by tests/test_demo.py) are checked to parse (``--help``).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from mmkgc import cli

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

TINY_BUDGET = ["--set", "training.time_budget_minutes=0.02", "--set", "evaluation.test=false", "--device", "cpu"]
SYNTHETIC = ["--set", "dataset.name=null",
             "--set", "dataset.synthetic={seed: 0, num_entities: 240, num_relations: 6, num_types: 6}"]
NEEDS_PREPARED_INPUTS = {("features", "extract"), ("sweep",), ("enrich", "all"), ("demo",)}


def readme_commands() -> list[tuple[str, list[str]]]:
    """``(section title, argv after 'mmkgc')`` for every ``mmkgc ...`` line of the README's bash blocks, with
    backslash continuations joined and ``#`` comments removed."""
    text = README.read_text(encoding="utf-8")
    commands, section = [], ""
    for match in re.finditer(r"^## ([^\n]+)$|^```bash\n(.*?)^```", text, flags=re.M | re.S):
        if match.group(1):
            section = match.group(1).strip()
            continue
        block = match.group(2).replace("\\\n", " ")
        for line in block.splitlines():
            line = line.strip()
            if line.startswith("mmkgc "):
                argv = shlex.split(line, comments=True)[1:]
                commands.append((section, argv))
    return commands


def test_the_readme_lists_the_commands_this_test_runs():
    commands = readme_commands()
    sections = {section for section, _ in commands}
    assert {"On a fresh machine", "Real data: DB15K", "Methods"} <= sections
    assert ["datasets", "check", "DB15K", "--download"] in [argv for _, argv in commands]
    assert sum(argv[0] == "train" for _, argv in commands) >= 6


@pytest.mark.slow
def test_every_readme_command_runs(shared_datasets, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # runs/<name> go here
    monkeypatch.setenv("MMKGC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MMKGC_DATA_DIR", str(shared_datasets))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    ran = []
    for section, argv in readme_commands():
        if tuple(argv[:2]) in NEEDS_PREPARED_INPUTS or tuple(argv[:1]) in NEEDS_PREPARED_INPUTS:
            argv = [*argv[:2], "--help"] if argv[0] != "demo" else ["demo", "--help"]
        elif argv[0] == "train":
            argv = [str(REPO / argv[1]), *argv[2:]]
            argv = ["train", *argv, *TINY_BUDGET]
            # DB15K itself for the structure-only run evaluate/predict use; the synthetic KG for the others
            if section != "Real data: DB15K" or "text" in Path(argv[1]).name:
                argv += SYNTHETIC
        capsys.readouterr()
        code = cli.run(argv)
        out, err = capsys.readouterr()
        assert code == 0, f"mmkgc {shlex.join(argv)} exited {code}:\n{err[-3000:]}"
        assert "Traceback" not in err
        ran.append(argv)
        if argv[:2] == ["predict", "runs/db15k-rotate"]:
            assert "top 10 for (<http://dbpedia.org/resource/Alabama>" in out
        if argv[:2] == ["evaluate", "runs/db15k-rotate"]:
            assert "realistic" in out
    assert any(a[:2] == ["predict", "runs/db15k-rotate"] for a in ran)
