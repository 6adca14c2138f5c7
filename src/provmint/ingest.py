"""Read a products CSV as a stream of Arrow chunks, and validate each chunk on its own.

Reading (:func:`open_products`). Only a regular file is read (a FIFO, a device or a
socket is refused before it is opened for reading). The header is read and checked when
the file is opened; the data rows then come as :class:`RawChunk` s of :data:`CHUNK_ROWS`
rows, in file order. The file is read front to back in blocks of :data:`BLOCK_BYTES`, so
a reader's memory does not depend on the file's size; the file's SHA-256 and size are
computed on the way.

The standard for what the file says is Python's csv module in strict mode, with the
sniffed delimiter: a quote that is never closed, or a closing quote followed by anything
but a delimiter or a line end, refuses the file with its line and column. Each block is
cut at a record boundary found without parsing: counting from a boundary, a line end is
the end of a record when an even number of quotes precede it, which holds as long as
every quote before it opens a value at the start of a field, closes one (a delimiter, a
line end or the end of the file follows) or is doubled inside one. That is checked,
vectorised, per block; the records before the cut are read by pyarrow (fast, column-wise),
since both readers must agree on them. So are records in which no quote starts a value
(the csv module reads such quotes as ordinary characters, and so does pyarrow told that
there is no quoting). From the first quote that fits neither (text after a closing quote,
an unclosed quote, both kinds of quotes in one block), and for any block pyarrow will not
read (a row of the wrong width), the csv module itself reads from the same boundary, for
about a block, after which the fast path takes over again. So every row kept is the row
the csv module reads, whatever the block size. A record may take at most
:data:`MAX_RECORD_BYTES`: one unclosed quote cannot make the reader hold the rest of the
file.

Every column is read as text (leading zeros survive); a value that is not UTF-8 is kept
as bytes (a binary column) for the validation to report. Header names are matched
case-insensitively with the aliases in :data:`ALIASES`. A missing required column stops
before any row is parsed. Problems with single rows are :class:`RowProblem` s (data: the
record, the column, the value, a code, the twin of a duplicate); the caller decides
whether they refuse the batch.

Validation (:func:`check_chunk`, GS1 rules in :mod:`provmint.gs1`), chunk by chunk and
independent of other chunks, so it can run in a worker process: ``gtin`` GTIN-8/12/13/14
with a valid check digit, normalized to 14 digits; ``serial`` 1-20 CSET 82 characters;
``lot`` (when given) 1-20 CSET 82 characters; ``expiry`` and ``production_date`` (when
given) real dates in ``YYYY-MM-DD`` or ``YYMMDD``; every value valid UTF-8 of at most 4096
bytes; every row as wide as the header. The 64-bit key hash of every row with a usable
(gtin, serial) is computed; duplicates across chunks are the caller's business
(:func:`conclude` finds them in memory).

Line numbers (:func:`record_lines`) cost a second pass over the file, made only when
something is to be reported. :func:`read_products` (with :func:`parse_csv`,
:func:`check_rows` and :func:`conclude`) reads and validates a whole file in memory.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import os
import re
import stat
import struct
import threading
import weakref
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from provmint import gs1
from provmint.canonical import MAX_FIELDS, MAX_VALUE_BYTES
from provmint.errors import (
    InputFileError,
    MissingColumnError,
    MissingFileError,
    ProvmintError,
    Reject,
)
from provmint.keyhash import key_hash
from provmint.store import PART_COLUMNS

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

_native_key_hashes: Any
try:  # the same hash in C (provmint/_native.c); optional
    from provmint._native import key_hashes as _native_key_hashes
except ImportError:  # pragma: no cover - machines without a C compiler
    _native_key_hashes = None

__all__ = [
    "ALIASES",
    "BLOCK_BYTES",
    "CHUNK_ROWS",
    "MAX_INPUT_BYTES",
    "MAX_RECORD_BYTES",
    "REQUIRED",
    "CheckedChunk",
    "Ingested",
    "ParsedCsv",
    "ProductReader",
    "RawChunk",
    "RecordLines",
    "RowCheck",
    "RowProblem",
    "check_chunk",
    "check_rows",
    "conclude",
    "key_hash",
    "key_hashes",
    "normalize_header",
    "open_products",
    "parse_csv",
    "read_products",
    "record_lines",
    "record_values",
]

REQUIRED = ("gtin", "serial")

CHUNK_ROWS = 1 << 16
"""Rows of the header's width in each chunk a :class:`ProductReader` yields (the last
chunk may have fewer)."""

BLOCK_BYTES = 1 << 23
"""Bytes of input read and parsed at a time (8 MiB). A reader holds about one block of
input, its rows as Arrow columns and the chunk being assembled, whatever the file size."""

MAX_RECORD_BYTES = 1 << 23
"""The longest record read (8 MiB, far above any mintable row: 64 values of at most 4 KiB).
A longer one, most likely a quote never closed, refuses the file rather than making the
reader hold the rest of it."""

MAX_INPUT_BYTES = 1 << 30
"""The largest CSV file :func:`parse_csv` and :func:`read_products` read (1 GiB, some 13
million typical rows): they hold all rows in memory, so a bigger file is refused before it
is read. A :class:`ProductReader` streams, and has no such limit."""

ALIASES: dict[str, tuple[str, ...]] = {
    "gtin": (
        "gtin",
        "gtin14",
        "gtin_14",
        "gtin13",
        "gtin_13",
        "ean",
        "ean13",
        "ean_13",
        "upc",
        "upc_a",
        "01",
        "ai_01",
    ),
    "serial": ("serial", "serial_number", "serial_no", "serialno", "sn", "ser", "21", "ai_21"),
    "lot": ("lot", "lot_number", "lot_no", "batch", "batch_number", "batch_no", "10", "ai_10"),
    "expiry": (
        "expiry",
        "expiry_date",
        "exp",
        "exp_date",
        "expiration",
        "expiration_date",
        "use_by",
        "17",
        "ai_17",
    ),
    "production_date": (
        "production_date",
        "prod_date",
        "manufacturing_date",
        "mfg_date",
        "11",
        "ai_11",
    ),
}
"""Canonical column name -> accepted header spellings (after lower-casing and turning
spaces and punctuation into ``_``): ``Serial Number``, ``SN`` and ``21`` all mean ``serial``."""

_ALIAS_TO_NAME = {alias: name for name, aliases in ALIASES.items() for alias in aliases}
_DATE_COLUMNS = ("expiry", "production_date")
_DELIMITERS = (",", ";", "\t", "|")
_MAX_SHOWN_VALUE = 80
_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")  # UTF-32's little-endian mark starts the same way
_LINE_END = re.compile(rb"\r\n|\r|\n")
_TEXT_LINE_END = re.compile(r"\r\n|\r|\n")  # the line ends of the csv module (newline="")
_CONTENT = re.compile(rb"[^\xef\xbb\xbf \t\r\n]")  # anything but whitespace and a BOM
_QUOTED_VALUE = re.compile(r'"[^"]*+(?:""[^"]*+)*+"')  # possessive: linear on hostile input
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_EXACT_BATCH = 1 << 14  # records read by the csv module handed on at a time
_HASH_IN_THREAD = 1 << 20  # blocks at least this big are hashed beside the parsing
_SCAN_BYTES = 1 << 20  # bytes read at a time when a file is scanned beside the stream


def normalize_header(name: str) -> str:
    """Canonical field name of a header cell ('' if it has no usable characters)."""
    text = re.sub(r"[^a-z0-9]+", "_", name.strip().casefold()).strip("_")
    if text in _ALIAS_TO_NAME:
        return _ALIAS_TO_NAME[text]
    if text and not text[0].isalpha():
        text = "c_" + text
    return text[:64]


def _printable(text: str) -> str:
    """``text`` with control characters and line separators escaped: one line of text."""
    return _UNPRINTABLE.sub(lambda m: repr(m.group())[1:-1], text)


def _show(value: str | bytes) -> str:
    raw = value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")
    text = raw.decode("utf-8", "backslashreplace")
    return text if len(text) <= _MAX_SHOWN_VALUE else text[: _MAX_SHOWN_VALUE - 1] + "…"


def _mib(size: int) -> str:
    return f"{size / (1 << 20):g} MiB"


# --- what a reader hands out ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RowProblem:
    """One reason a data record is refused, as data.

    ``record`` is the data record number (the first record after the header is 1; blank
    lines are not records), as :attr:`Reject.row`; ``value`` is the value as shown in a
    report. A ``duplicate_in_file`` names the other record in ``twin``; its reason is
    completed with the twin's line when it becomes a :class:`Reject` (:meth:`reject`).
    """

    record: int
    column: str
    value: str
    code: str
    reason: str
    twin: int | None = None

    def reject(self, lines: Mapping[int, int]) -> Reject:
        """The report of this problem, with the lines of its record (and twin) when known."""
        reason = self.reason
        if self.twin is not None:
            line = lines.get(self.twin)
            reason += f" line {line}" if line is not None else f" row {self.twin}"
        return Reject(
            self.record, lines.get(self.record), self.column, self.value, self.code, reason
        )


@dataclass(frozen=True, slots=True)
class RawChunk:
    """Consecutive data rows as read, not yet validated.

    ``table`` holds the rows of the header's width, one column per field (canonical
    names), every value as read: a ``string`` column, or ``binary`` where some value in
    it is not UTF-8. ``records`` gives each row's data record number (int64, 1-based).
    ``problems`` are the records refused while reading (``ragged_row``: another number of
    fields than the header), up to the last row of this chunk (the last chunk: all).
    """

    index: int
    names: tuple[str, ...]
    table: pa.Table
    records: np.ndarray
    problems: tuple[RowProblem, ...]


@dataclass(frozen=True, slots=True)
class CheckedChunk:
    """A chunk validated on its own (see :func:`check_chunk`).

    ``table`` holds the rows that passed (every column ``string``, ``gtin`` as 14 digits)
    and ``records`` their record numbers. ``identities`` has one row per row of the chunk
    whose gtin and serial are valid, valid or not otherwise (a duplicate's twin may be
    refused for another reason): ``record`` (int64), ``key`` (uint64,
    ``provmint-keyhash/1``), ``gtin`` (14 digits) and ``serial``, in record order.
    ``problems`` are the reasons the other rows failed (those found while reading
    included), sorted by record and column.
    """

    index: int
    table: pa.Table
    records: np.ndarray
    identities: pa.Table
    problems: tuple[RowProblem, ...]

    @property
    def key_records(self) -> np.ndarray:
        """Record number of each row with a usable identity (int64)."""
        records: np.ndarray = self.identities.column("record").to_numpy()
        return records

    @property
    def key_hashes(self) -> np.ndarray:
        """The 64-bit key hash of each row with a usable identity (uint64)."""
        keys: np.ndarray = self.identities.column("key").to_numpy()
        return keys

    def table_keys(self) -> np.ndarray:
        """The key hash of each row of :attr:`table` (each valid row has an identity)."""
        import numpy as np

        at = np.searchsorted(self.key_records, self.records)
        keys: np.ndarray = self.key_hashes[at]
        return keys


class RecordLines(Mapping[int, int]):
    """Data record number (1-based) -> the physical line where the record starts."""

    def __init__(self, lines: np.ndarray) -> None:
        self._lines = lines

    def __getitem__(self, record: int) -> int:
        if not 1 <= record <= len(self._lines):
            raise KeyError(record)
        return int(self._lines[record - 1])

    def __len__(self) -> int:
        return len(self._lines)

    def __iter__(self) -> Iterator[int]:
        return iter(range(1, len(self._lines) + 1))


# --- the file: regular files only ----------------------------------------------------------------


def _special_kind(mode: int) -> str | None:
    """What a file that is not a regular file is (None for a regular file)."""
    if stat.S_ISREG(mode):
        return None
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((kind for test, kind in kinds if test(mode)), "not a regular file")


def _not_regular(path: Path, kind: str) -> InputFileError:
    if kind == "a directory":
        return InputFileError(path, "is a directory, not a CSV file")
    return InputFileError(
        path,
        f"is {kind}, not a regular file; provmint reads CSV input from regular files only",
        hint="save the data to a file first, then mint that file",
    )


def _too_big(path: Path, max_bytes: int, size: int | None) -> InputFileError:
    """The refusal of a file over ``max_bytes`` (``size`` None: it grew while read)."""
    what = f"{size:,} bytes" if size is not None else f"over {max_bytes:,} bytes"
    return InputFileError(
        path,
        f"is {what}; one batch is read from at most {max_bytes:,} bytes",
        hint="split the file into smaller ones (each with the header line) and mint each",
    )


def _open_regular(path: Path) -> int:
    """A descriptor of the regular file ``path``.

    Anything else is refused before it is opened for reading: a FIFO would block until a
    writer comes, ``/dev/zero`` would never end. The file is opened non-blocking and
    checked again, in case it was swapped since.
    """
    try:
        kind = _special_kind(os.stat(path).st_mode)
        if kind is not None:
            raise _not_regular(path, kind)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise MissingFileError(path, "products CSV") from None
    except OSError as exc:
        raise InputFileError(path, f"cannot read: {exc.strerror or exc}") from exc
    kind = _special_kind(os.fstat(fd).st_mode)
    if kind is not None:
        os.close(fd)
        raise _not_regular(path, kind)
    return fd


class _Source:
    """The file being read, front to back: its descriptor, how many bytes were read and
    their SHA-256 (large blocks are hashed in a thread, beside the parsing)."""

    def __init__(self, path: Path, max_bytes: int | None) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.fd = _open_regular(path)
        self._closer = weakref.finalize(self, os.close, self.fd)
        self.size = 0
        self.eof = False
        self._sha = hashlib.sha256()
        self._hashing: threading.Thread | None = None
        size = os.fstat(self.fd).st_size
        if max_bytes is not None and size > max_bytes:
            self.close()
            raise _too_big(path, max_bytes, size)

    def readinto(self, view: memoryview) -> int:
        """Read the next bytes into ``view``; how many (0: the end of the file, and
        :attr:`eof` is set). They are hashed before the next read, which may reuse the
        memory."""
        if self._hashing is not None:
            self._hashing.join()
            self._hashing = None
        try:
            n = os.readv(self.fd, [view])
        except OSError as exc:
            raise InputFileError(self.path, f"cannot read: {exc.strerror or exc}") from exc
        if not n:
            self.eof = True
            return 0
        self.size += n
        if self.max_bytes is not None and self.size > self.max_bytes:
            raise _too_big(self.path, self.max_bytes, None)
        if n >= _HASH_IN_THREAD:  # hashlib lets go of the GIL: this runs beside the parsing
            self._hashing = threading.Thread(target=self._sha.update, args=(view[:n],))
            self._hashing.start()
        else:
            self._sha.update(view[:n])
        return n

    def sha256(self) -> str:
        """SHA-256 of the bytes read so far."""
        if self._hashing is not None:
            self._hashing.join()
            self._hashing = None
        return self._sha.hexdigest()

    def _scan(self, offset: int) -> Iterator[bytes]:
        """The bytes from ``offset`` on, read beside the stream (it is not moved)."""
        while True:
            try:
                data = os.pread(self.fd, _SCAN_BYTES, offset)
            except OSError as exc:
                raise InputFileError(self.path, f"cannot read: {exc.strerror or exc}") from exc
            if not data:
                return
            yield data
            offset += len(data)

    def line_at(self, offset: int) -> int:
        """The physical line (1-based) that starts at byte ``offset``, which follows a line
        end (or is 0): for reporting a problem, so the file is counted once more."""
        lines, seen, after_cr = 0, 0, False
        for data in self._scan(0):
            data = data[: offset - seen]
            lines += _count_lines(data, 0, len(data)) - (after_cr and data[:1] == b"\n")
            after_cr, seen = data[-1:] == b"\r", seen + len(data)
            if seen >= offset:
                break
        return lines + 1

    def has_content(self, offset: int) -> bool:
        """Whether anything but whitespace and BOM bytes follows ``offset``."""
        return any(_CONTENT.search(data) for data in self._scan(offset))

    def close(self) -> None:
        """Let go of the file (the digest of what was read stays available)."""
        if self._hashing is not None:
            self._hashing.join()
            self._hashing = None
        self._closer()


def _count_lines(buf: bytes | bytearray, start: int, stop: int) -> int:
    """Line ends (CRLF, CR or LF) in ``buf[start:stop]``."""
    return (
        buf.count(b"\n", start, stop)
        + buf.count(b"\r", start, stop)
        - buf.count(b"\r\n", start, stop)
    )


def _line_stops(buf: bytes | bytearray, start: int, stop: int) -> list[int]:
    """Where each line of ``buf[start:stop]`` ends, after its line end (offsets from
    ``start``; the last line may have none)."""
    import numpy as np

    raw = np.frombuffer(buf, dtype=np.uint8, count=stop - start, offset=start)
    lf = raw == 10
    ends = lf.copy()
    cr = raw == 13
    ends[:-1] |= cr[:-1] & ~lf[1:]  # a CR ends a line unless an LF follows
    ends[-1:] |= cr[-1:]
    stops: list[int] = (np.flatnonzero(ends) + 1).tolist()
    if not stops or stops[-1] != raw.size:
        stops.append(int(raw.size))
    return stops


def _is_utf8(data: bytes | bytearray | memoryview) -> bool:
    """Whether ``data`` is valid UTF-8, checked by Arrow (no Python string is made)."""
    import pyarrow as pa

    buffer = pa.py_buffer(data)
    offsets = pa.py_buffer(struct.pack("<qq", 0, buffer.size))
    text = pa.Array.from_buffers(pa.large_string(), 1, [None, offsets, buffer])
    try:
        text.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


# --- the stream: blocks cut at record boundaries -------------------------------------------------


class _TooLongError(Exception):
    """A record (or the header) grew past the record limit."""


@dataclass(slots=True)
class _Fast:
    """Whole records ``buf[start:stop]`` that pyarrow may read (their quotes are to be
    read as quotes if ``quoted``, else as ordinary characters). The reader sets ``redo``
    when pyarrow will not (a row of another width): the csv module then reads them."""

    buf: bytearray
    start: int
    stop: int
    quoted: bool
    redo: bool = False


@dataclass(slots=True)
class _Batch:
    """Records read by the csv module, blank lines left out: the fields of each and,
    when lines are counted, the physical line where each starts."""

    fields: list[list[str]]
    lines: list[int] | None


class _Scanner:
    """The file's bytes from the end of the header on, as whole records.

    ``buf[pos:end]`` is what is read and not consumed yet, and ``pos`` is always a record
    boundary; ``base`` is the file offset of ``buf[0]``. Two buffers take turns (the file
    is read into memory that is already mapped). :meth:`segments` yields either a run of
    plain records for pyarrow (:class:`_Fast`) or a batch of records read by the csv
    module. When ``counting`` is set, ``lines`` is the number of physical lines before
    ``pos`` (the header's included).
    """

    def __init__(self, source: _Source, block: int, limit: int) -> None:
        self.src = source
        self.block = max(1, block)
        self.min_fast = max(1, self.block // 4)
        self.limit = limit
        self.buf = bytearray()
        self.end = 0
        self._spare = bytearray()
        self.pos = 0
        self.base = 0
        self.delimiter = ","
        self.names: list[str] = []
        self.counting = False
        self.lines = 0
        self._line_stop = 0
        self._line_count = 0

    # reading

    def fill(self) -> None:
        """Drop the consumed bytes; make the rest at least a block long (or all there is)."""
        have = self.end - self.pos
        if have >= self.block or (self.src.eof and not self.pos):
            return
        spare = self._spare
        if len(spare) < max(have, self.block):
            spare = bytearray(max(have, self.block))
        view = memoryview(spare)
        view[:have] = memoryview(self.buf)[self.pos : self.end]
        while have < self.block and not self.src.eof:
            have += self.src.readinto(view[have:])
        self._spare, self.buf = self.buf, spare
        self.base += self.pos
        self.pos, self.end = 0, have

    def grow(self) -> None:
        """Read as much again as is buffered (at least a block): a record runs on."""
        want = self.end + max(self.block, self.end - self.pos)
        if len(self.buf) < want:
            bigger = bytearray(want)
            bigger[: self.end] = memoryview(self.buf)[: self.end]
            self.buf = bigger
        self.end += self.src.readinto(memoryview(self.buf)[self.end : want])

    def lines_of(self, errors: str) -> Iterator[str]:
        """The lines from ``pos`` on, decoded; each one sets ``_line_stop`` (where it ends)
        and adds to ``_line_count``. Raises _TooLongError once the record that starts at
        ``pos`` is longer than the limit."""
        p = self.pos
        while True:
            buf = self.buf
            found = _LINE_END.search(buf, p, self.end)
            if found is not None and (
                found.end() < self.end or buf[found.start()] != 13 or self.src.eof
            ):
                end = found.end()  # (a CR ending the buffer may be the first half of CRLF)
            elif self.src.eof:
                if p >= self.end:
                    return
                end = self.end
            else:
                if self.end - self.pos > self.limit:
                    raise _TooLongError
                self.grow()
                continue
            if end - self.pos > self.limit:
                raise _TooLongError
            self._line_stop = end
            self._line_count += 1
            yield str(buf[p:end], "utf-8", errors)
            p = end

    # the records

    def segments(self) -> Iterator[_Fast | _Batch]:
        """Everything after the header, in order: plain runs for pyarrow, and batches of
        records read by the csv module (from the first quote that is not plain, for about
        a block, and wherever pyarrow will not read a run)."""
        while True:
            self.fill()
            start, stop = self.pos, self.end
            if start >= stop:
                return
            # A run is never longer than a record may be: a longer record always meets the
            # csv module's reading, which refuses it, whatever the block size.
            end = min(stop, start + self.limit)
            at_end = self.src.eof and end == stop
            after = self.buf[end] if end < stop else None
            found = _plain_cut(self.buf, start, end, self.delimiter, at_end, after)
            cut, limit = found.stop, found.limit
            if cut - start >= self.min_fast or (at_end and cut == end):
                run = _Fast(self.buf, start, cut, found.quoted)
                yield run
                if not run.redo:
                    if self.counting:
                        self.lines += _count_lines(self.buf, start, cut)
                    self.pos = cut
                    continue
                target = cut
            else:
                target = min(stop, max(start + self.min_fast, limit + 1))
            yield from self.exact(target)

    def exact(self, target: int) -> Iterator[_Batch]:
        """Records read by the csv module from ``pos`` until one ends at or after
        ``target`` (or the file does), in batches; blank lines are left out.

        The whole lines in the buffer up to ``target`` are read at C speed (one decoded
        text); the record that runs past them, and any record the csv module stumbles on
        or that is too long, is read again line by line (which reads on as needed, and
        refuses what must be refused)."""
        end = self._whole_lines(target)
        if end > self.pos:
            yield from self._bulk(end, target)
        if self.pos < target:
            yield from self._line_by_line(target)

    def _whole_lines(self, target: int) -> int:
        """Where the buffered lines up to ``target`` end: after the first line end at or
        after ``target`` (or before it, if there is none yet)."""
        buf, eof = self.buf, self.src.eof

        def complete(found: re.Match[bytes] | None) -> bool:
            # A CR ending what is read may be the first half of a CRLF.
            return found is not None and (found.end() < self.end or buf[found.start()] != 13 or eof)

        found = _LINE_END.search(buf, max(self.pos, target - 1), self.end)
        if complete(found):
            assert found is not None
            return found.end()
        if eof:
            return self.end
        stop = target
        while stop > self.pos:
            c = max(buf.rfind(b"\n", self.pos, stop), buf.rfind(b"\r", self.pos, stop))
            if c < 0:
                break
            if c + 1 < self.end or buf[c] == 10:
                return c + 1
            stop = c
        return self.pos

    def _bulk(self, end: int, target: int) -> Iterator[_Batch]:
        """Records of the whole lines ``buf[pos:end]``, until one ends at or after
        ``target``; stops early, ``pos`` at the record, where it must be read again."""
        start = self.pos
        stops = _line_stops(self.buf, start, end)
        text = str(memoryview(self.buf)[start:end], "utf-8", "surrogateescape")
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=self.delimiter, strict=True)
        # Offsets from ``start``, lines from the first of ``text``, in locals: a hot loop.
        pos, goal, limit, consumed, more = 0, target - start, self.limit, 0, True
        while more and pos < goal:
            fields: list[list[str]] = []
            firsts: list[int] = []
            with _csv_field_limit(limit + 1):
                try:
                    for record in reader:
                        stop = stops[reader.line_num - 1]
                        if stop - pos > limit:  # to be refused, line by line
                            more = False
                            break
                        if record:
                            fields.append(record)
                            firsts.append(consumed)
                        consumed, pos = reader.line_num, stop
                        if pos >= goal or len(fields) == _EXACT_BATCH:
                            break
                    else:
                        more = False
                except csv.Error:  # it runs past ``end``, or it is to be refused: line by line
                    more = False
            lines = None
            if self.counting:
                lines = [self.lines + 1 + first for first in firsts]
            yield _Batch(fields, lines)
        self.pos = start + pos
        self.lines += consumed

    def _line_by_line(self, target: int) -> Iterator[_Batch]:
        """Records from ``pos`` on, the csv module reading line by line, until one ends at
        or after ``target`` (or the file does)."""
        done = False
        while not done:
            batch = _Batch([], [] if self.counting else None)
            with _csv_field_limit(self.limit + 1):
                reader = csv.reader(
                    self.lines_of("surrogateescape"), delimiter=self.delimiter, strict=True
                )
                try:
                    while len(batch.fields) < _EXACT_BATCH and not done:
                        self._line_stop, self._line_count = self.pos, 0
                        fields = next(reader, None)
                        if fields is None:
                            done = True
                            break
                        if fields:
                            batch.fields.append(fields)
                            if batch.lines is not None:
                                batch.lines.append(self.lines + 1)
                        self.lines += self._line_count
                        self.pos = self._line_stop
                        done = self.pos >= target
                except csv.Error as exc:
                    raise self._unreadable(exc) from None
                except _TooLongError:
                    raise self._too_long() from None
            yield batch

    # refusals

    def _record_line(self) -> int:
        """The physical line where the record at ``pos`` starts."""
        return self.lines + 1 if self.counting else self.src.line_at(self.base + self.pos)

    def _unreadable(self, exc: csv.Error) -> InputFileError:
        text = str(self.buf[self.pos : self._line_stop], "utf-8", "surrogateescape")
        return _csv_error(self.src.path, text, self._record_line(), self.delimiter, self.names, exc)

    def _too_long(self, what: str = "record") -> InputFileError:
        stop = min(self.end, self.pos + self.limit)
        text = str(self.buf[self.pos : stop], "utf-8", "surrogateescape")
        line = self._record_line()
        return _too_long_error(
            self.src.path, text, line, self.delimiter, self.names, self.limit, what
        )


@dataclass(frozen=True, slots=True)
class _Cut:
    """Where a run of records that pyarrow may read ends (``stop``), and whether its
    quotes are to be read as quotes (``quoted``) or as ordinary characters; ``limit`` is
    the first byte from which that is not known."""

    stop: int
    limit: int
    quoted: bool


def _plain_cut(
    buf: bytes | bytearray, start: int, end: int, delimiter: str, at_end: bool, after: int | None
) -> _Cut:
    """The longest run of whole records from ``buf[start]`` (a record boundary) to at most
    ``end`` (``at_end``: the end of the file; else ``after`` is the byte that follows,
    None if it is not read yet) that pyarrow reads as the csv module does.

    Either every quote in it opens a value at the start of a field, closes one or is
    doubled inside one (RFC 4180 quoting: a line end is the end of a record when an even
    number of quotes precede it), or no quote in it is at the start of a field (then the
    csv module reads every quote as an ordinary character, and so does pyarrow told that
    there is no quoting). The longer of the two is taken.
    """
    quotes = None
    limit, quoted = end, True
    if buf.find(b'"', start, end) >= 0:
        quotes, limit, literal = _plain_quotes(buf, start, end, delimiter, at_end, after)
        if literal > limit:
            quotes, limit, quoted = None, literal, False
    if limit == end and at_end:
        return _Cut(end, limit, quoted)
    stop = limit
    while True:
        c = max(buf.rfind(b"\n", start, stop), buf.rfind(b"\r", start, stop))
        if c < 0:
            return _Cut(start, limit, quoted)
        if quotes is not None:
            import numpy as np

            before = int(np.searchsorted(quotes, c))
            if before % 2:  # inside a quoted value: look before the value
                stop = int(quotes[before - 1])
                continue
        if buf[c] == 13 and c + 1 == end and not (at_end or (after is not None and after != 10)):
            stop = c  # a CR that may be the first half of a CRLF cut in two
            continue
        return _Cut(c + 1, limit, quoted)


def _plain_quotes(
    buf: bytes | bytearray, start: int, end: int, delimiter: str, at_end: bool, after: int | None
) -> tuple[np.ndarray, int, int]:
    """The positions of the quotes in ``buf[start:end]``; the first one from which
    quoting is not plain (``end`` if none): quote 2k must open a value (at the start of
    the run, or after a delimiter or a line end), quote 2k+1 close it (a delimiter, a
    line end or the end of the file follows), unless the two are a doubled quote; and the
    first quote at the start of a field (``end`` if none)."""
    import numpy as np

    raw = np.frombuffer(buf, dtype=np.uint8, count=end - start, offset=start)
    quotes = np.flatnonzero(raw == ord('"'))
    separator = np.zeros(256, dtype=bool)  # byte -> ends a field
    separator[list(f"{delimiter}\r\n".encode())] = True
    starts_field = separator[raw[quotes - 1]]
    starts_field[quotes == 0] = True
    opening = np.flatnonzero(starts_field)
    literal = start + int(quotes[opening[0]]) if opening.size else end
    opens, closes = quotes[0::2], quotes[1::2]
    pairs = closes.size
    doubled = np.zeros(pairs, dtype=bool)  # close k is followed at once by open k + 1
    k = min(pairs, opens.size - 1)
    doubled[:k] = opens[1 : k + 1] == closes[:k] + 1
    open_ok = starts_field[0::2][:pairs].copy()
    open_ok[1:] |= doubled[:-1]
    following = closes + 1
    known = following < raw.size
    close_ok = np.zeros(pairs, dtype=bool)
    close_ok[known] = separator[raw[following[known]]]
    if pairs and not known[-1]:  # the last close ends the run: what follows it?
        close_ok[-1] = at_end or (after is not None and bool(separator[after]))
    close_ok |= doubled
    bad = np.flatnonzero(~(open_ok & close_ok))
    if bad.size:
        limit = start + int(opens[bad[0]])
    elif opens.size > pairs:  # a value still open at the end of the run
        limit = start + int(opens[-1])
    else:
        limit = end
    return quotes + start, limit, literal


def _record_starts(
    buf: bytes | bytearray, start: int, stop: int, quoted: bool = True
) -> tuple[np.ndarray, np.ndarray, int]:
    """Where the records of the plain run ``buf[start:stop]`` start (offsets from
    ``start``), the line of each (0 for the run's first line), and the run's line ends.

    A record starts at the run's start and after each line end preceded by an even
    number of quotes (any line end, if the quotes are not ``quoted``), unless the line is
    blank (the csv module skips those).
    """
    import numpy as np

    raw = np.frombuffer(buf, dtype=np.uint8, count=stop - start, offset=start)
    lf = raw == 10
    cr = raw == 13
    ends = lf.copy()
    ends[:-1] |= cr[:-1] & ~lf[1:]  # a CR ends a line unless an LF follows
    ends[-1:] |= cr[-1:]
    line_ends = np.flatnonzero(ends)
    quotes = np.flatnonzero(raw == ord('"')) if quoted else line_ends[:0]
    record_ends = line_ends
    if quotes.size:
        record_ends = line_ends[np.searchsorted(quotes, line_ends) % 2 == 0]
    starts = np.concatenate([np.zeros(1, dtype=np.int64), record_ends + 1])
    starts = starts[starts < raw.size]
    starts = starts[~(lf | cr)[starts]]
    return starts, np.searchsorted(line_ends, starts), int(line_ends.size)


def _parse_fast(
    run: _Fast, names: list[str], delimiter: str, threads: bool = True
) -> pa.Table | None:
    """The records of a plain run read by pyarrow (a column is binary where some value
    is not UTF-8), or None if pyarrow will not read them all (a row of another width).
    ``threads``: let pyarrow parse with its thread pool (less wall time, more CPU)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if run.buf.startswith(_BOM, run.start, run.stop):
        return None  # pyarrow would drop it; the csv module keeps it
    data = pa.py_buffer(run.buf).slice(run.start, run.stop - run.start)

    def read(kind: Any) -> pa.Table:
        return pacsv.read_csv(
            data,
            read_options=pacsv.ReadOptions(
                column_names=names, block_size=1 << 22, use_threads=threads
            ),
            parse_options=pacsv.ParseOptions(
                delimiter=delimiter,
                quote_char='"' if run.quoted else False,
                newlines_in_values=run.quoted,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={name: kind for name in names},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )

    try:
        return read(pa.string())
    except pa.ArrowInvalid:
        if _is_utf8(memoryview(run.buf)[run.start : run.stop]):
            return None  # not about the bytes: a row of another width
    try:
        table = read(pa.binary())
    except pa.ArrowInvalid:
        return None
    columns = []
    for column in table.columns:
        try:
            columns.append(column.cast(pa.string()))
        except pa.ArrowInvalid:
            columns.append(column)
    return pa.table(columns, names=names)


def _arrow_columns(rows: list[list[str]], names: list[str]) -> pa.Table:
    """Rows of the csv module (each as wide as ``names``) as an Arrow table; a column with
    a value that is not UTF-8 (surrogate escapes) holds the raw bytes."""
    import numpy as np
    import pyarrow as pa

    width = len(names)
    try:  # all values in one array, then a column is every width-th of them: fewer calls
        values = pa.array(list(itertools.chain.from_iterable(rows)), type=pa.string())
    except UnicodeEncodeError:
        values = None
    arrays = []
    firsts = np.arange(len(rows), dtype=np.int64) * width
    for i in range(width):
        if values is not None:
            arrays.append(values.take(pa.array(firsts + i)))
            continue
        column = [row[i] for row in rows]
        try:
            arrays.append(pa.array(column, type=pa.string()))
        except UnicodeEncodeError:
            raw = [v.encode("utf-8", "surrogateescape") for v in column]
            arrays.append(pa.array(raw, type=pa.binary()))
    return pa.table(arrays, names=names)


def _concat(tables: list[pa.Table], names: list[str], *, compact: bool = True) -> pa.Table:
    """One table (a column is binary if it is binary in any part); ``compact``: of
    contiguous columns, copied (a chunk must not drag whole blocks along when it is sent
    to another process)."""
    import pyarrow as pa

    if not tables:
        return _arrow_columns([], names)
    kinds = [
        pa.binary() if any(t.schema.field(i).type == pa.binary() for t in tables) else pa.string()
        for i in range(len(names))
    ]
    schema = pa.schema(list(zip(names, kinds, strict=True)))
    parts = [t if t.schema.equals(schema) else t.cast(schema) for t in tables]
    if not compact:
        return pa.concat_tables(parts)
    chunks = [[c for t in parts for c in t.column(i).chunks] for i in range(len(names))]
    columns = [
        pa.concat_arrays(c) if c else pa.array([], type=k)
        for c, k in zip(chunks, kinds, strict=True)
    ]
    return pa.table(columns, schema=schema)


# --- the header ----------------------------------------------------------------------------------


def _sniff_delimiter(first_line: str) -> str:
    counts = {d: first_line.count(d) for d in _DELIMITERS}
    best = max(_DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


def _read_header(src: _Source, sc: _Scanner) -> list[str]:
    """Read the header record (all of it, however long, up to the record limit) and sniff
    the delimiter; leaves ``sc`` at the first data record, its lines counted."""
    path = src.path
    sc.fill()
    while sc.end < len(_BOM) + 1 and not src.eof:  # enough to tell the BOMs apart
        sc.grow()
    if not _CONTENT.search(sc.buf, 0, sc.end) and (src.eof or not src.has_content(sc.end)):
        raise InputFileError(path, "file is empty", hint="expected a header line and rows")
    if sc.buf.startswith(_UTF16_BOMS, 0, sc.end):
        raise InputFileError(
            path, "is UTF-16 or UTF-32 text, not UTF-8", hint="save the file as UTF-8"
        )
    start = len(_BOM) if sc.buf.startswith(_BOM, 0, sc.end) else 0
    sc.pos, sc._line_count = start, 0
    try:
        first = next(sc.lines_of("strict"), "").rstrip("\r\n")
    except UnicodeDecodeError:
        raise InputFileError(
            path, "line 1: header is not valid UTF-8", hint="save the file as UTF-8"
        ) from None
    except _TooLongError:
        raise sc._too_long("header") from None
    if not first.strip():
        raise InputFileError(path, "line 1: header line is empty")
    if "\0" in first:
        raise InputFileError(
            path,
            "line 1: header contains NUL characters (is the file UTF-16?)",
            hint="save the file as UTF-8",
        )
    sc.delimiter = _sniff_delimiter(first)
    if '"' in first:  # read by the csv module: a quoted name may hold a line break
        sc._line_count = 0
        reader = csv.reader(sc.lines_of("strict"), delimiter=sc.delimiter, strict=True)
        try:
            with _csv_field_limit(sc.limit + 1):
                header = next(reader)
        except UnicodeDecodeError:
            raise InputFileError(
                path,
                f"line {sc._line_count}: header is not valid UTF-8",
                hint="save the file as UTF-8",
            ) from None
        except csv.Error as exc:
            raise sc._unreadable(exc) from None
        except _TooLongError:
            raise sc._too_long("header") from None
    else:
        header = first.split(sc.delimiter)
    sc.pos, sc.lines = sc._line_stop, sc._line_count
    return header


def _check_header(path: Path, raw: list[str]) -> list[str]:
    if len(raw) > MAX_FIELDS:
        raise InputFileError(
            path,
            f"line 1: the header has {len(raw):,} columns; provmint takes at most {MAX_FIELDS}",
            hint="drop the columns that need not be kept with every product",
        )
    names = [normalize_header(h) for h in raw]
    for i, (orig, name) in enumerate(zip(raw, names, strict=True), start=1):
        if not name:
            raise InputFileError(path, f"line 1: column {i} ({_show(orig)!r}) has no usable name")
    seen: dict[str, str] = {}
    for orig, name in zip(raw, names, strict=True):
        if name in seen:
            raise InputFileError(
                path,
                f"line 1: columns {_show(seen[name])!r} and {_show(orig)!r} both mean '{name}'",
            )
        seen[name] = orig
    for orig, name in zip(raw, names, strict=True):
        if name in PART_COLUMNS:  # provmint stores these next to every product
            raise InputFileError(
                path,
                f"line 1: column {_show(orig)!r} is reserved: provmint generates '{name}' itself",
                hint="rename or drop that column",
            )
    for required in REQUIRED:
        if required not in names:
            shown = [_printable(_show(h)) for h in raw]
            raise MissingColumnError(path, required, shown, list(ALIASES[required]))
    return names


# --- the reader ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Piece:
    """Consecutive records as read: ``count`` of them from record ``first`` on, the line of
    each (when counted), the rows of the header's width (when parsed) with their record
    numbers, and the records refused while reading."""

    first: int
    count: int
    lines: np.ndarray | None
    table: pa.Table | None
    records: np.ndarray
    problems: tuple[RowProblem, ...]


class ProductReader:
    """The data rows of a products CSV, as :class:`RawChunk` s in file order.

    Made by :func:`open_products`, which has read and checked the header: ``header`` (as
    written), ``names`` (canonical), ``delimiter``. Iterate it once; memory stays bounded
    by the block size and the chunk size. Once every chunk is read, :attr:`records` (data
    records, of any width), :attr:`bytes_read` and :attr:`sha256` describe the file.
    Problems with the file as a whole met on the way (a quote never closed, text after a
    closing quote, a record over :data:`MAX_RECORD_BYTES`) raise InputFileError from
    the iteration, naming the line and column. Use it as a context manager (or call
    :meth:`close`) if it is not read to the end.
    """

    def __init__(
        self,
        path: Path,
        *,
        chunk_rows: int,
        block_bytes: int,
        max_bytes: int | None,
        parse_threads: bool = True,
    ) -> None:
        if chunk_rows < 1:
            raise ValueError("chunk_rows must be at least 1")
        self.path = path
        self.chunk_rows = chunk_rows
        self.parse_threads = parse_threads
        self._src = _Source(path, max_bytes)
        try:
            self._scanner = _Scanner(self._src, block_bytes, MAX_RECORD_BYTES)
            self.header: tuple[str, ...] = tuple(_read_header(self._src, self._scanner))
            self.names: tuple[str, ...] = tuple(_check_header(path, list(self.header)))
            self._scanner.names = list(self.names)
            sc = self._scanner
            if not _CONTENT.search(sc.buf, sc.pos, sc.end) and (
                self._src.eof or not self._src.has_content(sc.base + sc.end)
            ):
                raise InputFileError(path, "has a header but no data rows")
        except BaseException:
            self._src.close()
            raise
        self.delimiter: str = self._scanner.delimiter
        self._records = 0
        self._started = False
        self._sha256: str | None = None

    @property
    def finished(self) -> bool:
        """Whether every record was read."""
        return self._sha256 is not None

    @property
    def records(self) -> int:
        """Data records read so far (blank lines are not records; ragged rows are)."""
        return self._records

    @property
    def bytes_read(self) -> int:
        """Bytes of the file read so far (all of them once :attr:`finished`)."""
        return self._src.size

    @property
    def sha256(self) -> str:
        """SHA-256 of the whole file, once every record was read."""
        if self._sha256 is None:
            raise RuntimeError("the file is not read to the end yet")
        return self._sha256

    def close(self) -> None:
        """Let go of the file."""
        self._src.close()

    def __enter__(self) -> ProductReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[RawChunk]:
        """Chunks of exactly ``chunk_rows`` rows of the header's width (the last may have
        fewer, or none when it only carries problems); at least one chunk."""
        names = list(self.names)
        pending: deque[tuple[pa.Table, np.ndarray]] = deque()
        problems: deque[RowProblem] = deque()
        rows = index = 0
        for piece in self._pieces(values=True, lines=False):
            problems.extend(piece.problems)
            if piece.table is not None and piece.table.num_rows:
                pending.append((piece.table, piece.records))
                rows += piece.table.num_rows
            while rows >= self.chunk_rows:
                yield _take(names, pending, self.chunk_rows, problems, index, last=False)
                rows -= self.chunk_rows
                index += 1
        if rows or problems or index == 0:
            yield _take(names, pending, rows, problems, index, last=True)

    def _pieces(self, *, values: bool, lines: bool) -> Iterator[_Piece]:
        """The records in order, as pieces: parsed into Arrow if ``values``, with the line
        of every record if ``lines``. Can be gone through once."""
        if self._started:
            raise RuntimeError("a ProductReader is read once")
        self._started = True
        sc = self._scanner
        sc.counting = lines
        try:
            for segment in sc.segments():
                if isinstance(segment, _Fast):
                    piece = self._fast_piece(segment, values=values, lines=lines)
                    if piece is None:
                        segment.redo = True  # the csv module reads these records instead
                        continue
                else:
                    piece = self._exact_piece(segment, values=values)
                yield piece
            if self._records == 0:
                raise InputFileError(self.path, "has a header but no data rows")
            self._sha256 = self._src.sha256()
        finally:
            self._src.close()

    def _fast_piece(self, run: _Fast, *, values: bool, lines: bool) -> _Piece | None:
        import numpy as np

        table = None
        if values:
            table = _parse_fast(run, list(self.names), self.delimiter, self.parse_threads)
            if table is None:
                return None
        numbers = None
        if lines:
            starts, relative, _ = _record_starts(run.buf, run.start, run.stop, run.quoted)
            count = int(starts.size)
            numbers = relative + (self._scanner.lines + 1)
            if table is not None and table.num_rows != count:
                raise ProvmintError(
                    f"{self.path}: internal error: the CSV readers disagree about the rows "
                    f"from line {self._scanner.lines + 1} ({table.num_rows} and {count}); "
                    "please report this file"
                )
        else:
            assert table is not None
            count = table.num_rows
        first = self._records + 1
        self._records += count
        records = np.arange(first, first + count, dtype=np.int64)
        return _Piece(first, count, numbers, table, records, ())

    def _exact_piece(self, batch: _Batch, *, values: bool) -> _Piece:
        import numpy as np

        width = len(self.names)
        first = self._records + 1
        count = len(batch.fields)
        self._records += count
        fits = [len(fields) == width for fields in batch.fields]
        rows = batch.fields
        problems: list[RowProblem] = []
        if all(fits):
            good = np.arange(first, first + count, dtype=np.int64)
        else:
            good = np.flatnonzero(fits) + first
            rows = [fields for fields, fit in zip(rows, fits, strict=True) if fit]
            for at in np.flatnonzero(~np.array(fits)).tolist():
                fields = batch.fields[at]
                problems.append(
                    RowProblem(
                        first + at,
                        "(row)",
                        _show(self.delimiter.join(fields)),
                        "ragged_row",
                        f"row has {len(fields)} fields; the header has {width}",
                    )
                )
        numbers = None if batch.lines is None else np.array(batch.lines, dtype=np.int64)
        table = _arrow_columns(rows, list(self.names)) if values else None
        return _Piece(first, count, numbers, table, good, tuple(problems))


def _take(
    names: list[str],
    pending: deque[tuple[pa.Table, np.ndarray]],
    n: int,
    problems: deque[RowProblem],
    index: int,
    *,
    last: bool,
) -> RawChunk:
    """The next chunk: ``n`` rows off ``pending``, and the problems up to its last row
    (all that are left when it is the ``last``)."""
    import numpy as np

    tables, records = [], []
    while n:
        table, numbers = pending.popleft()
        if table.num_rows > n:
            pending.appendleft((table.slice(n), numbers[n:]))
            table, numbers = table.slice(0, n), numbers[:n]
        tables.append(table)
        records.append(numbers)
        n -= table.num_rows
    numbers = np.concatenate(records) if records else np.zeros(0, dtype=np.int64)
    taken = []
    while problems and (last or problems[0].record <= numbers[-1]):
        taken.append(problems.popleft())
    return RawChunk(index, tuple(names), _concat(tables, names), numbers, tuple(taken))


def open_products(
    path: Path | str,
    *,
    chunk_rows: int = CHUNK_ROWS,
    block_bytes: int | None = None,
    max_bytes: int | None = None,
    parse_threads: bool = True,
) -> ProductReader:
    """Open a products CSV for streaming: check the file and its header now, read the
    rows chunk by chunk when the reader is iterated.

    Raises MissingFileError (no such file), InputFileError (not a regular file, over
    ``max_bytes`` when given, empty, no data rows, not UTF-8, a bad header or a header
    quote problem) or MissingColumnError. ``block_bytes`` (default :data:`BLOCK_BYTES`)
    is how much of the file is read and parsed at a time; it changes nothing but speed
    and memory. ``parse_threads=False`` parses in this thread alone: about two thirds
    of the CPU time, for a caller whose worker processes keep the cores busy anyway.
    """
    return ProductReader(
        Path(path),
        chunk_rows=chunk_rows,
        block_bytes=BLOCK_BYTES if block_bytes is None else block_bytes,
        max_bytes=max_bytes,
        parse_threads=parse_threads,
    )


# --- second passes: only to report -------------------------------------------------------------


def _wanted(records: Iterable[int]) -> np.ndarray:
    import numpy as np

    return np.unique(np.fromiter((int(r) for r in records), dtype=np.int64))


def _unchanged(reader: ProductReader, expect_sha256: str | None) -> None:
    """Refuse a file that is not the one first read (its SHA-256 differs)."""
    if expect_sha256 is not None and reader.sha256 != expect_sha256:
        raise InputFileError(
            reader.path,
            "changed while provmint was reading it (its SHA-256 is not the one first read)",
            hint="leave the file alone until provmint is done with it, then run again",
        )


@overload
def record_lines(source: Ingested, /) -> RecordLines: ...


@overload
def record_lines(
    source: Path | str,
    records: Iterable[int],
    *,
    expect_sha256: str | None = None,
    block_bytes: int | None = None,
) -> dict[int, int]: ...


def record_lines(
    source: Ingested | Path | str,
    records: Iterable[int] = (),
    *,
    expect_sha256: str | None = None,
    block_bytes: int | None = None,
) -> RecordLines | dict[int, int]:
    """The physical line where each of ``records`` (data record numbers) starts.

    Reads the file once more, in blocks (bounded memory), to the last record asked for;
    to the end when ``expect_sha256`` is given, and then refuses a file that changed
    since (InputFileError). Records past the end are left out. Given an
    :class:`Ingested` (an in-memory reading), answers for every record from memory.
    """
    if isinstance(source, Ingested):
        return RecordLines(source.parsed.record_lines)
    wanted = _wanted(records)
    found: dict[int, int] = {}
    if not wanted.size and expect_sha256 is None:
        return found
    with open_products(source, block_bytes=block_bytes) as reader:
        for piece in reader._pieces(values=False, lines=True):
            lo, hi = wanted.searchsorted([piece.first, piece.first + piece.count])
            assert piece.lines is not None
            for record in wanted[lo:hi].tolist():
                found[record] = int(piece.lines[record - piece.first])
            if expect_sha256 is None and len(found) == wanted.size:
                break
        _unchanged(reader, expect_sha256)
    return found


def record_values(
    source: Path | str,
    records: Iterable[int],
    *,
    expect_sha256: str | None = None,
    block_bytes: int | None = None,
) -> dict[int, dict[str, str]]:
    """The values of each of ``records`` that is a row of the header's width, as read
    (canonical names; undecodable bytes as surrogate escapes), e.g. to confirm that two
    rows with the same key hash hold the same (gtin, serial). A second pass, like
    :func:`record_lines`."""
    import numpy as np
    import pyarrow as pa

    wanted = _wanted(records)
    found: dict[int, dict[str, str]] = {}
    if not wanted.size and expect_sha256 is None:
        return found
    with open_products(source, block_bytes=block_bytes) as reader:
        for piece in reader._pieces(values=True, lines=False):
            assert piece.table is not None
            at = np.flatnonzero(np.isin(piece.records, wanted))
            rows = piece.table.take(pa.array(at)).to_pylist() if at.size else []
            for record, row in zip(piece.records[at].tolist(), rows, strict=True):
                found[record] = {
                    k: v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else v
                    for k, v in row.items()
                }
            if expect_sha256 is None and piece.first + piece.count > wanted[-1]:
                break
        _unchanged(reader, expect_sha256)
    return found


# --- validation, chunk by chunk -------------------------------------------------------------------


class _Found:
    """The problems of the rows of one chunk, numbered with the chunk's record numbers."""

    def __init__(self, records: np.ndarray) -> None:
        self.records = records
        self.problems: list[RowProblem] = []
        self.undecodable: set[tuple[int, str]] = set()

    def add(self, index: int, column: str, value: str | bytes, code: str, reason: str) -> None:
        """Record a problem of the chunk's row ``index``."""
        # A cell already reported as bad bytes is not judged again on its blanked value.
        if (index, column) not in self.undecodable:
            record = int(self.records[index])
            self.problems.append(RowProblem(record, column, _show(value), code, reason))


def check_chunk(chunk: RawChunk) -> CheckedChunk:
    """Validate the rows of one chunk, on their own: UTF-8, value sizes, the GS1 rules;
    normalize every valid GTIN to 14 digits; compute the key hash of every row whose gtin
    and serial are valid. Needs nothing but the chunk (it can run in a worker process);
    duplicates across rows are the caller's business."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    names = list(chunk.names)
    found = _Found(chunk.records)
    cols, valid = _decode_columns(chunk.table, names, found)
    gtin14, valid, identity = _validate(names, cols, valid, found)
    serial = cols[names.index("serial")]
    idx = np.flatnonzero(identity)
    if idx.size == len(identity):  # the usual chunk: every row has its identity
        key_gtin, key_serial = gtin14, serial
    else:
        at = pa.array(idx)
        key_gtin, key_serial = pc.take(gtin14, at), pc.take(serial, at)
    identities = pa.table(
        {
            "record": pa.array(chunk.records[idx], type=pa.int64()),
            "key": pa.array(key_hashes(key_gtin, key_serial), type=pa.uint64()),
            "gtin": key_gtin,
            "serial": key_serial,
        }
    )
    columns = [gtin14 if n == "gtin" else c for n, c in zip(names, cols, strict=True)]
    table = pa.table(columns, names=names)
    keep = np.flatnonzero(valid)
    if keep.size != len(valid):
        table = table.take(pa.array(keep))
    problems = sorted([*chunk.problems, *found.problems], key=lambda p: (p.record, p.column))
    return CheckedChunk(chunk.index, table, chunk.records[keep], identities, tuple(problems))


def _unique_check(col: Any, check: Any, column: str, valid: Any, out: _Found) -> Any:
    """Validate a low-cardinality column by checking each distinct value once."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    uniques = pc.unique(col)
    problems = [check(v) for v in uniques.to_pylist()]
    bad_values = [v for v, p in zip(uniques.to_pylist(), problems, strict=True) if p is not None]
    if not bad_values:
        return valid
    reasons = dict(zip(uniques.to_pylist(), problems, strict=True))
    mask = pc.is_in(col, value_set=pa.array(bad_values, type=pa.string()))
    idx = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
    values = pc.take(col, pa.array(idx)).to_pylist()
    for i, v in zip(idx.tolist(), values, strict=True):
        p = reasons[v]
        out.add(i, column, v, p.code, p.reason)
    valid[idx] = False
    return valid


def _decode_columns(table: pa.Table, names: list[str], out: _Found) -> tuple[list[Any], Any]:
    """Make every column UTF-8 text; rows with invalid UTF-8 (only possible when the file
    had to be read as binary) become rejects."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    n = table.num_rows
    valid = np.ones(n, dtype=bool)
    cols = []
    for name, col in zip(names, table.columns, strict=True):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
        try:
            text = col if col.type == pa.string() else col.cast(pa.string())
        except (pa.ArrowInvalid, UnicodeDecodeError):
            bad = []
            for i, v in enumerate(col.to_pylist()):
                try:
                    v.decode("utf-8")
                except UnicodeDecodeError as exc:
                    bad.append(i)
                    out.add(
                        i,
                        name,
                        v,
                        "invalid_utf8",
                        f"not valid UTF-8 (byte 0x{v[exc.start]:02x}); save the file as UTF-8",
                    )
                    out.undecodable.add((i, name))
            mask = np.zeros(n, dtype=bool)
            mask[bad] = True
            valid[bad] = False
            col = pc.if_else(pa.array(mask), pa.scalar(b"", pa.binary()), col)
            text = col.cast(pa.string())
        lengths = pc.binary_length(text)
        if (pc.max(lengths).as_py() or 0) > MAX_VALUE_BYTES:
            too_long = pc.greater(lengths, MAX_VALUE_BYTES)
            for i in np.flatnonzero(too_long.to_numpy(zero_copy_only=False)).tolist():
                out.add(
                    i,
                    name,
                    text[i].as_py(),
                    "value_too_long",
                    f"value has more than {MAX_VALUE_BYTES} bytes",
                )
                valid[i] = False
        cols.append(text)
    return cols, valid


def _validate(names: list[str], cols: list[Any], valid: Any, out: _Found) -> tuple[Any, Any, Any]:
    """Apply the GS1 rules; returns (normalized gtin column, validity mask, mask of the
    rows whose gtin and serial themselves are valid)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    by_name = dict(zip(names, cols, strict=True))
    gtin = by_name["gtin"]
    uniques = pc.unique(gtin)
    normalized = [gs1.normalize_gtin(v) for v in uniques.to_pylist()]
    good = [v if isinstance(v, str) else "00000000000000" for v in normalized]
    positions = pc.index_in(gtin, value_set=uniques)
    gtin14 = pc.take(pa.array(good, type=pa.string()), positions)
    bad_gtins = {
        u: p
        for u, p in zip(uniques.to_pylist(), normalized, strict=True)
        if isinstance(p, gs1.FieldProblem)
    }
    if bad_gtins:
        mask = pc.is_in(gtin, value_set=pa.array(list(bad_gtins), type=pa.string()))
        idx = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
        for i, v in zip(idx.tolist(), pc.take(gtin, pa.array(idx)).to_pylist(), strict=True):
            out.add(i, "gtin", v, bad_gtins[v].code, bad_gtins[v].reason)
        valid[idx] = False
    identity = np.ones(len(valid), dtype=bool)
    if bad_gtins:
        identity[idx] = False

    serial = by_name["serial"]
    if not _all_short_alnum(serial, gs1.SERIAL_MAX):  # punctuation, spaces or bad lengths
        ok = pc.match_substring_regex(serial, pattern=gs1.CSET82_PATTERN)  # full CSET 82
        bad = np.flatnonzero(~ok.to_numpy(zero_copy_only=False))
        for i, v in zip(bad.tolist(), pc.take(serial, pa.array(bad)).to_pylist(), strict=True):
            p = gs1.check_serial(v)
            if p is not None:  # pragma: no branch - the regex and the checker agree
                out.add(i, "serial", v, p.code, p.reason)
        valid[bad] = False
        identity[bad] = False

    if "lot" in by_name:
        valid = _unique_check(by_name["lot"], gs1.check_lot, "lot", valid, out)
    for column in _DATE_COLUMNS:
        if column in by_name:
            valid = _unique_check(by_name[column], gs1.check_expiry, column, valid, out)
    return gtin14, valid, identity


_ALNUM_BYTES = bytes(b for b in range(256) if chr(b).isascii() and chr(b).isalnum())
"""The bytes of ASCII letters and digits."""


def _all_short_alnum(values: Any, longest: int) -> bool:
    """Whether every value of the string array is 1 to ``longest`` ASCII letters and
    digits: the usual serials, checked over the array's buffers at once (Arrow's
    per-value predicates took a third of a chunk's validation). False sends the caller
    to the value-by-value check, so it need only be exact when it answers True."""
    import numpy as np
    import pyarrow as pa

    if values.type != pa.string() or values.null_count or len(values) == 0:
        return False
    _, offsets_buffer, data_buffer = values.buffers()
    offsets = np.frombuffer(
        offsets_buffer, dtype=np.int32, count=len(values) + 1, offset=4 * values.offset
    )
    lengths = np.diff(offsets)
    if lengths.min() < 1 or lengths.max() > longest:
        return False
    data = memoryview(data_buffer)[offsets[0] : offsets[-1]]
    # Nothing left once every letter and digit is deleted: one pass in C (a numpy table
    # lookup took six times as long).
    return not bytes(data).translate(None, _ALNUM_BYTES)


def _in_file_duplicates(keys: np.ndarray, ident: Any) -> list[tuple[int, int]]:
    """Pairs (position, earlier position) of equal (gtin, serial); ``keys[i]`` is the key
    hash at position ``i``. Hash collisions are confirmed with ``ident(i)``."""
    import numpy as np

    if keys.size < 2:
        return []
    quick = np.sort(keys)
    if not (quick[1:] == quick[:-1]).any():
        return []
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    same = np.flatnonzero(sorted_keys[1:] == sorted_keys[:-1])
    groups: dict[tuple[str, str], int] = {}
    pairs = []
    for pos in np.unique(np.concatenate([same, same + 1])).tolist():
        at = int(order[pos])
        key = ident(at)
        if key in groups:
            pairs.append((at, groups[key]))
        else:
            groups[key] = at
    return pairs


# --- a whole file in memory --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParsedCsv:
    """A products CSV read whole into Arrow (every column text, canonical names), not yet
    validated: :func:`check_rows` validates any range of rows, :func:`conclude` the whole.

    ``records`` gives each row's data record number; ``record_lines[r - 1]`` is the line
    where record ``r`` starts (from the bytes read); ``ragged`` are the records of another
    width than the header.
    """

    path: Path
    names: list[str]
    delimiter: str
    table: pa.Table
    records: np.ndarray
    record_lines: np.ndarray
    ragged: tuple[RowProblem, ...]
    sha256: str
    size: int

    @property
    def num_rows(self) -> int:
        """Rows parsed (rows of the wrong width are not among them)."""
        return int(self.table.num_rows)

    @property
    def ragged_texts(self) -> list[str]:
        """The rows of the wrong width, as shown in a report."""
        return [p.value for p in self.ragged]


@dataclass(frozen=True, slots=True)
class RowCheck:
    """The validation of rows ``[start, stop)`` of a parsed CSV."""

    start: int
    stop: int
    checked: CheckedChunk

    @property
    def table(self) -> pa.Table:
        """The rows that passed."""
        return self.checked.table

    @property
    def problems(self) -> tuple[RowProblem, ...]:
        """Why the others did not."""
        return self.checked.problems


@dataclass(frozen=True, slots=True)
class Ingested:
    """A validated CSV: the rows that passed and every reason the others did not.

    ``table`` has one string column per field (canonical names, ``gtin`` as 14 digits);
    ``rows`` gives each kept row's data record number (1-based), ``keys`` its 64-bit
    (gtin, serial) index hash; ``parsed`` is the file as read (for line numbers).
    """

    path: Path
    columns: tuple[str, ...]
    table: pa.Table
    rows: np.ndarray
    keys: np.ndarray
    total_rows: int
    rejects: tuple[Reject, ...]
    rejected_rows: int
    source_sha256: str
    source_bytes: int
    delimiter: str
    parsed: ParsedCsv


def parse_csv(
    path: Path, *, max_bytes: int = MAX_INPUT_BYTES, block_bytes: int | None = None
) -> ParsedCsv:
    """Read a whole products CSV into Arrow, with the line of every record. Raises
    InputFileError or MissingColumnError for problems with the file as a whole (not a
    regular file, over ``max_bytes``, empty, no data rows, a bad header, a quote that is
    never closed or is followed by text)."""
    import numpy as np

    tables: list[pa.Table] = []
    records: list[np.ndarray] = []
    lines: list[np.ndarray] = []
    ragged: list[RowProblem] = []
    with open_products(path, max_bytes=max_bytes, block_bytes=block_bytes) as reader:
        for piece in reader._pieces(values=True, lines=True):
            assert piece.lines is not None
            tables.append(piece.table)
            records.append(piece.records)
            lines.append(piece.lines)
            ragged.extend(piece.problems)
    names = list(reader.names)
    return ParsedCsv(
        path=Path(path),
        names=names,
        delimiter=reader.delimiter,
        table=_concat(tables, names, compact=False),
        records=np.concatenate(records),
        record_lines=np.concatenate(lines),
        ragged=tuple(ragged),
        sha256=reader.sha256,
        size=reader.bytes_read,
    )


def check_rows(parsed: ParsedCsv, start: int, stop: int) -> RowCheck:
    """Validate rows ``[start, stop)`` of a parsed CSV (see :func:`check_chunk`)."""
    chunk = RawChunk(
        index=0,
        names=tuple(parsed.names),
        table=parsed.table.slice(start, stop - start),
        records=parsed.records[start:stop],
        problems=(),
    )
    return RowCheck(start, stop, check_chunk(chunk))


def conclude(parsed: ParsedCsv, checks: list[RowCheck]) -> Ingested:
    """Combine the checks of every row: find repeated (gtin, serial) pairs (both copies
    are rejected), give every reject its line, keep the rows that passed."""
    import numpy as np
    import pyarrow as pa

    checks = sorted(checks, key=lambda c: c.start)
    if not checks:  # no row of the header's width at all: check the empty range
        checks = [check_rows(parsed, 0, 0)]
    covered = [c.start for c in checks] + [parsed.num_rows]
    if covered[0] != 0 or any(c.stop != nxt for c, nxt in zip(checks, covered[1:], strict=True)):
        raise ValueError("checks must cover every row exactly once")
    problems = [*parsed.ragged, *(p for c in checks for p in c.problems)]
    ids = pa.concat_tables([c.checked.identities for c in checks])
    key_records = ids.column("record").to_numpy()
    keys = ids.column("key").to_numpy()
    gtins, serials = ids.column("gtin"), ids.column("serial")
    refused: set[int] = set()
    # Duplicates are looked for among every row with a usable identity, so a repeat is
    # caught even when its twin is rejected for another reason.
    pairs = _in_file_duplicates(keys, lambda i: (gtins[i].as_py(), serials[i].as_py()))
    for at, first in pairs:
        for this, other in ((at, first), (first, at)):
            problems.append(
                RowProblem(
                    int(key_records[this]),
                    "serial",
                    _show(serials[this].as_py()),
                    "duplicate_in_file",
                    "same gtin and serial as",
                    twin=int(key_records[other]),
                )
            )
            refused.add(int(key_records[this]))
    table = pa.concat_tables([c.table for c in checks])
    rows = np.concatenate([c.checked.records for c in checks])
    if refused:
        keep = np.flatnonzero(~np.isin(rows, np.fromiter(refused, dtype=np.int64)))
        table, rows = table.take(pa.array(keep)), rows[keep]
    lines = RecordLines(parsed.record_lines)
    rejects = sorted((p.reject(lines) for p in problems), key=lambda r: (r.row, r.column))
    return Ingested(
        path=parsed.path,
        columns=tuple(parsed.names),
        table=table,
        rows=rows,
        keys=keys[np.searchsorted(key_records, rows)],
        total_rows=len(parsed.record_lines),
        rejects=tuple(rejects),
        rejected_rows=len({r.row for r in rejects}),
        source_sha256=parsed.sha256,
        source_bytes=parsed.size,
        delimiter=parsed.delimiter,
        parsed=parsed,
    )


def read_products(path: Path, *, max_bytes: int = MAX_INPUT_BYTES) -> Ingested:
    """Read and validate a products CSV in one go, in memory. Raises InputFileError or
    MissingColumnError for problems with the file as a whole; row problems are returned
    as rejects."""
    parsed = parse_csv(path, max_bytes=max_bytes)
    return conclude(parsed, [check_rows(parsed, 0, parsed.num_rows)])


# --- quoting problems, told with their line and column --------------------------------------------


class _FieldLimit:
    """The csv module's field size limit, raised while readers run. It is one setting for
    the whole process: readers in several threads raise it together, and the last one
    out puts back what it was."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._saved = 0

    @contextmanager
    def raised(self, size: int) -> Iterator[None]:
        """Let the csv module read values of up to ``size`` characters (its default limit
        would stop the reader at an oversized value that is only to be rejected)."""
        with self._lock:
            if not self._users:
                self._saved = csv.field_size_limit()
            self._users += 1
            csv.field_size_limit(max(csv.field_size_limit(), size))
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if not self._users:
                    csv.field_size_limit(self._saved)


_csv_field_limit = _FieldLimit().raised


@dataclass(frozen=True, slots=True)
class _QuoteProblem:
    """The first quoting error of a record: where, and what."""

    line: int
    field: int
    unclosed: bool
    reason: str
    hint: str

    def column(self, names: list[str]) -> str:
        name = f" ('{names[self.field - 1]}')" if self.field <= len(names) else ""
        return f"column {self.field}{name}"


def _csv_error(
    path: Path, text: str, line: int, delimiter: str, names: list[str], exc: csv.Error
) -> InputFileError:
    """The refusal of a record the csv module (strict) cannot read; the record is
    ``text`` (up to where the reader stopped) and starts on physical line ``line``."""
    found = _locate_quote_problem(text, line, delimiter)
    if found is None:  # pragma: no cover - strict reading fails only on quotes
        return InputFileError(path, f"line {line}: not a readable CSV record ({exc})")
    return InputFileError(
        path, f"line {found.line}: {found.column(names)}: {found.reason}", hint=found.hint
    )


def _too_long_error(
    path: Path, text: str, line: int, delimiter: str, names: list[str], limit: int, what: str
) -> InputFileError:
    """The refusal of a record (or header) over ``limit`` bytes; ``text`` is its start."""
    found = _locate_quote_problem(text, line, delimiter)
    if found is not None and found.unclosed:  # the likely story: a quote never closed
        return InputFileError(
            path,
            f"line {found.line}: {found.column(names)}: a quoted value starts here and its "
            f"quote is not closed within {_mib(limit)} (a record may take at most {_mib(limit)})",
            hint=found.hint,
        )
    if found is not None:
        return InputFileError(
            path, f"line {found.line}: {found.column(names)}: {found.reason}", hint=found.hint
        )
    return InputFileError(
        path,
        f"line {line}: the {what} that starts here takes more than {_mib(limit)}; "
        f"a {what} may take at most {_mib(limit)}",
        hint="is a line end missing? split values that long into several columns or rows",
    )


def _locate_quote_problem(text: str, line: int, delimiter: str) -> _QuoteProblem | None:
    """The first quoting error of the record ``text`` (which starts on physical line
    ``line``), read field by field as the csv module reads it (strict)."""
    unquoted = re.compile(f"[^{re.escape(delimiter)}\r\n]*+")
    pos, field = 0, 1
    while True:
        if text.startswith('"', pos):
            quoted = _QUOTED_VALUE.match(text, pos)
            if quoted is None:
                return _QuoteProblem(
                    line + _line_breaks(text, 0, pos),
                    field,
                    True,
                    "a quoted value starts here and its quote is never closed",
                    'close the quote; a quote that is part of a value is written twice ("")',
                )
            end = quoted.end()
            if end < len(text) and text[end] not in (delimiter, "\r", "\n"):
                return _QuoteProblem(
                    line + _line_breaks(text, 0, end),
                    field,
                    False,
                    f"{_show(text[end])!r} follows the closing quote of a quoted value",
                    'a quote inside a quoted value is written twice (""); '
                    "the closing quote must end the value",
                )
        else:
            plain = unquoted.match(text, pos)
            end = plain.end() if plain else pos
        if end >= len(text) or text[end] in "\r\n":
            return None
        pos, field = end + 1, field + 1


def _line_breaks(text: str, start: int, stop: int) -> int:
    return sum(1 for _ in _TEXT_LINE_END.finditer(text, start, stop))


# --- the key hash ---------------------------------------------------------------------------------


def key_hashes(gtin14: pa.Array, serial: pa.Array) -> np.ndarray:
    """64-bit index hash of each (gtin14, serial) pair, computed over whole columns.

    The store's lookup key (format ``provmint-keyhash/1``): the 14 GTIN digits and the
    serial right-padded with NUL to 20 bytes, as five little-endian u64 words, mixed
    splitmix64-style. Not a security boundary: every hit is confirmed against the record.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(gtin14)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    if _native_key_hashes is not None:
        gtin14 = gtin14.combine_chunks() if isinstance(gtin14, pa.ChunkedArray) else gtin14
        serial = serial.combine_chunks() if isinstance(serial, pa.ChunkedArray) else serial
        raw = _native_key_hashes(*_offsets_and_data(gtin14), *_offsets_and_data(serial))
        return np.frombuffer(raw, dtype="<u8").astype(np.uint64)
    g = _fixed_width_bytes(gtin14, 14)
    s = _fixed_width_bytes(pc.utf8_rpad(serial, width=20, padding="\0"), 20)
    block = np.zeros((n, 40), dtype=np.uint8)
    block[:, :14] = g.reshape(n, 14)
    block[:, 14:34] = s.reshape(n, 20)
    words = block.view("<u8")
    m1 = np.uint64(0xBF58476D1CE4E5B9)
    m2 = np.uint64(0x94D049BB133111EB)
    h = np.full(n, 0x9E3779B97F4A7C15, dtype=np.uint64)
    tmp = np.empty_like(h)
    with np.errstate(over="ignore"):
        for i in range(5):
            h ^= words[:, i]
            h *= m1
            np.right_shift(h, np.uint64(31), out=tmp)
            h ^= tmp
        for shift, mult in ((30, m1), (27, m2)):
            np.right_shift(h, np.uint64(shift), out=tmp)
            h ^= tmp
            h *= mult
        np.right_shift(h, np.uint64(31), out=tmp)
        h ^= tmp
    return h


def _offsets_and_data(arr: Any) -> tuple[Any, Any]:
    import numpy as np

    offsets = np.frombuffer(
        arr.buffers()[1], dtype=np.int32, count=len(arr) + 1, offset=arr.offset * 4
    )
    return offsets, arr.buffers()[2] or b""


def _fixed_width_bytes(arr: Any, width: int) -> np.ndarray:
    """The data bytes of a string array whose values all have exactly ``width`` bytes."""
    import numpy as np
    import pyarrow as pa

    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    offsets = np.frombuffer(
        arr.buffers()[1], dtype=np.int32, count=len(arr) + 1, offset=arr.offset * 4
    )
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)
    out = data[offsets[0] : offsets[-1]]
    if out.size != width * len(arr):
        raise ValueError("values are not all of the expected width")
    return out
