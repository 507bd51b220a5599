"""Process-level CPU settings that make training and sampling faster.

glibc's malloc serves every large tensor (a [100, 20, 24, 24] LeNet-5 feature map is
4.6 MB) from a fresh ``mmap`` and hands it back on free, so each such tensor costs a
page fault per 4 KiB page when it is first written: on a 2-core VM about 10% of a
LeNet-5-shaped training step (results/perf/thread-split.md: +9% with one 2-thread process,
+11% with two 1-thread ones, medians of 3 rounds that overlap). PyTorch's CPU allocator
does not cache, so the fix belongs to the C allocator: keep freed memory in the heap for
reuse (no mmap, no trimming). This changes no value, only where the bytes live. The cost: the
process keeps freed memory until it exits, and heap fragmentation raised the perf
benchmark's peak resident memory by 7% (2313 -> 2478 MB).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

#: ``mallopt`` parameters of glibc's <malloc.h>.
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4

#: Set to 1 to leave the allocator as the C library configured it.
DISABLE_ENV = "UQBENCH_NO_MALLOC_TUNING"


def tune_malloc() -> bool:
    """Make glibc's malloc keep and reuse freed memory; True when it was applied.

    A no-op (False) outside Linux/glibc, when ``$UQBENCH_NO_MALLOC_TUNING`` is set,
    or when the C library refuses.
    """
    if os.environ.get(DISABLE_ENV) or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    no_mmap = mallopt(_M_MMAP_MAX, 0) == 1
    no_trim = mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    return no_mmap and no_trim
