"""FORMAT-CRITICAL: ``provmint-records/1``, a part's records and tokens in small
compressed blocks, so one product is one ``pread`` and one small decompression.

One file per Parquet part (the same rows, in leaf order). Header integers little-endian::

    b"PMRECS01" || u32 rows || u32 block_rows (64) || u32 blocks || u32 codec (1) || 8 zero bytes
    (blocks + 1) x u64 offset     absolute file offset of each compressed block; the last
                                  one is the file's length
    blocks x u32 size             the uncompressed size of each block
    the compressed blocks         codec 1: one zstd frame each (RFC 8878)

``blocks = ceil(rows / 64)``; block ``b`` holds rows ``64 b`` to ``64 b + 63``. A block's
payload is, row after row::

    u32be len(record) || record (provmint-record/1 bytes) || token (16 raw bytes)

:class:`RecordPart` trusts nothing in the file: the header, the block table, every
length inside a block and every decompression are checked, so a damaged file is a
:class:`~provmint.errors.StoreCorruptError` naming it, never a crash or a read out of
bounds.
"""

from __future__ import annotations

import array
import contextlib
import itertools
import os
import struct
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provmint.canonical import MAX_FIELDS, MAX_VALUE_BYTES
from provmint.errors import StoreCorruptError, os_error
from provmint.store.files import write_atomic

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "BLOCK_ROWS",
    "CODEC_ZSTD",
    "HEADER_SIZE",
    "MAGIC",
    "MAX_RECORD_BYTES",
    "RECORDS_VERSION",
    "TOKEN_SIZE",
    "ZSTD_LEVEL",
    "RecordPart",
    "write_payloads",
    "write_records",
]

RECORDS_VERSION = "provmint-records/1"
MAGIC = b"PMRECS01"
HEADER_SIZE = 32
BLOCK_ROWS = 64
CODEC_ZSTD = 1
TOKEN_SIZE = 16
ZSTD_LEVEL = -1
"""The zstd level the writer uses. Measured on 65,536 realistic 7-field records: level 1
costs about 34 ms of CPU per part for 35.5 bytes a row, level -1 about 23 ms for 38.2
(level 3: 1.6x the time of level 1 and no smaller). Minting writes every part, so the
faster level wins; readers do not care (any level decompresses the same way)."""
MAX_RECORD_BYTES = 6 + MAX_FIELDS * (1 + 64 + 4 + MAX_VALUE_BYTES)
"""The longest ``provmint-record/1`` :func:`~provmint.canonical.encode_record` can produce."""
_ROW_OVERHEAD = 4 + TOKEN_SIZE
_MAX_BLOCK_BYTES = BLOCK_ROWS * (_ROW_OVERHEAD + MAX_RECORD_BYTES)
_SLICE_ROWS = 1 << 16
"""Rows joined at a time by the writer (bounds its memory and Arrow's 32-bit offsets)."""

_HEADER = struct.Struct("<8sIIII8s")
_U32BE = struct.Struct(">I")


def _corrupt(what: str, path: Path) -> StoreCorruptError:
    from provmint.store import damaged  # the package may import this module: import late

    return StoreCorruptError(
        damaged(what, path),
        hint="audit the batch (provmint verify --batch ID) and restore it from a backup",
    )


def _codec() -> Any:
    global _CODEC
    if _CODEC is None:
        import pyarrow as pa

        _CODEC = pa.Codec("zstd", compression_level=ZSTD_LEVEL)
    return _CODEC


_CODEC: Any = None


def _compressor() -> Any:
    """A zstd compressor for one writer: zstandard's, whose frames are byte for byte
    pyarrow's at the same level (the same zstd; tested) for a fifth less time a block
    (its context is reused where pyarrow's codec makes one a call)."""
    import zstandard

    return zstandard.ZstdCompressor(
        level=ZSTD_LEVEL, write_content_size=True, write_checksum=False, write_dict_id=False
    )


_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_FCS_BYTES = (0, 2, 4, 8)
_DICT_ID_BYTES = (0, 1, 2, 4)


def _frames_match(data: bytes, bounds: list[int], sizes: list[int]) -> bool:
    """Whether ``data`` is one zstd frame (RFC 8878) from each bound to the next, each
    with no dictionary and a content size equal to its entry in ``sizes``: found by
    walking the frame headers and block headers, without decompressing."""
    for first, end, size in zip(bounds, bounds[1:], sizes, strict=False):
        if data[first : first + 4] != _ZSTD_MAGIC or first + 6 > end:
            return False
        descriptor = data[first + 4]
        single_segment = descriptor >> 5 & 1
        if descriptor & 0x08 or descriptor & 0x03:  # a reserved bit, a dictionary id
            return False
        fcs_bytes = _FCS_BYTES[descriptor >> 6] or single_segment
        at = first + 5 + (not single_segment) + _DICT_ID_BYTES[descriptor & 0x03]
        if fcs_bytes == 0 or at + fcs_bytes > end:
            return False
        content = int.from_bytes(data[at : at + fcs_bytes], "little")
        if (content + 256 if fcs_bytes == 2 else content) != size:
            return False
        at += fcs_bytes
        last = 0
        while not last:
            if at + 3 > end:
                return False
            header = int.from_bytes(data[at : at + 3], "little")
            last, kind = header & 1, header >> 1 & 3
            if kind == 3:
                return False
            at += 3 + (1 if kind == 1 else header >> 3)
        if at + 4 * (descriptor >> 2 & 1) != end:
            return False
    return True


# -- writing ----------------------------------------------------------------------------


def _fixed_width(data: Any, width: int, n: int) -> pa.Array:
    """``n`` values of ``width`` bytes each from one buffer, as a binary array."""
    import numpy as np
    import pyarrow as pa

    offsets = np.arange(0, width * (n + 1), width, dtype=np.int32)
    return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _payloads(records: pa.Array, tokens: memoryview) -> tuple[Any, list[int]]:
    """The payload bytes of ``records`` (whole 64-row blocks) and each block's end offset
    in it, built by Arrow over whole buffers."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(records)
    lengths = pc.binary_length(records).to_numpy(zero_copy_only=False)
    if n and int(lengths.max()) > MAX_RECORD_BYTES:
        raise ValueError(f"a record is longer than {MAX_RECORD_BYTES} bytes")
    prefix = _fixed_width(lengths.astype(">u4").tobytes(), 4, n)
    joined = pc.binary_join_element_wise(
        prefix, records, _fixed_width(tokens, TOKEN_SIZE, n), pa.scalar(b"", pa.binary())
    )
    offsets = np.frombuffer(
        joined.buffers()[1], dtype=np.int32, count=n + 1, offset=4 * joined.offset
    )
    base = int(offsets[0])
    ends = [int(offsets[i]) - base for i in range(BLOCK_ROWS, n, BLOCK_ROWS)]
    ends.append(int(offsets[n]) - base)
    return joined.buffers()[2].slice(base, ends[-1]), ends


def write_records(path: Path | str, records: Any, tokens: Any, *, durable: bool = True) -> None:
    """Write rows ``i`` = (``records[i]``, ``tokens[16 i : 16 i + 16]``) as a
    ``provmint-records/1`` file, atomically (temporary file beside it, fsync, rename,
    fsync of the directory; ``durable=False`` skips the fsyncs).

    ``records`` is a pyarrow binary array (or chunked array) of ``provmint-record/1``
    bytes without nulls; ``tokens`` holds the 16-byte raw tokens back to back (any
    buffer). A write failure is :class:`~provmint.errors.OutputError` naming the file.
    """
    import pyarrow as pa

    path = Path(path)
    if isinstance(records, pa.ChunkedArray):
        records = records.combine_chunks()
    if not isinstance(records, pa.Array) or not (
        pa.types.is_binary(records.type) or pa.types.is_large_binary(records.type)
    ):
        raise ValueError("records must be a pyarrow binary array")
    if records.null_count:
        raise ValueError("records must not be null")
    n = len(records)
    token_bytes = memoryview(tokens).cast("B")
    if len(token_bytes) != TOKEN_SIZE * n:
        raise ValueError(f"{n} records need {TOKEN_SIZE * n} token bytes, got {len(token_bytes)}")
    if n > 0xFFFF_FFFF:
        raise ValueError("a record part holds at most 2^32 - 1 rows")
    compress = _compressor().compress
    blocks: list[Any] = []
    sizes: list[int] = []
    for start in range(0, n, _SLICE_ROWS):
        stop = min(n, start + _SLICE_ROWS)
        payload, ends = _payloads(
            records.slice(start, stop - start).cast(pa.binary()),
            token_bytes[TOKEN_SIZE * start : TOKEN_SIZE * stop],
        )
        view = memoryview(payload)
        begin = 0
        for end in ends:
            blocks.append(compress(view[begin:end]))
            sizes.append(end - begin)
            begin = end
    _write_blocks(path, n, blocks, sizes, durable)


def write_payloads(
    path: Path | str, row_offsets: Any, payloads: Any, *, durable: bool = True
) -> None:
    """:func:`write_records` from the rows' payloads already laid out back to back
    (``u32be len(record) || record || token`` each; row ``i`` is ``payloads[row_offsets
    [i]:row_offsets[i + 1]]``, ``row_offsets`` n + 1 int64 values from 0), as the native
    minting kernel makes them beside the leaves."""
    import numpy as np

    path = Path(path)
    offsets = np.frombuffer(row_offsets, dtype=np.int64)
    data = memoryview(payloads).cast("B")
    n = len(offsets) - 1
    if n < 0 or offsets[0] != 0 or int(offsets[-1]) != len(data) or (np.diff(offsets) < 0).any():
        raise ValueError("row offsets do not cover the payloads")
    if n > 0xFFFF_FFFF:
        raise ValueError("a record part holds at most 2^32 - 1 rows")
    ends = offsets[BLOCK_ROWS::BLOCK_ROWS].tolist()
    if not ends or ends[-1] != offsets[-1]:
        ends.append(int(offsets[-1]))
    compress = _compressor().compress
    blocks: list[Any] = []
    sizes: list[int] = []
    begin = 0
    for end in ends if n else []:
        blocks.append(compress(data[begin:end]))
        sizes.append(end - begin)
        begin = end
    _write_blocks(path, n, blocks, sizes, durable)


def _write_blocks(path: Path, n: int, blocks: list[Any], sizes: list[int], durable: bool) -> None:
    """The file of ``n`` rows whose compressed blocks are ``blocks``."""
    import numpy as np

    count = len(blocks)
    table_end = HEADER_SIZE + 8 * (count + 1) + 4 * count
    offsets = np.empty(count + 1, dtype="<u8")
    offsets[0] = table_end
    np.cumsum([len(b) for b in blocks], out=offsets[1:])
    offsets[1:] += table_end
    header = _HEADER.pack(MAGIC, n, BLOCK_ROWS, count, CODEC_ZSTD, bytes(8))
    _write_file(
        path, [header, offsets.tobytes(), np.asarray(sizes, "<u4").tobytes(), *blocks], durable
    )


def _write_file(path: Path, pieces: list[Any], durable: bool) -> None:
    try:
        # one copy and (usually) one system call beat a write per block
        write_atomic(path, b"".join(pieces), durable=durable)
    except OSError as exc:
        raise os_error(exc, path) from exc


# -- reading ----------------------------------------------------------------------------


class RecordPart:
    """An open ``provmint-records/1`` file: its header and block table are read and
    checked on :meth:`open`; :meth:`get` reads one block (one ``pread``)."""

    def __init__(
        self, path: Path, fd: int, rows: int, offsets: array.array[int], sizes: array.array[int]
    ) -> None:
        self.path = path
        self.rows = rows
        self._fd: int | None = fd
        self._offsets = offsets
        self._sizes = sizes

    @classmethod
    def open(cls, path: Path | str) -> RecordPart:
        """Open a record part; damage is StoreCorruptError naming the file."""
        path = Path(path)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError as exc:
            raise _corrupt("the record part is missing", path) from exc
        except OSError as exc:
            raise _corrupt(f"cannot read the record part ({exc.strerror})", path) from exc
        try:
            rows, offsets, sizes = _read_table(fd, path)
            _advise(fd, "POSIX_FADV_RANDOM")  # lookups read a small block here and there
            return cls(path, fd, rows, offsets, sizes)
        except BaseException:
            os.close(fd)
            raise

    def __len__(self) -> int:
        return self.rows

    def _block(self, block: int) -> bytes:
        """The payload of one block, decompressed and checked against its table entry."""
        if self._fd is None:
            raise ValueError(f"record part {self.path} is closed")
        start, stop = self._offsets[block], self._offsets[block + 1]
        try:
            data = os.pread(self._fd, stop - start, start)
        except OSError as exc:
            raise _corrupt(f"cannot read the record part ({exc.strerror})", self.path) from exc
        if len(data) != stop - start:
            raise _corrupt("the record part is shorter than its block table says", self.path)
        size = self._sizes[block]
        try:
            payload = _decompress(data, size)
        except ValueError as exc:
            raise _corrupt(f"block {block} does not decompress ({exc})", self.path) from exc
        if len(payload) != size:
            raise _corrupt(f"block {block} decompresses to the wrong size", self.path)
        return payload

    def _rows_in(self, block: int) -> int:
        return min(BLOCK_ROWS, self.rows - BLOCK_ROWS * block)

    def _bad_block(self, block: int, what: str) -> StoreCorruptError:
        return _corrupt(f"block {block} (rows {BLOCK_ROWS * block}...): {what}", self.path)

    def get(self, index: int) -> tuple[bytes, bytes]:
        """Row ``index``: its record bytes and its 16 raw token bytes."""
        if not 0 <= index < self.rows:
            raise IndexError(f"record part {self.path} has no row {index}")
        block, row = divmod(index, BLOCK_ROWS)
        payload = self._block(block)
        end, position, length = len(payload) - 4, 0, _U32BE.unpack_from
        for _ in range(row):  # skip the rows before it, checking each length
            if position > end:
                raise self._bad_block(block, "a row runs past the block")
            position += _ROW_OVERHEAD + length(payload, position)[0]
        return self._entry(payload, position, block)

    def _entry(self, payload: bytes, position: int, block: int) -> tuple[bytes, bytes]:
        if position + 4 > len(payload):
            raise self._bad_block(block, "a row runs past the block")
        size = _U32BE.unpack_from(payload, position)[0]
        record_end = position + 4 + size
        if size > MAX_RECORD_BYTES or record_end + TOKEN_SIZE > len(payload):
            raise self._bad_block(block, "a row runs past the block")
        return payload[position + 4 : record_end], payload[record_end : record_end + TOKEN_SIZE]

    def _split(self, block: int) -> list[tuple[bytes, bytes]]:
        """Every row of a block, checking that they fill it exactly."""
        payload = self._block(block)
        rows: list[tuple[bytes, bytes]] = []
        position = 0
        for _ in range(self._rows_in(block)):
            record, token = self._entry(payload, position, block)
            rows.append((record, token))
            position += _ROW_OVERHEAD + len(record)
        if position != len(payload):
            raise self._bad_block(block, f"{len(payload) - position} bytes after the last row")
        return rows

    def payloads(self) -> bytes:
        """Every block's payload in order, joined: the whole part's rows as they are laid
        out in a block (each block decompressed and checked against its table entry).

        When every block is one zstd frame that spans exactly its table entry and states
        the table's size (as the writer makes them), the frames are decompressed in one
        call, about five times faster than one call a block and the same bytes (zstd
        checks each frame's size); anything else is read block by block, for the
        precise error."""
        if self._fd is None:
            raise ValueError(f"record part {self.path} is closed")
        _advise(self._fd, "POSIX_FADV_SEQUENTIAL")
        start, stop = int(self._offsets[0]), int(self._offsets[-1])
        sizes = [int(size) for size in self._sizes]
        with contextlib.suppress(OSError, ValueError, MemoryError):
            data = os.pread(self._fd, stop - start, start)
            bounds = [int(offset) - start for offset in self._offsets]
            if len(data) == stop - start and _frames_match(data, bounds, sizes):
                total = sum(sizes)
                joined: bytes = _codec().decompress(data, decompressed_size=total, asbytes=True)
                if len(joined) == total:
                    return joined
        return b"".join([self._block(block) for block in range(len(self._sizes))])

    def get_many(self, indexes: Iterable[int]) -> list[tuple[bytes, bytes]]:
        """Rows in the order asked, each block read and checked once."""
        wanted = list(indexes)
        for index in wanted:
            if not 0 <= index < self.rows:
                raise IndexError(f"record part {self.path} has no row {index}")
        blocks = {index // BLOCK_ROWS for index in wanted}
        split = {block: self._split(block) for block in sorted(blocks)}
        return [split[index // BLOCK_ROWS][index % BLOCK_ROWS] for index in wanted]

    def check(self) -> None:
        """Audit the whole file: every block decompresses and holds exactly its rows."""
        if self._fd is not None:
            _advise(self._fd, "POSIX_FADV_SEQUENTIAL")
        try:
            for block in range(len(self._sizes)):
                self._split(block)
        finally:
            if self._fd is not None:
                _advise(self._fd, "POSIX_FADV_RANDOM")

    def close(self) -> None:
        """Close the file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RecordPart:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RecordPart({str(self.path)!r}, rows={self.rows})"


def _advise(fd: int, advice: str) -> None:
    """``posix_fadvise`` where the platform has it (a hint: never an error)."""
    if hasattr(os, "posix_fadvise") and hasattr(os, advice):
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, 0, 0, getattr(os, advice))


def _read_table(fd: int, path: Path) -> tuple[int, array.array[int], array.array[int]]:
    """Check the header and the block table against the rules and the file's length."""
    try:
        size = os.fstat(fd).st_size
        header = os.pread(fd, HEADER_SIZE, 0)
    except OSError as exc:
        raise _corrupt(f"cannot read the record part ({exc.strerror})", path) from exc
    if len(header) != HEADER_SIZE:
        raise _corrupt(f"the record part is {size} bytes, shorter than its header", path)
    magic, rows, block_rows, blocks, codec, padding = _HEADER.unpack(header)
    if magic != MAGIC:
        raise _corrupt("not a provmint-records/1 file (bad magic)", path)
    if block_rows != BLOCK_ROWS or codec != CODEC_ZSTD or padding != bytes(8):
        raise _corrupt("the record part header is not one provmint writes", path)
    if blocks != -(-rows // BLOCK_ROWS):
        raise _corrupt(f"{blocks} blocks cannot hold {rows} rows", path)
    table_end = HEADER_SIZE + 8 * (blocks + 1) + 4 * blocks
    if table_end > size:
        raise _corrupt(f"the record part is {size} bytes, too short for {blocks} blocks", path)
    try:
        table = os.pread(fd, table_end - HEADER_SIZE, HEADER_SIZE)
    except OSError as exc:
        raise _corrupt(f"cannot read the record part ({exc.strerror})", path) from exc
    if len(table) != table_end - HEADER_SIZE:
        raise _corrupt("the record part is shorter than its block table", path)
    # array, not lists: 12 bytes a block (0.2 bytes a product) for every part held open;
    # and not numpy, which a one-shot lookup would otherwise import for this alone
    offsets = _little_endian("Q", table[: 8 * (blocks + 1)])
    sizes = _little_endian("I", table[8 * (blocks + 1) :])
    if offsets[0] != table_end or offsets[-1] != size:
        raise _corrupt("the block table does not span the file", path)
    if any(a >= b for a, b in itertools.pairwise(offsets)):
        raise _corrupt("the block table is not in order", path)
    if blocks:
        last = rows - BLOCK_ROWS * (blocks - 1)
        low, high = BLOCK_ROWS * _ROW_OVERHEAD, _MAX_BLOCK_BYTES
        if (
            min(itertools.islice(sizes, blocks - 1), default=low) < low
            or max(sizes) > high
            or sizes[-1] < last * _ROW_OVERHEAD
        ):
            raise _corrupt("a block size in the table is impossible", path)
    return rows, offsets, sizes


def _little_endian(code: str, data: bytes) -> array.array[int]:
    values = array.array(code, data)
    if values.itemsize != {"Q": 8, "I": 4}[code]:  # pragma: no cover - exotic platforms
        raise RuntimeError(f"array type {code} is not {values.itemsize} bytes here")
    if sys.byteorder != "little":  # pragma: no cover - big-endian machines
        values.byteswap()
    return values


_DECOMPRESSORS = threading.local()


def _decompress(data: bytes, size: int) -> bytes:
    """One zstd frame that decompresses to at most ``size`` bytes (ValueError if not).
    Through ``zstandard``, not pyarrow: a lookup need not import Arrow. Its decompressor
    is reused, one per thread (it is not thread-safe)."""
    import zstandard

    decompressor = getattr(_DECOMPRESSORS, "zstd", None)
    if decompressor is None:
        decompressor = _DECOMPRESSORS.zstd = zstandard.ZstdDecompressor()
    try:
        # A damaged frame header can declare any content size, which zstandard would
        # allocate before it finds the damage (a MemoryError, not a refusal).
        declared = zstandard.frame_content_size(data)
        if declared > size:
            raise ValueError(f"the frame declares {declared} bytes, its block {size}")
        payload: bytes = decompressor.decompress(data, max_output_size=size)
    except zstandard.ZstdError as exc:
        raise ValueError(str(exc)) from exc
    return payload
