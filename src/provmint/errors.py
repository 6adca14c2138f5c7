"""The provmint exception tree and the process exit codes it maps to.

Every error the library raises on purpose is a :class:`ProvmintError`. Each class carries
the data a caller needs (path, row, column, value, batch id ...) and an ``exit_code`` that
the command-line layer turns into the process status, in one place::

    ProvmintError                     1  operational failure (I/O, internal)
    ├── OutputError                   1  an output file or directory cannot be written
    ├── ConfigError                   2  bad configuration or option value
    │   └── PlaceholderBaseError         labels or an export asked of the placeholder domain
    ├── InputError                    6  the CSV cannot be minted
    │   ├── InputFileError               unreadable, empty, no data rows, bad encoding
    │   ├── MissingColumnError           a required column is absent
    │   └── RowsRejectedError            rows failed validation (reports them all)
    ├── KeyringError                  9  issuer key unreadable or unsafe (missing: 7)
    ├── StoreError                    1  the product store cannot be used
    │   ├── StoreBusyError            8  another provmint process holds the store lock
    │   └── StoreCorruptError            on-disk state contradicts the catalog
    ├── NotFoundError                 7  no such batch or product
    │   └── MissingFileError             no such file (CSV, proof, key file, config...)
    ├── ProofError                    3  a proof file is malformed or hostile
    │   ├── ProofUnreadableError      5  the proof file cannot be read: nothing was checked
    │   └── NotOnChainError           5  the verifier contract cannot check this proof
    └── AnchorError (chain.py)       10  node, chain id, fees, funds, chain key, transaction

Verification outcomes (valid, invalid, pending, could-not-check, checked offline: exit 12)
and scan verdicts
(genuine, forged, unknown, suspect: exit 11) are *results*, not exceptions: see
:class:`provmint.verify.Verdict` and :mod:`provmint.scan`. Their exit codes live here too so that
every number the CLI can return is listed in one table.

:func:`os_error` is the one mapping of an ``OSError`` to a ProvmintError: it names the
path, says what happened in words, adds the free space when a disk is full, and says
what to do.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "EXIT_BUSY",
    "EXIT_CHAIN",
    "EXIT_CODES",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_INVALID",
    "EXIT_KEY",
    "EXIT_NOT_FOUND",
    "EXIT_OFFLINE",
    "EXIT_OK",
    "EXIT_PENDING",
    "EXIT_REJECTED",
    "EXIT_SUSPECT",
    "EXIT_UNCHECKED",
    "EXIT_USAGE",
    "ConfigError",
    "InputError",
    "InputFileError",
    "KeyringError",
    "MissingColumnError",
    "MissingFileError",
    "NotFoundError",
    "NotOnChainError",
    "OutputError",
    "PlaceholderBaseError",
    "ProofError",
    "ProofUnreadableError",
    "ProvmintError",
    "Reject",
    "RowsRejectedError",
    "StoreBusyError",
    "StoreCorruptError",
    "StoreError",
    "os_error",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INVALID = 3
EXIT_PENDING = 4
EXIT_UNCHECKED = 5
EXIT_REJECTED = 6
EXIT_NOT_FOUND = 7
EXIT_BUSY = 8
EXIT_KEY = 9
EXIT_CHAIN = 10
EXIT_SUSPECT = 11
EXIT_OFFLINE = 12  # verify --offline: every check up to the anchor digest passed
EXIT_INTERRUPTED = 130  # the shell's 128 + SIGINT

EXIT_CODES = {
    EXIT_OK: "ok / valid",
    EXIT_ERROR: "error (I/O such as a full disk or no permission, internal)",
    EXIT_USAGE: "usage or configuration",
    EXIT_INVALID: "invalid",
    EXIT_PENDING: "pending (valid, not anchored yet)",
    EXIT_UNCHECKED: "could not check",
    EXIT_REJECTED: "input rejected",
    EXIT_NOT_FOUND: "not found (batch, product, code or file)",
    EXIT_BUSY: "store busy",
    EXIT_KEY: "issuer key unreadable or not private",
    EXIT_CHAIN: "chain problem",
    EXIT_SUSPECT: "suspect (possible copy)",
    EXIT_OFFLINE: "checked offline (verify --offline: anchor not checked on chain)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}
"""Every exit status the CLI can return and what it means (the help's table)."""


class ProvmintError(Exception):
    """Root of every error provmint raises on purpose."""

    exit_code: int = EXIT_ERROR

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message

    @property
    def code(self) -> str:
        """The error's kind as a stable name for programs: its class, in snake case
        without ``Error`` (``MissingFileError``: ``missing_file``)."""
        name = type(self).__name__.removesuffix("Error") or "provmint"
        return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()

    def to_json(self) -> dict[str, Any]:
        """What ``--json`` prints for this error, under ``error``."""
        return {
            "code": self.code,
            "exit": self.exit_code,
            "message": self.message,
            "hint": self.hint,
        }

    def __reduce__(self) -> tuple[Any, ...]:
        # Errors cross process boundaries (a worker's error reaches the parent pickled).
        # The default rebuilds by calling ``cls(*args)``, which fails for subclasses whose
        # constructors take other arguments: rebuild from the attributes instead.
        return (_rebuilt, (type(self), self.args, dict(self.__dict__)))


def _rebuilt(cls: type[ProvmintError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class OutputError(ProvmintError):
    """An output file or directory could not be written (disk full, file too large, no
    permission, read-only file system, not a file one can write...). Nothing half-written
    is left at the path."""

    def __init__(
        self,
        path: Path | str | None,
        reason: str,
        *,
        hint: str | None = None,
        errno: int | None = None,
        free_bytes: int | None = None,
    ) -> None:
        super().__init__(reason, hint=hint)
        self.path = None if path is None else str(path)
        self.reason = reason
        self.errno = errno
        self.free_bytes = free_bytes


class ConfigError(ProvmintError):
    """A setting (flag, environment variable or config file entry) is unusable."""

    exit_code = EXIT_USAGE


class PlaceholderBaseError(ConfigError):
    """Labels or a label export were asked for with the placeholder verification domain
    (``https://id.example.com``) and without ``--allow-placeholder``: every code printed
    with it would point nowhere. ``command`` is the command that sets a base, to copy."""

    def __init__(self, placeholder: str, command: str) -> None:
        super().__init__(
            f"no verification URL base is set: labels would point to the placeholder {placeholder}",
            hint=f"give yours: {command} (or export PROVMINT_URL_BASE=https://id.your-brand.com,"
            " or url_base in the config file); --allow-placeholder prints the placeholder"
            " anyway, for trials",
        )
        self.placeholder = placeholder
        self.command = command


class InputError(ProvmintError):
    """The input CSV cannot be minted; nothing was written."""

    exit_code = EXIT_REJECTED


class InputFileError(InputError):
    """The input file as a whole is unusable (missing, empty, header only, not UTF-8...)."""

    def __init__(self, path: Path | str, reason: str, *, hint: str | None = None) -> None:
        super().__init__(f"{path}: {reason}", hint=hint)
        self.path = str(path)
        self.reason = reason


class MissingColumnError(InputError):
    """A required column is missing from the header; raised before any row is read."""

    def __init__(
        self, path: Path | str, column: str, header: list[str], aliases: list[str]
    ) -> None:
        shown = ", ".join(header) if header else "(empty header)"
        super().__init__(
            f"{path}: line 1: required column '{column}' is missing (header: {shown})",
            hint=f"accepted names for '{column}': {', '.join(aliases)} (any letter case)",
        )
        self.path = str(path)
        self.column = column
        self.header = header


@dataclass(frozen=True, slots=True)
class Reject:
    """One reason a row was refused: where it is, which value, and why.

    ``line`` is the physical line in the file (the header is line 1) when it can be
    determined; ``row`` is the data record number (first record after the header is 1).
    """

    row: int
    line: int | None
    column: str
    value: str
    code: str
    reason: str

    def describe(self, path: str) -> str:
        """The one-line report: ``file:line: column 'c': value 'v': reason``."""
        where = f"line {self.line}" if self.line is not None else f"row {self.row}"
        return f"{path}: {where}: column '{self.column}': value {self.value!r}: {self.reason}"


class RowsRejectedError(InputError):
    """Some rows failed validation and ``--skip-invalid`` was not given.

    ``rejects`` holds the reasons (several per row are possible; for a file with millions
    of problems, those of its first rows), ``problems`` how many there are in all (default:
    as many as ``rejects``), ``rows`` the number of distinct rejected rows,
    ``rejects_path`` where the report was written (if it was).
    """

    def __init__(
        self,
        path: Path | str,
        rejects: list[Reject],
        rows: int,
        total: int,
        rejects_path: Path | str | None,
        *,
        problems: int | None = None,
    ) -> None:
        count = len(rejects) if problems is None else problems
        first = rejects[0].describe(str(path)) if rejects else f"{path}: rows rejected"
        more = f" (and {count - 1:,} more problems)" if count > 1 else ""
        super().__init__(
            f"{first}{more}; batch refused: {rows} of {total} rows are invalid",
            hint="fix the rows, or mint the valid ones with --skip-invalid",
        )
        self.path = str(path)
        self.rejects = rejects
        self.problems = count
        self.rows = rows
        self.total = total
        self.rejects_path = rejects_path


class KeyringError(ProvmintError):
    """The issuer key file is missing, unreadable, malformed or not private."""

    exit_code = EXIT_KEY


class StoreError(ProvmintError):
    """The product store cannot be opened, read or written."""


class StoreBusyError(StoreError):
    """Another provmint process holds the store lock and did not release it in time."""

    exit_code = EXIT_BUSY


class StoreCorruptError(StoreError):
    """Files in the store contradict the catalog (a missing part file, a bad tree file...)."""


class NotFoundError(ProvmintError):
    """The batch or product asked for does not exist in the store."""

    exit_code = EXIT_NOT_FOUND


class MissingFileError(NotFoundError):
    """A file named as input does not exist: the same exit code (7, not found) in every
    command, whether it is a products CSV, a proof, the key file, a config file or a
    keystore."""

    def __init__(self, path: Path | str, what: str = "file", *, hint: str | None = None) -> None:
        super().__init__(f"{what} not found: {path}", hint=hint)
        self.path = str(path)
        self.what = what


class ProofError(ProvmintError):
    """A proof document is malformed, oversized or otherwise not acceptable input."""

    exit_code = EXIT_INVALID


class ProofUnreadableError(ProofError):
    """The proof file could not be read at all (a directory, no permission, an I/O
    error): nothing was checked, so the exit code is "could not check", not "invalid"."""

    exit_code = EXIT_UNCHECKED


class NotOnChainError(ProofError):
    """A well-formed proof that the verifier contract cannot check: its batch is not
    anchored yet, or it was anchored by plain calldata, which no contract can read."""

    exit_code = EXIT_UNCHECKED


class AnchorError(ProvmintError):
    """A chain operation failed: node, chain id, fees, funds, key or transaction."""

    exit_code = EXIT_CHAIN


class NodeUnreachableError(AnchorError):
    """The node did not answer (refused, timed out, bad response)."""


class ChainMismatchError(AnchorError):
    """The node serves another chain than the one expected."""


class InsufficientFundsError(AnchorError):
    """The sender cannot pay for the transaction."""


# What a failed write means, in words, and what to do about it (by errno).
_ADVICE = {
    errno.ENOSPC: "free some space on that file system, or write to another one",
    errno.EDQUOT: "free some space within your quota, or write to another file system",
    errno.EFBIG: "the file size limit was reached (see ulimit -f); write a smaller "
    "output or raise the limit",
    errno.EACCES: "choose a path you may write to, or fix the permissions of its directory",
    errno.EPERM: "choose a path you may write to, or fix the permissions of its directory",
    errno.EROFS: "the file system is mounted read-only: write to another one",
    errno.ENOENT: "create the directory first, or choose another path",
    errno.ENOTDIR: "a part of the path is a file, not a directory: choose another path",
    errno.EISDIR: "give a file name, not a directory",
}
_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _errno_of(exc: OSError) -> int | None:
    """The error number, also for errors that carry it only in their text (pyarrow raises
    ``OSError("... No space left on device")`` without ``errno``)."""
    if exc.errno is not None:
        return exc.errno
    text = str(exc)
    for code in (*_SPACE, errno.EACCES, errno.EROFS, errno.EPERM):
        if os.strerror(code) in text:
            return code
    return None


def free_space(path: Path | str) -> int | None:
    """Bytes available to this user on the file system holding ``path`` (or its nearest
    existing parent); None when that cannot be told."""
    probe = Path(os.path.abspath(path))
    for candidate in (probe, *probe.parents):
        try:
            info = os.statvfs(candidate)
        except OSError:
            continue
        return info.f_bavail * info.f_frsize
    return None


def _size(n: int) -> str:
    """``512 B``, ``1.5 KiB``, ``12 KiB``, ``3.0 GiB``."""
    if n < 1024:
        return f"{n} B"
    value, shown = float(n), "B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value, shown = value / 1024, unit
        if value < 1024:
            break
    return f"{value:.1f} {shown}" if value < 10 else f"{value:.0f} {shown}"


def os_error(
    exc: OSError,
    path: Path | str | None = None,
    *,
    action: str = "writing",
    what: str = "file",
    name: str | None = None,
    note: str | None = None,
) -> ProvmintError:
    """The one mapping of an ``OSError`` to a one-line ProvmintError with advice.

    The path named is the error's own file name when it has one, else ``path``.
    ``action`` says what was being done ("writing", "creating", "reading"...). A missing
    file met while reading is :class:`MissingFileError` (exit 7, ``what`` names it), other
    read failures a plain :class:`ProvmintError`, anything else :class:`OutputError`
    (all exit 1). A full disk, a quota or a file size
    limit adds the free space: ``no space left on device writing /x/y (12 KiB free)``.
    ``name`` replaces the path in the message ("standard output"); ``note`` is appended
    after a semicolon (for example "nothing was minted").
    """
    code = _errno_of(exc)
    where = exc.filename if exc.filename is not None else path
    if action == "reading" and code == errno.ENOENT and where is not None:
        return MissingFileError(where, what)
    text = exc.strerror or str(exc) or "input/output error"
    reason = os.strerror(code) if code is not None else text.splitlines()[0]
    if code == errno.ENOENT:  # met while writing: it is the directory that is missing
        reason = "no such directory"
    reason = reason[:1].lower() + reason[1:]
    shown = name if name is not None else where
    message = reason if shown is None else f"{reason} {action} {shown}"
    free = free_space(where) if code in _SPACE and where is not None else None
    if free is not None:
        message += f" ({_size(free)} free)"
    if note:
        message += f"; {note}"
    hint = _ADVICE.get(code) if code is not None else None
    if action == "reading":
        return ProvmintError(message, hint=hint)
    return OutputError(where, message, hint=hint, errno=code, free_bytes=free)
