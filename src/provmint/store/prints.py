"""Which verification URL base each batch's labels and label exports were produced with.

A batch's URL base is chosen when its labels are printed, not when it is minted (the
manifest's ``url_base`` is what minting was given, and stays as committed). So that the
choice can be traced afterwards, every ``labels`` run and ``batch export`` appends one
line to ``<store>/prints/<batch id>.jsonl``::

    {"at": "2026-12-01T12:00:00Z", "url_base": "https://id.brand.com", "output": "labels",
     "format": "svg", "labels": 9, "placeholder": false}

The file lives beside the batch, not in it (committed batch directories are never
modified) nor in the catalog (which ``store repair`` rebuilds from files: these are
among them, and are read as they are). It is only ever appended to: each record is one
``write`` of one line on a file opened with ``O_APPEND``, then fsynced, so records by
concurrent processes never overwrite each other and none already written is lost. A
record cut short by a crash is skipped when reading; the next record starts on a line of
its own.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provmint.errors import os_error
from provmint.store.files import fsync_dir, load_json

if TYPE_CHECKING:
    from provmint.store import Store

__all__ = [
    "PRINTS_DIR",
    "PrintLog",
    "PrintRecord",
    "print_log",
    "printed_url_bases",
    "prints_path",
    "read_prints",
    "record_print",
]

PRINTS_DIR = "prints"
_MAX_LINE = 4096
"""The longest record read back (a URL base is at most a few hundred characters)."""


@dataclass(frozen=True, slots=True)
class PrintRecord:
    """One production of a batch's labels or label file: when, on which URL base, by
    which command (``labels`` or ``export``), in which format, how many labels."""

    at: str
    url_base: str
    output: str
    format: str
    labels: int
    placeholder: bool

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (one line of the file)."""
        return {
            "at": self.at,
            "url_base": self.url_base,
            "output": self.output,
            "format": self.format,
            "labels": self.labels,
            "placeholder": self.placeholder,
        }

    @classmethod
    def now(
        cls, url_base: str, output: str, fmt: str, labels: int, *, placeholder: bool
    ) -> PrintRecord:
        """A record of a production that has just finished."""
        at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return cls(at, url_base, output, fmt, labels, placeholder)


def prints_path(store: Store, batch_id: str) -> Path:
    """The file of ``batch_id``'s records (it may not exist: nothing printed yet)."""
    return store.root / PRINTS_DIR / f"{batch_id}.jsonl"


@contextmanager
def print_log(store: Store, batch_id: str) -> Iterator[PrintLog]:
    """The batch's record file, opened for appending before the output is made, so that a
    store where it cannot be written (read-only, full, not ours) refuses the command
    before anything is written, rather than after the labels are out with their URL base
    unrecorded. Raises OutputError (the usual words for an OSError, naming the file)."""
    path = prints_path(store, batch_id)
    try:
        created = not path.parent.is_dir()
        path.parent.mkdir(mode=0o755, exist_ok=True)
        if created:
            fsync_dir(store.root)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        if created:
            fsync_dir(path.parent)
    except OSError as exc:
        raise os_error(exc, path, note="nothing was written") from exc
    try:
        yield PrintLog(fd, path)
    finally:
        os.close(fd)


class PrintLog:
    """One batch's record file, open for appending (see :func:`print_log`)."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd = fd
        self.path = path

    def append(self, record: PrintRecord) -> None:
        """Append ``record``, durably (one ``write`` of one line, then fsync)."""
        line = json.dumps(record.to_json(), ensure_ascii=False, separators=(",", ":")) + "\n"
        try:
            if _ends_mid_line(self._fd):  # a record cut short by a crash: a line of our own
                line = "\n" + line
            os.write(self._fd, line.encode("utf-8"))
            os.fsync(self._fd)
        except OSError as exc:
            raise os_error(
                exc, self.path, note="the labels were written; their URL base is not recorded"
            ) from exc


def record_print(store: Store, batch_id: str, record: PrintRecord) -> None:
    """Append ``record`` to the batch's file, durably. Raises OutputError (the usual
    words for an OSError, naming the file) when it cannot be written."""
    with print_log(store, batch_id) as log:
        log.append(record)


def _ends_mid_line(fd: int) -> bool:
    """Whether the file open at ``fd`` is not empty and does not end with a line end."""
    size = os.fstat(fd).st_size
    return size > 0 and os.pread(fd, 1, size - 1) != b"\n"


def read_prints(store: Store, batch_id: str) -> list[PrintRecord]:
    """The batch's records, oldest first; lines that are not a whole record (cut short
    by a crash, damaged) are skipped. Raises what :func:`provmint.errors.os_error` maps."""
    path = prints_path(store, batch_id)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise os_error(exc, path, action="reading") from exc
    return [record for line in data.split(b"\n") if (record := _parse(line)) is not None]


def printed_url_bases(store: Store) -> set[str]:
    """Every url base any batch's labels or exports were produced with. Files that cannot
    be read are passed over: this serves a running service, which must go on."""
    bases: set[str] = set()
    try:
        entries = list(os.scandir(store.root / PRINTS_DIR))
    except OSError:
        return bases
    for entry in entries:
        if not entry.name.endswith(".jsonl"):
            continue
        try:
            data = Path(entry.path).read_bytes()
        except OSError:
            continue
        bases.update(r.url_base for line in data.split(b"\n") if (r := _parse(line)) is not None)
    return bases


def _parse(line: bytes) -> PrintRecord | None:
    """One line's record, or None when it is not one."""
    if not line.strip() or len(line) > _MAX_LINE:
        return None
    try:
        doc = load_json(line)
        record = PrintRecord(
            at=doc["at"],
            url_base=doc["url_base"],
            output=doc["output"],
            format=doc["format"],
            labels=doc["labels"],
            placeholder=doc["placeholder"],
        )
    except (ValueError, KeyError, TypeError):
        return None
    texts = (record.at, record.url_base, record.output, record.format)
    if not all(isinstance(v, str) for v in texts) or not isinstance(record.placeholder, bool):
        return None
    if type(record.labels) is not int or record.labels < 0:
        return None
    return record
