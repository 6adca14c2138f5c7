"""provmint.engine: the columnar minting path equals the row-by-row reference functions.

Every property runs twice where the native module matters: with provmint._native (when
built) and with ``engine._native = None`` (the Arrow / pure-Python fallback).
"""

from __future__ import annotations

import hashlib
import hmac
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provmint import canonical, engine, gs1, merkle, tokens
from provmint.store import PartLayout, treefile
from provmint.store.keyindex import KeyRun, RunKind
from provmint.store.records import RecordPart

SECRET = bytes(range(100, 132))
GTIN = "09506000134352"
FAST = settings(max_examples=60, deadline=None)
MODES = ["native", "fallback"]


@contextmanager
def native_mode(mode: str) -> Iterator[None]:
    """Run with the C module, or with engine._native = None (the pure fallback)."""
    if mode == "native" and engine._native is None:
        pytest.skip("provmint._native is not built")
    with pytest.MonkeyPatch.context() as mp:
        if mode == "fallback":
            mp.setattr(engine, "_native", None)
        yield


def ref_token(secret: bytes, gtin14: bytes, serial: bytes) -> bytes:
    return hmac.digest(secret, b"PMT1" + gtin14 + serial, "sha256")[:16]


def ref_leaf(record: bytes, token: bytes) -> bytes:
    commitment = hashlib.sha256(b"PMC1" + token).digest()
    return hashlib.sha256(b"\x00" + record + commitment).digest()


def string_array(values: list[str]) -> pa.Array:
    return pa.array(values, type=pa.string())


NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True)
TEXT = st.text(st.characters(codec="utf-8"), max_size=12)
CSET82 = "!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
URL_TEXT = st.one_of(
    st.text(st.sampled_from(CSET82), min_size=1, max_size=20),
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=8),
    st.sampled_from(["A/B&1", "x%y", "a?b", "abc", "~._-", "ABC123"]),
)


@st.composite
def tables(draw: st.DrawFn, values: st.SearchStrategy[str] = TEXT) -> pa.Table:
    """A string table with gtin, serial and random extra columns, possibly sliced."""
    names = draw(st.sets(NAMES, max_size=6)) | {"gtin", "serial"}
    rows = draw(st.integers(1, 12))
    gtins = st.from_regex(r"[0-9]{14}", fullmatch=True)  # records carry 14-digit GTINs
    columns = {
        n: string_array(
            draw(st.lists(gtins if n == "gtin" else values, min_size=rows, max_size=rows))
        )
        for n in sorted(names, key=lambda _: draw(st.integers()))
    }
    table = pa.table(columns)
    start = draw(st.integers(0, rows - 1))
    length = draw(st.integers(1, rows - start))
    return table.slice(start, length)


def rows_of(table: pa.Table) -> list[dict[str, str]]:
    return table.to_pylist()


# --------------------------------------------------------------------------- records


@pytest.mark.parametrize("mode", MODES)
@FAST
@given(table=tables())
def test_record_bytes_column_equals_encode_record(mode: str, table: pa.Table) -> None:
    with native_mode(mode):
        column = engine.record_bytes_column(table)
    assert column.type == pa.binary()
    assert column.to_pylist() == [canonical.encode_record(r) for r in rows_of(table)]


@pytest.mark.parametrize("mode", MODES)
def test_record_bytes_column_examples(mode: str) -> None:
    table = pa.table(
        {
            "serial": string_array(["1", "", "😀"]),
            "product_name": string_array(["Crème", "", "日本語"]),
            "gtin": string_array([GTIN, GTIN, "00614141123452"]),
            "a_": string_array(["", "x", "y"]),
            "a0": string_array(["z", "", ""]),
        }
    )
    with native_mode(mode):
        column = engine.record_bytes_column(table)
    assert column.to_pylist() == [canonical.encode_record(r) for r in rows_of(table)]


def test_record_bytes_column_chunked_column() -> None:
    table = pa.Table.from_batches(
        [
            pa.record_batch({"gtin": string_array([GTIN]), "serial": string_array(["a"])}),
            pa.record_batch({"gtin": string_array([GTIN]), "serial": string_array(["bé"])}),
        ]
    )
    assert table.column("serial").num_chunks == 2
    assert engine.record_bytes_column(table).to_pylist() == [
        canonical.encode_record(r) for r in rows_of(table)
    ]


# --------------------------------------------------------------------------- hashing


def _ids_and_records(table: pa.Table) -> tuple[pa.Array, pa.Array]:
    ids = engine.concat_parts(
        table.num_rows,
        [("col", engine._column(table, "gtin")), ("col", engine._column(table, "serial"))],
    )
    return ids, engine.record_bytes_column(table)


@FAST
@given(
    table=tables(),
    secret=st.one_of(st.binary(min_size=32, max_size=64), st.binary(min_size=65, max_size=130)),
)
def test_hash_rows_equals_reference(table: pa.Table, secret: bytes) -> None:
    ids, records = _ids_and_records(table)
    expected_tokens, expected_leaves = b"", b""
    for row, record in zip(rows_of(table), records.to_pylist(), strict=True):
        token = ref_token(secret, row["gtin"].encode(), row["serial"].encode())
        expected_tokens += token
        expected_leaves += ref_leaf(record, token)
    assert engine.hash_rows(ids, records, secret) == (expected_tokens, expected_leaves)
    assert engine._hash_rows_py(ids.to_pylist(), records.to_pylist(), secret) == (
        expected_tokens,
        expected_leaves,
    )
    # The native path (records hashed from the column buffers) against the same reference.
    assert engine.hash_table(table, secret) == (expected_tokens, expected_leaves)


def test_hash_rows_matches_tokens_module() -> None:
    table = pa.table(
        {
            "gtin": string_array([GTIN] * 3),
            "serial": string_array(["1", "2", "x%y"]),
            "lot": string_array(["", "L", "A/B&1"]),
        }
    )
    ids, records = _ids_and_records(table)
    toks, leaves = engine.hash_rows(ids, records, SECRET)
    assert len(toks) == 3 * 16 and len(leaves) == 3 * 32
    for i, row in enumerate(rows_of(table)):
        token = tokens.make_token(SECRET, row["gtin"], row["serial"])
        assert toks[16 * i : 16 * i + 16] == token
        leaf = merkle.leaf_hash(canonical.leaf_data(row, canonical.token_commitment(token)))
        assert leaves[32 * i : 32 * i + 32] == leaf


# --------------------------------------------------------------------------- concat_parts


@st.composite
def parts_cases(draw: st.DrawFn) -> tuple[int, list[engine.Part]]:
    n = draw(st.integers(1, 10))
    slice_start = draw(st.integers(0, 3))
    parts: list[engine.Part] = []
    kinds = draw(
        st.lists(st.sampled_from(["const", "col", "len32", "opt"]), min_size=1, max_size=6)
    )
    # engine always joins at least one column (with constants only, the Arrow fallback
    # would return a scalar)
    kinds.append(draw(st.sampled_from(["col", "len32", "opt"])))
    for kind in draw(st.permutations(kinds)):
        if kind == "const":
            parts.append(draw(st.binary(max_size=6)))
            continue
        values = draw(
            st.lists(
                st.one_of(st.just(""), TEXT), min_size=n + slice_start, max_size=n + slice_start
            )
        )
        array = string_array(values).slice(slice_start, n)
        if draw(st.booleans()):
            array = array.cast(pa.binary())
        if kind == "opt":
            parts.append(("opt", array, draw(st.binary(min_size=1, max_size=5))))
        else:
            parts.append((kind, array))
    return n, parts


def ref_concat(n: int, parts: list[engine.Part]) -> list[bytes]:
    out = []
    for i in range(n):
        row = b""
        for part in parts:
            if isinstance(part, bytes):
                row += part
                continue
            value = part[1][i].as_py()
            value = value.encode() if isinstance(value, str) else value
            if part[0] == "col":
                row += value
            elif part[0] == "len32":
                row += len(value).to_bytes(4, "big")
            elif value:
                row += part[2] + value
        out.append(row)
    return out


@settings(max_examples=100, deadline=None)
@given(case=parts_cases())
def test_concat_parts_native_equals_fallback(case: tuple[int, list[engine.Part]]) -> None:
    n, parts = case
    expected = ref_concat(n, parts)
    with native_mode("fallback"):
        fallback = engine.concat_parts(n, parts)
    assert fallback.to_pylist() == expected
    if engine._native is None:
        pytest.skip("provmint._native is not built")
    native = engine.concat_parts(n, parts)
    assert native.type == fallback.type == pa.binary()
    assert native.to_pylist() == expected


@pytest.mark.parametrize("mode", MODES)
def test_concat_parts_text(mode: str) -> None:
    lots = string_array(["", "L1", "é"])
    serials = string_array(["a", "b", "c"])
    with native_mode(mode):
        out = engine.concat_parts(
            3, [b"<", ("opt", lots, b"/10/"), b"/21/", ("col", serials), ("len32", lots)], text=True
        )
    assert out.type == pa.string()
    assert out.to_pylist() == [
        "</21/a\x00\x00\x00\x00",
        "</10/L1/21/b\x00\x00\x00\x02",
        "</10/é/21/c\x00\x00\x00\x02",
    ]


# --------------------------------------------------------------------------- token strings


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=60, deadline=None)
@given(raw=st.lists(st.binary(min_size=16, max_size=16), min_size=1, max_size=40))
def test_token_strings_equal_format_token(mode: str, raw: list[bytes]) -> None:
    with native_mode(mode):
        out = engine._token_strings(b"".join(raw), len(raw))
    assert out.type == pa.string()
    assert out.to_pylist() == [tokens.format_token(t) for t in raw]
    assert [tokens.parse_token(t) for t in out.to_pylist()] == raw


@pytest.mark.parametrize("mode", MODES)
def test_token_strings_extremes(mode: str) -> None:
    raw = [bytes(16), b"\xff" * 16, bytes(range(16)), b"\xfb\xef\xbe" * 5 + b"\xfc"]
    with native_mode(mode):
        out = engine._token_strings(b"".join(raw), len(raw))
    assert out.to_pylist() == [tokens.format_token(t) for t in raw]


# --------------------------------------------------------------------------- urls


@st.composite
def url_tables(draw: st.DrawFn) -> tuple[pa.Table, list[bytes]]:
    n = draw(st.integers(1, 10))
    columns = {
        "gtin": string_array(
            draw(st.lists(st.from_regex(r"[0-9]{14}", fullmatch=True), min_size=n, max_size=n))
        ),
        "serial": string_array(draw(st.lists(URL_TEXT, min_size=n, max_size=n))),
    }
    if draw(st.booleans()):
        columns["lot"] = string_array(
            draw(st.lists(st.one_of(st.just(""), URL_TEXT), min_size=n, max_size=n))
        )
    raw = draw(st.lists(st.binary(min_size=16, max_size=16), min_size=n, max_size=n))
    return pa.table(columns), raw


@pytest.mark.parametrize("mode", MODES)
@FAST
@given(
    case=url_tables(),
    base=st.sampled_from(
        ["https://id.example.com", "https://id.example.com/", "http://localhost:8000/v/"]
    ),
)
def test_urls_equal_digital_link(mode: str, case: tuple[pa.Table, list[bytes]], base: str) -> None:
    table, raw = case
    token_text = engine._token_strings(b"".join(raw), len(raw))
    with native_mode(mode):
        urls = engine._urls(table, token_text, base)
    assert urls.type == pa.string()
    expected = [
        gs1.digital_link(base, r["gtin"], r["serial"], r.get("lot", ""), tokens.format_token(t))
        for r, t in zip(rows_of(table), raw, strict=True)
    ]
    assert urls.to_pylist() == expected


@pytest.mark.parametrize("mode", MODES)
def test_urls_examples(mode: str) -> None:
    table = pa.table(
        {
            "gtin": string_array([GTIN] * 5),
            "serial": string_array(["x%y", "a?b", "S1", "A/B&1", "plain"]),
            "lot": string_array(["A/B&1", "", "x%y", "a?b", ""]),
        }
    )
    raw = [bytes([i]) * 16 for i in range(5)]
    token_text = engine._token_strings(b"".join(raw), 5)
    with native_mode(mode):
        urls = engine._urls(table, token_text, "https://id.example.com/").to_pylist()
    t = [tokens.format_token(r) for r in raw]
    assert urls == [
        f"https://id.example.com/01/{GTIN}/10/A%2FB%261/21/x%25y?t={t[0]}",
        f"https://id.example.com/01/{GTIN}/21/a%3Fb?t={t[1]}",
        f"https://id.example.com/01/{GTIN}/10/x%25y/21/S1?t={t[2]}",
        f"https://id.example.com/01/{GTIN}/10/a%3Fb/21/A%2FB%261?t={t[3]}",
        f"https://id.example.com/01/{GTIN}/21/plain?t={t[4]}",
    ]


# --------------------------------------------------------------------------- run_chunk


def _chunk_task(
    tmp_path: Path,
    table: pa.Table,
    *,
    start: int | None = 0,
    key_rows: engine.KeyRows = engine.KeyRows.RECORDS,
    secret: bytes | None = SECRET,
    first_record: int = 1,
) -> engine.ChunkTask:
    spill = treefile.TreeSpill(
        tmp_path / "levels", engine.CHUNK_ROWS.bit_length() - 1, tmp_path / "tree.bin"
    )
    spill.create()
    records = np.arange(first_record, first_record + table.num_rows, dtype=np.int64)
    engine.write_rows(engine.chunk_files(tmp_path, 0).rows, table)
    return engine.ChunkTask(
        index=0,
        names=tuple(table.column_names),
        records=records.tobytes(),
        start=start,
        key_rows=key_rows,
        work=str(tmp_path),
        part_path=str(tmp_path / "part-00000.parquet"),
        records_path=str(tmp_path / "part-00000.rec"),
        level_paths=spill.paths,
        secret=secret,
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("n", [1, 2, 7, 33])
def test_run_chunk_end_to_end(tmp_path: Path, mode: str, n: int) -> None:
    table = pa.table(
        {
            "gtin": string_array([GTIN] * n),
            "serial": string_array([f"S{i}/x" if i % 3 else f"S{i}" for i in range(n)]),
            "lot": string_array(["" if i % 2 else "L&1" for i in range(n)]),
            "product_name": string_array([f"Crème {i} 😀" for i in range(n)]),
        }
    )
    task = _chunk_task(tmp_path, table)
    with native_mode(mode):
        result = engine.run_chunk(task)

    rows = rows_of(table)
    toks = [tokens.make_token(SECRET, r["gtin"], r["serial"]) for r in rows]
    leaves = [
        merkle.leaf_hash(canonical.leaf_data(r, canonical.token_commitment(t)))
        for r, t in zip(rows, toks, strict=True)
    ]
    assert result.rows == n and result.problems == ()
    assert result.root == merkle.mth(leaves)
    spill = treefile.TreeSpill(
        tmp_path / "levels", engine.CHUNK_ROWS.bit_length() - 1, tmp_path / "tree.bin"
    )
    assert spill.assemble(n, result.root) == result.root
    tf = treefile.TreeFile(tmp_path / "tree.bin")
    for i in range(n):
        assert merkle.verify_inclusion(leaves[i], i, n, tf.inclusion_path(i), tf.root)

    stored = pq.read_table(task.part_path)
    assert stored.schema.metadata == PartLayout.V2.metadata
    part = stored.to_pylist()
    assert [p["leaf_index"] for p in part] == list(range(n))
    for p, r, t in zip(part, rows, toks, strict=True):
        assert tokens.parse_token(p["token"]) == t
        assert p == {"leaf_index": p["leaf_index"], **r, "token": tokens.format_token(t)}
    with RecordPart.open(task.records_path) as stored:
        assert [
            (canonical.decode_record(rec), tok) for rec, tok in stored.get_many(range(n))
        ] == list(zip(rows, toks, strict=True))
    files = engine.chunk_files(tmp_path, 0)
    with KeyRun.open(files.tokens) as run:
        assert {int(k): int(r) for k, r in zip(*run.read(0, n), strict=True)} == {
            int.from_bytes(t[:8], "little"): i for i, t in enumerate(toks)
        }
    with KeyRun.open(files.keys) as run:  # rows are record indexes
        assert sorted(int(r) for r in run.read(0, n).rows) == list(range(n))


def test_run_chunk_with_a_bad_row_only_validates(tmp_path: Path) -> None:
    table = pa.table(
        {"gtin": string_array([GTIN, "123", GTIN]), "serial": string_array(["A", "B", "C"])}
    )
    result = engine.run_chunk(_chunk_task(tmp_path, table, first_record=10))
    assert result.root is None and result.rows == 2
    assert [(p.record, p.column) for p in result.problems] == [(11, "gtin")]
    assert not Path(_chunk_task(tmp_path, table).part_path).exists()
    with KeyRun.open(engine.chunk_files(tmp_path, 0).keys) as run:  # both usable identities
        assert sorted(int(r) for r in run.read(0, 2).rows) == [9, 11]


def test_run_chunk_leaves_mode_keys_by_leaf(tmp_path: Path) -> None:
    table = pa.table({"gtin": string_array([GTIN] * 3), "serial": string_array(["A", "B", "C"])})
    engine.run_chunk(
        _chunk_task(tmp_path, table, start=131072, key_rows=engine.KeyRows.LEAVES, first_record=7)
    )
    with KeyRun.open(engine.chunk_files(tmp_path, 0).keys) as run:
        assert sorted(int(r) for r in run.read(0, 3).rows) == [131072, 131073, 131074]
    assert not engine.chunk_files(tmp_path, 0).identities.exists()


def test_run_chunk_needs_a_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "_SECRET", None)
    table = pa.table({"gtin": string_array([GTIN]), "serial": string_array(["1"])})
    with pytest.raises(RuntimeError):
        engine.run_chunk(_chunk_task(tmp_path, table, secret=None))


def test_rows_round_trip_of_a_slice_and_are_taken_once(tmp_path: Path) -> None:
    table = pa.table(
        {"gtin": string_array([GTIN] * 5), "serial": string_array(list("abcde"))}
    ).slice(1, 3)
    path = engine.chunk_files(tmp_path, 3).rows
    engine.write_rows(path, table)
    back = engine.take_rows(path)
    assert not path.exists()  # the worker's copy is the mapping: nothing is left behind
    assert back.to_pylist() == table.to_pylist()
    assert back.schema == table.schema


@pytest.mark.parametrize("mode", MODES)
@FAST
@given(table=tables())
def test_hash_table_equals_hashing_the_record_column(mode: str, table: pa.Table) -> None:
    """The fused native path (records hashed from column buffers) and the fallback agree
    with hashing the materialized canonical records."""
    with native_mode(mode):
        tokens, leaves = engine.hash_table(table, SECRET)
    ids = [(r["gtin"] + r["serial"]).encode() for r in table.to_pylist()]
    records = [canonical.encode_record(r) for r in table.to_pylist()]
    assert (tokens, leaves) == engine._hash_rows_py(ids, records, SECRET)


@settings(max_examples=60, deadline=None)
@given(
    keys=st.lists(st.integers(0, 2**64 - 1) | st.integers(0, 5), max_size=300),
    first=st.integers(0, 2**31),
)
def test_chunk_runs_are_in_key_row_order(keys: list[int], first: int) -> None:
    """A chunk run's entries (rows ascending, keys with or without repeats, and keys that
    differ only in their low bits) are in lexsort's (key, row) order."""
    key_array = np.array(keys, dtype=np.uint64)
    rows = np.arange(first, first + len(keys), dtype=np.int64)
    order = np.lexsort((rows, key_array))
    with tempfile.TemporaryDirectory() as scratch:
        engine._write_run(Path(scratch) / "k.run", RunKind.KEY, key_array, rows)
        with KeyRun.open(Path(scratch) / "k.run") as run:
            block = run.read(0, run.count)
    assert block.keys.tolist() == key_array[order].tolist()
    assert block.rows.tolist() == rows[order].tolist()
