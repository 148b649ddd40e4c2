"""The layering contracts of .importlinter hold (CI also runs `lint-imports`), and they can fail: a module that
imports upwards breaks them."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("importlinter")


def _lint(src: Path, config: Path) -> subprocess.CompletedProcess:
    code = ("import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports(config_filename={str(config)!r}, no_cache=True, no_logo=True))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"}, timeout=300)


def test_the_layering_contracts_hold():
    done = _lint(ROOT / "src", ROOT / ".importlinter")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 kept, 0 broken" in done.stdout


def test_an_upward_import_breaks_the_layers_contract(tmp_path):
    """A copy of the package where the data layer imports the pipeline: the layers contract names the import."""
    shutil.copytree(ROOT / "src" / "mmkgc", tmp_path / "mmkgc",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", ".ruff_cache"))
    bad = tmp_path / "mmkgc" / "data" / "upward.py"
    bad.write_text("from mmkgc.pipeline import load_data  # noqa: F401\n")
    done = _lint(tmp_path, ROOT / ".importlinter")
    assert done.returncode == 1
    assert "mmkgc.data is not allowed to import mmkgc.pipeline" in done.stdout
    assert "mmkgc.data.upward -> mmkgc.pipeline" in done.stdout
