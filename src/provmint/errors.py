"""The provmint exception tree and the process exit codes it maps to.

Every error the library raises on purpose is a :class:`ProvmintError`. Each class carries
the data a caller needs (path, row, column, value, batch id ...) and an ``exit_code`` that
the command-line layer turns into the process status, in one place::

    ProvmintError                     1  operational failure (I/O, internal)
    ├── ConfigError                   2  bad configuration or option value
    ├── InputError                    6  the CSV cannot be minted
    │   ├── InputFileError               unreadable, empty, no data rows, bad encoding
    │   ├── MissingColumnError           a required column is absent
    │   └── RowsRejectedError            rows failed validation (reports them all)
    ├── KeyringError                  9  issuer key missing, unreadable or unsafe
    ├── StoreError                    1  the product store cannot be used
    │   ├── StoreBusyError            8  another provmint process holds the store lock
    │   └── StoreCorruptError            on-disk state contradicts the catalog
    ├── NotFoundError                 7  no such batch or product
    ├── ProofError                    3  a proof file is malformed or hostile
    └── AnchorError (chain.py)       10  node, chain id, fees, funds, chain key, transaction

Verification outcomes (valid, invalid, pending, could-not-check) and scan verdicts
(genuine, forged, unknown, suspect: exit 11) are *results*, not exceptions: see
:class:`provmint.verify.Verdict` and :mod:`provmint.scan`. Their exit codes live here too so that
every number the CLI can return is listed in one table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "EXIT_BUSY",
    "EXIT_CHAIN",
    "EXIT_ERROR",
    "EXIT_INVALID",
    "EXIT_KEY",
    "EXIT_NOT_FOUND",
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
    "NotFoundError",
    "ProofError",
    "ProvmintError",
    "Reject",
    "RowsRejectedError",
    "StoreBusyError",
    "StoreCorruptError",
    "StoreError",
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


class ProvmintError(Exception):
    """Root of every error provmint raises on purpose."""

    exit_code: int = EXIT_ERROR

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(ProvmintError):
    """A setting (flag, environment variable or config file entry) is unusable."""

    exit_code = EXIT_USAGE


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

    ``rejects`` holds every reason (several per row are possible), ``rows`` the number of
    distinct rejected rows, ``rejects_path`` where the full report was written (if it was).
    """

    def __init__(
        self,
        path: Path | str,
        rejects: list[Reject],
        rows: int,
        total: int,
        rejects_path: Path | None,
    ) -> None:
        first = rejects[0].describe(str(path)) if rejects else f"{path}: rows rejected"
        more = f" (and {len(rejects) - 1} more problems)" if len(rejects) > 1 else ""
        super().__init__(
            f"{first}{more}; batch refused: {rows} of {total} rows are invalid",
            hint="fix the rows, or mint the valid ones with --skip-invalid",
        )
        self.path = str(path)
        self.rejects = rejects
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


class ProofError(ProvmintError):
    """A proof document is malformed, oversized or otherwise not acceptable input."""

    exit_code = EXIT_INVALID
