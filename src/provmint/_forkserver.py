"""Imported by a worker pool's fork server (first in :func:`provmint.pool.start_pool`'s
preload list): makes the fork server end without tearing its interpreter down.

The fork server ends when the process that started it exits. A normal interpreter exit
then frees every module it preloaded (Arrow, numpy, the engine), which took 0.12-0.16 s,
and the fork server holds the caller's standard output and error open until it is done:
``provmint batch create ... | jq`` waited for it after provmint itself had finished. The
fork server writes no file and has no buffered output of its own, so its exit handlers
run, the standard streams are flushed, and the process ends at once (the same ending as
:func:`provmint.cli.main`'s). Imported anywhere else, this module does nothing.
"""

from __future__ import annotations

import atexit
import os
import sys
from types import FrameType

__all__ = ["in_fork_server"]


def in_fork_server() -> bool:
    """Whether this code runs inside :func:`multiprocessing.forkserver.main` (the fork
    server's preloading calls it; nothing else does)."""
    forkserver = sys.modules.get("multiprocessing.forkserver")
    main = getattr(forkserver, "main", None)
    code = getattr(main, "__code__", None)
    frame: FrameType | None = sys._getframe()
    while frame is not None:
        if frame.f_code is code:
            return True
        frame = frame.f_back
    return False


def _end_now() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass  # a closed or broken stream: nothing more can be written to it
    os._exit(0)


if in_fork_server():
    # Registered before the other preloaded modules' handlers, so it runs after them.
    atexit.register(_end_now)
