"""FORMAT-CRITICAL: ``provmint-keyrun/1``, sorted runs of 64-bit lookup keys, and every
operation over them: external sort, k-way merge, duplicate candidates, the store's index.

A run file (every integer little-endian)::

    b"PMKRUN01" || u64 count || u32 kind || 44 zero bytes        the 64-byte header
    count x u64 key                                               ascending
    count x u32 row                                               the row of each key

Its length is exactly ``64 + 12 * count``; entries are sorted by (key, row). ``kind`` 1
(:attr:`RunKind.KEY`) holds ``provmint-keyhash/1`` hashes of (gtin14, serial), kind 2
(:attr:`RunKind.TOKEN`) the first 8 raw token bytes read as a little-endian u64. Rows are
whatever the writer says: a batch's leaf indexes while minting, the store's global row
numbers in the store's index.

A run is written once (a temporary file in the same directory, fsync, rename, fsync of the
directory) and never modified in place. :meth:`KeyRun.open` checks the header and the
exact length and memory-maps the file, keeping only every ``FENCE_STRIDE``-th key in RAM,
so a lookup is one search in RAM and one in a 4 KiB window of the map. Order is checked
by :meth:`KeyRun.check` (audits), not on every open. Streaming operations (:class:`SpillSorter`,
:func:`merge_runs`, :func:`equal_keys`, :func:`common_keys`, :meth:`KeyRun.blocks`) read with
``pread`` in bounded blocks, never through the map, so their memory does not grow with the
runs. Everything is vectorised with numpy; Python loops run only over blocks and over the
(rare) matches.
"""

from __future__ import annotations

import bisect
import contextlib
import mmap
import os
import secrets
import struct
import sys
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from provmint.errors import StoreCorruptError, os_error
from provmint.pendingfile import PendingFile

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

_UNLOADED: Any = object()
_native_merge: Any = _UNLOADED
"""The merge of :func:`_merge_blocks` in C (see provmint/_native.c; None without a C
compiler), loaded on the first merge: a process that never merges runs (the audit,
which must not share the minting engine's kernel, reads them) never loads it."""


def _native_merger() -> Any:
    global _native_merge
    if _native_merge is _UNLOADED:
        try:
            from provmint import _native
        except ImportError:  # pragma: no cover - machines without a C compiler
            _native_merge = None
        else:
            _native_merge = _native.merge_entries
    return _native_merge


__all__ = [
    "BLOCK_ROWS",
    "ENTRY_SIZE",
    "FENCE_STRIDE",
    "HEADER_SIZE",
    "KEYRUN_VERSION",
    "MAGIC",
    "MERGE_FACTOR",
    "MERGE_ROWS",
    "SCAN_FENCE_STRIDE",
    "SORT_ROWS",
    "KeyBlock",
    "KeyIndex",
    "KeyMatches",
    "KeyRun",
    "PointIndex",
    "RunKind",
    "RunWriter",
    "SpillSorter",
    "common_keys",
    "common_keys_split",
    "equal_keys",
    "merge_runs",
    "plan_merge",
    "sort_entries",
]

KEYRUN_VERSION = "provmint-keyrun/1"
MAGIC = b"PMKRUN01"
HEADER_SIZE = 64
ENTRY_SIZE = 12
"""Bytes per entry: a u64 key and a u32 row."""
MAX_ROW = (1 << 32) - 1

FENCE_STRIDE = 512
"""Every this many keys one fence key is kept in RAM: 16 bytes per 1,000 products, and a
lookup's window of the map is one 4 KiB page (one disk read when cold; 4096 would make
it eight pages and several dependent reads)."""
BLOCK_ROWS = 1 << 18
"""Entries per block when streaming a run (3 MiB)."""
SORT_ROWS = 1 << 20
"""Default memory budget of :class:`SpillSorter`, in entries (about 40 bytes each while sorting)."""
MERGE_ROWS = 1 << 20
"""Default memory budget of :func:`merge_runs`, in entries buffered over all inputs."""
MIN_MERGE_BLOCK = 4096
MERGE_FAN_IN = 32
"""Most runs :func:`merge_runs` merges at a time. Each step of a merge looks at every
input, and with many inputs each step finds few entries it may write (the inputs' last
buffered keys lie close together), so one merge of many runs costs about the square of
their number: a 30M-product mint's 458 chunk runs took 180 s in one merge. In levels of
32 they take 6 s (16: 7.6 s; 64: 6.7 s). A store's index holds few runs."""
_FENCE_READ_ENTRIES = 1 << 20
"""Keys read at a time while collecting the fences (8 MiB)."""
SCAN_FENCE_STRIDE = BLOCK_ROWS
"""The fence stride for runs that are streamed, not looked up in (a mint's duplicate check
against the store): one fence a streaming block, so a merge-join can still skip whole
blocks, and opening reads one key per fence instead of every page of the keys."""
_SPARSE_FENCE_STRIDE = 4096
"""From this stride on, each fence key is read on its own (one ``pread`` of 8 bytes):
its keys are then 32 KiB apart, and reading every page between them would read the
whole key section for one key in eight pages or fewer."""
MERGE_FACTOR = 2.0
""":func:`plan_merge` absorbs the previous run while it is at most this many times the tail."""

_HEADER = struct.Struct("<8sQI44s")


class RunKind(IntEnum):
    """What the keys of a run are."""

    KEY = 1
    """``provmint-keyhash/1`` of (gtin14, serial)."""
    TOKEN = 2
    """The first 8 raw token bytes as a little-endian u64."""


class KeyBlock(NamedTuple):
    """Sorted entries: ``keys`` (uint64) and ``rows`` (uint32) of the same length."""

    keys: NDArray[np.uint64]
    rows: NDArray[np.uint32]


@dataclass(frozen=True, slots=True)
class KeyMatches:
    """Pairs of equal keys from :func:`common_keys`: entry ``i`` says that key ``keys[i]``
    is at row ``rows[i]`` of the probed run and at row ``other_rows[i]`` of run
    ``others[other[i]]``. Sorted by (key, row, other, other row), from one block to the
    next too when the probed run's entries are distinct (as a run's rows are)."""

    keys: NDArray[np.uint64]
    rows: NDArray[np.uint32]
    other: NDArray[np.uint32]
    other_rows: NDArray[np.uint32]

    def __len__(self) -> int:
        return len(self.keys)


# -- helpers ----------------------------------------------------------------------------


def _corrupt(what: str, path: Path) -> StoreCorruptError:
    from provmint.store import damaged  # the package imports this module: import late

    return StoreCorruptError(
        damaged(what, path),
        hint="the lookup index is derived from the batches: rebuild it with provmint store repair",
    )


def _header(count: int, kind: RunKind) -> bytes:
    return _HEADER.pack(MAGIC, count, int(kind), bytes(44))


def _as_key(key: int | np.integer[Any]) -> np.uint64:
    import numpy as np

    value = int(key)
    if not 0 <= value <= 0xFFFF_FFFF_FFFF_FFFF:
        raise ValueError(f"a key is an unsigned 64-bit integer, got {value}")
    return np.uint64(value)


def _as_keys(keys: Any) -> NDArray[np.uint64]:
    """Keys as a flat uint64 array. Arrays must be of an integer dtype (signed ones
    non-negative); other sequences must hold ints (numpy would turn ``[0, 2**63]`` into
    float64, losing bits)."""
    import numpy as np

    if not isinstance(keys, np.ndarray):
        items = np.asarray(keys, dtype=object).reshape(-1).tolist()
        if not all(isinstance(x, int | np.integer) and not isinstance(x, bool) for x in items):
            raise ValueError("keys are unsigned 64-bit integers")
        try:
            return np.array([int(x) for x in items], dtype=np.uint64)
        except OverflowError as exc:
            raise ValueError("keys are unsigned 64-bit integers") from exc
    array = keys.reshape(-1)
    if array.dtype.kind == "u" or (array.dtype.kind == "i" and not (array < 0).any()):
        return array.astype(np.uint64, copy=False)
    raise ValueError(f"keys are unsigned 64-bit integers, got {array.dtype}")


def _as_rows(rows: Any) -> NDArray[np.uint32]:
    """Rows as a flat uint32 array (ValueError for anything outside 0..2^32-1)."""
    import numpy as np

    array = np.asarray(rows).reshape(-1)
    if array.size == 0:
        return np.zeros(0, dtype=np.uint32)
    if array.dtype.kind not in "iu":
        raise ValueError(f"rows are unsigned 32-bit integers, got {array.dtype}")
    if (array.dtype.kind == "i" and int(array.min()) < 0) or int(array.max()) > MAX_ROW:
        raise ValueError("rows are unsigned 32-bit integers")
    return array.astype(np.uint32, copy=False)


def _out_of_order(
    keys: NDArray[np.uint64], rows: NDArray[np.uint32], before: tuple[int, int] | None
) -> int | None:
    """Index of the first entry smaller, by (key, row), than the one before it (the first
    compared with ``before``), or None when all are in order."""
    import numpy as np

    if len(keys) == 0:
        return None
    if before is not None and (int(keys[0]), int(rows[0])) < before:
        return 0
    down = keys[1:] < keys[:-1]
    down |= (keys[1:] == keys[:-1]) & (rows[1:] < rows[:-1])
    bad = np.flatnonzero(down)
    return int(bad[0]) + 1 if bad.size else None


def sort_entries(
    keys: NDArray[np.uint64], rows: NDArray[Any]
) -> tuple[NDArray[np.uint64], NDArray[Any]]:
    """Entries sorted by (key, row), fast (copies; ``rows`` of any integer type).

    ``np.argsort`` of uint64 is about 8x slower than ``np.sort`` (which is vectorised), so
    the permutation is sorted as one uint64 per entry: the key's high bits with the low
    ``b`` bits replaced by the entry's index. That orders by (high bits, index); entries
    whose high bits tie (rare for hashes, common for small test keys) are then put in
    (key, row) order with a lexsort of just those.
    """
    import numpy as np

    n = len(keys)
    if n <= 1:
        return keys.copy(), rows.copy()
    bits = np.uint64((n - 1).bit_length())
    packed = keys >> bits
    packed <<= bits
    packed |= np.arange(n, dtype=np.uint64)
    packed.sort()
    packed &= (np.uint64(1) << bits) - np.uint64(1)
    order = packed.view(np.int64)
    sorted_keys, sorted_rows = keys[order], rows[order]
    del packed, order
    if _out_of_order(sorted_keys, sorted_rows, None) is not None:
        _order_ties(sorted_keys, sorted_rows, sorted_keys >> bits)
    return sorted_keys, sorted_rows


def _order_ties(keys: NDArray[np.uint64], rows: NDArray[np.uint32], group: NDArray[Any]) -> None:
    """Put runs of equal ``group`` values in (key, row) order, in place (a lexsort of
    just those entries: they are few)."""
    import numpy as np

    tie = group[1:] == group[:-1]
    member = np.zeros(len(keys), dtype=bool)
    member[1:] |= tie
    member[:-1] |= tie
    where = np.flatnonzero(member)
    sub_keys, sub_rows = keys[where], rows[where]
    order = np.lexsort((sub_rows, sub_keys))
    keys[where], rows[where] = sub_keys[order], sub_rows[order]


def _insert_sorted(big: KeyBlock, small: KeyBlock) -> KeyBlock:
    """Merge a short sorted block into a long one in linear time (``np.sort`` of both
    costs several times more when one side is much longer)."""
    import numpy as np

    n = len(big.keys) + len(small.keys)
    at = np.searchsorted(big.keys, small.keys, "left")
    at += np.arange(len(small.keys), dtype=at.dtype)
    keys = np.empty(n, dtype=np.uint64)
    rows = np.empty(n, dtype=np.uint32)
    from_small = np.zeros(n, dtype=bool)
    from_small[at] = True
    keys[at], rows[at] = small.keys, small.rows
    from_big = ~from_small
    keys[from_big], rows[from_big] = big.keys, big.rows
    if _out_of_order(keys, rows, None) is not None:  # equal keys from both sides
        _order_ties(keys, rows, keys)
    return KeyBlock(keys, rows)


def _merge_blocks(pieces: list[KeyBlock]) -> KeyBlock:
    """Sorted blocks merged into one: by the C merge when it is built (up to four times
    as fast for a few blocks, as fast as numpy's sort for many), else inserted into the
    longest when the others are few, sorted together otherwise."""
    import numpy as np

    pieces = [p for p in pieces if len(p.keys)]
    if not pieces:
        return KeyBlock(np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.uint32))
    if len(pieces) == 1:
        return pieces[0]
    merge = _native_merger()
    if merge is not None:
        keys, rows = merge(
            [
                (np.ascontiguousarray(p.keys, np.uint64), np.ascontiguousarray(p.rows, np.uint32))
                for p in pieces
            ]
        )
        return KeyBlock(np.frombuffer(keys, np.uint64), np.frombuffer(rows, np.uint32))
    big = max(pieces, key=lambda p: len(p.keys))
    rest = [p for p in pieces if p is not big]
    rest_keys = np.concatenate([p.keys for p in rest])
    rest_rows = np.concatenate([p.rows for p in rest])
    if 8 * len(rest_keys) <= len(big.keys):
        small = (
            KeyBlock(rest_keys, rest_rows)
            if len(rest) == 1
            else KeyBlock(*sort_entries(rest_keys, rest_rows))
        )
        return _insert_sorted(big, small)
    return KeyBlock(
        *sort_entries(np.concatenate([big.keys, rest_keys]), np.concatenate([big.rows, rest_rows]))
    )


def _ranges(starts: NDArray[np.int64], counts: NDArray[np.int64]) -> NDArray[np.int64]:
    """The concatenation of ``range(s, s + c)`` for every start and count, vectorised."""
    import numpy as np

    total = int(counts.sum())
    before = np.cumsum(counts) - counts
    return np.repeat(starts - before, counts) + np.arange(total, dtype=np.int64)


def _pwrite_all(fd: int, data: Any, offset: int) -> None:
    view = memoryview(data).cast("B")
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _pread_exact(fd: int, size: int, offset: int, path: Path) -> bytes:
    try:
        data = os.pread(fd, size, offset)
    except OSError as exc:
        raise _corrupt(f"cannot read the index run ({exc.strerror})", path) from exc
    if len(data) != size:
        raise _corrupt("the index run is shorter than its header says", path)
    return data


def _open_run(path: Path) -> int:
    """A read-only descriptor of a run file (StoreCorruptError naming it if it cannot be)."""
    try:
        return os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError as exc:
        raise _corrupt("the index run file is missing", path) from exc
    except OSError as exc:
        raise _corrupt(f"cannot read the index run ({exc.strerror})", path) from exc


def _expect_kind(found: RunKind, kind: RunKind | None, path: Path) -> None:
    if kind is not None and found != kind:
        raise _corrupt(f"the index run holds kind {int(found)}, not {int(kind)}", path)


# -- one run ----------------------------------------------------------------------------


class KeyRun:
    """An open ``provmint-keyrun/1`` file: memory-mapped, with its fence keys in RAM.

    Open with :meth:`open`; close with :meth:`close` or a ``with`` block. Lookups
    (:meth:`find`, :meth:`find_many`) read through the map; :meth:`blocks` and the
    streaming functions read with ``pread``.
    """

    def __init__(self, path: Path, kind: RunKind, count: int, fd: int, fence_stride: int) -> None:
        import numpy as np

        self.path = path
        self.kind = kind
        self.count = count
        self.fence_stride = fence_stride
        self._fd: int | None = fd
        self._map: mmap.mmap | None = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        self._keys = np.frombuffer(self._map, dtype="<u8", count=count, offset=HEADER_SIZE)
        self._rows = np.frombuffer(
            self._map, dtype="<u4", count=count, offset=HEADER_SIZE + 8 * count
        )
        self._fences = self._read_fences()
        if count and hasattr(mmap, "MADV_RANDOM"):
            # Lookups touch one page here and there: without this a cold page fault reads
            # ahead the whole read-ahead window (8 MiB on some virtual disks) for it.
            self._map.madvise(mmap.MADV_RANDOM)
        # Views of the fences and the map as sequences of Python ints, for bisect: a
        # point lookup's two searches then cost about a microsecond each, where numpy's
        # per-call overhead is several (it adds up over a store's few runs). They read
        # native integers, so only where native is little-endian.
        self._point: tuple[memoryview, memoryview, memoryview] | None = None
        if sys.byteorder == "little" and count:
            view = memoryview(self._map)
            self._point = (
                memoryview(self._fences.data).cast("B").cast("Q"),
                view[HEADER_SIZE : HEADER_SIZE + 8 * count].cast("Q"),
                view[HEADER_SIZE + 8 * count : HEADER_SIZE + 12 * count].cast("I"),
            )

    def _read_fences(self) -> NDArray[np.uint64]:
        """Every ``fence_stride``-th key, read with ``pread`` in 8 MiB steps: through the
        map it would fault in (and count in this process's RSS) a page per fence, which
        is every page of the keys at a stride of 512. At a sparse stride each fence is
        read on its own, so opening costs ``count / stride`` small reads, not the keys."""
        import numpy as np

        assert self._fd is not None
        stride = self.fence_stride
        fences = np.empty(-(-self.count // stride), dtype=np.uint64)
        if stride >= _SPARSE_FENCE_STRIDE:
            for i in range(len(fences)):
                key = _pread_exact(self._fd, 8, HEADER_SIZE + 8 * stride * i, self.path)
                fences[i] = int.from_bytes(key, "little")
            return fences
        step = stride * max(1, _FENCE_READ_ENTRIES // stride)
        for start in range(0, self.count, step):
            n = min(step, self.count - start)
            chunk = _pread_exact(self._fd, 8 * n, HEADER_SIZE + 8 * start, self.path)
            fences[start // stride : -(-(start + n) // stride)] = np.frombuffer(chunk, "<u8")[
                ::stride
            ]
        return fences

    @classmethod
    def open(
        cls, path: Path | str, *, kind: RunKind | None = None, fence_stride: int = FENCE_STRIDE
    ) -> KeyRun:
        """Open and check a run file (magic, kind, zero padding, exact length).

        ``kind``, when given, is the kind the caller expects. Anything else is
        :class:`~provmint.errors.StoreCorruptError` naming the file.
        """
        path = Path(path)
        if fence_stride < 1:
            raise ValueError("fence_stride must be positive")
        fd = _open_run(path)
        try:
            count, found = cls._check_header(fd, path)
            _expect_kind(found, kind, path)
            return cls(path, found, count, fd, fence_stride)
        except BaseException:
            os.close(fd)
            raise

    @staticmethod
    def _check_header(fd: int, path: Path) -> tuple[int, RunKind]:
        size = os.fstat(fd).st_size
        if size < HEADER_SIZE:
            raise _corrupt(f"the index run is {size} bytes, shorter than its header", path)
        magic, count, kind, padding = _HEADER.unpack(_pread_exact(fd, HEADER_SIZE, 0, path))
        if magic != MAGIC:
            raise _corrupt("not a provmint-keyrun/1 file (bad magic)", path)
        if kind not in RunKind.__members__.values():
            raise _corrupt(f"unknown index run kind {kind}", path)
        if padding != bytes(44):
            raise _corrupt("the index run header has non-zero padding", path)
        if size != HEADER_SIZE + ENTRY_SIZE * count:
            raise _corrupt(
                f"the index run is {size} bytes where its header says "
                f"{HEADER_SIZE + ENTRY_SIZE * count} ({count} entries)",
                path,
            )
        return count, RunKind(kind)

    # -- lookups

    def _lower(self, key: np.uint64, side: Any) -> int:
        """``searchsorted(keys, key, side)``: the fences pick one window of the map."""
        stride = self.fence_stride
        j = int(self._fences.searchsorted(key, side))
        lo = (j - 1) * stride if j else 0
        hi = j * stride if j * stride < self.count else self.count
        return lo + int(self._keys[lo:hi].searchsorted(key, side))

    def find(self, key: int | np.integer[Any]) -> NDArray[np.uint32]:
        """The rows of every entry with ``key`` (usually none or one), ascending."""
        import numpy as np

        self._check_open()
        found = self._find(_as_key(key))
        return found if found is not None else np.zeros(0, dtype=np.uint32)

    def _find(self, probe: np.uint64) -> NDArray[np.uint32] | None:
        """:meth:`find` of a checked key on an open run; None for no match (the hot path:
        a few numpy calls)."""
        first = self._lower(probe, "left")
        keys = self._keys
        if first == self.count or keys[first] != probe:
            return None
        last = first + 1
        if last < self.count and keys[last] == probe:
            last = self._lower(probe, "right")
        return self._rows[first:last].copy()

    def find_rows(self, key: int) -> list[int]:
        """:meth:`find` for one lookup, as a list: two ``bisect`` searches (the fences,
        then one window of the map) and no numpy call."""
        self._check_open()
        point = self._point
        if point is None:
            hit = self._find(_as_key(key))
            return [] if hit is None else hit.tolist()
        if not 0 <= key <= _U64_MAX:
            raise ValueError(f"a key is an unsigned 64-bit integer, not {key}")
        fences, keys, rows = point
        stride, count = self.fence_stride, self.count
        j = bisect.bisect_left(fences, key)
        first = bisect.bisect_left(keys, key, (j - 1) * stride if j else 0, min(j * stride, count))
        found = []
        while first < count and keys[first] == key:
            found.append(rows[first])
            first += 1
        return found

    def find_many(
        self, keys: Any, *, chunk_rows: int = BLOCK_ROWS
    ) -> tuple[NDArray[np.int64], NDArray[np.uint32]]:
        """Every match of an unsorted probe array: ``(positions, rows)``, one entry per
        (probe, matching row) pair, ``positions`` indexing ``keys``; sorted by (position,
        row). Probes are handled ``chunk_rows`` at a time (bounded extra memory)."""
        import numpy as np

        self._check_open()
        probes = _as_keys(keys)
        found_positions: list[NDArray[np.int64]] = []
        found_rows: list[NDArray[np.uint32]] = []
        for start in range(0, len(probes), max(1, chunk_rows)):
            chunk = probes[start : start + chunk_rows]
            sorted_probes, where = sort_entries(chunk, np.arange(len(chunk), dtype=np.uint32))
            matched, rows = self._match_sorted(sorted_probes)
            if matched.size:
                found_positions.append(where[matched].astype(np.int64) + start)
                found_rows.append(rows)
        return _ordered_matches(found_positions, found_rows)

    def _match_sorted(
        self, probes: NDArray[np.uint64]
    ) -> tuple[NDArray[np.int64], NDArray[np.uint32]]:
        """Matches of sorted probes: (index into ``probes``, row) pairs."""
        import numpy as np

        if self.count == 0 or probes.size == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.uint32)
        left = self._keys.searchsorted(probes, "left")
        hit = left < self.count
        hit[hit] = self._keys[left[hit]] == probes[hit]
        where = np.flatnonzero(hit)
        if where.size == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.uint32)
        starts = left[where].astype(np.int64)
        counts = self._keys.searchsorted(probes[where], "right").astype(np.int64) - starts
        if (counts < 0).any():  # only keys out of order make a search end before it starts
            raise _corrupt("the index run's keys are out of order", self.path)
        rows = np.array(self._rows[_ranges(starts, counts)], dtype=np.uint32)
        return np.repeat(where.astype(np.int64), counts), rows

    # -- streaming

    def read_keys(self, start: int, stop: int) -> NDArray[np.uint64]:
        """Keys ``start:stop`` read with ``pread`` (not through the map)."""
        import numpy as np

        keys: NDArray[np.uint64] = self._read_section(start, stop, HEADER_SIZE, np.uint64)
        return keys

    def read_rows(self, start: int, stop: int) -> NDArray[np.uint32]:
        """Rows ``start:stop`` read with ``pread`` (not through the map)."""
        import numpy as np

        section = HEADER_SIZE + 8 * self.count
        rows: NDArray[np.uint32] = self._read_section(start, stop, section, np.uint32)
        return rows

    def _read_section(self, start: int, stop: int, section: int, native: type) -> Any:
        """Items ``start:stop`` of the section of little-endian ``native`` integers that
        starts at file offset ``section`` (the keys or the rows)."""
        import numpy as np

        self._check_open()
        start, stop = max(0, start), min(stop, self.count)
        if stop <= start:
            return np.zeros(0, dtype=native)
        assert self._fd is not None
        stored = np.dtype(native).newbyteorder("<")
        size = stored.itemsize
        data = _pread_exact(self._fd, size * (stop - start), section + size * start, self.path)
        return np.frombuffer(data, dtype=stored).astype(native, copy=False)

    def read(self, start: int, stop: int) -> KeyBlock:
        """Entries ``start:stop`` read with ``pread`` (not through the map)."""
        return KeyBlock(self.read_keys(start, stop), self.read_rows(start, stop))

    def blocks(self, block_rows: int = BLOCK_ROWS) -> Iterator[KeyBlock]:
        """The entries in order, ``block_rows`` at a time (the last block may be shorter;
        an empty run yields nothing)."""
        step = max(1, block_rows)
        for start in range(0, self.count, step):
            yield self.read(start, start + step)

    def fence_start(self, key: int) -> int:
        """A position at or before the first entry with a key >= ``key`` (from the fences
        alone, no I/O): streaming readers skip ahead with it."""
        import numpy as np

        j = int(self._fences.searchsorted(np.uint64(key), "left"))
        return max(j - 1, 0) * self.fence_stride

    def check(self, *, rows_below: int | None = None) -> None:
        """Audit the whole run (streaming): entries in (key, row) order, and every row
        below ``rows_below`` when given. Damage is StoreCorruptError naming the file."""
        self.checked_entries(0, 0, rows_below=rows_below)

    def checked_entries(self, lo: int, hi: int, *, rows_below: int | None = None) -> KeyBlock:
        """Audit the whole run as :meth:`check` does, and return its entries whose row is
        in ``[lo, hi)``, in run order (the entries of one batch, for its audit)."""
        import numpy as np

        before: tuple[int, int] | None = None
        position = 0
        kept: list[KeyBlock] = []
        for keys, rows in self.blocks():
            bad = _out_of_order(keys, rows, before)
            if bad is not None:
                raise _corrupt(
                    f"entry {position + bad} of the index run is out of order", self.path
                )
            if rows_below is not None:
                over = np.flatnonzero(rows >= rows_below)
                if over.size:
                    raise _corrupt(
                        f"entry {position + int(over[0])} of the index run points at row "
                        f"{int(rows[over[0]])}, past the last ({rows_below - 1})",
                        self.path,
                    )
            if hi > lo:
                inside = (rows >= lo) & (rows < hi)
                kept.append(KeyBlock(keys[inside], rows[inside]))
            before = (int(keys[-1]), int(rows[-1]))
            position += len(keys)
        if not kept:
            return KeyBlock(np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.uint32))
        return KeyBlock(
            np.concatenate([b.keys for b in kept]), np.concatenate([b.rows for b in kept])
        )

    # -- lifetime

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has released the file."""
        return self._fd is None

    def _check_open(self) -> None:
        if self._fd is None:
            raise ValueError(f"index run {self.path} is closed")

    def close(self) -> None:
        """Release the file and the map (arrays still referring to the map keep it alive
        until they go)."""
        import numpy as np

        if self._fd is None:
            return
        os.close(self._fd)
        self._fd = None
        if self._point is not None:
            for view in self._point:
                view.release()
            self._point = None
        self._keys = self._fences = np.zeros(0, dtype=np.uint64)
        self._rows = np.zeros(0, dtype=np.uint32)
        mapping, self._map = self._map, None
        if mapping is not None:
            with contextlib.suppress(BufferError):
                mapping.close()

    def __len__(self) -> int:
        return self.count

    def __enter__(self) -> KeyRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"KeyRun({str(self.path)!r}, kind={self.kind.name}, count={self.count})"


def _ordered_matches(
    positions: list[NDArray[np.int64]], rows: list[NDArray[np.uint32]]
) -> tuple[NDArray[np.int64], NDArray[np.uint32]]:
    import numpy as np

    if not positions:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.uint32)
    all_positions, all_rows = np.concatenate(positions), np.concatenate(rows)
    order = np.lexsort((all_rows, all_positions))
    return all_positions[order], all_rows[order]


# -- writing ----------------------------------------------------------------------------


class RunWriter:
    """Write a run from blocks appended in (key, row) order; :meth:`close` makes it
    appear atomically (a :class:`~provmint.pendingfile.PendingFile`: temporary file in
    the same directory, fsync, rename, fsync of the directory). With ``count`` known,
    entries go straight to their place; without it, the rows go to a side file first (a
    PendingFile too, never committed). ``durable=False`` skips the fsyncs (spill files).
    In a ``with`` block an exception discards everything written. Write failures are
    :class:`~provmint.errors.OutputError` naming the file.
    """

    def __init__(
        self, path: Path | str, kind: RunKind, *, count: int | None = None, durable: bool = True
    ) -> None:
        self.path = Path(path)
        self.kind = RunKind(kind)
        self.durable = durable
        self.written = 0
        self._expected = count
        self._last: tuple[int, int] | None = None
        self._run: PendingFile | None = None
        self._side: PendingFile | None = None
        if count is not None and count < 0:
            raise ValueError("count must be >= 0")
        try:
            self._run = PendingFile(self.path, mode=0o644, durable=durable)
            if count is None:
                # Scratch, read back by close(): private, never fsynced, never committed.
                self._side = PendingFile(
                    self.path.with_name(f"{self.path.name}.rows"), mode=0o600, durable=False
                )
            else:
                os.ftruncate(self._run.fd, HEADER_SIZE + ENTRY_SIZE * count)
        except OSError as exc:
            self.abort()
            raise os_error(exc, self.path) from exc

    def append(self, keys: Any, rows: Any) -> None:
        """Add entries that continue the (key, row) order (ValueError otherwise)."""
        if self._run is None:
            raise ValueError(f"run writer for {self.path} is closed")
        keys, rows = _as_keys(keys), _as_rows(rows)
        if len(keys) != len(rows):
            raise ValueError("keys and rows differ in length")
        if len(keys) == 0:
            return
        bad = _out_of_order(keys, rows, self._last)
        if bad is not None:
            raise ValueError(f"entry {self.written + bad} is not in (key, row) order")
        n = len(keys)
        if self._expected is not None and self.written + n > self._expected:
            raise ValueError(f"more than the {self._expected} entries announced")
        fd = self._run.fd
        try:
            _pwrite_all(fd, keys.astype("<u8", copy=False), HEADER_SIZE + 8 * self.written)
            if self._side is not None:
                _pwrite_all(self._side.fd, rows.astype("<u4", copy=False), 4 * self.written)
            else:
                assert self._expected is not None
                offset = HEADER_SIZE + 8 * self._expected + 4 * self.written
                _pwrite_all(fd, rows.astype("<u4", copy=False), offset)
        except OSError as exc:
            self.abort()
            raise os_error(exc, self.path) from exc
        self.written += n
        self._last = (int(keys[-1]), int(rows[-1]))

    def close(self) -> None:
        """Finish the file and rename it into place."""
        if self._run is None:
            raise ValueError(f"run writer for {self.path} is closed")
        if self._expected is not None and self.written != self._expected:
            self.abort()
            raise ValueError(f"{self.written} entries written, {self._expected} announced")
        run = self._run
        try:
            if self._side is not None:
                self._copy_rows()
            _pwrite_all(run.fd, _header(self.written, self.kind), 0)
            run.commit()
        except OSError as exc:
            raise os_error(exc, self.path) from exc
        finally:
            self.abort()

    def _copy_rows(self) -> None:
        assert self._run is not None and self._side is not None
        position, total = 0, 4 * self.written
        target = HEADER_SIZE + 8 * self.written
        while position < total:
            data = os.pread(self._side.fd, min(1 << 23, total - position), position)
            if not data:
                raise OSError(0, "side file shorter than written")
            _pwrite_all(self._run.fd, data, target + position)
            position += len(data)

    def abort(self) -> None:
        """Discard everything written (nothing appears at ``path``); nothing to do once
        closed."""
        for pending in (self._run, self._side):
            if pending is not None:
                pending.discard()
        self._run = self._side = None

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        if exc is None and self._run is not None:
            self.close()
        else:
            self.abort()


def _write_sorted(
    path: Path, kind: RunKind, keys: NDArray[np.uint64], rows: NDArray[np.uint32], durable: bool
) -> None:
    with RunWriter(path, kind, count=len(keys), durable=durable) as writer:
        writer.append(keys, rows)


# -- external sort ----------------------------------------------------------------------


class SpillSorter:
    """Sort any number of (key, row) entries with a memory budget of ``memory_rows``.

    :meth:`add` takes unsorted blocks; whenever ``memory_rows`` entries are buffered they
    are sorted and spilled as a run file into ``directory``; :meth:`finish` merges the
    spills into the final run (or writes it directly when nothing spilled). Spill files
    are removed by :meth:`finish` and :meth:`close` (a ``with`` block closes). Peak memory
    is about 40 bytes per buffered entry, whatever the total.
    """

    def __init__(
        self, directory: Path | str, kind: RunKind, *, memory_rows: int = SORT_ROWS
    ) -> None:
        self.directory = Path(directory)
        self.kind = RunKind(kind)
        self.memory_rows = max(1, memory_rows)
        self.count = 0
        self.spills: list[Path] = []
        self._name = f".spill-{os.getpid()}-{secrets.token_hex(4)}"
        self._keys: NDArray[np.uint64] | None = None
        self._rows: NDArray[np.uint32] | None = None
        self._fill = 0
        self._closed = False

    def add(self, keys: Any, rows: Any) -> None:
        """Add entries in any order."""
        import numpy as np

        if self._closed:
            raise ValueError("the sorter is finished")
        keys, rows = _as_keys(keys), _as_rows(rows)
        if len(keys) != len(rows):
            raise ValueError("keys and rows differ in length")
        if self._keys is None or self._rows is None:
            self._keys = np.empty(self.memory_rows, dtype=np.uint64)
            self._rows = np.empty(self.memory_rows, dtype=np.uint32)
        done = 0
        while done < len(keys):
            take = min(len(keys) - done, self.memory_rows - self._fill)
            self._keys[self._fill : self._fill + take] = keys[done : done + take]
            self._rows[self._fill : self._fill + take] = rows[done : done + take]
            self._fill += take
            done += take
            if self._fill == self.memory_rows:
                self._spill()
        self.count += len(keys)

    def _sorted_buffer(self) -> tuple[NDArray[np.uint64], NDArray[np.uint32]]:
        import numpy as np

        if self._keys is None or self._rows is None:
            return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.uint32)
        return sort_entries(self._keys[: self._fill], self._rows[: self._fill])

    def _spill(self) -> None:
        keys, rows = self._sorted_buffer()
        path = self.directory / f"{self._name}-{len(self.spills):05d}.run"
        self.spills.append(path)
        _write_sorted(path, self.kind, keys, rows, durable=False)
        self._fill = 0

    def finish(
        self, path: Path | str, *, durable: bool = True, memory_rows: int | None = None
    ) -> KeyRun:
        """Write every entry added, sorted by (key, row), as the run ``path`` and open it."""
        if self._closed:
            raise ValueError("the sorter is finished")
        path = Path(path)
        try:
            if not self.spills:
                keys, rows = self._sorted_buffer()
                self._release()
                _write_sorted(path, self.kind, keys, rows, durable)
                del keys, rows
                return KeyRun.open(path, fence_stride=SCAN_FENCE_STRIDE)
            if self._fill:
                self._spill()
            self._release()
            runs = [KeyRun.open(spill, fence_stride=SCAN_FENCE_STRIDE) for spill in self.spills]
            try:
                return merge_runs(
                    runs, path, memory_rows=memory_rows or self.memory_rows, durable=durable
                )
            finally:
                for run in runs:
                    run.close()
        finally:
            self.close()

    def _release(self) -> None:
        self._keys = self._rows = None
        self._fill = 0

    def close(self) -> None:
        """Remove the spill files and free the buffer."""
        self._closed = True
        self._release()
        for spill in self.spills:
            with contextlib.suppress(OSError):
                spill.unlink()

    def __enter__(self) -> SpillSorter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- streaming over several runs --------------------------------------------------------


class _Cursor:
    """A run read front to back in blocks: the buffered, not yet consumed entries are
    ``keys``/``rows``; ``position`` is the next entry to read from the file.

    ``keys_only``: the rows are not read with the keys (``rows`` stays empty), but for
    the entries asked of :meth:`rows_at`: a merge-join needs the rows of its few matches
    only, and the keys are two thirds of a run's bytes."""

    def __init__(
        self, run: KeyRun, block_rows: int, row_offset: int = 0, *, keys_only: bool = False
    ) -> None:
        import numpy as np

        self.run = run
        self.block_rows = max(1, block_rows)
        self.row_offset = row_offset
        self.keys_only = keys_only
        self.position = 0
        self.keys: NDArray[np.uint64] = np.zeros(0, dtype=np.uint64)
        self.rows: NDArray[np.uint32] = np.zeros(0, dtype=np.uint32)

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def more(self) -> bool:
        """Whether the file has entries not read yet."""
        return self.position < self.run.count

    def fill(self) -> None:
        """Read the next block and append it to the buffer."""
        import numpy as np

        if self.keys_only:
            keys = self.run.read_keys(self.position, self.position + self.block_rows)
            self.position += len(keys)
            self.keys = np.concatenate([self.keys, keys]) if len(self.keys) else keys
            return
        block = self.run.read(self.position, self.position + self.block_rows)
        self.position += len(block.keys)
        rows = block.rows
        if self.row_offset:
            shifted = rows.astype(np.uint64) + np.uint64(self.row_offset)
            if len(shifted) and int(shifted.max()) > MAX_ROW:
                raise ValueError(f"rows of {self.run.path} plus their offset pass 2^32 - 1")
            rows = shifted.astype(np.uint32)
        if len(self.keys):
            self.keys = np.concatenate([self.keys, block.keys])
            self.rows = np.concatenate([self.rows, rows])
        else:
            self.keys, self.rows = block.keys, rows

    def rows_at(self, index: NDArray[np.int64]) -> NDArray[np.uint32]:
        """The rows of buffered entries ``index`` (positions in the buffer); read from
        the file, all in one read, when the cursor reads keys only."""
        if not self.keys_only or not len(index):
            return self.rows[index]
        first = self.position - len(self.keys)  # the file position of keys[0]
        low, high = int(index.min()), int(index.max()) + 1
        rows = self.run.read_rows(first + low, first + high)
        return rows[index - low]

    def take(self, n: int) -> KeyBlock:
        """Remove and return the first ``n`` buffered entries."""
        taken = KeyBlock(self.keys[:n], self.rows[:n])
        self.keys, self.rows = self.keys[n:], self.rows[n:]
        return taken

    def count_upto(self, key: int, row: int) -> int:
        """How many buffered entries are <= (key, row)."""
        import numpy as np

        probe = np.uint64(key)
        lo = int(self.keys.searchsorted(probe, "left"))
        hi = int(self.keys.searchsorted(probe, "right"))
        return lo + int(self.rows[lo:hi].searchsorted(np.uint32(row), "right"))

    def drop_below(self, key: int) -> None:
        """Forget entries with a key < ``key``; skip ahead in the file with the fences
        when the buffer runs out."""
        import numpy as np

        n = int(self.keys.searchsorted(np.uint64(key), "left"))
        if n:
            self.take(n)
        if not len(self.keys) and self.more:
            self.position = max(self.position, self.run.fence_start(key))


def merge_runs(
    runs: Sequence[KeyRun],
    path: Path | str,
    *,
    row_offsets: Sequence[int] | None = None,
    memory_rows: int = MERGE_ROWS,
    durable: bool = True,
    fan_in: int = MERGE_FAN_IN,
) -> KeyRun:
    """Merge runs of one kind into the run ``path`` (k-way, streaming) and open it.

    ``row_offsets[i]``, when given, is added to every row of ``runs[i]`` (a batch's leaf
    indexes become the store's global rows); a row past 2^32 - 1 is a ValueError. At most
    about ``memory_rows`` entries are buffered over all inputs, whatever their size. More
    than ``fan_in`` runs are merged in levels, ``fan_in`` at a time (see
    :data:`MERGE_FAN_IN`), through scratch runs beside ``path``.
    """
    if not runs:
        raise ValueError("nothing to merge")
    kind = runs[0].kind
    if any(run.kind != kind for run in runs):
        raise ValueError("runs of different kinds cannot be merged")
    offsets = list(row_offsets) if row_offsets is not None else [0] * len(runs)
    if len(offsets) != len(runs) or not all(0 <= o <= MAX_ROW for o in offsets):
        raise ValueError("one row offset per run, each in 0..2^32-1")
    if fan_in < 2:
        raise ValueError("a merge takes at least two runs at a time")
    if len(runs) <= fan_in:
        return _merge_once(runs, Path(path), offsets, memory_rows, durable)
    return _merge_in_levels(runs, Path(path), offsets, memory_rows, durable, fan_in)


def _merge_once(
    runs: Sequence[KeyRun], path: Path, offsets: list[int], memory_rows: int, durable: bool
) -> KeyRun:
    block = max(MIN_MERGE_BLOCK, memory_rows // len(runs))
    cursors = [_Cursor(run, block, offset) for run, offset in zip(runs, offsets, strict=True)]
    total = sum(run.count for run in runs)
    with RunWriter(path, runs[0].kind, count=total, durable=durable) as writer:
        for keys, rows in _merged(cursors):
            writer.append(keys, rows)
    return KeyRun.open(path, fence_stride=SCAN_FENCE_STRIDE)


def _merge_in_levels(
    runs: Sequence[KeyRun],
    path: Path,
    offsets: list[int],
    memory_rows: int,
    durable: bool,
    fan_in: int,
) -> KeyRun:
    """Merge ``fan_in`` runs at a time into scratch runs, level after level, until at
    most ``fan_in`` are left, then those into ``path``. The scratch runs live in a
    directory beside ``path`` named for this process (``.merge…-<pid>``: a store's
    recovery removes those of a dead process) and are removed when done or failed."""
    import shutil
    import tempfile

    scratch = Path(tempfile.mkdtemp(prefix=".merge", suffix=f"-{os.getpid()}", dir=path.parent))
    level: list[KeyRun] = []  # the scratch runs of the last level made
    made: list[KeyRun] = []  # those of the level being made
    try:
        inputs, input_offsets, depth = list(runs), offsets, 0
        while len(inputs) > fan_in:
            for start in range(0, len(inputs), fan_in):
                target = scratch / f"{depth}-{start // fan_in}.run"
                end = start + fan_in
                made.append(
                    _merge_once(
                        inputs[start:end], target, input_offsets[start:end], memory_rows, False
                    )
                )
            _close_all(level, remove=True)  # merged into the new level
            level, made = made, []
            inputs, input_offsets, depth = level, [0] * len(level), depth + 1
        return _merge_once(inputs, path, input_offsets, memory_rows, durable)
    finally:
        _close_all(level + made, remove=False)
        shutil.rmtree(scratch, ignore_errors=True)


def _close_all(runs: list[KeyRun], *, remove: bool) -> None:
    for run in runs:
        run.close()
        if remove:
            run.path.unlink(missing_ok=True)


def _merged(cursors: list[_Cursor]) -> Iterator[KeyBlock]:
    """The entries of all cursors in (key, row) order, in blocks."""

    while True:
        for cursor in cursors:
            if not len(cursor) and cursor.more:
                cursor.fill()
        active = [c for c in cursors if len(c)]
        if not active:
            return
        pending = [c for c in cursors if c.more]
        if len(active) == 1 and all(c is active[0] for c in pending):
            yield active[0].take(len(active[0]))  # the last input: copy it through
            continue
        # Entries <= the smallest last-buffered entry of an input with more to read are
        # final: nothing read later can sort before them.
        bound = min((int(c.keys[-1]), int(c.rows[-1])) for c in pending) if pending else None
        pieces = [c.take(len(c) if bound is None else c.count_upto(*bound)) for c in active]
        merged = _merge_blocks(pieces)
        if len(merged.keys):
            yield merged


def equal_keys(run: KeyRun, *, block_rows: int = BLOCK_ROWS) -> Iterator[KeyBlock]:
    """Every entry whose key occurs at least twice in ``run`` (in-file duplicate
    candidates), in (key, row) order, streaming.

    Each block yielded holds whole groups of equal keys, except that a group of more
    than ``block_rows`` entries is yielded in consecutive pieces; memory stays about two
    blocks.
    """
    import numpy as np

    blocks = run.blocks(block_rows)
    current = next(blocks, None)
    previous_last: np.uint64 | None = None
    held = KeyBlock(np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.uint32))
    while current is not None:
        following = next(blocks, None)
        keys, rows = current
        member = np.zeros(len(keys), dtype=bool)
        same = keys[1:] == keys[:-1]
        member[1:] |= same
        member[:-1] |= same
        if previous_last is not None and keys[0] == previous_last:
            member[0] = True
        next_first = following.keys[0] if following is not None else None
        if next_first is not None and keys[-1] == next_first:
            member[-1] = True
        found = KeyBlock(
            np.concatenate([held.keys, keys[member]]), np.concatenate([held.rows, rows[member]])
        )
        held = KeyBlock(found.keys[:0], found.rows[:0])
        if len(found.keys) and next_first is not None and found.keys[-1] == next_first:
            start = int(found.keys.searchsorted(found.keys[-1], "left"))
            if len(found.keys) - start < block_rows:  # hold the group back to complete it
                held = KeyBlock(found.keys[start:], found.rows[start:])
                found = KeyBlock(found.keys[:start], found.rows[:start])
        if len(found.keys):
            yield found
        previous_last = keys[-1]
        current = following
    if len(held.keys):
        yield held


def common_keys(
    run: KeyRun,
    others: Sequence[KeyRun],
    *,
    block_rows: int = BLOCK_ROWS,
    low: int = 0,
    high: int | None = None,
) -> Iterator[KeyMatches]:
    """Keys of ``run`` present in any of ``others`` (store duplicate candidates), with
    the rows on both sides: a streaming merge-join, in blocks of about ``block_rows``
    matches, in (key, row) order (each block sorted by key, row, other, other row).

    Only keys from ``low`` up to ``high`` (excluded; None: to the end) are joined, so
    that the key space can be split among processes.

    Memory stays a few blocks per input, plus the largest group of one key in ``others``
    (store runs hold unique products: only a hash collision makes such a group). The
    inputs are read front to back once; ranges of ``others`` that no key of ``run`` can
    match are skipped with the fences.
    """
    import numpy as np

    probe = _Cursor(run, block_rows)
    probe.drop_below(low)
    cursors = [_Cursor(other, block_rows, keys_only=True) for other in others]
    out: list[KeyMatches] = []
    held = 0
    while True:
        if not len(probe):
            if not probe.more:
                break
            probe.fill()
            probe.drop_below(low)
            continue
        first = int(probe.keys[0])
        if high is not None and first >= high:
            break
        for cursor in cursors:
            cursor.drop_below(first)
            if not len(cursor) and cursor.more:
                cursor.fill()
        if not any(len(c) for c in cursors):
            break  # nothing left in the others at or after the next probe key
        pending = [c for c in cursors if c.more]
        # Probe keys below every pending input's last buffered key see all their matches.
        bound = min(int(c.keys[-1]) for c in pending) if pending else None
        cut = len(probe) if bound is None else int(probe.keys.searchsorted(np.uint64(bound)))
        if high is not None:  # (at least one key: the first is below high)
            cut = min(cut, int(probe.keys.searchsorted(np.uint64(high))))
        if cut == 0:  # the next probe key is the last buffered key of some input
            for cursor in pending:
                if int(cursor.keys[-1]) <= first:
                    cursor.fill()
            continue
        matches = _join(probe.take(cut), cursors)
        if matches is not None:
            out.append(matches)
            held += len(matches)
            if held >= block_rows:
                yield _concat_matches(out)
                out, held = [], 0
    if out:
        yield _concat_matches(out)


def common_keys_split(
    run: KeyRun,
    others: Sequence[KeyRun],
    *,
    parts: int,
    block_rows: int = BLOCK_ROWS,
    ahead: int = 4,
) -> Generator[KeyMatches, None, None]:
    """:func:`common_keys`, the key space cut into ``parts`` ranges of as many keys of
    ``run`` each, joined side by side in threads (``pread`` and numpy's searches release
    the GIL), yielded range after range: the same matches in the same order as one
    whole join. A range's thread stops ``ahead`` blocks ahead of the reader, so memory
    stays bounded when the matches are many (a file minted again)."""
    import queue
    import threading

    cuts = sorted({int(run.read(run.count * i // parts, run.count * i // parts + 1).keys[0])
                   for i in range(1, parts)} if run.count else set())  # fmt: skip
    ranges = list(zip([0, *cuts], [*cuts, None], strict=True))
    if len(ranges) == 1:
        yield from common_keys(run, others, block_rows=block_rows)
        return
    stop = threading.Event()
    queues: list[queue.Queue[KeyMatches | BaseException | None]] = [
        queue.Queue(maxsize=ahead) for _ in ranges
    ]

    def join(low: int, high: int | None, out: queue.Queue[Any]) -> None:
        def put(item: Any) -> bool:
            while not stop.is_set():
                with contextlib.suppress(queue.Full):
                    out.put(item, timeout=0.1)
                    return True
            return False

        try:
            for block in common_keys(run, others, block_rows=block_rows, low=low, high=high):
                if not put(block):
                    return
        except BaseException as exc:  # raised in the reader's thread
            put(exc)
            return
        put(None)

    threads = [
        threading.Thread(target=join, args=(low, high, out), daemon=True)
        for (low, high), out in zip(ranges, queues, strict=True)
    ]
    for thread in threads:
        thread.start()
    try:
        for out in queues:
            while (item := out.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def _join(segment: KeyBlock, cursors: list[_Cursor]) -> KeyMatches | None:
    """Every pair of equal keys between sorted ``segment`` and the cursors' buffers."""
    import numpy as np

    parts: list[KeyMatches] = []
    for index, cursor in enumerate(cursors):
        if not len(cursor):
            continue
        left = cursor.keys.searchsorted(segment.keys, "left")
        hit = left < len(cursor.keys)
        hit[hit] = cursor.keys[left[hit]] == segment.keys[hit]
        where = np.flatnonzero(hit)
        if not where.size:
            continue
        starts = left[where].astype(np.int64)
        counts = cursor.keys.searchsorted(segment.keys[where], "right").astype(np.int64) - starts
        if (counts < 0).any():  # only keys out of order make a search end before it starts
            raise _corrupt("the index run's keys are out of order", cursor.run.path)
        parts.append(
            KeyMatches(
                np.repeat(segment.keys[where], counts),
                np.repeat(segment.rows[where], counts),
                np.full(int(counts.sum()), index, dtype=np.uint32),
                cursor.rows_at(_ranges(starts, counts)),
            )
        )
    return _concat_matches(parts) if parts else None


def _concat_matches(parts: list[KeyMatches]) -> KeyMatches:
    import numpy as np

    keys = np.concatenate([p.keys for p in parts])
    rows = np.concatenate([p.rows for p in parts])
    other = np.concatenate([p.other for p in parts])
    other_rows = np.concatenate([p.other_rows for p in parts])
    order = np.lexsort((other_rows, other, rows, keys))
    return KeyMatches(keys[order], rows[order], other[order], other_rows[order])


# -- the store's index ------------------------------------------------------------------


class KeyIndex:
    """Lookups over several runs of one kind (the store's live runs)."""

    def __init__(self, runs: Iterable[KeyRun]) -> None:
        self.runs = list(runs)
        kinds = {run.kind for run in self.runs}
        if len(kinds) > 1:
            raise ValueError("an index holds runs of one kind")
        self.kind: RunKind | None = kinds.pop() if kinds else None
        self._owned = {id(run) for run in self.runs}  # the runs close() closes

    @classmethod
    def open(
        cls,
        paths: Iterable[Path | str],
        *,
        kind: RunKind | None = None,
        fence_stride: int = FENCE_STRIDE,
        reuse: KeyIndex | None = None,
    ) -> KeyIndex:
        """Open every run (StoreCorruptError for a damaged one; nothing stays open).

        ``reuse``: an index over an earlier list of the same store's runs. A run both
        list is shared with it, open, rather than opened again (a run never changes once
        written, and its name is never used again), so only the new runs' fences are
        read. ``reuse`` keeps owning the shared runs until :meth:`take_over`."""
        lent = reuse.owned() if reuse is not None else []
        held = {
            str(run.path): run
            for run in lent
            if run.fence_stride == fence_stride and kind in (None, run.kind) and not run.closed
        }
        runs: list[KeyRun] = []
        opened: list[KeyRun] = []
        try:
            for path in paths:
                run = held.get(str(path))
                if run is None:
                    run = KeyRun.open(path, kind=kind, fence_stride=fence_stride)
                    opened.append(run)
                runs.append(run)
            index = cls(runs)
        except BaseException:
            for run in opened:
                run.close()
            raise
        index._owned = {id(run) for run in opened}
        return index

    def owned(self) -> list[KeyRun]:
        """The runs this index closes when closed."""
        return [run for run in self.runs if id(run) in self._owned]

    def take_over(self, earlier: KeyIndex) -> None:
        """Own the runs shared with ``earlier`` (this index was opened with ``reuse=
        earlier``): this index closes them from now on, and ``earlier``, which still
        answers as before (a lookup may be running on it), closes only the rest."""
        shared = {id(run) for run in self.runs} & earlier._owned
        earlier._owned -= shared
        self._owned |= shared

    @property
    def count(self) -> int:
        """Entries over all runs."""
        return sum(run.count for run in self.runs)

    def find(self, key: int | np.integer[Any]) -> NDArray[np.uint32]:
        """The rows of every entry with ``key`` in any run, ascending."""
        import numpy as np

        probe = _as_key(key)
        found = []
        for run in self.runs:
            run._check_open()
            rows = run._find(probe)
            if rows is not None:
                found.append(rows)
        if not found:
            return np.zeros(0, dtype=np.uint32)
        return found[0] if len(found) == 1 else np.sort(np.concatenate(found))

    def candidates(self, key: int) -> Iterator[int]:
        """The rows with ``key``, run by run in the index's order (the store's: oldest,
        so largest, first), searching each run only when the caller asks for more: a
        caller that stops at the first row it confirms searches about one run, not all."""
        for run in self.runs:
            yield from run.find_rows(key)

    def find_many(
        self, keys: Any, *, chunk_rows: int = BLOCK_ROWS
    ) -> tuple[NDArray[np.int64], NDArray[np.uint32]]:
        """Every (position in ``keys``, row) match over all runs, sorted."""
        positions: list[NDArray[np.int64]] = []
        rows: list[NDArray[np.uint32]] = []
        probes = _as_keys(keys)
        for run in self.runs:
            found = run.find_many(probes, chunk_rows=chunk_rows)
            if found[0].size:
                positions.append(found[0])
                rows.append(found[1])
        return _ordered_matches(positions, rows)

    def close(self) -> None:
        """Close every run this index owns (not those shared and not taken over yet, nor
        those a newer index took over)."""
        for run in self.owned():
            run.close()

    def __enter__(self) -> KeyIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PointIndex:
    """Point lookups over several runs of one kind, for a process that looks up a few
    keys and exits (``product show``, ``scan``, ``proof export``): each run's header and
    length are checked and the file is mapped, and a lookup is a binary search through
    the map, about log2(count) page touches. Unlike :class:`KeyIndex` nothing is read
    up front (no fences) and numpy is not imported, so opening costs the same at any
    store size. Entries are read as little-endian on any machine."""

    def __init__(self, runs: Iterable[tuple[Path, int, mmap.mmap | None]]) -> None:
        self._runs = list(runs)

    @classmethod
    def open(cls, paths: Iterable[Path | str], *, kind: RunKind) -> PointIndex:
        """Open every run (StoreCorruptError for a damaged one; nothing stays open)."""
        index = cls([])
        opened = index._runs
        try:
            for name in paths:
                path = Path(name)
                fd = _open_run(path)
                try:
                    count, found = KeyRun._check_header(fd, path)
                    _expect_kind(found, kind, path)
                    mapping = mmap.mmap(fd, 0, access=mmap.ACCESS_READ) if count else None
                    if mapping is not None and hasattr(mmap, "MADV_RANDOM"):
                        mapping.madvise(mmap.MADV_RANDOM)  # as KeyRun: no read-ahead
                finally:
                    os.close(fd)  # the map keeps the file
                opened.append((path, count, mapping))
            return index
        except BaseException:
            index.close()
            raise

    @property
    def count(self) -> int:
        """Entries over all runs."""
        return sum(count for _, count, _ in self._runs)

    def candidates(self, key: int) -> Iterator[int]:
        """The rows with ``key``, run by run, as :meth:`KeyIndex.candidates`."""
        if not 0 <= key <= _U64_MAX:
            raise ValueError(f"a key is an unsigned 64-bit integer, not {key}")
        for _, count, mapping in self._runs:
            if mapping is None:
                continue
            lo, hi = 0, count
            while lo < hi:  # the first entry whose key is >= key
                mid = (lo + hi) // 2
                if _KEY.unpack_from(mapping, HEADER_SIZE + 8 * mid)[0] < key:
                    lo = mid + 1
                else:
                    hi = mid
            while lo < count and _KEY.unpack_from(mapping, HEADER_SIZE + 8 * lo)[0] == key:
                yield _ROW.unpack_from(mapping, HEADER_SIZE + 8 * count + 4 * lo)[0]
                lo += 1

    def close(self) -> None:
        """Release the maps."""
        runs, self._runs = self._runs, []
        for _, _, mapping in runs:
            if mapping is not None:
                mapping.close()

    def __enter__(self) -> PointIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_KEY = struct.Struct("<Q")
_ROW = struct.Struct("<I")
_U64_MAX = (1 << 64) - 1


def plan_merge(sizes: Sequence[int], new: int, *, factor: float = MERGE_FACTOR) -> int:
    """How many of the existing runs (the last ones of ``sizes``, oldest first) to merge
    with a new run of ``new`` entries: 0 means the new run is kept as it is.

    Trailing runs are absorbed while each is at most ``factor`` times the merged tail.
    Afterwards every run is more than ``factor`` times the next one, so there are at
    most log_factor(N) + 1 runs; and every entry, after its first merge, is rewritten
    only when its run grows by a factor of at least 1 + 1/factor, so the bytes rewritten
    stay O(N log N).
    """
    if factor <= 0 or new < 0 or any(size < 0 for size in sizes):
        raise ValueError("sizes are >= 0 and the factor is positive")
    merged, absorbed = new, 0
    for size in reversed(sizes):
        if size > factor * merged:
            break
        merged += size
        absorbed += 1
    return absorbed
