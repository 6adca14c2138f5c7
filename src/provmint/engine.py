"""The minting hot path: one aligned chunk of raw CSV rows -> validated rows, tokens,
leaves, subtree levels, a Parquet part, a record part and the chunk's index runs.

A chunk holds ``2^k`` rows starting at a multiple of ``2^k`` (the last chunk may be
shorter), so its subtree is a node of the batch's RFC 9162 tree and chunks are reduced
independently: in worker processes, or in this process for small batches. Both paths run
:func:`run_chunk`, so their results are identical by construction (and tested). A chunk
is validated where it is minted (:func:`provmint.ingest.check_chunk`), so the minting
process only reads the file and hands chunks out.

Row encodings are built over whole Arrow columns; only the three hashes per row (token
HMAC, token commitment, leaf) and the tree's node hashes run in a Python loop, with
precomputed HMAC pads.
"""

from __future__ import annotations

import base64
import hashlib
import os
import select
import struct
import threading
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import ModuleType
from typing import Any

# pyarrow.compute is imported where it is used: the minting process never needs it (a
# sixth of a second of its start); the workers have it from the fork server's preload.
import numpy as np
import pyarrow as pa

from provmint import gs1, ingest, merkle
from provmint.canonical import COMMIT_TAG, RECORD_MAGIC, TOKEN_TAG
from provmint.ingest import CheckedChunk, RawChunk, RowProblem, check_chunk
from provmint.store import PART_LAYOUT, ROW_GROUP_ROWS
from provmint.store.keyindex import RunKind, RunWriter, sort_entries
from provmint.store.records import write_payloads, write_records
from provmint.store.treefile import TreeSpill
from provmint.tokens import MIN_SECRET_BYTES, TOKEN_BYTES, TOKEN_CHARS, hmac_states

_native: ModuleType | None
try:
    from provmint import _native
except ImportError:  # pragma: no cover - exercised on machines without a C compiler
    _native = None

__all__ = [
    "CHUNK_ROWS",
    "NATIVE",
    "ChunkFiles",
    "ChunkOutcome",
    "ChunkTask",
    "KeyRows",
    "chunk_files",
    "concat_parts",
    "digital_links",
    "hash_rows",
    "hash_table",
    "init_worker",
    "record_bytes_column",
    "run_chunk",
    "take_rows",
    "write_rows",
]

CHUNK_ROWS = ingest.CHUNK_ROWS
"""Rows per chunk and per Parquet part file (a power of two: see the module docstring)."""

NATIVE = _native is not None
"""Whether the C hashing loops are available (otherwise the same work runs in Python)."""

_SECRET: bytes | None = None
_UNIQUE_COLUMNS = ("leaf_index", "serial", "token")
_UNRESERVED = r"^[A-Za-z0-9._~-]*$"


def init_worker(secret: bytes, parent_pid: int) -> None:
    """Process-pool initializer: keep the issuer secret in this worker only, and exit
    when the minting process dies (a killed parent must not leave workers behind)."""
    global _SECRET
    _SECRET = secret
    threading.Thread(target=_exit_with, args=(parent_pid,), daemon=True).start()


def _exit_with(pid: int) -> None:
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # not Linux >= 5.3: poll instead
        while True:
            time.sleep(0.5)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(70)
    select.select([fd], [], [])  # readable once the process has exited
    os._exit(70)


class KeyRows(Enum):
    """What the rows of a chunk's (gtin, serial) key run are."""

    RECORDS = "records"
    """Record index (data record number - 1) of every row with a usable identity, valid
    or not: what duplicates are looked for with. When no row of the file is refused,
    record index and leaf index are the same."""
    LEAVES = "leaves"
    """Leaf index of every minted row (a second pass, over the valid rows only)."""


@dataclass(frozen=True, slots=True)
class ChunkTask:
    """What a worker needs for one chunk. Its rows wait in the run's work directory
    (:attr:`ChunkFiles.rows`, written by :func:`write_rows`), not in the task itself.

    ``start`` is the leaf index of the chunk's first row when the chunk is to be minted,
    None when it is only to be validated (a row of the file was already refused).
    """

    index: int
    names: tuple[str, ...]
    records: bytes
    start: int | None
    key_rows: KeyRows
    work: str
    part_path: str
    records_path: str
    level_paths: tuple[str, ...]
    secret: bytes | None = None


@dataclass(frozen=True, slots=True)
class ChunkOutcome:
    """What comes back: the chunk's valid rows, its problems, and its subtree root when
    it was minted. Its files are in the task's paths (see :func:`chunk_files`)."""

    index: int
    rows: int
    problems: tuple[RowProblem, ...]
    root: bytes | None


@dataclass(frozen=True, slots=True)
class ChunkFiles:
    """Where a chunk's working files are: its rows (until a worker takes them), its key
    run, token run and identities."""

    rows: Path
    keys: Path
    tokens: Path
    identities: Path


def chunk_files(work: Path | str, index: int) -> ChunkFiles:
    """The working files of chunk ``index`` under ``work``."""
    work = Path(work)
    return ChunkFiles(
        work / f"rows-{index:06d}.arrow",
        work / f"keys-{index:06d}.run",
        work / f"tokens-{index:06d}.run",
        work / f"identities-{index:06d}.arrow",
    )


def write_rows(path: Path | str, table: pa.Table) -> None:
    """Write a chunk's (sliced) rows for a worker, as an Arrow IPC stream.

    A file in the run's work directory rather than bytes through the pool's pipe: the
    pipe cost this process a serialized copy, a pickled copy and the pipe writes of every
    row (about a tenth of its CPU in a mint); the file costs one write into the page
    cache, and the worker maps it (:func:`take_rows`) without copying it again."""
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)


def take_rows(path: Path | str) -> pa.Table:
    """The rows :func:`write_rows` wrote, mapped from the file, which is removed at once
    (the mapping keeps its pages while the table is used)."""
    source = pa.memory_map(str(path))
    try:
        return pa.ipc.open_stream(source).read_all()
    finally:
        os.unlink(path)


Part = bytes | tuple[str, pa.Array] | tuple[str, pa.Array, bytes]
"""One piece of a per-row concatenation: constant bytes, ``("col", array)`` (the value),
``("len32", array)`` (the value's length as u32 big-endian) or ``("opt", array, prefix)``
(prefix and value, or nothing for an empty value)."""


def concat_parts(n: int, parts: list[Part], *, text: bool = False) -> pa.Array:
    """Concatenate ``parts`` row by row into one binary (or string) array of ``n`` rows."""
    import pyarrow.compute as pc

    if _native is not None:
        native: list[Any] = []
        for part in parts:
            if isinstance(part, bytes):
                native.append(part)
            else:
                offsets, data = _buffers(part[1])
                extra = (part[2],) if len(part) == 3 else ()
                native.append((part[0], offsets, data if data is not None else b"", *extra))
        offsets_raw, data_raw = _native.concat(n, native)
        return pa.Array.from_buffers(
            pa.string() if text else pa.binary(),
            n,
            [None, pa.py_buffer(offsets_raw), pa.py_buffer(data_raw)],
        )
    arrow: list[Any] = []
    for part in parts:
        if isinstance(part, bytes):
            arrow.append(pa.scalar(part, pa.binary()))
        elif part[0] == "col":
            arrow.append(part[1].cast(pa.binary()))
        elif part[0] == "len32":
            arrow.append(_be_u32(pc.binary_length(part[1])))
        elif len(part) == 3:
            values = part[1].cast(pa.binary())
            joined = pc.binary_join_element_wise(pa.scalar(part[2], pa.binary()), values, b"")
            arrow.append(pc.if_else(pc.equal(values, b""), pa.scalar(b"", pa.binary()), joined))
        else:
            raise ValueError(f"unknown part {part[0]!r}")
    out = pc.binary_join_element_wise(*arrow, b"")
    out = out.combine_chunks() if isinstance(out, pa.ChunkedArray) else out
    return out.cast(pa.string()) if text else out


def _be_u32(lengths: pa.Array) -> pa.Array:
    raw = lengths.to_numpy(zero_copy_only=False).astype(">u4").tobytes()
    fixed = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(4), len(lengths), [None, pa.py_buffer(raw)]
    )
    return fixed.cast(pa.binary())


def _column(table: pa.Table, name: str) -> pa.Array:
    col = table.column(name)
    return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()


def record_bytes_column(table: pa.Table) -> pa.Array:
    """``provmint-record/1`` bytes of every row, built over whole columns.

    Must equal :func:`provmint.canonical.encode_record` row by row (a property test pins it).
    """
    names = sorted(table.column_names, key=lambda n: n.encode("ascii"))
    parts: list[Part] = [RECORD_MAGIC + struct.pack(">H", len(names))]
    for name in names:
        raw_name = name.encode("ascii")
        values = _column(table, name)
        parts += [struct.pack(">B", len(raw_name)) + raw_name, ("len32", values), ("col", values)]
    return concat_parts(table.num_rows, parts)


def _percent_encoded(values: pa.Array) -> pa.Array:
    import pyarrow.compute as pc

    if pc.all(pc.ascii_is_alnum(values)).as_py():  # the usual case, and cheaper than a regex
        return values
    needs = pc.invert(pc.match_substring_regex(values, pattern=_UNRESERVED))
    if not pc.any(needs).as_py():
        return values
    encoded = [
        gs1.percent_encode(v) if n else v
        for v, n in zip(values.to_pylist(), needs.to_pylist(), strict=True)
    ]
    return pa.array(encoded, type=pa.string())


def _token_strings(tokens: bytes, n: int) -> pa.Array:
    """Unpadded base64url of every 16-byte token at once (18 bytes -> 24 chars, first 22)."""
    if _native is not None:
        data = _native.token_text(tokens)
    else:
        raw = np.zeros((n, 18), dtype=np.uint8)
        raw[:, :TOKEN_BYTES] = np.frombuffer(tokens, dtype=np.uint8).reshape(n, TOKEN_BYTES)
        text = np.frombuffer(base64.urlsafe_b64encode(raw.tobytes()), dtype=np.uint8)
        data = np.ascontiguousarray(text.reshape(n, 24)[:, :TOKEN_CHARS]).tobytes()
    offsets = np.arange(0, (n + 1) * TOKEN_CHARS, TOKEN_CHARS, dtype=np.int32).tobytes()
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _urls(table: pa.Table, tokens: pa.Array, url_base: str) -> pa.Array:
    """GS1 Digital Link verification URL of every row (see :func:`provmint.gs1.digital_link`)."""
    parts: list[Part] = [(url_base.rstrip("/") + "/01/").encode(), ("col", _column(table, "gtin"))]
    if "lot" in table.column_names:
        parts.append(("opt", _percent_encoded(_column(table, "lot")), b"/10/"))
    parts += [b"/21/", ("col", _percent_encoded(_column(table, "serial"))), b"?t=", ("col", tokens)]
    return concat_parts(table.num_rows, parts, text=True)


def digital_links(table: pa.Table, url_base: str) -> pa.Array:
    """The verification URL of every stored product of ``table`` (columns gtin, serial,
    token and, when the batch has lots, lot) on ``url_base``: the bytes minting wrote for
    the same base, built the same way (labels and exports print on the base chosen
    then, see :func:`provmint.config.output_url_base`)."""
    import pyarrow.compute as pc

    columns = {name: _column(table, name) for name in ("gtin", "serial", "token")}
    if "lot" in table.column_names:  # a lot is stored as "" when absent; null, if ever, too
        columns["lot"] = pc.fill_null(_column(table, "lot"), "")
    return _urls(pa.table(columns), columns["token"], url_base)


def _buffers(arr: pa.Array) -> tuple[np.ndarray, Any]:
    """The absolute int32 offsets and the data buffer of a binary array (zero copy)."""
    offsets = np.frombuffer(
        arr.buffers()[1], dtype=np.int32, count=len(arr) + 1, offset=arr.offset * 4
    )
    return offsets, arr.buffers()[2]


def hash_rows(ids: pa.Array, records: pa.Array, secret: bytes) -> tuple[bytes, bytes]:
    """Tokens (16 bytes each) and leaf hashes (32 bytes each) of every row, concatenated,
    in Python: the reference and the fallback of :func:`hash_table`.

    ``ids`` holds ``gtin14 || serial`` and ``records`` the canonical record bytes of each
    row (binary arrays).
    """
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"an issuer secret has at least {MIN_SECRET_BYTES} bytes")
    return _hash_rows_py(ids.to_pylist(), records.to_pylist(), secret)


def hash_table(table: pa.Table, secret: bytes) -> tuple[bytes, bytes]:
    """Tokens and leaf hashes of every row of a validated table (canonical field names,
    14-digit gtin). Natively, records are hashed straight from the column buffers; the
    result equals :func:`hash_rows` over :func:`record_bytes_column` (tested)."""
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"an issuer secret has at least {MIN_SECRET_BYTES} bytes")
    if _native is None or len(secret) > 64:
        ids = concat_parts(
            table.num_rows, [("col", _column(table, "gtin")), ("col", _column(table, "serial"))]
        )
        return hash_rows(ids, record_bytes_column(table), secret)
    tokens, leaves = _hash_natively(table, secret, payloads=False)
    return tokens, leaves


def _hash_natively(table: pa.Table, secret: bytes, *, payloads: bool) -> tuple[bytes, ...]:
    """:func:`hash_table` in the C kernel; with ``payloads``, also the record part's rows
    (row offsets, then the rows: see :func:`provmint.store.records.write_payloads`)."""
    assert _native is not None
    names = sorted(table.column_names, key=lambda n: n.encode("ascii"))
    fields = []
    for name in names:
        offsets, data = _buffers(_column(table, name))
        raw = name.encode("ascii")
        fields.append((struct.pack(">B", len(raw)) + raw, offsets, data or b""))
    gtin_offsets, gtin_data = _buffers(_column(table, "gtin"))
    serial_offsets, serial_data = _buffers(_column(table, "serial"))
    result: tuple[bytes, ...] = _native.hash_products(
        secret,
        TOKEN_TAG,
        COMMIT_TAG,
        RECORD_MAGIC + struct.pack(">H", len(names)),
        gtin_offsets,
        gtin_data or b"",
        serial_offsets,
        serial_data or b"",
        fields,
        payloads,
    )
    return result


def _hash_rows_py(ids: list[bytes], records: list[bytes], secret: bytes) -> tuple[bytes, bytes]:
    inner, outer = hmac_states(secret)
    inner_copy, outer_copy = inner.copy, outer.copy
    sha256 = hashlib.sha256
    tokens = bytearray()
    leaves = bytearray()
    add_token, add_leaf = tokens.extend, leaves.extend
    for ident, record in zip(ids, records, strict=True):
        h = inner_copy()
        h.update(ident)
        o = outer_copy()
        o.update(h.digest())
        token = o.digest()[:TOKEN_BYTES]
        add_token(token)
        add_leaf(sha256(b"\x00" + record + sha256(COMMIT_TAG + token).digest()).digest())
    return bytes(tokens), bytes(leaves)


def _write_run(path: Path, kind: RunKind, keys: np.ndarray, rows: np.ndarray) -> None:
    keys, rows = sort_entries(keys, rows)
    with RunWriter(path, kind, count=len(keys), durable=False) as writer:
        writer.append(keys, rows)


def _write_identities(path: Path, checked: CheckedChunk) -> None:
    """The chunk's identities (record, gtin, serial), read back only to confirm that two
    rows with the same key hash really are the same product."""
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, checked.identities.schema) as w:
        w.write_table(checked.identities)


def run_chunk(task: ChunkTask) -> ChunkOutcome:
    """Validate one chunk and, when it is clean and to be minted, mint it: hash, write its
    subtree levels, its Parquet part, its record part and its token run. Its key run (and,
    while duplicates are still to be looked for, its identities) is written either way."""
    secret = task.secret if task.secret is not None else _SECRET
    if secret is None:
        raise RuntimeError("worker started without an issuer secret")
    raw = RawChunk(
        index=task.index,
        names=task.names,
        table=take_rows(chunk_files(task.work, task.index).rows),
        records=np.frombuffer(task.records, dtype=np.int64),
        problems=(),
    )
    checked = check_chunk(raw)
    files = chunk_files(task.work, task.index)
    minted = task.start is not None and not checked.problems
    if task.key_rows is KeyRows.RECORDS:
        _write_run(files.keys, RunKind.KEY, checked.key_hashes, checked.key_records - 1)
        _write_identities(files.identities, checked)
    root = _mint(task, checked, secret, files) if minted else None
    return ChunkOutcome(task.index, checked.table.num_rows, checked.problems, root)


def _mint(task: ChunkTask, checked: CheckedChunk, secret: bytes, files: ChunkFiles) -> bytes:
    assert task.start is not None
    table = checked.table
    n = table.num_rows
    leaves_index = np.arange(task.start, task.start + n, dtype=np.int64)
    row_offsets: bytes | None = None
    payloads: bytes | None = None
    if _native is not None and len(secret) <= 64:
        # The record part's rows come out of the kernel with the leaves (it lays every
        # record out to hash it anyway).
        tokens, leaves, row_offsets, payloads = _hash_natively(table, secret, payloads=True)
    else:
        tokens, leaves = hash_table(table, secret)
    levels = merkle.build_levels(leaves)
    TreeSpill.write_chunk(task.level_paths, task.start, levels)

    token_text = _token_strings(tokens, n)
    columns = {"leaf_index": pa.array(leaves_index)}
    for name in table.column_names:
        columns[name] = _column(table, name)
    columns["token"] = token_text
    # No URL column: every reader rebuilds the URL from the row (see PartLayout.V2).
    _write_part(pa.table(columns, metadata=PART_LAYOUT.metadata), Path(task.part_path))
    # Not fsynced here: the minting process syncs every part in a thread of its own while
    # the workers go on (see provmint.minting.StagedBatch), before the batch commits.
    if payloads is not None:
        write_payloads(task.records_path, row_offsets, payloads, durable=False)
    else:
        write_records(task.records_path, record_bytes_column(table), tokens, durable=False)

    prefixes = (
        np.ascontiguousarray(np.frombuffer(tokens, dtype=np.uint8).reshape(n, TOKEN_BYTES)[:, :8])
        .view("<u8")
        .reshape(n)
    )
    _write_run(files.tokens, RunKind.TOKEN, prefixes.astype(np.uint64), leaves_index)
    if task.key_rows is KeyRows.LEAVES:
        _write_run(files.keys, RunKind.KEY, checked.table_keys(), leaves_index)
    return levels[-1]


def _write_part(table: pa.Table, path: Path) -> None:
    import pyarrow.parquet as pq  # only workers write parts; the fork server preloads it

    with open(path, "wb") as fh:
        pq.write_table(
            table,
            fh,
            compression_level={c: 1 for c in table.column_names if c != "token"},
            row_group_size=ROW_GROUP_ROWS,
            use_dictionary=[c for c in table.column_names if c not in _UNIQUE_COLUMNS],
            # Random tokens do not compress.
            compression={c: "none" if c == "token" else "zstd" for c in table.column_names},
            write_statistics=["leaf_index"],
            # Consecutive integers: delta-packed, they take a few bits a page (compressing
            # them as plain int64s took about 5 ms of a part's 30).
            column_encoding={"leaf_index": "DELTA_BINARY_PACKED"},
        )
