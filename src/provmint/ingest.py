"""Read a products CSV into Arrow and validate it, whole columns at a time.

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
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provmint import gs1
from provmint.canonical import MAX_FIELDS, MAX_VALUE_BYTES
from provmint.errors import InputFileError, MissingColumnError, Reject

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
    "REQUIRED",
    "RESERVED",
    "Ingested",
    "ParsedCsv",
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
_LINE_END = re.compile(rb"\r\n|\r|\n")
_CONTENT = re.compile(rb"[^\xef\xbb\xbf \t\r\n]")  # anything but whitespace and a BOM


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
    (gtin, serial) index hash.
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


def record_lines(ingested: Ingested) -> dict[int, int]:
    """Physical line of each data record of an ingested file (a slow pass: call it only to
    report problems)."""
    data = ingested.path.read_bytes()
    return _scan_lines(data, ingested.delimiter, len(ingested.columns))[0]


def _show(value: str | bytes) -> str:
    raw = value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")
    text = raw.decode("utf-8", "backslashreplace")
    return text if len(text) <= _MAX_SHOWN_VALUE else text[: _MAX_SHOWN_VALUE - 1] + "…"


def _sniff_delimiter(first_line: str) -> str:
    counts = {d: first_line.count(d) for d in _DELIMITERS}
    best = max(_DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


def _parse_header(path: Path, data: bytes) -> tuple[list[str], str]:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    head = data[:65536]
    first = _LINE_END.split(head, maxsplit=1)[0]
    try:
        text = first.decode("utf-8")
    except UnicodeDecodeError:
        raise InputFileError(
            path, "line 1: header is not valid UTF-8", hint="save the file as UTF-8"
        ) from None
    if not text.strip():
        raise InputFileError(path, "line 1: header line is empty")
    delimiter = _sniff_delimiter(text)
    header = next(csv.reader([text], delimiter=delimiter))
    return header, delimiter


def _check_header(path: Path, raw: list[str]) -> list[str]:
    names = [normalize_header(h) for h in raw]
    for i, (orig, name) in enumerate(zip(raw, names, strict=True), start=1):
        if not name:
            raise InputFileError(path, f"line 1: column {i} ({orig!r}) has no usable name")
    seen: dict[str, str] = {}
    for orig, name in zip(raw, names, strict=True):
        if name in seen:
            raise InputFileError(
                path, f"line 1: columns {seen[name]!r} and {orig!r} both mean '{name}'"
            )
        seen[name] = orig
    for orig, name in zip(raw, names, strict=True):
        if name in RESERVED:
            raise InputFileError(
                path,
                f"line 1: column {orig!r} is reserved: provmint generates '{name}' itself",
                hint="rename or drop that column",
            )
    for required in REQUIRED:
        if required not in names:
            raise MissingColumnError(path, required, raw, list(ALIASES[required]))
    if len(names) > MAX_FIELDS:
        raise InputFileError(path, f"line 1: {len(names)} columns; at most {MAX_FIELDS}")
    return names


def _scan_lines(
    data: bytes, delimiter: str, width: int
) -> tuple[dict[int, int], list[tuple[int, int, str]]]:
    """Map data record number -> physical line, and list the records of the wrong width
    as (record, field count, text).

    A slow pure-Python pass, run only when there is something to report.
    """
    text = data.decode("utf-8", "surrogateescape")
    if text.startswith("\ufeff"):
        text = text[1:]
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    lines: dict[int, int] = {}
    ragged: list[tuple[int, int, str]] = []
    prev_end = 0
    record = -1
    for fields in reader:
        start = prev_end + 1
        prev_end = reader.line_num
        if not fields:
            continue
        record += 1
        if record == 0:
            continue
        lines[record] = start
        if len(fields) != width:
            ragged.append((record, len(fields), delimiter.join(fields)))
    return lines, ragged


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
        self.ragged_texts: list[str] = []
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


def _read_undecodable(data: bytes, delimiter: str, names: list[str], out: _Collector) -> Any:
    """Read a file that is not all UTF-8 with the csv module, keeping raw bytes per cell
    (pyarrow cannot report rows it cannot decode). Python speed: damaged files only."""
    import pyarrow as pa

    text = data.decode("utf-8", "surrogateescape")
    if text.startswith("\ufeff"):
        text = text[1:]
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    next(reader, None)
    columns: list[list[bytes]] = [[] for _ in names]
    for fields in reader:
        if not fields:
            continue
        if len(fields) != len(names):
            out.ragged_texts.append(delimiter.join(fields))
            continue
        for column, value in zip(columns, fields, strict=True):
            column.append(value.encode("utf-8", "surrogateescape"))
    return pa.table({n: pa.array(c, pa.binary()) for n, c in zip(names, columns, strict=True)})


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

    @property
    def num_rows(self) -> int:
        """Rows parsed (rows of the wrong width are not among them)."""
        return int(self.table.num_rows)

    @property
    def sha256(self) -> str:
        """SHA-256 of the file's bytes (computed in the background while parsing)."""
        self._hasher.join()
        return self._digest["sha256"]


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


def parse_csv(path: Path) -> ParsedCsv:
    """Read a products CSV into Arrow. Raises InputFileError or MissingColumnError for
    problems with the file as a whole (unreadable, empty, no data rows, bad header)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputFileError(path, "no such file") from None
    except IsADirectoryError:
        raise InputFileError(path, "is a directory, not a CSV file") from None
    except OSError as exc:
        raise InputFileError(path, f"cannot read: {exc.strerror}") from exc
    if not _CONTENT.search(data):
        raise InputFileError(path, "file is empty", hint="expected a header line and rows")

    digest: dict[str, str] = {}
    hasher = threading.Thread(
        target=lambda: digest.setdefault("sha256", hashlib.sha256(data).hexdigest())
    )
    hasher.start()

    raw_header, delimiter = _parse_header(path, data)
    names = _check_header(path, raw_header)
    header_end = _LINE_END.search(data)
    if header_end is None or not _CONTENT.search(data, header_end.end()):
        raise InputFileError(path, "has a header but no data rows")
    out = _Collector()

    def on_bad_row(row: Any) -> str:
        out.ragged_texts.append(row.text or "")
        return "skip"

    try:
        data.decode("utf-8")
        utf8 = True
    except UnicodeDecodeError:
        utf8 = False
    try:
        if utf8:
            table = pacsv.read_csv(
                pa.py_buffer(data),
                read_options=pacsv.ReadOptions(column_names=names, skip_rows=1, block_size=1 << 22),
                parse_options=pacsv.ParseOptions(
                    delimiter=delimiter, newlines_in_values=True, invalid_row_handler=on_bad_row
                ),
                convert_options=pacsv.ConvertOptions(
                    column_types={name: pa.string() for name in names},
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
        else:  # not all UTF-8: the slow path, which can report the bad bytes per row
            table = _read_undecodable(data, delimiter, names, out)
    except (pa.ArrowInvalid, csv.Error) as exc:
        raise InputFileError(path, f"not a readable CSV file: {exc}") from exc
    if table.num_rows + len(out.ragged_texts) == 0:
        raise InputFileError(path, "has a header but no data rows")
    return ParsedCsv(path, data, names, delimiter, table, out.ragged_texts, hasher, digest)


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
    covered = [c.start for c in checks] + [n]
    if covered[0] != 0 or any(c.stop != nxt for c, nxt in zip(checks, covered[1:], strict=True)):
        raise ValueError("checks must cover every row exactly once")
    starts = [c.start for c in checks]

    def ident(row: int) -> tuple[str, str]:
        check = checks[bisect.bisect_right(starts, row) - 1]
        return check.gtin14[row - check.start].as_py(), check.serial[row - check.start].as_py()

    out = _Collector()
    out.ragged_texts = parsed.ragged_texts
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

    rejects, row_numbers = _number_rejects(
        parsed.path, parsed.data, parsed.delimiter, len(parsed.names), n, out
    )
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
    )


def read_products(path: Path) -> Ingested:
    """Read and validate a products CSV in one go. Raises InputFileError or
    MissingColumnError for problems with the file as a whole; row problems are returned
    as rejects."""
    parsed = parse_csv(path)
    return conclude(parsed, [check_rows(parsed, 0, parsed.num_rows)])


def _number_rejects(
    path: Path, data: bytes, delimiter: str, width: int, n: int, out: _Collector
) -> tuple[list[Reject], Any]:
    """Turn table-row rejects into numbered Reject records (row and physical line)."""
    import numpy as np

    if not out.by_index and not out.ragged_texts:
        return [], np.arange(1, n + 1, dtype=np.int64)
    lines, ragged = _scan_lines(data, delimiter, width)
    ragged_records = {r for r, _, _ in ragged}
    good_records = [r for r in sorted(lines) if r not in ragged_records]
    if len(good_records) == n and len(ragged) == len(out.ragged_texts):
        row_numbers = np.array(good_records, dtype=np.int64)
    else:  # the two parsers disagree (exotic quoting): fall back to record order
        row_numbers = np.arange(1, n + 1, dtype=np.int64)
        lines = {}
        ragged = [
            (n + 1 + i, len(next(csv.reader([t], delimiter=delimiter), [])), t)
            for i, t in enumerate(out.ragged_texts)
        ]
    rejects = []
    for record, fields, text in ragged:
        rejects.append(
            Reject(
                record,
                lines.get(record),
                "(row)",
                _show(text),
                "ragged_row",
                f"row has {fields} fields; the header has {width}",
            )
        )
    for index, column, value, code, reason in out.by_index:
        record = int(row_numbers[index])
        reason = re.sub(
            r"row #(\d+)", lambda m: _row_ref(int(m.group(1)), row_numbers, lines), reason
        )
        rejects.append(Reject(record, lines.get(record), column, value, code, reason))
    rejects.sort(key=lambda r: (r.row, r.column))
    return rejects, row_numbers


def _row_ref(index: int, row_numbers: Any, lines: dict[int, int]) -> str:
    record = int(row_numbers[index])
    line = lines.get(record)
    return f"line {line}" if line is not None else f"row {record}"
