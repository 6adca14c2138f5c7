"""The streaming reader (``open_products``), the chunk validation (``check_chunk``) and the
second passes (``record_lines``, ``record_values``) of ``provmint.ingest``.

The oracle is Python's csv module (strict), as in test_hostile_csv.py, whose
``stream_matches_oracle`` holds a reading to it: the rows, their record numbers, the
ragged records, the line of every record, the file's size and SHA-256. Here: the quote
parity rule the reader cuts blocks with, checked against the csv module; every block size
over files made to put block boundaries in awkward places; the record size limit; bounded
memory; chunks validated in another process; the problems as data; a batch minted through
the CLI in tiny blocks.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import pickle
import re
import subprocess
import sys
import threading
import tracemalloc
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from conftest import ROOT
from hypothesis import given, settings
from hypothesis import strategies as st
from test_hostile_csv import GTINS, read_as_standard, stream_matches_oracle

import provmint.ingest
from provmint.errors import EXIT_OK, InputFileError, MissingColumnError, MissingFileError
from provmint.ingest import (
    MAX_RECORD_BYTES,
    CheckedChunk,
    RawChunk,
    check_chunk,
    key_hash,
    open_products,
    read_products,
    record_lines,
    record_values,
)
from provmint.keys import init_keyring

G = GTINS[1]
MIB = 1 << 20


# --- the rule blocks are cut with, against the csv module ----------------------------------------


def csv_records(data: bytes, delimiter: str) -> tuple[list[int], list[int], list[int]]:
    """As the csv module reads ``data``: the byte offset where each non-blank record
    starts, its physical line, and the offset after every record (blank ones too)."""
    state = {"stop": 0, "lines": 0}

    def lines() -> Any:
        for m in re.finditer(rb"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+", data):
            state["stop"], state["lines"] = m.end(), state["lines"] + 1
            yield m.group().decode("utf-8", "surrogateescape")

    starts, first_lines, ends = [], [], []
    before, lines_before = 0, 0
    old = csv.field_size_limit(len(data) + 1)
    try:
        for fields in csv.reader(lines(), delimiter=delimiter, strict=True):
            if fields:
                starts.append(before)
                first_lines.append(lines_before + 1)
            before, lines_before = state["stop"], state["lines"]
            ends.append(before)
    finally:
        csv.field_size_limit(old)
    return starts, first_lines, ends


VALUES = st.lists(
    st.sampled_from(
        [
            "a",
            "bc",
            '"',
            '""',
            ",",
            ";",
            "\t",
            "|",
            " ",
            "\n",
            "\r",
            "\r\n",
            "é",
            "日",
            "\U0001f600",
            "\ufeff",
            "\0",
        ]
    ),
    max_size=4,
).map("".join)


@st.composite
def plain_files(draw: Any) -> tuple[bytes, str]:
    """CSV files as a standard writer writes them (quoting as RFC 4180), blank lines and
    mixed line ends included: (bytes, delimiter)."""
    delimiter = draw(st.sampled_from([",", ";", "\t", "|"]))
    quoting = draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]))
    out = io.StringIO()
    for row in draw(st.lists(st.lists(VALUES, min_size=1, max_size=4), max_size=8)):
        end = draw(st.sampled_from(["\n", "\r\n", "\r"]))
        writer = csv.writer(out, delimiter=delimiter, quoting=quoting, lineterminator=end)
        writer.writerow(row)
        out.write(draw(st.sampled_from(["", "", end])))  # now and then a blank line
    text = out.getvalue()
    if draw(st.booleans()):
        text = re.sub(r"(\r\n|\r|\n)\Z", "", text)  # no line end after the last record
    return text.encode("utf-8"), delimiter


@settings(max_examples=300, deadline=None)
@given(plain_files())
def test_a_line_end_ends_a_record_when_an_even_number_of_quotes_precede_it(
    made: tuple[bytes, str],
) -> None:
    data, delimiter = made
    starts, lines, ends = csv_records(data, delimiter)
    # The rule itself, computed here: a line end after an even number of quotes.
    line_ends = [m.end() for m in re.finditer(rb"\r\n|\r(?!\n)|\n", data)]
    by_parity = [e for e in line_ends if data[:e].count(b'"') % 2 == 0]
    assert by_parity == [e for e in ends if data[e - 1 : e] in (b"\n", b"\r")]
    # The reader's vectorised version of it.
    assert provmint.ingest._plain_quotes(data, 0, len(data), delimiter, True, None)[1] == len(data)
    if data:
        found, relative, _ = provmint.ingest._record_starts(data, 0, len(data))
        assert found.tolist() == starts
        assert (relative + 1).tolist() == lines
    # Wherever a block ends, the reader cuts it at a record boundary of the csv module.
    for end in range(len(data) + 1):
        at_end = end == len(data)
        after = data[end] if end < len(data) else None
        found = provmint.ingest._plain_cut(data, 0, end, delimiter, at_end, after)
        cut = found.stop
        assert found.quoted or b'"' not in data[:cut]
        assert cut in [0, *ends], (end, cut)
        assert cut <= end
        if at_end:
            assert cut == end


@pytest.mark.parametrize(
    ("data", "quote", "cut", "quoted"),
    [
        # A quote inside an unquoted value: its line end still ends the record. Without a
        # quote at the start of a field, quotes are ordinary characters for the whole run.
        (b'a"b\nc,d\n', 1, 8, False),
        (b'"a"b,c\nd\n', 0, 0, True),  # text after a closing quote
        (b'x,"a\n', 2, 0, True),  # never closed
        (b'x,"a"\n"b" ,c\n', 6, 6, True),  # a space after the closing quote
        (b'x,12"\n"b" ,c\n', 4, 6, False),
    ],
)
def test_quotes_that_are_not_plain_are_found(
    data: bytes, quote: int, cut: int, quoted: bool
) -> None:
    # The parity rule does not hold past such a quote: the reader must not use it there.
    assert provmint.ingest._plain_quotes(data, 0, len(data), ",", True, None)[1] == quote
    found = provmint.ingest._plain_cut(data, 0, len(data), ",", True, None)
    assert (found.stop, found.quoted) == (cut, quoted)
    _, _, ends = csv_records(data[:cut], ",")
    assert cut in [0, *ends]


def read_all(path: Path, **options: Any) -> int:
    """Read every chunk; the number of bytes the reader read."""
    with open_products(path, **options) as reader:
        for _ in reader:
            pass
        return reader.bytes_read


# --- every block size, boundaries everywhere -----------------------------------------------------

AWKWARD = (
    "\ufeffgtin,serial,name\r\n"
    f'{G},A1,"two\r\nlines, with ""quotes"""\r\n'
    "\r\n"
    f"{G},A2,Crème brûlée 日本 \U0001f600\r"
    f"{G},A3,\ufeffbom in a value\n"
    f"\ufeff{G},A4,bom starting a record\n"
    f'{G},A5,12" pizza\n'
    f"{G},A6\n"
    f'{G},A7,"",x\n'
    f'"{G}","A8","quoted\rCR"\n'
    f"{G},A9,last line without a line end"
).encode()


@pytest.mark.parametrize("ending", [b"", b"\n", b'\n"never closed\n' + f"{G},B1,x\n".encode()])
def test_every_block_size_reads_the_same(tmp_path: Path, ending: bytes) -> None:
    data = AWKWARD + ending
    path = tmp_path / "awkward.csv"
    path.write_bytes(data)
    reference = stream_matches_oracle(path, 1 << 20, 3)
    assert (reference is None) == (b"never closed" not in ending)
    for block in range(1, len(data) + 2):
        assert stream_matches_oracle(path, block, block % 3 + 1) == reference, block
    if reference is not None:
        assert "line 14: column 1 ('gtin'): a quoted value starts here" in reference


def test_a_quote_problem_far_into_the_file_names_its_line(tmp_path: Path) -> None:
    # The stream does not count lines: they are counted again, 1 MiB at a time, when a
    # problem is met. Here a CRLF straddles the first MiB.
    header = b"gtin,serial,name\r\n"
    rows = [f"{G},S{i},x\r\n".encode() for i in range(MIB // 20)]
    crlf = (header + b"".join(rows)).find(b"\r\n", MIB - 40)
    rows[0] = rows[0].replace(b",x\r\n", b",x" + b"y" * (MIB - 1 - crlf) + b"\r\n")
    data = header + b"".join(rows)
    assert data[MIB - 1 : MIB + 1] == b"\r\n"
    data += f'{G},Z,"open\r\n{G},Z2,x\r\n'.encode()
    path = tmp_path / "far.csv"
    path.write_bytes(data)
    line = data.count(b"\r\n") - 1  # the line before the last
    for block in (64 << 10, None):
        with pytest.raises(InputFileError) as exc:
            read_all(path, block_bytes=block)
        assert exc.value.reason.startswith(
            f"line {line}: column 3 ('name'): a quoted value starts here and its quote is never"
        ), exc.value.reason


# --- the record limit ----------------------------------------------------------------------------


@pytest.mark.parametrize("block", [64 << 10, None, 4 * MAX_RECORD_BYTES])
def test_an_unclosed_quote_stops_the_reader_after_one_record_limit(
    tmp_path: Path, block: int | None
) -> None:
    path = tmp_path / "open.csv"
    rows = "".join(f"{G},R{i},fine\n" for i in range(1000))
    tail = "".join(f"{G},T{i},more\n" for i in range(5 * MAX_RECORD_BYTES // 24))
    path.write_text(f'gtin,serial,name\n{rows}{G},Q1,"opens here\n{tail}')
    seen: list[int] = []
    with pytest.raises(InputFileError) as exc, open_products(path, block_bytes=block) as reader:
        for _ in reader:
            seen.append(reader.bytes_read)
    assert exc.value.reason == (
        "line 1002: column 3 ('name'): a quoted value starts here and its quote is not closed "
        "within 8 MiB (a record may take at most 8 MiB)"
    )
    assert reader.bytes_read <= 2 * MAX_RECORD_BYTES + 2 * (block or provmint.ingest.BLOCK_BYTES)
    assert reader.bytes_read < path.stat().st_size


@pytest.mark.parametrize("block", [64 << 10, None, 4 * MAX_RECORD_BYTES])
def test_a_record_over_the_limit_is_refused_whatever_the_block_size(
    tmp_path: Path, block: int | None
) -> None:
    path = tmp_path / "long.csv"
    path.write_text(f"gtin,serial,note\n{G},L1,ok\n{G},L2,{'n' * MAX_RECORD_BYTES}\n{G},L3,ok\n")
    with pytest.raises(InputFileError) as exc:
        read_all(path, block_bytes=block)
    assert exc.value.reason == (
        "line 3: the record that starts here takes more than 8 MiB; a record may take at most 8 MiB"
    )
    # Just under the limit, it is a row like any other (rejected later: too long a value).
    path.write_text(f"gtin,serial,note\n{G},L1,ok\n{G},L2,{'n' * (MAX_RECORD_BYTES - 20)}\n")
    assert read_all(path, block_bytes=block) == path.stat().st_size


def test_a_header_over_the_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "head.csv"
    path.write_text("gtin,serial," + "h" * MAX_RECORD_BYTES + f"\n{G},H1,x\n")
    with pytest.raises(InputFileError) as exc:
        open_products(path, block_bytes=1 << 16)
    assert exc.value.reason.startswith("line 1: the header that starts here takes more than 8 MiB")


# --- memory --------------------------------------------------------------------------------------


def products_csv(path: Path, rows: int) -> Path:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_products.py"), str(rows), "-o", str(path)],
        check=True,
        capture_output=True,
    )
    return path


def peak_memory(path: Path, block: int) -> tuple[int, int]:
    """(Arrow bytes, Python bytes) held at most while ``path`` is read and validated."""
    arrow = 0
    tracemalloc.start()
    try:
        with open_products(path, block_bytes=block, chunk_rows=4096) as reader:
            for chunk in reader:
                arrow = max(arrow, pa.total_allocated_bytes())
                check_chunk(chunk)
                arrow = max(arrow, pa.total_allocated_bytes())
        python = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return arrow, python


def test_memory_does_not_grow_with_the_file(tmp_path: Path) -> None:
    small = products_csv(tmp_path / "small.csv", 40_000)
    big = products_csv(tmp_path / "big.csv", 400_000)
    assert big.stat().st_size > 25 * MIB
    block = 1 << 20
    small_peaks, big_peaks = peak_memory(small, block), peak_memory(big, block)
    for kind, s, b in zip(("arrow", "python"), small_peaks, big_peaks, strict=True):
        assert b < 8 * block, (kind, b)
        assert b < 1.5 * s + block, (kind, s, b)


# --- chunks: exact sizes, another process, problems as data --------------------------------------


def chunks_of(path: Path, **options: Any) -> list[RawChunk]:
    with open_products(path, **options) as reader:
        return list(reader)


def test_chunks_have_exactly_chunk_rows_rows(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("gtin,serial\n" + "".join(f"{G},C{i}\n" for i in range(1000)))
    for chunk_rows in (1, 7, 999, 1000, 1001):
        chunks = chunks_of(path, chunk_rows=chunk_rows, block_bytes=256)
        sizes = [c.table.num_rows for c in chunks]
        assert sizes[:-1] == [chunk_rows] * (len(sizes) - 1) and 0 < sizes[-1] <= chunk_rows
        assert sum(sizes) == 1000
        assert [r for c in chunks for r in c.records.tolist()] == list(range(1, 1001))


def test_a_reader_reads_once_and_knows_the_file_at_the_end(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text(f"gtin,serial\n{G},O1\n")
    with open_products(path) as reader:
        assert reader.names == ("gtin", "serial") and reader.delimiter == ","
        with pytest.raises(RuntimeError):
            _ = reader.sha256
        assert len(list(reader)) == 1
        assert reader.finished and reader.records == 1
        assert reader.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        with pytest.raises(RuntimeError):
            list(reader)


def mixed_file(path: Path) -> Path:
    path.write_bytes(
        b"gtin,serial,lot,note\n"
        + f"{G},M1,L1,ok\n".encode()
        + f"{G[:-1]}0,M2,L1,bad check digit\n".encode()
        + f"{G},M3,L 1,bad lot\n".encode()
        + f"{G},M4,L1,caf\xe9\n".encode("latin-1")
        + f"{G},M5,L1\n".encode()
        + f"{G},M6,L1,{'n' * 5000}\n".encode()
        + f"{G},M1,L1,twin of M1\n".encode()
        + f"{G},M3,L1,twin of M3\n".encode()
    )
    return path


def test_check_chunk_gives_problems_as_data(tmp_path: Path) -> None:
    path = mixed_file(tmp_path / "mixed.csv")
    (chunk,) = chunks_of(path)
    checked = check_chunk(chunk)
    assert [(p.record, p.column, p.code) for p in checked.problems] == [
        (2, "gtin", "gtin_check_digit"),
        (3, "lot", "lot_charset"),
        (4, "note", "invalid_utf8"),
        (5, "(row)", "ragged_row"),
        (6, "note", "value_too_long"),
    ]
    assert all(p.twin is None and "#" not in p.reason for p in checked.problems)
    assert checked.records.tolist() == [1, 7, 8]
    assert checked.table.column("serial").to_pylist() == ["M1", "M1", "M3"]
    # Every row with a valid gtin and serial has a key, however it fares otherwise.
    assert checked.key_records.tolist() == [1, 3, 4, 6, 7, 8]
    assert checked.key_hashes.tolist() == [
        key_hash(G, s) for s in ("M1", "M3", "M4", "M6", "M1", "M3")
    ]
    assert checked.table_keys().tolist() == [key_hash(G, s) for s in ("M1", "M1", "M3")]
    # Duplicates are found across chunks (here in memory): both copies, with their twin.
    ing = read_products(path)
    dups = [(r.row, r.line, r.reason) for r in ing.rejects if r.code == "duplicate_in_file"]
    assert dups == [
        (1, 2, "same gtin and serial as line 8"),
        (3, 4, "same gtin and serial as line 9"),
        (7, 8, "same gtin and serial as line 2"),
        (8, 9, "same gtin and serial as line 4"),
    ]


def same_check(a: CheckedChunk, b: CheckedChunk) -> None:
    assert a.index == b.index and a.problems == b.problems
    assert a.table.equals(b.table) and a.identities.equals(b.identities)
    assert a.records.tolist() == b.records.tolist()


def test_chunks_are_checked_alike_in_a_worker_process(tmp_path: Path) -> None:
    path = mixed_file(tmp_path / "mixed.csv")
    with open(path, "ab") as fh:
        fh.write("".join(f"{G},W{i},L1,x\n" for i in range(3000)).encode())
    chunks = chunks_of(path, chunk_rows=1000, block_bytes=4096)
    assert len(chunks) == 4
    with ProcessPoolExecutor(2, mp_context=get_context("forkserver")) as pool:
        remote = list(pool.map(check_chunk, chunks))
    for chunk, checked in zip(chunks, remote, strict=True):
        same_check(checked, check_chunk(chunk))
        # A chunk is sent whole but alone: not the block it was parsed from.
        assert len(pickle.dumps(chunk)) < 2 * chunk.table.nbytes + 4096


def test_readers_in_threads_share_the_csv_modules_field_limit(tmp_path: Path) -> None:
    # The csv module's field size limit is one setting for the whole process: a reader
    # must not put back the default while another is reading a long value.
    path = tmp_path / "long.csv"
    path.write_text(
        "gtin,serial,note\n" + "".join(f'{G},B{i},12" {"n" * 200_000}\n' for i in range(12))
    )
    default = csv.field_size_limit()
    rows: list[int] = []
    errors: list[BaseException] = []

    def read() -> None:
        try:
            with open_products(path, block_bytes=4096) as reader:
                rows.append(sum(c.table.num_rows for c in reader))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and rows == [12] * 4
    assert csv.field_size_limit() == default


# --- second passes -------------------------------------------------------------------------------


def test_record_lines_and_values_read_the_file_again(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_bytes(f'gtin,serial,name\r\n\r\n{G},V1,"a\r\nb"\r\n{G},V2\r\n{G},V3,c\r\n'.encode())
    assert record_lines(path, [3, 1, 2, 4, 3], block_bytes=8) == {1: 3, 2: 5, 3: 6}
    assert record_values(path, [3, 2, 1]) == {
        1: {"gtin": G, "serial": "V1", "name": "a\r\nb"},
        3: {"gtin": G, "serial": "V3", "name": "c"},
    }
    assert record_lines(path, []) == {}
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert record_lines(path, [1], expect_sha256=digest) == {1: 3}
    path.write_bytes(path.read_bytes().replace(b"V3", b"X3"))
    for again in (record_lines, record_values):
        with pytest.raises(InputFileError, match="changed while provmint was reading it"):
            again(path, [1], expect_sha256=digest)


# --- the file is checked when it is opened -------------------------------------------------------


def test_open_checks_the_file_and_header_up_front(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError):
        open_products(tmp_path / "none.csv")
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)  # nobody writes to it: opening it for reading would wait forever
    with pytest.raises(InputFileError, match="is a named pipe"):
        open_products(fifo)
    for text, error in [
        ("gtin,lot\n1,2\n", MissingColumnError),
        ("gtin,serial\n\n \n", InputFileError),
        ('gtin,"serial\n1,2\n', InputFileError),
    ]:
        path = tmp_path / "bad.csv"
        path.write_text(text)
        with pytest.raises(error):
            open_products(path)


# --- through the CLI -----------------------------------------------------------------------------


def test_a_batch_minted_in_tiny_blocks_is_the_same_batch(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = []
    for i in range(300):
        name = ["plain", "two\r\nlines", 'say ""hi""', "a,b", "Crème 日本", '12" pizza'][i % 6]
        quoted = f'"{name}"' if '""' in name or "\n" in name or "," in name else name
        rows.append(f"{G},T{i},{quoted}" + ["\n", "\r\n", "\r"][i % 3])
    path = tmp_path / "tiny.csv"
    path.write_text("gtin,serial,name\n" + "".join(rows), newline="")
    assert read_as_standard(path.read_bytes()).records is not None
    key_file = tmp_path / "keys.json"
    init_keyring(key_file)
    roots = set()
    for block in (provmint.ingest.BLOCK_BYTES, 64, 7):
        monkeypatch.setattr(provmint.ingest, "BLOCK_BYTES", block)
        store = tmp_path / f"store-{block}"
        r: Any = cli("batch", "create", path, "--json", "--store", store, "--key-file", key_file)
        assert r.exit_code == EXIT_OK, r.output
        summary = json.loads(r.stdout)
        assert summary["products"] == 300
        roots.add(summary["tree"]["root"])
    assert len(roots) == 1


_SERIALISH = st.text(
    alphabet=st.sampled_from("aZ09 !-é\x00" + "abcXYZ789"), min_size=0, max_size=23
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(_SERIALISH, min_size=1, max_size=30),
    st.integers(min_value=0, max_value=3),
    st.booleans(),
)
def test_the_serial_fast_check_answers_true_only_for_short_alnum_values(
    values: list[str], skip: int, with_null: bool
) -> None:
    """The buffer-wide serial check (``ingest._all_short_alnum``) says True exactly when
    every value is 1-20 ASCII letters or digits, on sliced arrays too; anything else
    (and any null) goes to the full CSET 82 check value by value."""
    from provmint.ingest import _all_short_alnum

    whole = [*values[:1] * skip, *values, *([None] if with_null else [])]
    array = pa.array(whole, type=pa.string()).slice(skip)
    expected = not with_null and all(re.fullmatch(r"[0-9A-Za-z]{1,20}", v) for v in values)
    assert _all_short_alnum(array, 20) is expected
