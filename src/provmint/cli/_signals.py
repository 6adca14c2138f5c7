"""Stopping a long-running command (``anchor --every``, ``devchain``) on SIGTERM or
Ctrl-C, whichever thread of the process the kernel hands the signal to."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[list[str]]:
    """While inside, SIGTERM and SIGINT set ``stop`` (the names received are listed in
    what this yields); a second one interrupts the main thread (KeyboardInterrupt, exit
    130). The handlers and the wakeup fd before are put back on the way out.

    Call it from the main thread (Python runs signal handlers only there)."""
    received: list[str] = []
    handled = 0

    def handler(signum: int, frame: FrameType | None) -> None:
        # Runs in the main thread, whenever it next runs Python code. The stop itself is
        # the watcher's: this only turns a second signal into an interruption.
        nonlocal handled
        handled += 1
        if handled > 1:
            raise KeyboardInterrupt

    # Why a watcher thread on the wakeup fd, and not stop.set() in the handler: the
    # kernel may deliver a process's signal to any thread that does not block it, such
    # as a worker thread DuckDB has not finished closing. CPython then only notes the
    # signal for the main thread, which, asleep in stop.wait(3600), would not see it for
    # an hour. The C-level handler writes every signal's number to the wakeup fd from
    # whichever thread it ran in, and this thread is woken by that write.
    # (Setting the event in the handler itself could also hang: the handler may run
    # inside stop.wait() while the event's non-reentrant lock is held.)
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)  # the C handler must never block on a full pipe
    wanted = {int(signum) for signum in STOP_SIGNALS}

    def watch() -> None:
        while data := os.read(read_end, 64):
            for number in data:
                if number in wanted and not received:
                    received.append(signal.Signals(number).name)
                    stop.set()

    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    old_wakeup = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    watcher = threading.Thread(target=watch, name="provmint-signals", daemon=True)
    watcher.start()
    try:
        yield received
    finally:
        signal.set_wakeup_fd(old_wakeup)
        for signum, old in previous.items():
            signal.signal(signum, old)
        os.close(write_end)  # the watcher reads end-of-file and returns
        watcher.join(5)
        with contextlib.suppress(OSError):
            os.close(read_end)
