"""provmint._native: safe to call with any arguments, and equal to the pure-Python code.

- Known answers: every function against the pure-Python reference it replaces
  (``tokens.make_token``, ``canonical``'s records and commitments, ``merkle``,
  ``ingest.key_hash``, ``engine.hash_rows``).
- Hostile arguments, generated: any buffer type (bytes, bytearray, memoryviews writable
  and read-only and misaligned, numpy arrays writable and read-only and strided, pyarrow
  buffers, array.array, non-buffers); offsets truncated, negative, decreasing, past the
  data; row counts that disagree; malformed parts and fields. A model of the module's
  documented rules says whether each call must succeed, and with which result, or raise.
- A thread that rewrites a writable offsets buffer while the C loops run (GIL released)
  must not crash the process (in a subprocess).

``.ci/native-sanitizers`` runs this file against a build with
``-fsanitize=address,undefined``; ``PROVMINT_REQUIRE_NATIVE=1`` turns the skip below into a
failure (CI sets it).
"""

from __future__ import annotations

import array
import base64
import hashlib
import hmac
import itertools
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provmint import canonical, engine, gs1, ingest, merkle, tokens
from provmint.canonical import COMMIT_TAG, RECORD_MAGIC, TOKEN_TAG

try:
    from provmint import _native as native
except ImportError:
    if os.environ.get("PROVMINT_REQUIRE_NATIVE") == "1":
        raise
    pytest.skip("provmint._native is not built", allow_module_level=True)

LANES = [1, *([16] if native.SIMD_LANES == 16 else [])]
"""The loops a call can ask for: one message at a time, and sixteen lanes where this CPU
has AVX-512 (the default then; CI machines without it test the one-lane loop only)."""

HOSTILE = settings(max_examples=300, deadline=None)
KNOWN = settings(max_examples=100, deadline=None)
REFUSED = (TypeError, ValueError, BufferError, OverflowError)
"""What the module may raise for bad arguments (never a crash, never a wrong answer)."""


# --------------------------------------------------------------------------- buffers

BUFFER_KINDS = (
    "bytes", "bytearray", "memoryview", "readonly_view", "misaligned", "numpy",
    "numpy_readonly", "numpy_int32", "pyarrow", "array", "strided", "not_a_buffer",
)  # fmt: skip


def as_buffer(raw: bytes, kind: str) -> object:
    """``raw`` as an object of ``kind`` (the writable ones are fresh copies)."""
    if kind == "bytes":
        return raw
    if kind == "bytearray":
        return bytearray(raw)
    if kind == "memoryview":
        return memoryview(bytearray(raw))
    if kind == "readonly_view":
        return memoryview(bytearray(raw)).toreadonly()
    if kind == "misaligned":  # int32 offsets at an odd address
        return memoryview(b"\x00" + raw)[1:]
    if kind == "numpy":
        return np.frombuffer(bytearray(raw), dtype=np.uint8)
    if kind == "numpy_readonly":
        return np.frombuffer(raw, dtype=np.uint8)
    if kind == "numpy_int32":
        return np.frombuffer(bytearray(raw), dtype=np.int32 if len(raw) % 4 == 0 else np.uint8)
    if kind == "pyarrow":
        return pa.py_buffer(raw)
    if kind == "array":
        return array.array("B", raw)
    if kind == "strided":  # not C-contiguous once it has two items
        return np.repeat(np.frombuffer(raw, dtype=np.uint8), 2)[::2]
    if kind == "not_a_buffer":
        return raw.hex()
    raise AssertionError(kind)


def c_bytes(obj: object) -> bytes | None:
    """What a C-contiguous buffer request reads from ``obj``, or None when it must refuse."""
    try:
        view = memoryview(obj)  # type: ignore[arg-type]  # any object may come
    except TypeError:
        return None
    return view.tobytes() if view.c_contiguous else None


def offsets_bytes(offsets: list[int]) -> bytes:
    return np.array(offsets, dtype=np.int32).tobytes()


@dataclass
class Column:
    """A generated (offsets, data) argument pair and the values it stands for, or None
    when the module must refuse it."""

    offsets: object
    data: object
    values: list[bytes] | None

    def rows(self) -> int | None:
        return None if self.values is None else len(self.values)


def model_column(offsets: object, data: object) -> list[bytes] | None:
    """The module's rule: n + 1 int32 offsets, first >= 0, non-decreasing, last within data."""
    raw, blob = c_bytes(offsets), c_bytes(data)
    if raw is None or blob is None or len(raw) < 4 or len(raw) % 4:
        return None
    off = np.frombuffer(raw, dtype=np.int32).tolist()
    if off[0] < 0 or off[-1] > len(blob) or any(b < a for a, b in itertools.pairwise(off)):
        return None
    return [blob[a:b] for a, b in itertools.pairwise(off)]


MUTATIONS = ("none", "none", "none", "none", "none", "truncate", "empty", "negative",
             "decrease", "past_end", "huge", "random")  # fmt: skip


VALUES = st.binary(max_size=24)
KINDS = st.sampled_from(BUFFER_KINDS)


@st.composite
def columns(
    draw: st.DrawFn,
    rows: int | None = None,
    values: st.SearchStrategy[bytes] = VALUES,
    kinds: st.SearchStrategy[str] = KINDS,
) -> Column:
    """A column argument pair, mostly well-formed, sometimes hostile."""
    if rows is None:
        rows = draw(st.integers(0, 6))
    items = draw(st.lists(values, min_size=rows, max_size=rows))
    slack = draw(st.integers(0, 3))  # a sliced Arrow array starts past 0
    data = bytes(slack) + b"".join(items) + draw(st.binary(max_size=3))
    offsets = [slack]
    for item in items:
        offsets.append(offsets[-1] + len(item))
    mutation = draw(st.sampled_from(MUTATIONS))
    at = draw(st.integers(0, len(offsets) - 1))
    if mutation == "negative":
        offsets[at] = -draw(st.integers(1, 2**31))
    elif mutation == "decrease" and len(offsets) > 1:
        offsets[max(at, 1)] = offsets[max(at, 1) - 1] - draw(st.integers(1, 5))
    elif mutation == "past_end":
        offsets[at] = len(data) + draw(st.integers(1, 5))
    elif mutation == "huge":
        offsets[at] = 2**31 - 1
    elif mutation == "random":
        offsets = draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=8))
    raw = offsets_bytes(offsets) if offsets else b""
    if mutation == "truncate":
        raw = raw[: draw(st.integers(0, max(len(raw) - 1, 0)))]
    elif mutation == "empty":
        raw = b""
    offsets_obj = as_buffer(raw, draw(kinds))
    data_obj = as_buffer(data, draw(kinds))
    return Column(offsets_obj, data_obj, model_column(offsets_obj, data_obj))


def arrow_column(values: list[bytes]) -> tuple[np.ndarray, Any]:
    """(offsets, data) of an Arrow binary array, sliced, as engine passes them."""
    arr = pa.array([b"pad", *values, b"pad"], type=pa.binary()).slice(1, len(values))
    return engine._buffers(arr)


# --------------------------------------------------------------------------- references


def ref_token(secret: bytes, tag: bytes, gtin: bytes, serial: bytes) -> bytes:
    return hmac.digest(secret, tag + gtin + serial, "sha256")[:16]


def ref_leaf(ctag: bytes, record: bytes, token: bytes) -> bytes:
    commitment = hashlib.sha256(ctag + token).digest()
    return hashlib.sha256(b"\x00" + record + commitment).digest()


def ref_products(
    secret: bytes, ttag: bytes, ctag: bytes, header: bytes,
    gtins: list[bytes], serials: list[bytes], fields: list[tuple[bytes, list[bytes]]],
) -> tuple[bytes, bytes]:  # fmt: skip
    """hash_products as documented in _native.c, row by row with hmac and hashlib."""
    toks, leaves = b"", b""
    for i, (gtin, serial) in enumerate(zip(gtins, serials, strict=True)):
        token = ref_token(secret, ttag, gtin, serial)
        record = header + b"".join(
            prefix + len(values[i]).to_bytes(4, "big") + values[i] for prefix, values in fields
        )
        toks += token
        leaves += ref_leaf(ctag, record, token)
    return toks, leaves


def ref_reduce(level: bytes) -> bytes:
    nodes = [level[i : i + 32] for i in range(0, len(level), 32)]
    pairs = range(0, len(nodes) - 1, 2)
    out = [hashlib.sha256(b"\x01" + nodes[i] + nodes[i + 1]).digest() for i in pairs]
    return b"".join(out) + (nodes[-1] if len(nodes) % 2 else b"")


def decode(offsets: bytes, data: bytes) -> list[bytes]:
    off = np.frombuffer(offsets, dtype=np.int32).tolist()
    assert off[0] == 0 and off[-1] == len(data)
    return [data[a:b] for a, b in itertools.pairwise(off)]


def outcome(call: Callable[[], Any], expected: Any) -> None:
    """``call()`` equals ``expected``, or raises a refusal when ``expected`` is None."""
    if expected is None:
        with pytest.raises(REFUSED):
            call()
    else:
        assert call() == expected


# --------------------------------------------------------------------------- known answers

GTINS = st.from_regex(r"[0-9]{14}", fullmatch=True)
SERIALS = st.from_regex(gs1.CSET82_PATTERN, fullmatch=True)
TEXT = st.text(st.characters(codec="utf-8"), max_size=12)


@st.composite
def product_tables(draw: st.DrawFn, min_rows: int = 1, max_rows: int = 12) -> pa.Table:
    rows = draw(st.integers(min_rows, max_rows))
    columns = {
        "gtin": draw(st.lists(GTINS, min_size=rows, max_size=rows)),
        "serial": draw(st.lists(SERIALS, min_size=rows, max_size=rows)),
    }
    for name in draw(st.sets(st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True), max_size=4)):
        columns.setdefault(name, draw(st.lists(TEXT, min_size=rows, max_size=rows)))
    return pa.table({k: pa.array(v, type=pa.string()) for k, v in columns.items()})


def core_tokens_and_leaves(rows: list[dict[str, str]], secret: bytes) -> tuple[bytes, bytes]:
    """The rows' tokens and leaves by the pure core: ``tokens.make_token``, then
    ``merkle.leaf_hash`` of ``canonical.leaf_data`` with the token's commitment."""
    want_tokens = [tokens.make_token(secret, r["gtin"], r["serial"]) for r in rows]
    want_leaves = [
        merkle.leaf_hash(canonical.leaf_data(r, canonical.token_commitment(t)))
        for r, t in zip(rows, want_tokens, strict=True)
    ]
    return b"".join(want_tokens), b"".join(want_leaves)


@KNOWN
@given(table=product_tables(), secret=st.binary(min_size=32, max_size=64))
def test_hash_products_equals_tokens_and_canonical(table: pa.Table, secret: bytes) -> None:
    """Native tokens and leaves = tokens.make_token and merkle.leaf_hash of
    canonical.leaf_data, row by row (and engine's pure-Python hash_rows)."""
    toks, leaves = engine.hash_table(table, secret)  # the native path (secret <= 64 bytes)
    rows = table.to_pylist()
    assert (toks, leaves) == core_tokens_and_leaves(rows, secret)
    ids = pa.array([(r["gtin"] + r["serial"]).encode() for r in rows], type=pa.binary())
    records = pa.array([canonical.encode_record(r) for r in rows], type=pa.binary())
    assert (toks, leaves) == engine.hash_rows(ids, records, secret)


@pytest.mark.parametrize("lanes", LANES)
@KNOWN
@given(
    # RFC 2104: a key over the 64-byte block is hashed first; tags of any length (the
    # sixteen lanes take tags and identities that fit one block, the rest one at a time)
    secret=st.one_of(st.binary(max_size=64), st.binary(min_size=65, max_size=200)),
    ttag=st.one_of(st.binary(max_size=8), st.binary(min_size=60, max_size=140)),
    ctag=st.one_of(st.binary(max_size=8), st.binary(min_size=33, max_size=140)),
    header=st.one_of(st.binary(max_size=8), st.binary(min_size=60, max_size=140)),
    rows=st.one_of(st.integers(0, 6), st.integers(15, 40)),  # past one and two groups of 16
    data=st.data(),
)
def test_hash_products_any_key_and_tags(
    lanes: int,
    secret: bytes,
    ttag: bytes,
    ctag: bytes,
    header: bytes,
    rows: int,
    data: st.DataObject,
) -> None:
    gtins = data.draw(st.lists(st.binary(max_size=20), min_size=rows, max_size=rows))
    serials = data.draw(st.lists(st.binary(max_size=30), min_size=rows, max_size=rows))
    fields = [
        (data.draw(st.binary(max_size=9)),
         data.draw(st.lists(st.binary(max_size=100), min_size=rows, max_size=rows)))
        for _ in range(data.draw(st.integers(0, 4)))
    ]  # fmt: skip
    args = (
        secret, ttag, ctag, header, *arrow_column(gtins), *arrow_column(serials),
        [(prefix, *arrow_column(values)) for prefix, values in fields],
    )  # fmt: skip
    got = native.hash_products(*args, False, lanes)
    assert got == ref_products(secret, ttag, ctag, header, gtins, serials, fields)
    # With payloads: each row's u32be len(record) || record || token besides.
    toks, leaves, offsets, payloads = native.hash_products(*args, True, lanes)
    assert (toks, leaves) == got
    records = [
        header + b"".join(p + len(v[i]).to_bytes(4, "big") + v[i] for p, v in fields)
        for i in range(rows)
    ]
    want = [
        len(r).to_bytes(4, "big") + r + toks[16 * i : 16 * i + 16] for i, r in enumerate(records)
    ]
    row_offsets = np.frombuffer(offsets, dtype=np.int64)
    assert row_offsets.tolist() == np.cumsum([0, *map(len, want)]).tolist()
    assert payloads == b"".join(want)


@KNOWN
@given(pairs=st.lists(st.tuples(GTINS, st.text(st.sampled_from("AZaz09-./_"), max_size=20)),
                      max_size=12))  # fmt: skip
def test_key_hashes_equal_ingest_key_hash(pairs: list[tuple[str, str]]) -> None:
    gtins = [g.encode() for g, _ in pairs]
    serials = [s.encode() for _, s in pairs]
    raw = native.key_hashes(*arrow_column(gtins), *arrow_column(serials))
    assert np.frombuffer(raw, dtype="<u8").tolist() == [ingest.key_hash(g, s) for g, s in pairs]
    if pairs:  # and the module's caller
        got = ingest.key_hashes(pa.array([g for g, _ in pairs]), pa.array([s for _, s in pairs]))
        assert got.tolist() == [ingest.key_hash(g, s) for g, s in pairs]


@pytest.mark.parametrize("lanes", LANES)
@KNOWN
@given(count=st.integers(0, 70), seed=st.binary(max_size=8))
def test_reduce_level_equals_merkle(lanes: int, count: int, seed: bytes) -> None:
    level = b"".join(hashlib.sha256(seed + i.to_bytes(2, "big")).digest() for i in range(count))
    want = merkle._reduce_level_py(level)
    assert native.reduce_level(level, lanes) == want == ref_reduce(level)
    assert native.reduce_level(level) == want  # the default


@pytest.mark.parametrize("lanes", LANES)
@KNOWN
@given(
    table=product_tables(min_rows=0, max_rows=70),
    secret=st.one_of(st.binary(min_size=32, max_size=64), st.binary(min_size=65, max_size=90)),
)
def test_hash_products_lanes_on_minting_inputs(lanes: int, table: pa.Table, secret: bytes) -> None:
    """The tags and identities minting passes (the sixteen lanes' case where the CPU has
    them), in groups of sixteen and partial ones, with fields long enough that the rows'
    leaves take different numbers of blocks: equal to the references, payloads included."""
    names = sorted(table.column_names, key=lambda n: n.encode("ascii"))
    fields = [(len(n).to_bytes(1, "big") + n.encode(), *arrow_column(
        [v.encode() for v in table.column(n).to_pylist()])) for n in names]  # fmt: skip
    header = RECORD_MAGIC + len(names).to_bytes(2, "big")
    gtins = [v.encode() for v in table.column("gtin").to_pylist()]
    serials = [v.encode() for v in table.column("serial").to_pylist()]
    args = (secret, TOKEN_TAG, COMMIT_TAG, header, *arrow_column(gtins), *arrow_column(serials),
            fields)  # fmt: skip
    got = native.hash_products(*args, True, lanes)
    assert got[:2] == core_tokens_and_leaves(table.to_pylist(), secret)
    assert got == native.hash_products(*args, True, 1)


@pytest.mark.parametrize("lanes", LANES)
def test_long_and_short_leaves_in_one_call(lanes: int) -> None:
    """A leaf input past what the lanes lay out (1 MB) sends the call to the one-at-a-time
    loop; short and long rows in one call give the reference's answers either way."""
    values = [b"v" * n for n in (0, 3, 64, 200, (1 << 20) + 5, 7)]
    gtins = [f"{i:014d}".encode() for i in range(len(values))]
    serials = [f"S{i}".encode() for i in range(len(values))]
    fields = [(b"\x04note", values)]
    args = (b"k" * 32, TOKEN_TAG, COMMIT_TAG, RECORD_MAGIC + b"\x00\x01",
            *arrow_column(gtins), *arrow_column(serials),
            [(p, *arrow_column(v)) for p, v in fields])  # fmt: skip
    want = ref_products(b"k" * 32, TOKEN_TAG, COMMIT_TAG, RECORD_MAGIC + b"\x00\x01", gtins,
                        serials, fields)  # fmt: skip
    assert native.hash_products(*args, False, lanes) == want
    # The first four rows alone fit the lanes: the same answers as within the long call.
    short = (*args[:4], *arrow_column(gtins[:4]), *arrow_column(serials[:4]),
             [(p, *arrow_column(v[:4])) for p, v in fields])  # fmt: skip
    toks, leaves = native.hash_products(*short, False, lanes)
    assert (toks, leaves) == (want[0][: 4 * 16], want[1][: 4 * 32])


def test_lanes_argument() -> None:
    one = (b"k", b"", b"", b"", *arrow_column([b"g"]), *arrow_column([b"s"]), [])
    for bad in (2, 8, -1, 32):
        with pytest.raises(ValueError, match="lanes must be 0, 1 or 16"):
            native.hash_products(*one, False, bad)
        with pytest.raises(ValueError, match="lanes must be 0, 1 or 16"):
            native.reduce_level(bytes(64), bad)
    assert native.SIMD_LANES in (1, 16)
    if native.SIMD_LANES == 1:
        with pytest.raises(ValueError, match="no AVX-512"):
            native.reduce_level(bytes(64), 16)


@pytest.mark.parametrize("lanes", LANES)
def test_known_answer_vectors(lanes: int) -> None:
    """Fixed answers, independent of any reference code: HMAC-SHA256 (RFC 4231 test case
    2, truncated by the token rule) and SHA-256 of ``0x01`` || 64 zero bytes."""
    key, message = b"Jefe", b"what do ya want for nothing?"
    toks, _ = native.hash_products(key, message, b"", b"", *arrow_column([b""]),
                                   *arrow_column([b""]), [], False, lanes)  # fmt: skip
    assert toks.hex() == "5bdcc146bf60754e6a042426089575c7"
    node = native.reduce_level(bytes(64), lanes)
    assert node == hashlib.sha256(b"\x01" + bytes(64)).digest()


ENTRY_KEYS = st.one_of(st.integers(0, 3), st.integers(0, 2**64 - 1))  # ties, and anything
ENTRIES = st.lists(st.tuples(ENTRY_KEYS, st.integers(0, 2**32 - 1)), max_size=40)


def entry_arrays(entries: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    keys = np.array([k for k, _ in entries], dtype=np.uint64)
    return keys, np.array([r for _, r in entries], dtype=np.uint32)


def merged_entries(keys: bytes, rows: bytes) -> list[tuple[int, int]]:
    return list(
        zip(
            np.frombuffer(keys, np.uint64).tolist(),
            np.frombuffer(rows, np.uint32).tolist(),
            strict=True,
        )
    )


@KNOWN
@given(pieces=st.lists(ENTRIES, max_size=40))
def test_merge_entries_equals_sorted_concatenation(pieces: list[list[tuple[int, int]]]) -> None:
    """Any number of sorted pieces (none, empty ones, an odd number: a run left over in a
    round), keys tied or not: every entry once, in (key, row) order."""
    keys, rows = native.merge_entries([entry_arrays(sorted(p)) for p in pieces])
    assert merged_entries(keys, rows) == sorted(e for p in pieces for e in p)


@KNOWN
@given(pieces=st.lists(ENTRIES, min_size=1, max_size=9))
def test_merge_entries_of_unsorted_pieces_keeps_every_entry(
    pieces: list[list[tuple[int, int]]],
) -> None:
    """Pieces out of order are not the contract, but they cost no entry and no memory
    out of bounds: the result is some interleaving of them."""
    keys, rows = native.merge_entries([entry_arrays(p) for p in pieces])
    assert sorted(merged_entries(keys, rows)) == sorted(e for p in pieces for e in p)


# --------------------------------------------------------------------------- hostile arguments


@HOSTILE
@given(
    level=st.binary(max_size=1100),
    kind=st.sampled_from(BUFFER_KINDS),
    lanes=st.sampled_from([(), *((n,) for n in LANES)]),
)
def test_reduce_level_hostile(level: bytes, kind: str, lanes: tuple[int, ...]) -> None:
    arg = as_buffer(level, kind)
    raw = c_bytes(arg)
    expected = ref_reduce(raw) if raw is not None and len(raw) % 32 == 0 else None
    outcome(lambda: native.reduce_level(arg, *lanes), expected)


@HOSTILE
@given(raw=st.binary(max_size=100), kind=st.sampled_from(BUFFER_KINDS))
def test_token_text_hostile(raw: bytes, kind: str) -> None:
    arg = as_buffer(raw, kind)
    seen = c_bytes(arg)
    expected = None
    if seen is not None and len(seen) % 16 == 0:
        tokens = [seen[i : i + 16] for i in range(0, len(seen), 16)]
        expected = b"".join(base64.urlsafe_b64encode(t).rstrip(b"=") for t in tokens)
    outcome(lambda: native.token_text(arg), expected)


GTIN_VALUES = st.one_of(GTINS, st.text(st.sampled_from("0123456789"), max_size=16)).map(str.encode)
SERIAL_VALUES = st.text(st.sampled_from("AZaz09/"), max_size=22).map(str.encode)


@HOSTILE
@given(data=st.data())
def test_key_hashes_hostile(data: st.DataObject) -> None:
    rows = data.draw(st.integers(0, 5))
    gtin = data.draw(columns(rows, values=GTIN_VALUES))
    serial_rows = data.draw(st.sampled_from([rows, rows, rows, rows + 1, 0]))
    serial = data.draw(columns(serial_rows, values=SERIAL_VALUES))
    expected = None
    if gtin.values is not None and serial.values is not None and gtin.rows() == serial.rows():
        pairs = list(zip(gtin.values, serial.values, strict=True))
        if all(len(g) == 14 and len(s) <= 20 for g, s in pairs):
            hashes = [ingest.key_hash(g.decode(), s.decode()) for g, s in pairs]
            expected = np.array(hashes, dtype="<u8").tobytes()
    outcome(lambda: native.key_hashes(gtin.offsets, gtin.data, serial.offsets, serial.data),
            expected)  # fmt: skip


@st.composite
def parts(draw: st.DrawFn, n: int) -> tuple[object, list[bytes] | None]:
    """One concat part and the bytes it adds to each of ``n`` rows (None: refused)."""
    shape = draw(st.sampled_from(["const", "col", "len32", "opt", "bad_kind", "bad_shape"]))
    if shape == "const":
        value = draw(st.binary(max_size=6))
        if draw(st.booleans()):
            return value, [value] * n
        return bytearray(value), None  # only bytes are constants
    rows = n if draw(st.integers(0, 4)) else draw(st.integers(0, 6))
    col = draw(columns(max(rows, 0)))
    size = {"opt": 4, "bad_shape": draw(st.sampled_from([0, 1, 2, 5]))}.get(shape, 3)
    if shape in ("col", "len32", "opt") and draw(st.integers(0, 9)) == 0:
        size = draw(st.sampled_from([2, 3, 4, 5]))  # the wrong size for the kind
    kind: object = shape
    if shape == "bad_kind":
        kind = draw(st.sampled_from(["", "COL", "col\x00", "opt ", "const", 7, None, b"col"]))
    prefix = draw(st.binary(min_size=1, max_size=4))
    prefix_obj = as_buffer(prefix, draw(st.sampled_from(BUFFER_KINDS)))
    item = (kind, col.offsets, col.data, prefix_obj, b"extra")[:size]
    valid_shape = (shape in ("col", "len32") and size == 3) or (shape == "opt" and size == 4)
    if not valid_shape or col.values is None or col.rows() != n:
        return item, None
    if shape == "opt" and c_bytes(prefix_obj) is None:
        return item, None
    if shape == "col":
        return item, col.values
    if shape == "len32":
        return item, [len(v).to_bytes(4, "big") for v in col.values]
    prefix_bytes = c_bytes(prefix_obj) or b""
    return item, [prefix_bytes + v if v else b"" for v in col.values]


@HOSTILE
@given(data=st.data())
def test_concat_hostile(data: st.DataObject) -> None:
    n = data.draw(st.one_of(st.integers(-3, 6), st.sampled_from(
        [-1, -(2**31), 2**31, 2**63 - 1, -(2**63), 2**64])))  # fmt: skip
    drawn = data.draw(st.lists(parts(max(n, 0) if n <= 6 else 0), max_size=5))
    items = [item for item, _ in drawn]
    expected: tuple[bytes, bytes] | None = None
    if 0 <= n <= 6 and all(rows is not None for _, rows in drawn):
        values = [b"".join(rows[r] for _, rows in drawn if rows is not None) for r in range(n)]
        lengths = np.cumsum([0, *map(len, values)], dtype=np.int64).astype(np.int32)
        expected = (lengths.tobytes(), b"".join(values))
    outcome(lambda: native.concat(n, items), expected)
    assert bytes() == b"" and len(b"") == 0  # noqa: UP018 - the shared empty bytes is intact


def test_concat_refuses_negative_counts_and_keeps_empty_bytes_empty() -> None:
    for n in (-1, -2, -(2**31)):
        with pytest.raises(ValueError, match="n must be"):
            native.concat(n, [])
        with pytest.raises(ValueError, match="n must be"):
            native.concat(n, [b"abc", ("col", offsets_bytes([0]), b"")])
    assert native.concat(0, [b"x"]) == (offsets_bytes([0]), b"")
    assert bytes() == b"" and b"".join([b"", b""]) == b""  # noqa: UP018


def test_concat_refuses_output_over_2_gib() -> None:
    """Sizes are summed before anything is allocated: 2,048 rows of 1 MiB is refused."""
    with pytest.raises(OverflowError, match="2 GiB"):
        native.concat(2049, [b"x" * (1 << 20)])


@st.composite
def fields(draw: st.DrawFn, n: int) -> tuple[object, tuple[bytes, list[bytes]] | None]:
    """One hash_products field and (prefix, values), or None when it must be refused."""
    col = draw(columns(n if draw(st.integers(0, 4)) else draw(st.integers(0, 6))))
    prefix = as_buffer(draw(st.binary(max_size=9)), draw(st.sampled_from(BUFFER_KINDS)))
    size = 3 if draw(st.integers(0, 6)) else draw(st.sampled_from([0, 2, 4]))
    item = (prefix, col.offsets, col.data, b"extra")[:size]
    if not draw(st.integers(0, 20)):
        return list(item), None  # a list is not a field
    prefix_bytes = c_bytes(prefix)
    if size != 3 or col.values is None or col.rows() != n or prefix_bytes is None:
        return item, None
    return item, (prefix_bytes, col.values)


@HOSTILE
@given(data=st.data())
def test_hash_products_hostile(data: st.DataObject) -> None:
    blobs = [data.draw(st.binary(max_size=70)) for _ in range(4)]
    kinds = [data.draw(st.sampled_from(BUFFER_KINDS)) if data.draw(st.integers(0, 5)) == 0
             else "bytes" for _ in range(4)]  # fmt: skip
    secret, ttag, ctag, header = (as_buffer(b, k) for b, k in zip(blobs, kinds, strict=True))
    gtin = data.draw(columns())
    serial = data.draw(columns(gtin.rows() if gtin.rows() is not None and
                               data.draw(st.integers(0, 4)) else None))  # fmt: skip
    n = gtin.rows() or 0
    drawn = data.draw(st.lists(fields(n), max_size=4))
    items = [item for item, _ in drawn]
    # Any iterable of fields will do (a list or a tuple); nothing else.
    shape = data.draw(st.sampled_from(["list"] * 8 + ["tuple", "none", "int", "str"]))
    field_arg = {"list": items, "tuple": tuple(items), "none": None, "int": 3, "str": "abc"}[shape]
    expected = None
    scalars = [c_bytes(x) for x in (secret, ttag, ctag, header)]
    if (
        all(s is not None for s in scalars)
        and gtin.values is not None
        and serial.values is not None
        and gtin.rows() == serial.rows()
        and isinstance(field_arg, list | tuple)
        and all(f is not None for _, f in drawn)
    ):
        secret_b, ttag_b, ctag_b, header_b = (s or b"" for s in scalars)
        expected = ref_products(secret_b, ttag_b, ctag_b, header_b, gtin.values, serial.values,
                                [f for _, f in drawn if f is not None])  # fmt: skip
    lanes = data.draw(st.sampled_from([(), *((False, n) for n in LANES)]))
    outcome(
        lambda: native.hash_products(secret, ttag, ctag, header, gtin.offsets, gtin.data,
                                     serial.offsets, serial.data, field_arg, *lanes),
        expected,
    )  # fmt: skip


@HOSTILE
@given(data=st.data())
def test_merge_entries_hostile(data: st.DataObject) -> None:
    """Pieces of any buffers and shapes: the merge of valid ones, else a refusal."""
    pieces: list[object] = []
    expected: list[tuple[int, int]] | None = []
    for _ in range(data.draw(st.integers(0, 4))):
        entries = sorted(data.draw(ENTRIES))
        keys, rows = entry_arrays(entries)
        raw_keys, raw_rows = keys.tobytes(), rows.tobytes()
        if data.draw(st.booleans()):  # damaged: cut short, or one entry too many
            cut = data.draw(st.sampled_from(["keys", "rows"]))
            extra = data.draw(st.sampled_from([b"\x00", b"\x00" * 4, b"\x00" * 8]))
            shorter = data.draw(st.booleans())
            if cut == "keys":
                raw_keys = raw_keys[:-1] if raw_keys and shorter else raw_keys + extra
            else:
                raw_rows = raw_rows[:-1] if raw_rows and shorter else raw_rows + extra
        key_arg = as_buffer(raw_keys, data.draw(st.sampled_from(BUFFER_KINDS)))
        row_arg = as_buffer(raw_rows, data.draw(st.sampled_from(BUFFER_KINDS)))
        shape = data.draw(st.sampled_from(["tuple", "list", "triple"]))
        piece = {
            "tuple": (key_arg, row_arg),
            "list": [key_arg, row_arg],
            "triple": (key_arg, row_arg, row_arg),
        }[shape]
        pieces.append(piece)
        seen_keys, seen_rows = c_bytes(key_arg), c_bytes(row_arg)
        if (
            expected is None
            or shape != "tuple"
            or seen_keys is None
            or seen_rows is None
            or len(seen_keys) % 8
            or len(seen_rows) % 4
            or len(seen_keys) // 8 != len(seen_rows) // 4
        ):
            expected = None
        else:
            expected += merged_entries(seen_keys, seen_rows)
    container = data.draw(st.sampled_from(["list", "tuple", "generator", "not_a_sequence"]))
    if container == "not_a_sequence":
        arg: object = 42
        expected = None
    else:
        make = {"list": list, "tuple": tuple, "generator": lambda p: (x for x in p)}[container]
        arg = make(pieces)
    if expected is None:
        with pytest.raises(REFUSED):
            native.merge_entries(arg)  # type: ignore[arg-type]  # anything may come
    else:
        keys, rows = native.merge_entries(arg)  # type: ignore[arg-type]
        assert sorted(merged_entries(keys, rows)) == sorted(expected)


def test_refusals_name_the_problem() -> None:
    ok_off, ok_data = offsets_bytes([0, 14]), b"0" * 14
    with pytest.raises(ValueError, match="serial: 2 rows, expected 1"):
        native.key_hashes(ok_off, ok_data, offsets_bytes([0, 1, 2]), b"ab")
    with pytest.raises(ValueError, match="row 0: gtin must be 14 bytes and serial at most 20"):
        native.key_hashes(ok_off, ok_data, offsets_bytes([0, 21]), b"s" * 21)
    with pytest.raises(ValueError, match="gtin: offsets decrease at row 1"):
        native.key_hashes(offsets_bytes([0, 14, 13]), ok_data, ok_off, ok_data)
    with pytest.raises(ValueError, match="offsets outside the data"):
        native.key_hashes(offsets_bytes([0, 15]), ok_data, ok_off, ok_data)
    with pytest.raises(ValueError, match="non-empty int32 buffer"):
        native.concat(0, [("col", b"\x00\x00\x00", b"")])
    with pytest.raises(TypeError, match="kind"):
        native.concat(0, [(0, offsets_bytes([0]), b"")])
    with pytest.raises(TypeError, match="a field is"):
        native.hash_products(b"k", b"", b"", b"", ok_off, ok_data, ok_off, ok_data, [b"x"])
    with pytest.raises(ValueError, match="a level is a run of 32-byte hashes"):
        native.reduce_level(bytes(33))


# --------------------------------------------------------------------------- threads


def test_concurrent_calls_agree() -> None:
    """The GIL is released while hashing: four threads at once give the same answers."""
    rows = 5000
    gtins = [f"{i:014d}".encode() for i in range(rows)]
    serials = [f"S{i}".encode() for i in range(rows)]
    args = (b"k" * 32, TOKEN_TAG, COMMIT_TAG, RECORD_MAGIC + b"\x00\x01",
            *arrow_column(gtins), *arrow_column(serials),
            [(b"\x06serial", *arrow_column(serials))])  # fmt: skip
    expected = native.hash_products(*args)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: native.hash_products(*args), range(16)))
    assert results == [expected] * 16
    assert expected[0][:16] == tokens.make_token(b"k" * 32, gtins[0].decode(), "S0")


MUTATOR = r"""
import sys, threading, time
import numpy as np
from provmint import _native

rows = 50_000
gtin = np.arange(rows + 1, dtype=np.int32) * 14
gtin_data = b"0" * (14 * rows)
valid = np.arange(rows + 1, dtype=np.int32) * 20
serial = valid.copy()  # writable: the thread below rewrites it while the C loops run
serial_data = bytearray(b"S" * (20 * rows))
huge = np.full(rows + 1, 2**31 - 1, dtype=np.int32)
huge[0] = 0  # rows of 2 GiB, far past the data and the 40-byte key block
negative = -valid
running = True

def mutate():
    while running:
        serial[:] = huge
        serial[:] = valid
        serial[:] = negative
        serial[:] = valid

thread = threading.Thread(target=mutate)
thread.start()
calls = refused = 0
deadline = time.monotonic() + float(sys.argv[1])
while time.monotonic() < deadline:
    for call in (
        lambda: _native.key_hashes(gtin, gtin_data, serial, serial_data),
        lambda: _native.concat(rows, [("col", serial, serial_data), ("len32", serial, serial_data),
                                      ("opt", serial, serial_data, b"/")]),
        lambda: _native.hash_products(b"k" * 32, b"PMT1", b"PMC1", b"PMR1\x00\x01", gtin,
                                      gtin_data, serial, serial_data,
                                      [(b"\x06serial", serial, serial_data)]),
    ):
        calls += 1
        try:
            call()
        except ValueError:
            refused += 1
running = False
thread.join()
print(calls, refused)
"""


def test_buffer_rewritten_by_another_thread_cannot_crash() -> None:
    """Offsets that pass the checks and then change under the loops (the GIL is released)
    used to overflow a stack buffer (key_hashes) or the output (concat) and read far past
    the data (hash_products). Now the loops read a private copy: the process survives."""
    proc = subprocess.run(
        [sys.executable, "-c", MUTATOR, "2"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr == ""
    calls, refused = map(int, proc.stdout.split())
    assert calls > refused > 0  # both outcomes happened: the race was really run
