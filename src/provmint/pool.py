"""Worker process pools that start cleanly from anywhere (scripts, stdin, a REPL).

Workers fork from a ``forkserver`` that has imported the heavy modules once. While they
start, the caller's ``__main__`` is hidden: multiprocessing would otherwise re-run it in
each worker, which fails for a REPL, stdin, or a script without an
``if __name__ == "__main__"`` guard (workers only ever run provmint code).
"""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

__all__ = ["start_pool", "warm_up"]


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
