"""Keep freed tensor memory inside the process (glibc malloc), so large activations stop page-faulting.

Why: glibc serves every allocation above its mmap threshold (which never exceeds 32 MB) with fresh pages from
the kernel and unmaps them on free. A batch-1024 training step of the fast recipe's network allocates and frees
dozens of activations of ~60-130 MB, so every step faults ~600,000 new 4 KiB pages in and zeroes them. Measured
on this 2-core CPU with ``benchmarks/bench_malloc.py`` (``gatedconv_fast``, batch 1024, bf16, forward + backward +
SGD; docs/results.md): 580,000-640,000 page faults and 1.4-1.5 s of kernel time per step by default,
1.33x the step time with :func:`keep_freed_memory` (which brought the faults to 2,600-30,000). PyTorch's CPU allocator is plain
malloc/free, so this is the knob: serve big blocks from the heap (``M_MMAP_MAX = 0``) and never give freed
heap back to the kernel (``M_TRIM_THRESHOLD`` at its maximum). The cost: the process keeps its peak memory.

It changes a process-wide setting, so nothing calls it at import: the commands (``gatedconv-train``,
``gatedconv-speedrun``, ... in ``gatedconv.cli``) call it at start-up, and ``GATEDCONV_MALLOC=default`` in the environment turns it
off. Elsewhere than Linux with glibc it does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["keep_freed_memory"]

# mallopt parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_INT_MAX = 2 ** 31 - 1

_applied = False


def keep_freed_memory() -> bool:
    """Tell glibc malloc to serve large blocks from the heap and keep freed memory (see the module docstring).
    Returns True when the setting is (already) in effect, False when it was not applied (not Linux/glibc,
    ``GATEDCONV_MALLOC=default``, or mallopt refused)."""
    global _applied
    if _applied:
        return True
    if os.environ.get("GATEDCONV_MALLOC", "").strip().lower() == "default" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries without mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success
    _applied = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, _INT_MAX) == 1
    return _applied
