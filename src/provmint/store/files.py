"""Durable file writes inside the store: write a temporary file, fsync it, rename it over
the target and fsync the directory, so a crash leaves the old file or the new one."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_file", "fsync_dir", "write_atomic"]


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (new, renamed or removed files) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_file(path: Path, *, mode: int = 0o644, durable: bool = True) -> Iterator[BinaryIO]:
    """A file whose contents replace ``path`` when the block ends without an error: a
    temporary file beside it (mode ``mode`` whatever the umask), fsync, rename, fsync of
    the directory. ``durable=False`` skips both fsyncs, for files that a later step makes
    durable (a staged batch's parts are, before its commit). On an error the temporary
    file is removed and ``path`` is as it was."""
    # pid and a random part: threads of one process may replace the same file together
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            yield fh
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically (and durably: see :func:`atomic_file`)."""
    with atomic_file(path, mode=mode, durable=durable) as fh:
        fh.write(data)
