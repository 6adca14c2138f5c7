"""Worker process pools that start cleanly from anywhere (scripts, stdin, a REPL).

:func:`start_pool`: workers fork from a ``forkserver`` that has imported the heavy modules
once. While they start, the caller's ``__main__`` is hidden: multiprocessing would
otherwise re-run it in each worker, which fails for a REPL, stdin, or a script without an
``if __name__ == "__main__"`` guard (workers only ever run provmint code).

:func:`fork_pool`: workers fork from the calling process itself, which must run no other
thread (a thread holding a lock at the fork leaves it held forever in the child). They
start at once with everything it has imported: no fork server to start, no second import
of Arrow and numpy (about 0.5 s of CPU), no ``__main__`` to run again.
"""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

__all__ = ["fork_pool", "start_pool", "warm_up"]


def warm_up() -> int:
    """A no-op task: makes a worker start (and import) now rather than on first use."""
    return os.getpid()


def start_pool(
    workers: int,
    *,
    preload: Sequence[str] = (),
    initializer: Callable[..., Any] | None = None,
    initargs: tuple[Any, ...] = (),
) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes, all started before this returns."""
    context = get_context("forkserver")
    # provmint._forkserver first: the fork server ends without tearing its modules down.
    context.set_forkserver_preload(["provmint._forkserver", *preload])
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=initializer, initargs=initargs
    )
    caller_main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        for _ in range(workers):  # each submit starts one worker
            pool.submit(warm_up)
    finally:
        sys.modules["__main__"] = caller_main
    return pool


def fork_pool(
    workers: int,
    *,
    preload: Sequence[str] = (),
    initializer: Callable[..., Any] | None = None,
    initargs: tuple[Any, ...] = (),
) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes forked from this one now (see the module's notes).

    Each worker imports what of ``preload`` this process has not, then runs
    ``initializer(*initargs)``. Raises RuntimeError when another thread is running.
    """
    import threading
    import warnings

    if threading.active_count() != 1:
        raise RuntimeError("a pool is forked only from a process running one thread")
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=get_context("fork"),
        initializer=_forked,
        initargs=(tuple(preload), initializer, initargs),
    )
    with warnings.catch_warnings():
        # Python 3.12+ warns of every thread the OS counts. Beside this one, those are
        # the native pools of the libraries imported (jemalloc's, OpenBLAS's), which keep
        # their own state safe across a fork; no Python thread runs (checked above).
        warnings.filterwarnings(
            "ignore", r".*multi-threaded, use of fork\(\)", category=DeprecationWarning
        )
        # With fork, the first submit starts every worker, here in this thread (before
        # the executor starts its own); warming each up makes it import and initialise.
        for _ in range(workers):
            pool.submit(warm_up)
    return pool


def _forked(
    preload: tuple[str, ...], initializer: Callable[..., Any] | None, initargs: tuple[Any, ...]
) -> None:
    import importlib

    for name in preload:
        importlib.import_module(name)
    if initializer is not None:
        initializer(*initargs)
