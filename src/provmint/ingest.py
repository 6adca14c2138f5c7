"""Read a products CSV into Arrow and validate it, whole columns at a time.

Reading. Only a regular file is read (a FIFO, a device or a socket is refused before it
is opened for reading), and at most ``max_bytes`` of it (:data:`MAX_INPUT_BYTES`). The
standard for what the file says is Python's csv module in strict mode, with the sniffed
delimiter: a quote that is never closed, or a closing quote followed by anything but a
delimiter or a line end, refuses the file with its line and column. Rows are read by
pyarrow (fast, column-wise) when a vectorised look at the quotes shows that both readers
must agree (no quotes, or quotes only around whole values), and by the csv module itself
otherwise (invalid UTF-8, a quote inside an unquoted value, a reader error), so every
row kept is the row the csv module reads.

Every column is read as text (leading zeros survive). Header names are matched
case-insensitively with the aliases in :data:`ALIASES`. A missing required column stops
before any row is parsed. Row problems are collected as :class:`~provmint.errors.Reject`
records naming the line, column, value and reason; the caller decides whether they
refuse the batch.

Validation (GS1 rules in :mod:`provmint.gs1`): ``gtin`` GTIN-8/12/13/14 with a valid check
digit, normalized to 14 digits; ``serial`` 1-20 CSET 82 characters; ``lot`` (when given)
1-20 CSET 82 characters; ``expiry`` and ``production_date`` (when given) real dates in
``YYYY-MM-DD`` or ``YYMMDD``; every value valid UTF-8 of at most 4096 bytes; every row as
wide as the header; ``(gtin, serial)`` unique inside the file (both copies are rejected).
"""

from __future__ import annotations

import bisect
import csv
import hashlib
import io
import os
import re
import stat
import struct
import threading
from array import array
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from provmint import gs1
from provmint.canonical import MAX_FIELDS, MAX_VALUE_BYTES
from provmint.errors import (
    InputFileError,
    MissingColumnError,
    MissingFileError,
    ProvmintError,
    Reject,
)

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
    "MAX_INPUT_BYTES",
    "REQUIRED",
    "RESERVED",
    "Ingested",
    "ParsedCsv",
    "RecordLines",
    "RowCheck",
    "check_rows",
    "conclude",
    "key_hash",
    "key_hashes",
    "normalize_header",
    "parse_csv",
    "read_products",
    "record_lines",
]

REQUIRED = ("gtin", "serial")
RESERVED = ("leaf_index", "token", "url")
"""Stored next to every product by provmint; an input column may not take these names."""

MAX_INPUT_BYTES = 1 << 30
"""The largest CSV file minted as one batch (1 GiB, some 13 million typical rows). The file
is held in memory while it is minted, so a bigger one is refused before it is read."""

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
_EXACT_CHUNK = 1 << 16  # rows turned into Arrow arrays at a time by the exact reader


def normalize_header(name: str) -> str:
    """Canonical field name of a header cell ('' if it has no usable characters)."""
    text = re.sub(r"[^a-z0-9]+", "_", name.strip().casefold()).strip("_")
    if text in _ALIAS_TO_NAME:
        return _ALIAS_TO_NAME[text]
    if text and not text[0].isalpha():
        text = "c_" + text
    return text[:64]


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


def record_lines(ingested: Ingested) -> RecordLines:
    """Physical line of each data record of an ingested file (from the bytes that were
    read; a slow pass the first time: call it only to report problems)."""
    return RecordLines(ingested.parsed.exact().record_line)


def _printable(text: str) -> str:
    """``text`` with control characters and line separators escaped: one line of text."""
    return _UNPRINTABLE.sub(lambda m: repr(m.group())[1:-1], text)


def _show(value: str | bytes) -> str:
    raw = value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")
    text = raw.decode("utf-8", "backslashreplace")
    return text if len(text) <= _MAX_SHOWN_VALUE else text[: _MAX_SHOWN_VALUE - 1] + "…"


# --- the file: regular files only, size capped ---------------------------------------------


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


def _read_source(path: Path, max_bytes: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``max_bytes`` of them.

    Anything else is refused before it is opened for reading: a FIFO would block until a
    writer comes, ``/dev/zero`` would fill the memory. The file is opened non-blocking and
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
    with open(fd, "rb", buffering=0) as fh:
        info = os.fstat(fd)
        kind = _special_kind(info.st_mode)
        if kind is not None:
            raise _not_regular(path, kind)
        if info.st_size > max_bytes:
            raise _too_big(path, max_bytes, info.st_size)
        try:
            data = _read_capped(fh, info.st_size, max_bytes)
        except OSError as exc:
            raise InputFileError(path, f"cannot read: {exc.strerror or exc}") from exc
    if len(data) > max_bytes:  # it grew while read, or its size was not known (procfs)
        raise _too_big(path, max_bytes, None)
    return data


def _read_capped(fh: BinaryIO, expected: int, max_bytes: int) -> bytes:
    """Read to the end or to one byte past ``max_bytes``, whichever comes first; a file
    of the ``expected`` size comes in one read (no copy)."""
    parts: list[bytes] = []
    total = 0
    want = max(expected + 1, 1 << 16)
    while total <= max_bytes:
        chunk = fh.read(min(want, max_bytes + 1 - total))
        if not chunk:
            break
        parts.append(chunk)
        total += len(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _is_utf8(data: bytes) -> bool:
    """Whether ``data`` is valid UTF-8, checked by Arrow (no Python string is made)."""
    if data.isascii():
        return True
    import pyarrow as pa

    offsets = pa.py_buffer(struct.pack("<qq", 0, len(data)))
    text = pa.Array.from_buffers(pa.large_string(), 1, [None, offsets, pa.py_buffer(data)])
    try:
        text.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


# --- the header ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Layout:
    """The header of a CSV file and where its data rows start."""

    header: list[str]
    delimiter: str
    body_start: int
    """Byte offset of the line after the header."""
    body_line: int
    """The physical line number of that line (a quoted header name can span lines)."""


def _sniff_delimiter(first_line: str) -> str:
    counts = {d: first_line.count(d) for d in _DELIMITERS}
    best = max(_DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


def _split_header(path: Path, data: bytes) -> _Layout:
    """Read the header record (all of it, however long) and sniff the delimiter."""
    if data.startswith(_UTF16_BOMS):
        raise InputFileError(
            path, "is UTF-16 or UTF-32 text, not UTF-8", hint="save the file as UTF-8"
        )
    start = len(_BOM) if data.startswith(_BOM) else 0
    end = _LINE_END.search(data, start)
    try:
        first = data[start : end.start() if end else len(data)].decode("utf-8")
    except UnicodeDecodeError:
        raise InputFileError(
            path, "line 1: header is not valid UTF-8", hint="save the file as UTF-8"
        ) from None
    if not first.strip():
        raise InputFileError(path, "line 1: header line is empty")
    if "\0" in first:
        raise InputFileError(
            path,
            "line 1: header contains NUL characters (is the file UTF-16?)",
            hint="save the file as UTF-8",
        )
    delimiter = _sniff_delimiter(first)
    if '"' not in first:
        return _Layout(first.split(delimiter), delimiter, end.end() if end else len(data), 2)
    return _quoted_header(path, data, start, delimiter)


def _quoted_header(path: Path, data: bytes, start: int, delimiter: str) -> _Layout:
    """A header with quotes, read by the csv module line by line (a quoted name may hold
    a line break), so that the data rows start exactly where it ends."""
    ends = [start]

    def lines() -> Iterator[str]:
        while ends[-1] < len(data):
            end = _LINE_END.search(data, ends[-1])
            stop = end.end() if end else len(data)
            line = data[ends[-1] : stop]
            ends.append(stop)
            yield line.decode("utf-8")

    reader = csv.reader(lines(), delimiter=delimiter, strict=True)
    try:
        with _csv_field_limit(len(data)):
            header = next(reader)
    except UnicodeDecodeError:
        raise InputFileError(
            path, f"line {len(ends) - 1}: header is not valid UTF-8", hint="save the file as UTF-8"
        ) from None
    except csv.Error as exc:
        text = data[start : ends[-1]].decode("utf-8")
        raise _csv_error(path, text, 0, 1, delimiter, [], exc) from None
    return _Layout(header, delimiter, ends[-1], len(ends))


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
        if name in RESERVED:
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


# --- the two readers ---------------------------------------------------------------------------


def _quotes_are_plain(data: bytes, start: int, delimiter: str) -> bool:
    """Whether every quote after ``start`` opens a value at the start of a field, closes
    it (a delimiter, a line end or the end of the file follows) or is doubled inside it.

    Such files are read alike by pyarrow and by the csv module (strict). Vectorised: the
    quotes pair up in order, so quote 2k must open and quote 2k+1 must close. Anything
    else (an unclosed quote, text after a closing quote, even a legal quote inside an
    unquoted value) answers False, and the exact reader decides.
    """
    if data.find(b'"', start) < 0:
        return True
    import numpy as np

    raw = np.frombuffer(data, dtype=np.uint8)
    quotes = np.flatnonzero(raw[start:] == ord('"'))
    if quotes.size % 2:
        return False
    quotes += start
    separator = np.zeros(256, dtype=bool)  # byte -> ends a field
    separator[list(f"{delimiter}\r\n".encode())] = True
    opens, closes = quotes[0::2], quotes[1::2]
    doubled = opens[1:] == closes[:-1] + 1  # a quote written twice inside a value
    starts_value = separator[raw[opens - 1]]
    starts_value[1:] |= doubled
    if not starts_value.all():
        return False
    ends_value = separator[raw[closes[:-1] + 1]]
    ends_value |= doubled
    after_last = int(closes[-1]) + 1
    return bool(ends_value.all()) and (after_last == raw.size or bool(separator[raw[after_last]]))


def _read_fast(data: bytes, layout: _Layout, names: list[str]) -> tuple[pa.Table, list[str]] | None:
    """The data rows read by pyarrow (column-wise, every value text); rows of the wrong
    width are set aside as text. None if pyarrow cannot read them."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    ragged: list[str] = []

    def on_bad_row(row: Any) -> str:
        ragged.append(row.text or "")
        return "skip"

    try:
        table = pacsv.read_csv(
            pa.py_buffer(data).slice(layout.body_start),
            read_options=pacsv.ReadOptions(column_names=names, block_size=1 << 22),
            parse_options=pacsv.ParseOptions(
                delimiter=layout.delimiter, newlines_in_values=True, invalid_row_handler=on_bad_row
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in names},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid:
        return None
    return table, ragged


@dataclass(frozen=True, slots=True)
class _ExactReading:
    """The data rows as the csv module (strict) reads them: the standard for every row."""

    record_line: np.ndarray
    """Physical line where data record ``r`` starts, at ``[r - 1]``."""
    row_records: np.ndarray
    """Record number of each row of the header's width, in order."""
    ragged: list[tuple[int, int, str]]
    """(record, field count, text) of every row of another width."""
    table: pa.Table | None
    """The rows of the header's width (binary columns unless the file is UTF-8), if kept."""


@contextmanager
def _csv_field_limit(size: int) -> Iterator[None]:
    """Let the csv module read values of up to ``size`` characters (its default limit
    would stop the reader at an oversized value that is only to be rejected)."""
    old = csv.field_size_limit()
    csv.field_size_limit(max(old, size))
    try:
        yield
    finally:
        csv.field_size_limit(old)


def _read_exact(
    path: Path, data: bytes, layout: _Layout, names: list[str], *, utf8: bool, keep_values: bool
) -> _ExactReading:
    """Read the data rows with the csv module (strict; Python speed): their lines, the rows
    of the wrong width and, if ``keep_values``, the others as a table. A quoting error
    refuses the file, naming its line and column."""
    import numpy as np
    import pyarrow as pa

    text = str(memoryview(data)[layout.body_start :], "utf-8", "surrogateescape")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=layout.delimiter, strict=True)
    width = len(names)
    lines = array("q")
    rows = array("q")
    ragged: list[tuple[int, int, str]] = []
    pending: list[list[str]] = []
    chunks: list[list[pa.Array]] = []
    consumed = 0  # lines of the body read so far
    with _csv_field_limit(len(text) + 1):
        try:
            for fields in reader:
                first, consumed = consumed, reader.line_num
                if not fields:  # a blank line
                    continue
                lines.append(layout.body_line + first)
                if len(fields) != width:
                    ragged.append((len(lines), len(fields), layout.delimiter.join(fields)))
                    continue
                rows.append(len(lines))
                if keep_values:
                    pending.append(fields)
                    if len(pending) == _EXACT_CHUNK:
                        chunks.append(_arrow_columns(pending, width, utf8))
                        pending = []
        except csv.Error as exc:
            at = _offset_of_line(text, consumed)
            raise _csv_error(
                path, text, at, layout.body_line + consumed, layout.delimiter, names, exc
            ) from None
    table = None
    if keep_values:
        if pending:
            chunks.append(_arrow_columns(pending, width, utf8))
        kind = pa.string() if utf8 else pa.binary()
        table = pa.table(
            [pa.chunked_array([c[i] for c in chunks], type=kind) for i in range(width)],
            names=names,
        )
    return _ExactReading(
        record_line=np.frombuffer(lines, dtype=np.int64),
        row_records=np.frombuffer(rows, dtype=np.int64),
        ragged=ragged,
        table=table,
    )


def _arrow_columns(rows: list[list[str]], width: int, utf8: bool) -> list[pa.Array]:
    """Rows of ``width`` values as Arrow columns; raw bytes when the file is not UTF-8 (the
    validation reports the undecodable values)."""
    import pyarrow as pa

    columns = list(zip(*rows, strict=True)) if rows else [() for _ in range(width)]
    if utf8:
        return [pa.array(c, type=pa.string()) for c in columns]
    return [
        pa.array([v.encode("utf-8", "surrogateescape") for v in c], type=pa.binary())
        for c in columns
    ]


def _offset_of_line(text: str, lines_before: int) -> int:
    """Where the line after the first ``lines_before`` lines of ``text`` starts."""
    if lines_before == 0:
        return 0
    for count, end in enumerate(_TEXT_LINE_END.finditer(text), start=1):
        if count == lines_before:
            return end.end()
    return len(text)


def _csv_error(
    path: Path,
    text: str,
    start: int,
    line: int,
    delimiter: str,
    names: list[str],
    exc: csv.Error,
) -> InputFileError:
    """The refusal of a record the csv module (strict) cannot read; the record starts at
    ``text[start:]``, on physical line ``line``."""
    found = _locate_quote_problem(text, start, line, delimiter)
    if found is None:  # pragma: no cover - strict reading fails only on quotes
        return InputFileError(path, f"line {line}: not a readable CSV record ({exc})")
    at_line, field, reason, hint = found
    column = f"column {field}" + (f" ('{names[field - 1]}')" if field <= len(names) else "")
    return InputFileError(path, f"line {at_line}: {column}: {reason}", hint=hint)


def _locate_quote_problem(
    text: str, start: int, line: int, delimiter: str
) -> tuple[int, int, str, str] | None:
    """(line, field number, reason, hint) of the first quoting error in the record at
    ``text[start:]``, read field by field as the csv module reads it (strict)."""
    unquoted = re.compile(f"[^{re.escape(delimiter)}\r\n]*+")
    pos, field = start, 1
    while True:
        if text.startswith('"', pos):
            quoted = _QUOTED_VALUE.match(text, pos)
            if quoted is None:
                return (
                    line + _line_breaks(text, start, pos),
                    field,
                    "a quoted value starts here and its quote is never closed",
                    'close the quote; a quote that is part of a value is written twice ("")',
                )
            end = quoted.end()
            if end < len(text) and text[end] not in (delimiter, "\r", "\n"):
                return (
                    line + _line_breaks(text, start, end),
                    field,
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


_M64 = (1 << 64) - 1


def key_hash(gtin14: str, serial: str) -> int:
    """:func:`key_hashes` of one (gtin14, serial) pair, in plain Python (a lookup's cost)."""
    block = gtin14.encode("ascii") + serial.encode("ascii").ljust(20, b"\0") + bytes(6)
    if len(block) != 40:
        raise ValueError("gtin14 must be 14 digits and serial at most 20 ASCII characters")
    m1, m2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
    h = 0x9E3779B97F4A7C15
    for i in range(0, 40, 8):
        h = ((h ^ int.from_bytes(block[i : i + 8], "little")) * m1) & _M64
        h ^= h >> 31
    h = ((h ^ (h >> 30)) * m1) & _M64
    h = ((h ^ (h >> 27)) * m2) & _M64
    return h ^ (h >> 31)


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


class _Collector:
    """Gathers rejects per table row; rows are numbered once the line map is known."""

    def __init__(self, offset: int = 0) -> None:
        self.offset = offset
        self.by_index: list[tuple[int, str, str, str, str]] = []
        self.undecodable: set[tuple[int, str]] = set()

    def add(self, index: int, column: str, value: str, code: str, reason: str) -> None:
        """Record a problem of row ``index`` (relative to this collector's offset)."""
        # A cell already reported as bad bytes is not judged again on its blanked value.
        if (index, column) not in self.undecodable:
            self.by_index.append((index + self.offset, column, _show(value), code, reason))


def _unique_check(col: Any, check: Any, column: str, valid: Any, out: _Collector) -> Any:
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


def _decode_columns(table: pa.Table, names: list[str], out: _Collector) -> tuple[list[Any], Any]:
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


def _validate(
    names: list[str], cols: list[Any], valid: Any, out: _Collector
) -> tuple[Any, Any, Any]:
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
    lengths = pc.utf8_length(serial)
    ok = pc.and_(pc.ascii_is_alnum(serial), pc.less_equal(lengths, gs1.SERIAL_MAX))
    if not pc.all(ok).as_py():  # punctuation, spaces or bad lengths: the full CSET 82 check
        ok = pc.match_substring_regex(serial, pattern=gs1.CSET82_PATTERN)
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


def _in_file_duplicates(
    keys: Any, rows: Any, ident: Callable[[int], tuple[str, str]]
) -> list[tuple[int, int]]:
    """Pairs (row, earlier row) with the same (gtin, serial); ``keys[i]`` is the index
    hash of row ``rows[i]``. Hash collisions are confirmed with ``ident``."""
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
        row = int(rows[order[pos]])
        key = ident(row)
        if key in groups:
            pairs.append((row, groups[key]))
        else:
            groups[key] = row
    return pairs


@dataclass
class ParsedCsv:
    """A products CSV parsed into Arrow (every column text, canonical names), not yet
    validated: :func:`check_rows` validates any range of rows, :func:`conclude` the whole.
    """

    path: Path
    data: bytes
    names: list[str]
    delimiter: str
    table: pa.Table
    ragged_texts: list[str]
    _hasher: threading.Thread
    _digest: dict[str, str]
    _layout: _Layout
    _utf8: bool
    _exact: _ExactReading | None = None

    @property
    def num_rows(self) -> int:
        """Rows parsed (rows of the wrong width are not among them)."""
        return int(self.table.num_rows)

    @property
    def sha256(self) -> str:
        """SHA-256 of the file's bytes (computed in the background while parsing)."""
        self._hasher.join()
        return self._digest["sha256"]

    def exact(self) -> _ExactReading:
        """The csv module's reading of the file (lines, rows of the wrong width): made
        while parsing when the file needed it, else on first use (a slow pass)."""
        if self._exact is None:
            self._exact = _read_exact(
                self.path, self.data, self._layout, self.names, utf8=self._utf8, keep_values=False
            )
        return self._exact


@dataclass(frozen=True, slots=True)
class RowCheck:
    """The validation of rows ``[start, stop)`` of a parsed CSV. Indexes are global."""

    start: int
    stop: int
    table: pa.Table
    valid: np.ndarray
    identity: np.ndarray
    keys: np.ndarray
    gtin14: pa.Array
    serial: pa.Array
    problems: list[tuple[int, str, str, str, str]]


def parse_csv(path: Path, *, max_bytes: int = MAX_INPUT_BYTES) -> ParsedCsv:
    """Read a products CSV into Arrow. Raises InputFileError or MissingColumnError for
    problems with the file as a whole (not a regular file, over ``max_bytes``, empty, no
    data rows, a bad header, a quote that is never closed or is followed by text)."""
    data = _read_source(path, max_bytes)
    if not _CONTENT.search(data):
        raise InputFileError(path, "file is empty", hint="expected a header line and rows")
    layout = _split_header(path, data)
    names = _check_header(path, layout.header)
    if not _CONTENT.search(data, layout.body_start):
        raise InputFileError(path, "has a header but no data rows")

    digest: dict[str, str] = {}
    hasher = threading.Thread(
        target=lambda: digest.setdefault("sha256", hashlib.sha256(data).hexdigest())
    )
    hasher.start()
    utf8 = _is_utf8(data)
    fast = None
    # pyarrow drops a BOM at the start of what it reads: a data row starting with one is
    # left to the exact reader, like any file whose quotes need a closer look.
    if (
        utf8
        and not data.startswith(_BOM, layout.body_start)
        and _quotes_are_plain(data, layout.body_start, layout.delimiter)
    ):
        fast = _read_fast(data, layout, names)
    exact = None
    if fast is None:  # the file itself is the csv module's business
        exact = _read_exact(path, data, layout, names, utf8=utf8, keep_values=True)
        assert exact.table is not None
        fast = exact.table, [text for _, _, text in exact.ragged]
    table, ragged_texts = fast
    if table.num_rows + len(ragged_texts) == 0:
        raise InputFileError(path, "has a header but no data rows")
    return ParsedCsv(
        path,
        data,
        names,
        layout.delimiter,
        table,
        ragged_texts,
        hasher,
        digest,
        layout,
        utf8,
        exact,
    )


def check_rows(parsed: ParsedCsv, start: int, stop: int) -> RowCheck:
    """Validate rows ``[start, stop)``: UTF-8, value sizes, the GS1 rules; compute the
    (gtin, serial) index hash of every row with a valid identity. Duplicates across rows
    are :func:`conclude`'s business."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    part = parsed.table.slice(start, stop - start)
    out = _Collector(offset=start)
    cols, valid = _decode_columns(part, parsed.names, out)
    gtin14, valid, identity = _validate(parsed.names, cols, valid, out)
    serial = cols[parsed.names.index("serial")]
    idx = np.flatnonzero(identity)
    keys = np.zeros(0, dtype=np.uint64)
    if idx.size:
        keys = key_hashes(pc.take(gtin14, pa.array(idx)), pc.take(serial, pa.array(idx)))
    columns = [gtin14 if n == "gtin" else c for n, c in zip(parsed.names, cols, strict=True)]
    table = pa.table(columns, names=parsed.names)
    keep = np.flatnonzero(valid)
    if keep.size != len(valid):
        table = table.take(pa.array(keep))
    return RowCheck(
        start=start,
        stop=stop,
        table=table,
        valid=keep + start,
        identity=idx + start,
        keys=keys,
        gtin14=gtin14,
        serial=serial,
        problems=out.by_index,
    )


def conclude(parsed: ParsedCsv, checks: list[RowCheck]) -> Ingested:
    """Combine the checks of every row: find repeated (gtin, serial) pairs (both copies
    are rejected), number every reject with its line, keep the rows that passed."""
    import numpy as np
    import pyarrow as pa

    n = parsed.num_rows
    checks = sorted(checks, key=lambda c: c.start)
    if not checks:  # no row of the header's width at all: check the empty range
        checks = [check_rows(parsed, 0, 0)]
    covered = [c.start for c in checks] + [n]
    if covered[0] != 0 or any(c.stop != nxt for c, nxt in zip(checks, covered[1:], strict=True)):
        raise ValueError("checks must cover every row exactly once")
    starts = [c.start for c in checks]

    def ident(row: int) -> tuple[str, str]:
        check = checks[bisect.bisect_right(starts, row) - 1]
        return check.gtin14[row - check.start].as_py(), check.serial[row - check.start].as_py()

    out = _Collector()
    for check in checks:
        out.by_index += check.problems
    identity = np.concatenate([c.identity for c in checks])
    keys = np.concatenate([c.keys for c in checks])
    all_keys = np.zeros(n, dtype=np.uint64)
    all_keys[identity] = keys
    valid = np.zeros(n, dtype=bool)
    valid[np.concatenate([c.valid for c in checks])] = True
    # Duplicates are looked for among every row with a usable identity, so a repeat is
    # caught even when its twin is rejected for another reason.
    for row, first in _in_file_duplicates(keys, identity, ident):
        for this, other in ((row, first), (first, row)):
            out.by_index.append(
                (
                    this,
                    "serial",
                    _show(ident(this)[1]),
                    "duplicate_in_file",
                    f"same gtin and serial as row #{other}",
                )
            )
        valid[row] = valid[first] = False

    rejects, row_numbers = _number_rejects(parsed, out)
    table = pa.concat_tables([c.table for c in checks])
    keep = np.flatnonzero(valid)
    kept_before = np.concatenate([c.valid for c in checks])
    if keep.size != kept_before.size:  # duplicates removed: select the survivors
        table = table.take(pa.array(np.flatnonzero(valid[kept_before])))
    return Ingested(
        path=parsed.path,
        columns=tuple(parsed.names),
        table=table,
        rows=row_numbers[keep],
        keys=all_keys[keep],
        total_rows=n + len(parsed.ragged_texts),
        rejects=tuple(rejects),
        rejected_rows=len({r.row for r in rejects}),
        source_sha256=parsed.sha256,
        source_bytes=len(parsed.data),
        delimiter=parsed.delimiter,
        parsed=parsed,
    )


def read_products(path: Path, *, max_bytes: int = MAX_INPUT_BYTES) -> Ingested:
    """Read and validate a products CSV in one go. Raises InputFileError or
    MissingColumnError for problems with the file as a whole; row problems are returned
    as rejects."""
    parsed = parse_csv(path, max_bytes=max_bytes)
    return conclude(parsed, [check_rows(parsed, 0, parsed.num_rows)])


def _number_rejects(parsed: ParsedCsv, out: _Collector) -> tuple[list[Reject], Any]:
    """Turn table-row rejects into numbered Reject records (row and physical line), and
    give the record number of every table row."""
    import numpy as np

    n = parsed.num_rows
    if not out.by_index and not parsed.ragged_texts:
        return [], np.arange(1, n + 1, dtype=np.int64)
    exact = parsed.exact()
    if exact.row_records.size != n or len(exact.ragged) != len(parsed.ragged_texts):
        # Cannot happen: pyarrow reads a file only when a look at its quotes shows that
        # the csv module reads it alike (see _quotes_are_plain).
        raise ProvmintError(
            f"{parsed.path}: internal error: the CSV readers disagree about its rows "
            f"({n} and {exact.row_records.size}); please report this file"
        )
    row_numbers = exact.row_records
    lines = RecordLines(exact.record_line)
    width = len(parsed.names)
    rejects = [
        Reject(
            record,
            lines[record],
            "(row)",
            _show(text),
            "ragged_row",
            f"row has {fields} fields; the header has {width}",
        )
        for record, fields, text in exact.ragged
    ]
    for index, column, value, code, reason in out.by_index:
        record = int(row_numbers[index])
        reason = re.sub(
            r"row #(\d+)", lambda m: f"line {lines[int(row_numbers[int(m.group(1))])]}", reason
        )
        rejects.append(Reject(record, lines[record], column, value, code, reason))
    rejects.sort(key=lambda r: (r.row, r.column))
    return rejects, row_numbers
