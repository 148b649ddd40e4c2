"""The Python API script of docs/usage.md runs as written (issue 17 acceptance): its two ``python`` blocks are read
from the "Python API" section, so a docs edit is tested too.

The first block trains TransE / DistMult / ComplEx concat models on the synthetic KG in memory, saves them and
exports them for PyKEEN.  The second runs in a new process with a new, empty ``MMKGC_HOME`` (feature cache) and
with the synthetic generator and :func:`mmkgc.pipeline.load_data` replaced by functions that fail, so loading
the saved models cannot fall back on the dataset; it asserts PyKEEN's scores equal mmkgc's.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
USAGE = REPO / "docs" / "usage.md"

#: Prepended to the second block: nothing may regenerate or read the dataset.
NO_DATASET = '''
import functools
import mmkgc.data.synthetic as _syn
import mmkgc.pipeline as _pl

def _refuse(original):
    @functools.wraps(original)  # keeps the signature the config validator inspects
    def refuse(*args, **kwargs):
        raise AssertionError(f"{original.__name__} was called: the saved model is not self-contained")
    return refuse

_syn.make_synthetic_mmkg = _refuse(_syn.make_synthetic_mmkg)
_pl.load_data = _refuse(_pl.load_data)
'''


def api_blocks() -> list[str]:
    """The ``python`` code blocks of the "Python API" section of docs/usage.md, in order."""
    text = USAGE.read_text(encoding="utf-8")
    section = re.search(r"^## Python API\n(.*?)(?=^## )", text, flags=re.M | re.S)
    assert section, "docs/usage.md has no '## Python API' section"
    return re.findall(r"^```python\n(.*?)^```", section.group(1), flags=re.M | re.S)


def _python(code: str, cwd: Path, home: Path) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd), "MMKGC_HOME": str(home),
           "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CI": "1"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=600)


def test_the_usage_doc_has_the_two_blocks():
    blocks = api_blocks()
    assert len(blocks) == 2
    assert "mmkgc.pipeline(" in blocks[0] and ".save(" in blocks[0] and "export_pykeen(" in blocks[0]
    assert "mmkgc.load(" in blocks[1] and "predict_target(" in blocks[1] and "allclose" in blocks[1]


def test_the_usage_api_script_runs_and_pykeen_scores_equal_ours(tmp_path: Path):
    pytest.importorskip("pykeen")
    first, second = api_blocks()
    done = _python(first, tmp_path, tmp_path / "home-train")
    assert done.returncode == 0, done.stderr[-4000:]
    for scorer in ("transe", "distmult", "complex"):
        assert (tmp_path / "models" / scorer / "features.safetensors").is_file()
        assert (tmp_path / "models" / f"{scorer}-pykeen" / "training" / "numeric_triples.tsv.gz").is_file()
    assert not (tmp_path / "runs").exists()  # the in-memory runs wrote no run directory
    fresh_home = tmp_path / "home-fresh"
    done = _python(NO_DATASET + second, tmp_path, fresh_home)
    assert done.returncode == 0, done.stderr[-4000:]
    for scorer in ("transe", "distmult", "complex"):
        assert f"{scorer} scores equal PyKEEN's on" in done.stdout
    assert not fresh_home.exists() or not any(fresh_home.rglob("*.safetensors"))  # nothing cached or encoded
