"""Replacing a file whole, in one place: the temporary file's life cycle.

A :class:`PendingFile` is the next version of a path, written into a temporary file
beside it (``.<name>.<pid>.<random>.tmp``: hidden, in the same directory so that the
rename stays on one file system, and unique across the processes and threads that may
replace the same path together). It is created with ``O_EXCL`` and its mode set exactly;
:meth:`~PendingFile.commit` fsyncs it, renames it over the path and fsyncs the directory,
so that readers, and the disk after a crash, see the old file or the whole new one;
:meth:`~PendingFile.discard` (or any failure on the way) removes it and leaves the path
as it was.

Two policies are built on it: the store's files (:mod:`provmint.store.files`,
:class:`provmint.store.keyindex.RunWriter`) and the user's output files
(:mod:`provmint.outfile`, which adds symlinks, devices and error messages). Errors are
plain ``OSError``; each caller says them in its own words.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

__all__ = ["PendingFile", "fsync_dir", "stale_temporaries"]

# A temporary name must fit NAME_MAX (255 bytes) with its dot, pid, random part and
# suffix, whatever name the user gave the target.
_NAME_KEPT = 180


_TEMPORARY = re.compile(r"^\..+\.(?P<pid>[0-9]{1,10})\.[0-9a-f]{8}\.tmp$")
"""The name :class:`PendingFile` gives its temporary file: ``.<name>.<pid>.<8 hex>.tmp``."""


def stale_temporaries(directory: Path, alive: Callable[[int], bool]) -> list[Path]:
    """The temporary files in ``directory`` (not below it) that writers no longer alive
    left behind (killed between creating and committing them): files named as
    :class:`PendingFile` names them whose pid ``alive`` says is gone."""
    found = []
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if match and entry.is_file(follow_symlinks=False) and not alive(int(match["pid"])):
            found.append(Path(entry.path))
    return found


def fsync_dir(path: Path, *, best_effort: bool = False) -> None:
    """Make a directory's entries (new, renamed or removed files) durable.

    A file system that cannot fsync a directory says EINVAL: that is tolerated, since
    nothing there waits to be written and refusing would only make such a file system
    unusable. Any other failure (EIO, say) means a rename may not survive a crash, so it
    is raised: a store must not report as committed what it cannot vouch for.

    ``best_effort`` tolerates every failure, opening the directory included: for files
    that are complete once renamed (a user's output, possibly in a directory the user may
    write but not read), where a directory fsync only narrows a crash window.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        if best_effort:
            return
        raise
    try:
        os.fsync(fd)
    except OSError as exc:
        if not best_effort and exc.errno != errno.EINVAL:
            raise
    finally:
        os.close(fd)


class PendingFile:
    """The next version of ``path``, open for writing at :attr:`fd` until it is committed
    or discarded.

    ``mode`` is the file's permission bits, set exactly whatever the umask; with
    ``umask=True`` the umask applies instead, as for any new file a program creates (the
    temporary file never has more bits than ``mode``, even for a moment). ``durable=False``
    skips both fsyncs, for files a later step makes durable or that are scratch.
    ``best_effort_dir_sync`` tolerates any failure of the directory fsync (see
    :func:`fsync_dir`).

    In a ``with`` block the file is committed when the block ends normally (unless it was
    committed or discarded inside) and discarded when it raises. A file that is never
    meant to appear (scratch space) is simply discarded. Creation failures are raised as
    ``OSError`` and leave nothing behind.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        mode: int = 0o644,
        umask: bool = False,
        durable: bool = True,
        best_effort_dir_sync: bool = False,
    ) -> None:
        self.path = Path(path)
        self.durable = durable
        self._best_effort_dir_sync = best_effort_dir_sync
        self.tmp = self.path.with_name(
            f".{self.path.name[:_NAME_KEPT]}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        )
        self._placed = False  # renamed into place: nothing left to discard
        self._fd: int | None = os.open(
            self.tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode
        )
        if not umask:
            try:
                os.fchmod(self._fd, mode)  # open() applied the umask: undo it
            except BaseException:
                self.discard()
                raise

    @property
    def fd(self) -> int:
        """The temporary file's descriptor (owned here: wrap it with ``closefd=False``)."""
        if self._fd is None:
            raise ValueError(f"the new version of {self.path} is already committed or discarded")
        return self._fd

    def commit(self) -> None:
        """Put the file in place: fsync it, close it, rename it over :attr:`path` and
        fsync the directory (no fsyncs when not durable). If anything before the rename
        fails, the file is discarded and :attr:`path` is as it was."""
        fd = self.fd
        try:
            if self.durable:
                os.fsync(fd)
            self._fd = None
            os.close(fd)  # a late write error (NFS) surfaces here: before the rename
            os.replace(self.tmp, self.path)
            self._placed = True
        except BaseException:
            self.discard()
            raise
        if self.durable:
            # The new file is in place: a failure now is raised (unless best effort), but
            # there is nothing left to discard.
            fsync_dir(self.path.parent, best_effort=self._best_effort_dir_sync)

    def discard(self) -> None:
        """Close and remove the temporary file (nothing appears at :attr:`path`). Safe to
        call again, after :meth:`commit` too (then it does nothing); never raises
        ``OSError``, so that it can clean up after another error."""
        fd, self._fd = self._fd, None
        # Errors are dropped: discarding cleans up after another error, which is the one
        # to report, and a descriptor is closed even when close() fails.
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        if not self._placed:
            with contextlib.suppress(OSError):
                self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> PendingFile:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            self.discard()
        elif self._fd is not None:
            self.commit()

    def __repr__(self) -> str:
        state = "open" if self._fd is not None else "closed"
        return f"PendingFile({str(self.path)!r}, {state})"
