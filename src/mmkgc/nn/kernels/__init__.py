"""Build and load the compiled CPU kernels (``distances.c``, ``gate.c``, ``common.h`` next to this file).

The sources are plain C-linkage functions over raw float32 / int64 buffers, valid C and C++ (no Python or libtorch
headers), called
through :mod:`ctypes` by the autograd nodes in :mod:`mmkgc.nn.scorers` and :mod:`mmkgc.nn.fusion.gated_pairs`.
:func:`load` builds them once per (sources, compiler, flags, CPU) into ``<mmkgc cache>/kernels/<key>/`` and caches
the library for later processes; two routes build the same files:

1. ``torch.utils.cpp_extension.load`` (JIT, ninja, the C++ compiler ``$CXX`` / ``c++``) -- the default;
2. the C compiler called directly (``$CC``, ``cc``, ``gcc`` or ``clang``; ``-shared -fPIC``) -- used when the first
   route fails: no ``ninja``, or no C++ compiler (a Debian machine with the ``gcc`` package only).

Neither route needs the Python development headers: ``cpp_extension`` only adds their directory to the include
path, and the sources include nothing from it (measured: a build with that directory pointing nowhere succeeds,
``tests/test_kernels.py``).  Flag sets are tried in order (``-march=native`` and OpenMP first).  When nothing
compiles, the callers use their PyTorch paths after ONE :class:`RuntimeWarning`.  ``MMKGC_NO_COMPILE=1`` disables
the kernels (PyTorch paths, no warning).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
import warnings
from pathlib import Path

from mmkgc.fileio import cache_home

__all__ = ["SOURCES", "available", "build_info", "load"]

#: The kernel sources, in this package (package data of the wheel).
SOURCE_DIR = Path(__file__).resolve().parent
SOURCES = ("distances.c", "gate.c")
HEADERS = ("common.h",)
LIBRARY = "mmkgc_kernels"

#: Flag sets tried in order; the first that compiles wins.
COMPILE_FLAGS = (
    ("-O3", "-march=native", "-fno-math-errno", "-fopenmp"),
    ("-O3", "-fno-math-errno", "-fopenmp"),
    ("-O3", "-fno-math-errno"),
)

_P, _I64, _INT, _F = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float
#: ctypes argument types of every exported kernel (all return ``void``).
SIGNATURES: dict[str, list] = {
    "mmkgc_l1_dist": [_P, _P, _I64, _I64, _I64, _F, _P, _P, _INT],
    "mmkgc_complex_l1_dist": [_P] * 4 + [_I64, _I64, _I64, _F, _P, _P, _INT],
    "mmkgc_gather_l1": [_P] * 4 + [_I64, _I64, _INT, _P, _INT],
    "mmkgc_gather_l1_grad": [_P] * 5 + [_I64, _I64, _INT, _P, _INT],
    "mmkgc_gather_mix_l1": [_P] * 5 + [_I64] * 3 + [_INT, _P, _INT],
    "mmkgc_gather_mix_l1_grad": [_P] * 6 + [_I64] * 3 + [_INT] + [_P] * 4,
    "mmkgc_gate_context": [_P] * 4 + [_I64] * 3 + [_P, _INT],
    "mmkgc_gate_forward": [_P] * 5 + [_I64] * 3 + [_P] * 3 + [_INT],
    "mmkgc_gate_backward1": [_P] * 12 + [_I64] * 3 + [_INT] + [_P] * 5,
    "mmkgc_gate_backward2": [_P] * 6 + [_I64] * 3 + [_P] * 2,
    "mmkgc_mix_transposed": [_P] * 2 + [_I64] * 3 + [_P, _INT],
    "mmkgc_mix_columns": [_P] * 2 + [_I64] * 3 + [_P, _INT],
    "mmkgc_pair_mix": [_P] * 2 + [_I64] * 3 + [_P, _INT],
    "mmkgc_pair_dot": [_P] * 2 + [_I64] * 3 + [_P, _INT],
    "mmkgc_pair_scale": [_P] * 2 + [_I64] * 3 + [_P],
    "mmkgc_tanh_dot_grad": [_P] * 5 + [_I64] * 3 + [_P, _INT],
}

_lock = threading.Lock()
_state: dict = {"loaded": False, "lib": None, "warned": False, "build_seconds": None, "path": None, "route": None}


def _cpu_signature() -> str:
    """Identifies the CPU features ``-march=native`` depends on, so a shared cache never serves a library built for
    another processor."""
    text = platform.machine() + platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith(("flags", "Features", "model name")):
                    text += line
    except OSError:
        pass
    return text


def _find(*candidates: str | None) -> str | None:
    for candidate in candidates:
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


def _cxx_compiler() -> str | None:
    """The C++ compiler cpp_extension runs: ``$CXX``, else ``c++`` (``None`` if not on ``PATH``)."""
    return _find(os.environ.get("CXX") or "c++")


def _c_compiler() -> str | None:
    """The C compiler of the direct route: ``$CC``, else ``cc``, ``gcc``, ``clang`` (the first on ``PATH``)."""
    return _find(os.environ.get("CC"), "cc", "gcc", "clang")


def _compiler_version(compiler: str) -> str:
    try:
        return subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _key(route: str, compiler: str, version: str, flags: tuple[str, ...]) -> str:
    text = [route, compiler, version, " ".join(flags), _cpu_signature()]
    text += [(SOURCE_DIR / name).read_text(encoding="utf-8") for name in (*HEADERS, *SOURCES)]
    return hashlib.sha256("\0".join(text).encode()).hexdigest()[:20]


def _build_cpp_extension(directory: Path, flags: tuple[str, ...]) -> Path:
    """Route 1: ``torch.utils.cpp_extension.load`` into ``directory`` -> the library path.

    :raises Exception: whatever the build raises (no ninja, compiler error, ...).
    """
    from torch.utils import cpp_extension

    ldflags = ["-fopenmp"] if "-fopenmp" in flags else []
    path = cpp_extension.load(name=LIBRARY, sources=[str(SOURCE_DIR / s) for s in SOURCES],
                              extra_cflags=[*flags, f"-I{SOURCE_DIR}"], extra_ldflags=[*ldflags, "-lm"],
                              build_directory=str(directory), is_python_module=False, verbose=False)
    return Path(path)


def _build_direct(directory: Path, flags: tuple[str, ...], compiler: str) -> Path:
    """Route 2: the compiler on the sources, one ``-shared -fPIC`` call, written atomically -> the library path.

    :raises RuntimeError: the compiler failed (its output in the message).
    """
    library = directory / f"{LIBRARY}.so"
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=directory)
    os.close(fd)
    try:
        result = subprocess.run([compiler, *flags, "-shared", "-fPIC", *[str(SOURCE_DIR / s) for s in SOURCES],
                                 "-o", tmp, "-lm"], capture_output=True, text=True, timeout=300, check=False)
        if result.returncode != 0:
            raise RuntimeError(result.stderr.strip()[-500:])
        os.replace(tmp, library)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return library


def _open(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    for name, argtypes in SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = argtypes, None
    return lib


def _build() -> ctypes.CDLL | None:
    compilers = {"cpp_extension": _cxx_compiler(), "direct": _c_compiler()}
    if not any(compilers.values()):
        _warn_once("mmkgc: no C or C++ compiler found; TransE-L1/RotatE scoring and the fused-method kernels use "
                   "the slower PyTorch paths")
        return None
    versions = {route: _compiler_version(c) for route, c in compilers.items() if c}
    errors = []
    for flags in COMPILE_FLAGS:
        for route, compiler in compilers.items():
            if compiler is None:
                continue
            directory = cache_home() / "kernels" / _key(route, compiler, versions[route], flags)
            library = directory / f"{LIBRARY}.so"
            start = time.perf_counter()
            try:
                if not library.exists():
                    directory.mkdir(parents=True, exist_ok=True)
                    if route == "cpp_extension":
                        library = _build_cpp_extension(directory, flags)
                    else:
                        library = _build_direct(directory, flags, compiler)
                    if library.name != f"{LIBRARY}.so":  # cpp_extension renames a rebuild within one process
                        library = Path(shutil.copy2(library, directory / f"{LIBRARY}.so"))
                lib = _open(library)
            except Exception as exc:  # noqa: BLE001 -- any build failure means: try the next route / flags
                errors.append(f"{route} {' '.join(flags)}: {str(exc).strip()[-500:]}")
                continue
            _state.update(build_seconds=time.perf_counter() - start, path=str(library), route=route)
            return lib
    _warn_once("mmkgc: could not compile the CPU kernels; TransE-L1/RotatE scoring and the fused-method kernels use "
               "the slower PyTorch paths. Compiler output:\n" + "\n".join(errors))
    return None


def _warn_once(message: str) -> None:
    if not _state["warned"]:
        _state["warned"] = True
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def load() -> ctypes.CDLL | None:
    """The kernel library, built on first use; ``None`` when ``MMKGC_NO_COMPILE`` is set or no build works (then
    one :class:`RuntimeWarning` per process)."""
    if os.environ.get("MMKGC_NO_COMPILE", "") not in ("", "0"):
        return None
    if not _state["loaded"]:
        with _lock:
            if not _state["loaded"]:
                _state["lib"] = _build()
                _state["loaded"] = True
    return _state["lib"]


def available() -> bool:
    """Whether the kernels are enabled and loadable (builds them on the first call)."""
    return load() is not None


def build_info() -> dict:
    """``{"path", "route", "build_seconds"}`` of the loaded library (``None`` values before :func:`load`)."""
    return {k: _state[k] for k in ("path", "route", "build_seconds")}


def _reset() -> None:
    """Forget the loaded library and the warning (tests)."""
    _state.update(loaded=False, lib=None, warned=False, build_seconds=None, path=None, route=None)
