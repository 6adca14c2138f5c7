"""Process-wide settings the command line makes for its own process.

They change how numpy and the C allocator behave for the whole process, which a library
must leave to the program that imports it: so only the command line makes them, and a
user's own environment variable always wins. Each was measured on 1M-row mints (2
cores), alternated with the code without it.
"""

from __future__ import annotations

import os
import sys

__all__ = ["for_batch_work", "one_blas_thread"]

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
_KEEP_FREED = 256 << 20
"""Freed memory glibc keeps for reuse instead of returning it to the system."""
_MAPPED_ABOVE = 32 << 20
"""Allocations glibc serves with their own mapping (its dynamic threshold's maximum)."""


def one_blas_thread() -> None:
    """Keep numpy's OpenBLAS to the calling thread.

    provmint does no linear algebra, but OpenBLAS starts a thread per core when numpy is
    imported, and those threads spin for a while before they sleep: about 0.1 s of CPU
    at every import, and 0.17 s of a 1M mint's 2.35 (1.24 s wall instead of 1.32).
    Called before any command imports numpy; worker processes inherit it."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def for_batch_work() -> None:
    """Let a command that works through a batch chunk by chunk reuse its memory.

    Each chunk allocates and frees arrays of a few MB. numpy asks for huge pages for
    them (zeroing 2 MB at a time) and glibc returns freed memory to the system at once,
    so every chunk faulted fresh zeroed pages in again. With huge pages left to the
    kernel and freed memory kept (up to 256 MB a process: a chunk's working set is
    reused), a 1M mint took 0.35 s of system time instead of 0.60, and 1.19 s wall
    instead of 1.32; peak memory grew by about 40 MB. Call before numpy is imported and
    before the worker processes are forked (they inherit both)."""
    os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")
    if not sys.platform.startswith("linux") or _user_tuned_malloc():
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_THRESHOLD, _MAPPED_ABOVE)
        libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_FREED)
    except (OSError, AttributeError):  # not glibc (musl has no mallopt): nothing to tune
        return


def _user_tuned_malloc() -> bool:
    """Whether the user set either threshold for glibc, by its variable or a tunable
    (mallopt would override it)."""
    return (
        "MALLOC_TRIM_THRESHOLD_" in os.environ
        or "MALLOC_MMAP_THRESHOLD_" in os.environ
        or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", "")
    )
