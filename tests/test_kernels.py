"""The compiled CPU kernels as real source files: both build routes, no Python headers needed, package data."""

from __future__ import annotations

import fnmatch
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

from mmkgc.nn import kernels
from mmkgc.nn.distances import (
    _eager_l1,
    pairwise_complex_l1_distance,
    pairwise_l1_distance,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """An empty kernel cache and a process state that has loaded nothing yet."""
    monkeypatch.delenv("MMKGC_NO_COMPILE", raising=False)
    monkeypatch.setenv("MMKGC_HOME", str(tmp_path))
    monkeypatch.setattr(kernels, "_state", dict(kernels._state))
    kernels._reset()
    return tmp_path


def _check_values():
    g = torch.Generator().manual_seed(0)
    q, x = torch.randn(7, 10, generator=g), torch.randn(300, 10, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(pairwise_l1_distance(q, x, 1.5), _eager_l1(q, x, 1.5, False), rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(pairwise_complex_l1_distance(q, x, 2.0), _eager_l1(q, x, 2.0, True),
                                   rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("missing", ["c++ compiler", "ninja"])
def test_direct_compiler_route_builds_the_same_sources(fresh, monkeypatch, missing):
    """A CI machine with the Debian ``gcc`` package only (no ``c++``), or without ninja: the C compiler builds the
    same source files, and the kernels give the eager values."""
    def no_ninja(*args, **kwargs):
        raise RuntimeError("Ninja is required to load C++ extensions")

    if missing == "ninja":
        monkeypatch.setattr(kernels, "_build_cpp_extension", no_ninja)
    else:
        monkeypatch.setattr(kernels, "_cxx_compiler", lambda: None)
    assert kernels.available()
    info = kernels.build_info()
    assert info["route"] == "direct" and Path(info["path"]).is_relative_to(fresh / "kernels")
    _check_values()
    # a second process (state reset) reuses the cached library without compiling
    kernels._reset()
    monkeypatch.setattr(kernels, "_build_direct", no_ninja)
    assert kernels.available() and kernels.build_info()["path"] == info["path"]


def test_cpp_extension_route_needs_no_python_headers(tmp_path):
    """cpp_extension puts the Python include directory on the include path; pointing it at nothing must not matter,
    because the sources include nothing from it (CI machines may lack python3-dev)."""
    code = """
import sysconfig
real = sysconfig.get_path
sysconfig.get_path = lambda name, *a, **k: '/nonexistent/python-include' if name == 'include' else real(name, *a, **k)
from mmkgc.nn import kernels
assert kernels.available(), 'no kernels'
print(kernels.build_info()['route'])
"""
    env = {**os.environ, "MMKGC_HOME": str(tmp_path), "PYTHONPATH": str(ROOT / "src")}
    env.pop("MMKGC_NO_COMPILE", None)
    out = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-c", code], capture_output=True, text=True,
                         env=env, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "cpp_extension"
    ninja = (next((tmp_path / "kernels").iterdir()) / "build.ninja").read_text()
    assert "/nonexistent/python-include" in ninja  # the build really ran without the headers


def test_no_compile_switch_disables_the_kernels_silently(monkeypatch, recwarn):
    monkeypatch.setenv("MMKGC_NO_COMPILE", "1")
    assert kernels.load() is None
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_sources_are_package_data():
    """The wheel carries the kernel sources: pyproject's package-data patterns match every file the loader reads."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["mmkgc"]
    package = ROOT / "src" / "mmkgc"
    for name in (*kernels.SOURCES, *kernels.HEADERS):
        path = kernels.SOURCE_DIR / name
        assert path.is_file()
        rel = path.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(rel, p) for p in patterns), rel


def test_every_exported_kernel_has_a_signature():
    """Each ``MMKGC_EXPORT`` function of the sources has ctypes argument types, with one per parameter."""
    import re

    found = {}
    for name in kernels.SOURCES:
        text = (kernels.SOURCE_DIR / name).read_text()
        for fn, params in re.findall(r"MMKGC_EXPORT void (\w+)\(([^)]*)\)", text):
            found[fn] = len(params.split(","))
    assert found.keys() == kernels.SIGNATURES.keys()
    assert {fn: len(a) for fn, a in kernels.SIGNATURES.items()} == found
