"""Process-wide allocator settings for training and evaluation (glibc ``malloc``).

A KGE training step allocates and frees the same large temporaries every batch (score matrices, gathered entity
rows, gradients: tens to hundreds of MB).  glibc serves every request above ``M_MMAP_THRESHOLD`` (32 MB once its
dynamic threshold has grown) with a fresh ``mmap`` and returns it with ``munmap`` on free, so each batch
page-faults all of that memory in again; the heap is also trimmed back to the OS whenever more than
``M_TRIM_THRESHOLD`` is free at its top.  Measured on DB15K (docs/benchmarks.md, "Allocator"): a third of a
structure-only RotatE step was page faults.  :func:`keep_freed_memory` makes glibc serve large blocks from the
heap and keep freed memory for the next batch, which trades a few percent more peak memory for fewer faults.

It is called by the command line (``mmkgc train`` / ``evaluate``); a library user calls it once at start-up or
sets the equivalent environment variables ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...`` before Python starts.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# mallopt parameter numbers (glibc malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

#: environment variables by which a user has already chosen glibc's behaviour; then nothing is changed
_USER_SETTINGS = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")


def keep_freed_memory(trim_threshold_bytes: int = 2 ** 31 - 1) -> bool:
    """Serve large allocations from the heap and keep freed memory in the process (glibc only).

    Sets ``M_MMAP_MAX = 0`` (no ``mmap`` per large block) and ``M_TRIM_THRESHOLD`` (free memory kept at the top of
    the heap before it is returned to the OS; ``mallopt`` takes an ``int``, so at most 2 GiB - 1).

    Does nothing -- and returns ``False`` -- on other C libraries (macOS, musl, Windows), when the user set one of
    ``MALLOC_MMAP_MAX_``, ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_MMAP_THRESHOLD_``, ``GLIBC_TUNABLES``, or when
    ``MMKGC_MALLOC=default`` asks for glibc's defaults.

    :param trim_threshold_bytes: bytes of free heap kept before trimming, ``0 < t < 2**31``.
    :returns: whether the settings were applied.
    :raises ValueError: ``trim_threshold_bytes`` out of range.
    """
    if not 0 < trim_threshold_bytes < 2 ** 31:
        raise ValueError(f"trim_threshold_bytes must be in (0, 2**31), got {trim_threshold_bytes}")
    if os.environ.get("MMKGC_MALLOC", "").lower() == "default" or any(v in os.environ for v in _USER_SETTINGS):
        return False
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018  (attribute lookup: present in glibc only)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_MAX, 0) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, int(trim_threshold_bytes)) == 1 and ok
    return ok
