"""CPU speed settings applied by every command that runs a network."""

from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_tuned = False


def tune_allocator() -> bool:
    """Keep freed memory in the process instead of returning it to the OS.

    Why: glibc serves the large activation buffers of every training step with mmap and unmaps
    them when they are freed, so the kernel page-faults fresh zeroed pages into the next step;
    a profile of seed-cnn training spent ~44 % of its CPU time there. ``mallopt`` (the in-process
    equivalent of ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...``) turns that off: memory is
    reused from the heap. The process keeps its peak memory until it exits — fine for training
    and batch inference. Linux/glibc only; ``COVIDCXR_KEEP_MALLOC=1`` leaves malloc alone.
    Returns True when the setting was applied.
    """
    global _tuned
    if _tuned:
        return True
    if not sys.platform.startswith("linux") or os.environ.get("COVIDCXR_KEEP_MALLOC") == "1":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        applied = libc.mallopt(_M_MMAP_MAX, 0) == 1
        applied = libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1 and applied
    except (OSError, AttributeError):  # musl or another libc without mallopt
        return False
    _tuned = applied
    return applied
