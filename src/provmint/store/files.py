"""Durable file writes inside the store: write a temporary file, fsync it, rename it over
the target and fsync the directory, so a crash leaves the old file or the new one.

The temporary file's life cycle is :class:`provmint.pendingfile.PendingFile`'s; this
module is the store's policy over it: exact modes (0644 unless told), and a directory
that cannot be fsynced is an error unless its file system cannot fsync directories at
all (see :func:`fsync_dir`, re-exported here for the store's own renames)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from provmint.pendingfile import PendingFile, fsync_dir

__all__ = ["atomic_file", "fsync_dir", "write_atomic"]


@contextmanager
def atomic_file(path: Path, *, mode: int = 0o644, durable: bool = True) -> Iterator[BinaryIO]:
    """A file whose contents replace ``path`` when the block ends without an error: a
    temporary file beside it (mode ``mode`` whatever the umask), fsync, rename, fsync of
    the directory. ``durable=False`` skips both fsyncs, for files that a later step makes
    durable (a staged batch's parts are, before its commit). On an error the temporary
    file is removed and ``path`` is as it was."""
    # closefd=False: the descriptor is the PendingFile's, closed by its commit or discard;
    # the inner block closes (flushes) the buffered file before the commit.
    with (
        PendingFile(path, mode=mode, durable=durable) as pending,
        os.fdopen(pending.fd, "wb", closefd=False) as fh,
    ):
        yield fh


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically (and durably: see :func:`atomic_file`)."""
    with atomic_file(path, mode=mode, durable=durable) as fh:
        fh.write(data)


def load_json(text: str | bytes, *, max_depth: int = 16, **options: Any) -> Any:
    """``json.loads`` for stored JSON that may be damaged: nesting deeper than
    ``max_depth`` is a ValueError (the C decoder would otherwise exhaust the C stack
    under a raised recursion limit)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    depth = 0
    for token in _JSON_TOKENS.finditer(text):
        if token.group() in "[{":
            depth += 1
            if depth > max_depth:
                raise ValueError(f"nested deeper than {max_depth} levels")
        elif token.group() in "]}":
            depth -= 1
    return json.loads(text, **options)


_JSON_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]')
"""Strings (skipped whole, so brackets inside them do not count) and brackets."""
