"""Writing output files, in one place: never replace what is not a regular file.

Every file provmint writes for the user (``batch export``, ``proof export``, the rejects
report, ``labels.csv``, the issuer key file) goes through :func:`open_output`:

- ``-`` is standard output;
- a regular file, or a path where nothing exists yet, is written **atomically**: into a
  temporary file in the same directory, fsynced, renamed over the path, and the directory
  fsynced. Readers see the old file or the whole new one; a failed run leaves the old
  file as it was and no temporary file behind;
- a character device or FIFO (``/dev/null``, ``/dev/tty``, a named pipe) and the open
  files of this process (``/dev/stdout``, ``/dev/fd/N``) are written **straight
  through**, in append mode: renaming over them would replace the device node or the
  link with a regular file (as root, a broken ``/dev/null`` for the whole machine);
- a symlink is followed: a link to a regular file gets its *target* replaced atomically
  (the link stays a link), a link to a device or FIFO is written through;
- anything else (a directory, a block device, a socket) is refused.

Write errors become :class:`provmint.errors.OutputError` naming the path (and the free
space when the disk is full), through :func:`provmint.errors.os_error`.
"""

from __future__ import annotations

import io
import os
import re
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import BinaryIO, cast

from provmint.errors import OutputError, ProvmintError, os_error
from provmint.pendingfile import PendingFile

__all__ = [
    "STDOUT",
    "OutputTarget",
    "TargetKind",
    "is_stdout",
    "open_output",
    "resolve_output",
    "write_output",
]

STDOUT = "-"
"""The output path that means standard output, in every command."""

_MAX_LINKS = 40  # as the kernel's own limit on symlinks followed in one lookup
# /proc/<pid>/fd/N (and /dev/stdout, /dev/fd/N, which lead there) are this process's own
# open files: a pipe, a terminal, or the file the shell redirected into.
_PROC_FD = re.compile(r"/proc/(?:self|thread-self|\d+)(?:/task/\d+)?/fd")


class TargetKind(Enum):
    """How an output path is written."""

    STDOUT = "standard output"
    STREAM = "stream"
    """A character device, FIFO or already-open file: written in place, never replaced."""
    FILE = "file"
    """A regular file or a new path: written atomically (temporary file, fsync, rename)."""


@dataclass(frozen=True, slots=True)
class OutputTarget:
    """Where an output goes: its kind, the file actually written (a symlink's final
    target; None for standard output) and the name the user gave, for messages."""

    kind: TargetKind
    path: Path | None
    name: str
    exists: bool = False


def is_stdout(out: Path | str | None) -> bool:
    """Whether ``out`` is ``-``, standard output."""
    return out is not None and str(out) == STDOUT


def _follow(path: Path) -> tuple[Path, bool]:
    """The path with every symlink followed (in the path's directories too), and whether
    it leads into ``/proc/<pid>/fd``, an open file of this process (not followed further:
    the kernel opens those links, whatever they point to)."""
    current = Path(os.path.abspath(path))
    for _ in range(_MAX_LINKS):
        parent = Path(os.path.realpath(current.parent))
        current = parent / current.name
        if _PROC_FD.fullmatch(str(parent)):
            return current, True
        try:
            target = os.readlink(current)
        except OSError:  # not a link, or nothing there: this is the final path
            return current, False
        current = parent / target  # ".." is resolved with the next parent's realpath
    raise OutputError(path, f"too many levels of symbolic links in {path}")


def resolve_output(out: Path | str) -> OutputTarget:
    """Decide how ``out`` is written (see the module docstring). Raises OutputError for a
    directory, a block device, a socket or a path that cannot be looked at."""
    name = str(out)
    if is_stdout(out):
        return OutputTarget(TargetKind.STDOUT, None, "standard output")
    final, open_file = _follow(Path(out))
    if open_file:
        return OutputTarget(TargetKind.STREAM, final, name, exists=True)
    try:
        mode = os.stat(final).st_mode
    except FileNotFoundError:
        return OutputTarget(TargetKind.FILE, final, name)
    except OSError as exc:
        raise os_error(exc, name, action="writing") from exc
    if stat.S_ISREG(mode):
        return OutputTarget(TargetKind.FILE, final, name, exists=True)
    if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
        return OutputTarget(TargetKind.STREAM, final, name, exists=True)
    kind = "it is a directory" if stat.S_ISDIR(mode) else "not a regular file, device or FIFO"
    raise OutputError(
        name,
        f"cannot write {name}: {kind}",
        hint="give the path of a file to write",
    )


class _Sink(io.RawIOBase):
    """The writable end handed to callers: write errors become OutputError naming the
    output. Closing it is left to :func:`open_output` (writers such as pyarrow's close
    what they are given). Once the output failed, later writes (a Parquet writer's
    destructor writing its footer) are dropped."""

    def __init__(self, fh: BinaryIO, path: Path | str, name: str | None = None) -> None:
        super().__init__()
        self._fh = fh
        self._path = path
        self._name = name
        self._written = 0
        self._failed = False

    def _error(self, exc: OSError) -> ProvmintError:
        return os_error(_nameless(exc), self._path, name=self._name)

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        size = memoryview(data).nbytes
        if self._failed:
            return size
        try:
            self._fh.write(data)
        except OSError as exc:
            raise self._error(exc) from exc
        self._written += size
        return size

    def tell(self) -> int:
        return self._written

    def flush(self) -> None:
        if self._failed or self._fh.closed:  # after the output ended, or when collected
            return
        try:
            self._fh.flush()
        except OSError as exc:
            raise self._error(exc) from exc

    def close(self) -> None:
        self.flush()

    def fail(self) -> None:
        """The output is abandoned: drop whatever is written from now on."""
        self._failed = True


def _nameless(exc: OSError) -> OSError:
    """The error without its file name, so that messages name the output, never the
    temporary file it is written through."""
    return OSError(*exc.args)


@contextmanager
def open_output(out: Path | str, *, private: bool = False) -> Iterator[BinaryIO]:
    """A binary file to write ``out`` through; the output is complete when the block ends
    without an exception (an atomic file is then renamed into place; on an exception it
    is removed and the old file stays).

    ``private`` (the key file): the file is created with mode 0600 and must be a regular
    file. Otherwise a new file gets the usual mode (0666 less the umask) and a replaced
    file keeps its permission bits.
    """
    target = resolve_output(out)
    if private and target.kind is not TargetKind.FILE:
        raise OutputError(
            target.name,
            f"cannot write {target.name}: not a regular file",
            hint="a key file must be a regular file",
        )
    with _opened(target, private=private) as (fh, path, name):
        sink = _Sink(fh, path, name)
        try:
            yield cast(BinaryIO, sink)
            sink.flush()
        except BaseException:
            sink.fail()
            raise


@contextmanager
def _opened(
    target: OutputTarget, *, private: bool
) -> Iterator[tuple[BinaryIO, Path | str, str | None]]:
    """The open file for ``target``, the path its errors name and how to call it."""
    if target.kind is TargetKind.STDOUT:
        yield sys.stdout.buffer, "/dev/stdout", "standard output"
        return
    assert target.path is not None
    if target.kind is TargetKind.STREAM:
        with _open_stream(target) as fh:
            yield fh, target.name, None
        return
    with _atomic(target, private=private) as fh:
        yield fh, target.path, None


@contextmanager
def _open_stream(target: OutputTarget) -> Iterator[BinaryIO]:
    """Open a device, FIFO or open file for writing in place: no O_CREAT (if it vanished,
    never make a regular file in its stead), no O_TRUNC (meaningless for devices, and for
    a redirected standard output append is what the shell's ``>>`` asked for)."""
    assert target.path is not None
    try:
        fd = os.open(target.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    except OSError as exc:
        raise os_error(_nameless(exc), target.name) from exc
    with os.fdopen(fd, "wb") as fh:
        yield fh
        try:
            fh.flush()
        except OSError as exc:
            raise os_error(_nameless(exc), target.name) from exc


@contextmanager
def _atomic(target: OutputTarget, *, private: bool) -> Iterator[BinaryIO]:
    """Write into a temporary file beside the target, then fsync, rename and fsync the
    directory (a :class:`~provmint.pendingfile.PendingFile`). On any failure the temporary
    file is removed and the target is untouched."""
    assert target.path is not None
    final = target.path
    try:
        if private:
            pending = _pending(final, mode=0o600)
        elif target.exists:
            pending = _pending(final, mode=stat.S_IMODE(os.stat(final).st_mode))
        else:
            pending = _pending(final, mode=0o666, umask=True)  # as any new file
    except OSError as exc:
        raise os_error(_nameless(exc), final) from exc
    try:
        # closefd=False: the descriptor is the PendingFile's; the inner block flushes
        # the buffered file before the outer one commits.
        with pending, os.fdopen(pending.fd, "wb", closefd=False) as fh:
            yield fh
    except OSError as exc:
        raise os_error(_nameless(exc), final) from exc


def _pending(final: Path, *, mode: int, umask: bool = False) -> PendingFile:
    """The new version of a user's output. Once renamed it is complete: a directory that
    cannot be opened or fsynced afterwards (some file systems cannot; a directory may be
    writable and not readable) is not an error of the output."""
    return PendingFile(final, mode=mode, umask=umask, best_effort_dir_sync=True)


def write_output(out: Path | str, data: bytes, *, private: bool = False) -> None:
    """Write ``data`` to ``out`` as :func:`open_output` does."""
    with open_output(out, private=private) as fh:
        fh.write(data)
