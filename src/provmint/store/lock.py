"""An advisory lock over a whole store (``flock`` on ``<store>/.lock``).

Writers take it exclusively, readers shared, only for as long as they touch the catalog.
The kernel drops a lock when its process dies, even by ``kill -9``, so a crash never
leaves the store locked. The holder writes who it is into the lock file, so a waiting
process can say what it is waiting for.

A store this process cannot write (a mounted backup, a read-only replica) can still be
read: a reader then opens the lock file read-only (``flock`` works on any descriptor), or,
when there is no lock file and none can be made, reads without one (nobody can be
writing through a file system that refuses the lock file). Writers need a writable store.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from provmint.errors import StoreBusyError, StoreError
from provmint.store.files import load_json

__all__ = ["pid_alive", "store_lock"]

_POLL = 0.05


def _holder(path: Path) -> str:
    try:
        info = load_json(path.read_text() or "{}")
    except (OSError, ValueError):
        return "another provmint process"
    if not isinstance(info, dict) or "pid" not in info:
        return "another provmint process"
    return (
        f"provmint pid {info['pid']} ({info.get('purpose', '?')}, since {info.get('since', '?')})"
    )


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (a reused pid counts as alive, which
    only ever keeps a leftover longer than needed)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)


def _open_lock_file(path: Path, exclusive: bool) -> int | None:
    """The lock file's descriptor; None for a reader of a store it cannot write and that
    has no lock file."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        if exc.errno not in _READ_ONLY:
            raise StoreError(f"cannot open the store lock {path}: {exc.strerror}") from exc
        if exclusive:
            raise StoreError(
                f"store {path.parent} is read-only here ({exc.strerror}): it can be read, "
                "not written",
                hint="write to the store where it is writable, or copy it somewhere writable",
            ) from exc
    try:
        return os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreError(f"cannot open the store lock {path}: {exc.strerror}") from exc


@contextmanager
def store_lock(
    root: Path,
    *,
    exclusive: bool,
    timeout: float,
    purpose: str,
    on_wait: Callable[[str], None] | None = None,
    name: str = ".lock",
) -> Iterator[None]:
    """Hold the store lock (or another lock file ``name`` of the store); raise
    StoreBusyError after ``timeout`` seconds of waiting."""
    path = root / name
    fd = _open_lock_file(path, exclusive)
    if fd is None:  # a read-only store without a lock file: nothing can write to it
        yield
        return
    try:
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        deadline = time.monotonic() + timeout
        told = False
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StoreBusyError(
                        f"store {root} is busy: {_holder(path)} holds it",
                        hint="wait for it to finish, or raise --lock-timeout",
                    ) from None
                if on_wait is not None and not told:
                    on_wait(_holder(path))
                    told = True
                time.sleep(_POLL)
        if exclusive:
            info = {
                "pid": os.getpid(),
                "purpose": purpose,
                "since": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
