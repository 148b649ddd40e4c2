"""glibc allocator settings: large blocks come from the heap and freed memory stays in the process."""

import subprocess
import sys
import textwrap

import pytest

from mmkgc.allocator import keep_freed_memory

PROBE = textwrap.dedent("""
    import ctypes, os, sys
    from mmkgc.allocator import keep_freed_memory
    applied = keep_freed_memory() if sys.argv[1] == "keep" else False
    libc = ctypes.CDLL("libc.so.6")
    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                   "fsmblks", "uordblks", "fordblks", "keepcost")]
    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    p = libc.malloc(96 << 20)
    mapped = libc.mallinfo2().hblkhd          # bytes in mmap-ed blocks while the 96 MB block is live
    libc.free(p)
    kept = libc.mallinfo2().fordblks          # free bytes the heap keeps after the block is freed
    print(int(applied), mapped >> 20, kept >> 20)
""")


def _probe(mode: str, env_extra: dict | None = None) -> tuple[int, int, int]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "MMKGC_MALLOC"}
    env.update(env_extra or {})
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, env=env, check=True)
    applied, mapped, kept = map(int, out.stdout.split())
    return applied, mapped, kept


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_large_blocks_come_from_the_heap_and_stay_after_free():
    try:
        default = _probe("default")
    except subprocess.CalledProcessError as err:  # not glibc >= 2.33 (no mallinfo2)
        pytest.skip(f"mallinfo2 unavailable: {err.stderr.strip().splitlines()[-1]}")
    assert default == (0, 96, default[2]) and default[2] < 96  # glibc's default: the block is mmap-ed, freed to the OS
    applied, mapped, kept = _probe("keep")
    assert (applied, mapped) == (1, 0) and kept >= 96  # in the heap, and kept after free
    # the user's own choice wins: nothing is changed
    assert _probe("keep", {"MMKGC_MALLOC": "default"})[:2] == (0, 96)
    assert _probe("keep", {"MALLOC_TRIM_THRESHOLD_": "1000"})[0] == 0


def test_threshold_range():
    with pytest.raises(ValueError, match="trim_threshold_bytes"):
        keep_freed_memory(2 ** 31)
    with pytest.raises(ValueError, match="trim_threshold_bytes"):
        keep_freed_memory(0)


@pytest.mark.parametrize("env, expected", [
    ({}, "10000 None"),                              # default: a short spin, then sleep
    ({"OMP_WAIT_POLICY": "PASSIVE"}, "None PASSIVE"),  # the user's policy is kept, no spin count added
    ({"GOMP_SPINCOUNT": "5"}, "5 None"),             # the user's spin count is kept
    ({"OMP_WAIT_POLICY": ""}, "None None"),          # empty: the OpenMP runtime's own default
])
def test_command_line_openmp_wait_settings(env, expected):
    import os

    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    code = ("import os, mmkgc.cli; "
            "print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**base, **env},
                         check=True)
    assert out.stdout.strip() == expected
