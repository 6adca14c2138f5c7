"""Hostile CSV files, as a class: generated from many mutations and minted through the CLI.

Each generated file is built from a valid products CSV (random delimiter, line ends,
quoting, header spellings and values) by a few mutations: ragged rows anywhere, stray,
unbalanced or misplaced quotes, broken or foreign encodings, NUL and control characters,
huge values and header cells, many columns, empty, duplicate or reserved header names,
blank and whitespace-only rows, truncation. ``provmint batch create`` must then

1. never end in a traceback;
2. refuse with exit 6 and one ``error:`` line that names the line and column (or a
   reason about the whole file), or
3. mint, and every minted row must equal the file's row as Python's csv module reads it
   (strict, the delimiter sniffed as documented); every rejected row is reported at the
   line where the csv module finds it.

The oracle below is written from the README's description of the input, not from
provmint's code. The streaming reader is held to the same oracle with tiny blocks (so
that block and chunk boundaries fall everywhere: inside quoted values, between the CR
and LF of a line end, inside UTF-8 characters and BOMs): on every generated file at the
library level, on some through the CLI, and on many small files from hypothesis. Each
reproducer of issue 7 has its own test; special files (FIFO, devices, sockets) and
oversized files are tested at the end, some in real subprocesses.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import random
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import typer.main
import typer.testing
from helpers import one_error
from hypothesis import example, given, settings
from hypothesis import strategies as st

import provmint.ingest
from provmint.canonical import MAX_FIELDS
from provmint.cli import app
from provmint.errors import EXIT_OK, EXIT_REJECTED, InputFileError, MissingColumnError
from provmint.ingest import (
    MAX_INPUT_BYTES,
    normalize_header,
    open_products,
    parse_csv,
    record_lines,
)
from provmint.keys import init_keyring

CASES = 330
MAX_CASE_BYTES = 1 << 20
"""Generated files stay below this size (the test runs every case through the CLI)."""

BOM = b"\xef\xbb\xbf"
DELIMITERS = (",", ";", "\t", "|")  # the README's list, in its order


# --- the oracle: the file as a standard CSV parser reads it ----------------------------------


def sniff(first_line: str) -> str:
    """The README's rule: the one of , ; tab | that the header line holds most often (the
    first of them on a tie; a comma when there is none)."""
    best = max(DELIMITERS, key=first_line.count)
    return best if first_line.count(best) else ","


@dataclass
class Oracle:
    """What Python's csv module (strict) reads in a file."""

    delimiter: str
    records: list[tuple[int, list[str]]] | None  # (first line, fields) of non-blank records
    error_lines: tuple[int, int] | None = None  # lines of the record it could not read

    @property
    def header(self) -> list[str]:
        assert self.records
        return self.records[0][1]

    @property
    def rows(self) -> list[tuple[int, list[str]]]:
        assert self.records is not None
        return self.records[1:]


def read_as_standard(data: bytes) -> Oracle:
    """Decode as UTF-8 (undecodable bytes kept as surrogates), sniff, read strictly."""
    text = (
        data[len(BOM) :].decode("utf-8", "surrogateescape")
        if data.startswith(BOM)
        else (data.decode("utf-8", "surrogateescape"))
    )
    delimiter = sniff(re.split(r"\r\n|\r|\n", text, maxsplit=1)[0])
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    records: list[tuple[int, list[str]]] = []
    consumed = 0
    old = csv.field_size_limit(len(text) + 1)
    try:
        for fields in reader:
            first, consumed = consumed, reader.line_num
            if fields:
                records.append((first + 1, fields))
    except csv.Error:
        return Oracle(delimiter, None, (consumed + 1, reader.line_num))
    finally:
        csv.field_size_limit(old)
    return Oracle(delimiter, records)


# --- the generator -----------------------------------------------------------------------------


def mod10(body: str) -> str:
    """``body`` with its GS1 check digit."""
    total = sum(int(c) * (3 if i % 2 == 0 else 1) for i, c in enumerate(reversed(body)))
    return body + str((10 - total % 10) % 10)


GTINS = [mod10(f"095201234500{i}") for i in range(8)] + [mod10("952012345002")]
ALIASES = {
    "gtin": ["gtin", "GTIN", "EAN", "Gtin 14", "01"],
    "serial": ["serial", "Serial Number", "SN", "21"],
    "lot": ["lot", "LOT", "Batch"],
    "expiry": ["expiry", "Expiry Date", "17"],
    "product_name": ["product_name", "Product Name"],
    "note": ["note", "Notes"],
}
NAMES = [
    "Aurora Serum 30 ml",
    "Cream, 50 ml",
    'Tablets 20 x 500 mg "forte"',
    "Crème brûlée",
    "two\nlines",
    "Gel\r\n40 g",
    "日本語",
    "",
    " padded ",
    "semi;colon|pipe\ttab",
]
ODD_CHARS = [
    "\0",
    "\x01",
    "\x07",
    "\x0b",
    "\x0c",
    "\x1b",
    "\x7f",
    "\x85",
    "\u2028",
    "\ufeff",
    "\t",
    "\r",
    "\n",
    '"',
    ",",
    ";",
    "|",
    " ",
    "é",
    "\U0001f600",
]


@dataclass
class Case:
    """One generated file and how it was made."""

    seed: int
    header: list[str]
    rows: list[list[str]]
    delimiter: str
    line_end: str
    quoting: int
    mutations: list[str] = field(default_factory=list)
    data: bytes = b""


def base_case(seed: int, rng: random.Random) -> Case:
    """A valid products CSV with serials unique to this case."""
    columns = [
        "gtin",
        "serial",
        *rng.sample(["lot", "expiry", "product_name", "note"], rng.randint(0, 4)),
    ]
    rng.shuffle(columns)
    header = [rng.choice(ALIASES[c]) for c in columns]
    rows = []
    for i in range(rng.randint(1, 8)):
        values = {
            "gtin": rng.choice(GTINS)[rng.choice([0, 0, 1]) :],  # GTIN-14 or GTIN-13
            "serial": f"H{seed:03d}r{i}" + rng.choice(["", "-A", "/7", ".b", "'q"]),
            "lot": rng.choice(["", "L1", "L2604P", "B-7"]),
            "expiry": rng.choice(["", "2027-06-30", "270630", "2028-02-29"]),
            "product_name": rng.choice(NAMES),
            "note": rng.choice(["", "ok", 'said "hi"', "a,b", "x" * rng.randint(1, 40)]),
        }
        rows.append([values[c] for c in columns])
    return Case(
        seed,
        header,
        rows,
        rng.choice(DELIMITERS),
        rng.choice(["\n", "\r\n", "\r"]),
        rng.choice([csv.QUOTE_MINIMAL, csv.QUOTE_MINIMAL, csv.QUOTE_ALL]),
    )


# Row-level mutations: change the header or the rows before the file is written.


def pick_row(c: Case, rng: random.Random) -> list[str]:
    """A row with values (the header when there is none)."""
    rows = [row for row in c.rows if row]
    return rng.choice(rows) if rows else c.header


def ragged_row(c: Case, rng: random.Random) -> None:
    row = pick_row(c, rng)
    if rng.random() < 0.5 and len(row) > 1:
        row.pop(rng.randrange(len(row)))
    else:
        row.insert(rng.randrange(len(row) + 1), rng.choice(["x", "", "extra,field"]))


def every_row_ragged(c: Case, rng: random.Random) -> None:
    if rng.random() < 0.4:
        del c.rows[1:]  # the only row is ragged
    for row in c.rows:
        if rng.random() < 0.5 or not row:
            row.append("x")
        else:
            row.pop()


def blank_and_whitespace_rows(c: Case, rng: random.Random) -> None:
    for _ in range(rng.randint(1, 3)):
        c.rows.insert(rng.randrange(len(c.rows) + 1), rng.choice([[], [" "], ["\t"], ["", ""]]))


def header_only(c: Case, rng: random.Random) -> None:
    c.rows.clear()


def odd_header_name(c: Case, rng: random.Random) -> None:
    name = rng.choice(
        [
            "",
            "  ",
            "#",
            "---",
            c.header[0].upper(),
            c.header[-1] + " ",
            "token",
            "URL",
            "leaf index",
            "Serial Number",
            "EAN",
        ]
    )
    c.header.insert(rng.randrange(len(c.header) + 1), name)
    position = c.header.index(name)
    for row in c.rows:
        row.insert(position, "v")


def many_columns(c: Case, rng: random.Random) -> None:
    extra = rng.choice([MAX_FIELDS - 1, MAX_FIELDS, MAX_FIELDS + 1, 2 * MAX_FIELDS]) - len(c.header)
    c.header += [f"c{k}" for k in range(extra)]
    for row in c.rows:
        row += [str(k) for k in range(extra)]


def huge_value(c: Case, rng: random.Random) -> None:
    row = pick_row(c, rng)
    row[rng.randrange(len(row))] = rng.choice('xy,"\n') * rng.choice([4097, 131_073, 140_000])


def huge_header_cell(c: Case, rng: random.Random) -> None:
    position = rng.randrange(len(c.header) + 1)
    c.header.insert(position, "Long " + "h" * rng.choice([65_537, 70_000]))
    for row in c.rows:
        row.insert(position, "long")


def odd_characters(c: Case, rng: random.Random) -> None:
    for _ in range(rng.randint(1, 4)):
        target = pick_row(c, rng) if rng.random() < 0.85 else c.header
        i = rng.randrange(len(target))
        j = rng.randint(0, len(target[i]))
        target[i] = target[i][:j] + rng.choice(ODD_CHARS) + target[i][j:]


def repeated_row(c: Case, rng: random.Random) -> None:
    c.rows.insert(rng.randrange(len(c.rows) + 1), list(pick_row(c, rng)))


def spaces_and_boms_in_values(c: Case, rng: random.Random) -> None:
    row = pick_row(c, rng)
    i = rng.randrange(len(row))
    row[i] = rng.choice([" ", "\ufeff", "\t"]) + row[i] + rng.choice(["", " "])


ROW_MUTATIONS: list[Callable[[Case, random.Random], None]] = [
    ragged_row,
    every_row_ragged,
    blank_and_whitespace_rows,
    header_only,
    odd_header_name,
    many_columns,
    huge_value,
    huge_header_cell,
    odd_characters,
    repeated_row,
    spaces_and_boms_in_values,
]


# Byte-level mutations: change the written file.


def positions(data: bytes, rng: random.Random, byte: bytes | None = None) -> list[int]:
    if byte is None:
        return [rng.randint(0, len(data))]
    found = [m.start() for m in re.finditer(re.escape(byte), data)]
    return [rng.choice(found)] if found else []


def stray_quote(data: bytes, rng: random.Random) -> bytes:
    at = positions(data, rng)[0]
    return data[:at] + b'"' + data[at:]


def dropped_quote(data: bytes, rng: random.Random) -> bytes:
    for at in positions(data, rng, b'"'):
        return data[:at] + data[at + 1 :]
    return stray_quote(data, rng)


def unclosed_quote_at_field_start(data: bytes, rng: random.Random) -> bytes:
    starts = [m.end() for m in re.finditer(rb"[,;\t|\n\r]", data)]
    at = rng.choice(starts) if starts else 0
    return data[:at] + b'"' + data[at:]


def text_after_closing_quote(data: bytes, rng: random.Random) -> bytes:
    ends = [m.start() + 1 for m in re.finditer(rb'"(?=[,;\t|\r\n]|$)', data)]
    if not ends:
        return stray_quote(data, rng)
    at = rng.choice(ends)
    return data[:at] + rng.choice([b"x", b" ", b'"x', b"\xff"]) + data[at:]


def mixed_line_ends(data: bytes, rng: random.Random) -> bytes:
    return re.sub(rb"\r\n|\r|\n", lambda m: rng.choice([b"\n", b"\r\n", b"\r", b"\n\n"]), data)


def undecodable_bytes(data: bytes, rng: random.Random) -> bytes:
    at = positions(data, rng)[0]
    bad = rng.choice([b"\xff", b"\xc3", b"\xe9", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf0\x9f"])
    return data[:at] + bad + data[at:]


def foreign_encoding(data: bytes, rng: random.Random) -> bytes:
    text = data.decode("utf-8", "surrogateescape")
    encoding = rng.choice(["cp1252", "latin-1", "utf-16", "utf-16-le", "utf-32"])
    return text.encode(
        encoding, errors="replace" if encoding in ("cp1252", "latin-1") else "surrogatepass"
    )


def truncated(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randint(0, len(data))]


def nul_bytes(data: bytes, rng: random.Random) -> bytes:
    for _ in range(rng.randint(1, 3)):
        at = positions(data, rng)[0]
        data = data[:at] + b"\0" + data[at:]
    return data


def byte_order_marks(data: bytes, rng: random.Random) -> bytes:
    starts = [0] + [m.end() for m in re.finditer(rb"\r\n|\r|\n", data)]
    at = rng.choice(starts)
    return data[:at] + BOM * rng.randint(1, 2) + data[at:]


def repeated_line(data: bytes, rng: random.Random) -> bytes:
    lines = re.split(rb"(?<=\n)|(?<=\r)(?!\n)", data)
    i = rng.randrange(len(lines))
    return b"".join([*lines[: i + 1], lines[i], *lines[i + 1 :]])


BYTE_MUTATIONS: list[Callable[[bytes, random.Random], bytes]] = [
    stray_quote,
    dropped_quote,
    unclosed_quote_at_field_start,
    text_after_closing_quote,
    mixed_line_ends,
    undecodable_bytes,
    foreign_encoding,
    truncated,
    nul_bytes,
    byte_order_marks,
    repeated_line,
]


def generate(seed: int) -> Case:
    """Case ``seed``: a valid file (one case in ten is left so) with a few mutations."""
    rng = random.Random(seed)
    case = base_case(seed, rng)
    plain = seed % 10 == 0
    for mutate in [] if plain else rng.sample(ROW_MUTATIONS, rng.choice([0, 1, 1, 2])):
        mutate(case, rng)
        case.mutations.append(mutate.__name__)
    buf = io.StringIO()
    writer = csv.writer(
        buf, delimiter=case.delimiter, lineterminator=case.line_end, quoting=case.quoting
    )
    writer.writerow(case.header)
    writer.writerows(case.rows)
    data = buf.getvalue().encode("utf-8")
    byte_mutations = [] if plain else rng.sample(BYTE_MUTATIONS, rng.choice([0, 1, 1, 2]))
    if not case.mutations and not byte_mutations and not plain:
        byte_mutations = [rng.choice(BYTE_MUTATIONS)]
    for mutate_bytes in byte_mutations:
        data = mutate_bytes(data, rng)
        case.mutations.append(mutate_bytes.__name__)
    case.data = data
    assert len(data) <= MAX_CASE_BYTES, (seed, case.mutations, len(data))
    return case


def test_the_generator_covers_every_mutation() -> None:
    made = [m for seed in range(CASES) for m in generate(seed).mutations]
    for mutation in ROW_MUTATIONS + BYTE_MUTATIONS:
        assert made.count(mutation.__name__) >= 10, mutation.__name__


# --- running a case through the CLI --------------------------------------------------------------

# A refusal names a line and a column, or it is about the whole file: these reasons.
WHOLE_FILE = re.compile(
    r"file is empty|has a header but no data rows|no valid rows to mint"
    r"|is UTF-16 or UTF-32 text|line \d+: header is not valid UTF-8|line 1: header line is empty"
    r"|line 1: header contains NUL|line 1: required column '\w+' is missing"
    r"|line 1: column \d+ \(.*\) has no usable name|line 1: columns '.*' and '.*' both mean"
    r"|line 1: column '.*' is reserved|line 1: the header has [\d,]+ columns"
)
QUOTING = re.compile(r": line (\d+): column (\d+)(?: \('\w+'\))?: .*quote")
REJECTED_ROW = re.compile(r": line (\d+): column '[^']*': value .*; batch refused: ")


@pytest.fixture(scope="module", autouse=True)
def cli_built_once() -> Iterator[None]:
    """The ``cli`` fixture, minus typer rebuilding the click command on every call (most
    of the time of a refused file): built once for the module, it runs the same way."""
    command = typer.main.get_command(app)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(typer.testing, "_get_command", lambda _app: command)
        yield


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One store and key for every case (serials are unique per case): (store, key file)."""
    base = tmp_path_factory.mktemp("hostile")
    init_keyring(base / "keys.json")
    return base / "store", base / "keys.json"


def mint(cli: Any, shared: tuple[Path, Path], path: Path, *args: object) -> Any:
    store, key_file = shared
    return cli(
        "batch",
        "create",
        path,
        "--json",
        "--workers",
        "1",
        "--store",
        store,
        "--key-file",
        key_file,
        *args,
    )


def minted_rows(store: Path, batch_id: str) -> list[dict[str, str]]:
    parts = sorted((store / "batches" / batch_id / "products").glob("part-*.parquet"))
    rows = [r for p in parts for r in pq.read_table(p).to_pylist()]
    assert [r["leaf_index"] for r in rows] == list(range(len(rows)))
    return [{k: v for k, v in r.items() if k not in ("leaf_index", "token", "url")} for r in rows]


def read_rejects(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def expected_record(header: list[str], fields: list[str]) -> dict[str, str]:
    """A row as provmint must store it: every value as read, the GTIN as 14 digits."""
    record = {normalize_header(h): v for h, v in zip(header, fields, strict=True)}
    record["gtin"] = record["gtin"].strip().rjust(14, "0")
    return record


def check_minted(r: Any, oracle: Oracle, store: Path, rejects_path: Path) -> None:
    assert oracle.records is not None, "minted a file the csv module cannot read"
    assert oracle.records[0][0] == 1, "minted a file whose first line is not its header"
    summary = json.loads(r.stdout)
    rows = oracle.rows
    assert summary["rows"] == len(rows)
    rejects = read_rejects(rejects_path) if summary["rejected"] else []
    lines = {i: line for i, (line, _) in enumerate(rows, start=1)}
    for reject in rejects:  # every problem is reported where the csv module finds the row
        assert int(reject["line"]) == lines[int(reject["row"])], reject
    rejected = {int(x["row"]) for x in rejects}
    assert summary["products"] + summary["rejected"] == summary["rows"] == len(rows)
    width = len(oracle.header)
    ragged = {i for i, (_, fields) in enumerate(rows, start=1) if len(fields) != width}
    assert {int(x["row"]) for x in rejects if x["code"] == "ragged_row"} == ragged
    expected = [
        expected_record(oracle.header, fields)
        for i, (_, fields) in enumerate(rows, start=1)
        if i not in rejected
    ]
    assert minted_rows(store, summary["batch_id"]) == expected


def check_refused(r: Any, oracle: Oracle, rejects_path: Path) -> None:
    message = one_error(r, EXIT_REJECTED)
    if (quoting := QUOTING.search(message)) is not None:
        assert oracle.error_lines is not None, f"refused a file the csv module reads: {message}"
        first, last = oracle.error_lines
        assert first <= int(quoting.group(1)) <= last, (message, oracle.error_lines)
    elif (row := REJECTED_ROW.search(message)) is not None:
        assert oracle.records is not None, f"the csv module cannot read this file: {message}"
        rejects = read_rejects(rejects_path)
        lines = {i: line for i, (line, _) in enumerate(oracle.rows, start=1)}
        assert int(row.group(1)) == lines[min(int(x["row"]) for x in rejects)], message
        for reject in rejects:
            assert int(reject["line"]) == lines[int(reject["row"])], reject
    else:
        assert WHOLE_FILE.search(message), f"not a clear refusal: {message}"
        if oracle.records is None:  # an unreadable file is refused for its header or quotes
            assert not re.search("file is empty|no data rows|no valid rows", message), message


@pytest.mark.parametrize("seed", range(CASES), ids=lambda s: f"case{s:03d}")
def test_generated_hostile_file(cli, shared, tmp_path: Path, seed: int) -> None:
    mint_case(cli, shared, tmp_path, seed)


@pytest.mark.parametrize("seed", range(0, CASES, 5), ids=lambda s: f"case{s:03d}")
def test_generated_hostile_file_read_in_tiny_blocks(
    cli, shared, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    # The CLI reads with the default block size, looked up at each call: 64 bytes here.
    monkeypatch.setattr(provmint.ingest, "BLOCK_BYTES", 64)
    mint_case(cli, shared, tmp_path, seed)


def mint_case(cli: Any, shared: tuple[Path, Path], tmp_path: Path, seed: int) -> None:
    """Mint generated case ``seed`` through the CLI and hold the outcome to the oracle."""
    case = generate(seed)
    path = tmp_path / f"case{seed:03d}.csv"
    path.write_bytes(case.data)
    rejects_path = tmp_path / "rejects.csv"
    skip = seed % 3 != 0
    r = mint(cli, shared, path, "--rejects", rejects_path, *(["--skip-invalid"] if skip else []))
    oracle = read_as_standard(case.data)
    assert "Traceback" not in r.stdout + r.stderr, case.mutations
    assert r.exception is None or isinstance(r.exception, SystemExit), (
        case.mutations,
        repr(r.exception),
    )
    assert r.exit_code in (EXIT_OK, EXIT_REJECTED), (case.mutations, r.stderr)
    if r.exit_code == EXIT_OK:
        check_minted(r, oracle, shared[0], rejects_path)
    else:
        check_refused(r, oracle, rejects_path)


# --- the streaming reader, against the csv module, in tiny blocks ---------------------------------


def decoded(value: str | bytes) -> str:
    """A value as the oracle holds it (undecodable bytes as surrogate escapes)."""
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


def check_refusal(message: str, oracle: Oracle) -> None:
    """A refusal of the whole file names the quote the csv module stumbles on, or is
    about the whole file."""
    if quoting := re.search(r"line (\d+): column (\d+)(?: \('\w+'\))?: .*quote", message):
        assert oracle.error_lines is not None, f"refused a file the csv module reads: {message}"
        first, last = oracle.error_lines
        assert first <= int(quoting.group(1)) <= last, (message, oracle.error_lines)
    else:
        assert WHOLE_FILE.search(message), f"not a clear refusal: {message}"
        if oracle.records is None:
            assert not re.search("file is empty|no data rows", message), message
        elif "no data rows" in message:
            assert all(not "".join(f).strip(" \t\ufeff") for _, f in oracle.rows)


def stream_matches_oracle(path: Path, block_bytes: int, chunk_rows: int) -> str | None:
    """Read ``path`` with the streaming reader (in blocks of ``block_bytes``, chunks of
    ``chunk_rows`` rows) and hold everything it says to the oracle: the rows of the
    header's width and their record numbers, the ragged records, the physical line of
    every record (second pass), the size and SHA-256 of the file. Returns the refusal
    message, if the file is refused."""
    data = path.read_bytes()
    oracle = read_as_standard(data)
    try:
        with open_products(path, block_bytes=block_bytes, chunk_rows=chunk_rows) as reader:
            chunks = list(reader)
    except (InputFileError, MissingColumnError) as exc:
        check_refusal(str(exc).removeprefix(f"{path}: "), oracle)
        return str(exc)
    assert oracle.records is not None, "read a file the csv module cannot read"
    assert [normalize_header(h) for h in oracle.header] == list(reader.names)
    width = len(oracle.header)
    records = list(enumerate(oracle.rows, start=1))
    good = [(record, fields) for record, (_, fields) in records if len(fields) == width]
    assert all(c.table.num_rows == chunk_rows for c in chunks[:-1])
    assert len(chunks) > 0 and chunks[-1].table.num_rows <= chunk_rows
    assert [c.index for c in chunks] == list(range(len(chunks)))
    rows = [[decoded(v) for v in row.values()] for c in chunks for row in c.table.to_pylist()]
    assert rows == [fields for _, fields in good]
    assert [r for c in chunks for r in c.records.tolist()] == [record for record, _ in good]
    ragged = [record for record, (_, fields) in records if len(fields) != width]
    problems = [p for c in chunks for p in c.problems]
    assert [p.record for p in problems] == ragged
    assert {p.code for p in problems} <= {"ragged_row"}
    last = 0
    for c in chunks:  # a chunk tells the problems up to its last row
        upto = c.records[-1] if c.records.size and c is not chunks[-1] else len(records)
        assert all(last < p.record <= upto for p in c.problems)
        last = upto
    assert reader.records == len(records)
    assert reader.bytes_read == len(data)
    assert reader.sha256 == hashlib.sha256(data).hexdigest()
    lines = record_lines(
        path, range(1, len(records) + 2), block_bytes=block_bytes, expect_sha256=reader.sha256
    )
    assert lines == {record: line for record, (line, _) in records}
    return None


@pytest.mark.parametrize("seed", range(CASES), ids=lambda s: f"case{s:03d}")
def test_generated_hostile_file_streamed(tmp_path: Path, seed: int) -> None:
    """Every generated file, read in blocks of 64 bytes and of a random size, in random
    chunks: what the csv module reads, and the same answer as in big blocks."""
    case = generate(seed)
    path = tmp_path / f"case{seed:03d}.csv"
    path.write_bytes(case.data)
    rng = random.Random(seed)
    outcome = stream_matches_oracle(path, 1 << 20, rng.randint(1, 5))
    small = rng.randint(1, 63) if len(case.data) < 1 << 14 else rng.randint(65, 4096)
    for block in (64, small):
        assert stream_matches_oracle(path, block, rng.randint(1, 5)) == outcome, case.mutations


PIECES = [
    "a",
    "b",
    " ",
    '"',
    '""',
    ",",
    ";",
    "\t",
    "|",
    "\n",
    "\r",
    "\r\n",
    "\0",
    "é",
    "日",
    "\U0001f600",
    "\ufeff",
    "\x85",
    "\x0b",
]


@pytest.fixture(scope="module")
def read_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the hypothesis examples are written (one file, rewritten each time)."""
    return tmp_path_factory.mktemp("readers")


@settings(max_examples=400, deadline=None)
@given(
    body=st.lists(st.sampled_from(PIECES), max_size=30).map("".join),
    delimiter=st.sampled_from(DELIMITERS),
    line_end=st.sampled_from(["\n", "\r\n", "\r"]),
    encoding=st.sampled_from(["utf-8", "utf-8", "cp1252"]),
    block=st.integers(1, 40),
    chunk_rows=st.integers(1, 4),
)
@example(body='a"\n",x\n', delimiter=",", line_end="\n", encoding="utf-8", block=64, chunk_rows=2)
@example(body='"ab"c,d\n', delimiter=",", line_end="\n", encoding="utf-8", block=64, chunk_rows=2)
@example(
    body='x,"a""b"\r\n"c\rd",e,f\n"',
    delimiter=",",
    line_end="\r",
    encoding="utf-8",
    block=17,
    chunk_rows=1,
)
@example(body='a,"b\nc,d\n', delimiter=",", line_end="\n", encoding="cp1252", block=5, chunk_rows=1)
@example(
    body="\ufeff;;\n\ufeff\na;b;c",
    delimiter=";",
    line_end="\n",
    encoding="utf-8",
    block=2,
    chunk_rows=1,
)  # BOMs
@example(
    body='a,"\r\n",b\r\n', delimiter=",", line_end="\r\n", encoding="utf-8", block=16, chunk_rows=1
)  # a block ends between the CR and the LF of a quoted line end
def test_rows_are_read_as_the_csv_module_reads_them(
    read_dir: Path,
    body: str,
    delimiter: str,
    line_end: str,
    encoding: str,
    block: int,
    chunk_rows: int,
) -> None:
    """The streaming reader, at any block and chunk size, and parse_csv keep exactly the
    csv module's rows of the header's width, count the others, number every record's line
    alike, and refuse a file the csv module cannot read with the line and column of the
    quote."""
    data = (
        delimiter.join(["gtin", "serial", "name"]).encode()
        + line_end.encode()
        + body.encode(encoding, errors="replace")
    )
    path = read_dir / "file.csv"
    path.write_bytes(data)
    oracle = read_as_standard(data)
    refusal = stream_matches_oracle(path, block, chunk_rows)
    assert stream_matches_oracle(path, 1 << 20, chunk_rows) == refusal
    try:
        parsed = parse_csv(path, block_bytes=block)
    except InputFileError as exc:
        assert str(exc) == refusal
        return
    assert refusal is None
    assert oracle.records is not None
    got = [[decoded(v) for v in row.values()] for row in parsed.table.to_pylist()]
    assert got == [f for _, f in oracle.rows if len(f) == 3]
    assert len(parsed.ragged_texts) == sum(len(f) != 3 for _, f in oracle.rows)
    assert parsed.record_lines.tolist() == [line for line, _ in oracle.rows]


# --- the reproducers of issue 7, through the CLI ----------------------------------------------

G = GTINS[1]


def test_a_file_whose_only_row_is_ragged(cli, shared, tmp_path: Path) -> None:
    path = tmp_path / "only.csv"
    path.write_text(f"gtin,serial\n{G},A1,x\n")
    one_error(
        mint(cli, shared, path),
        EXIT_REJECTED,
        "line 2: column '(row)'",
        "row has 3 fields; the header has 2",
    )
    one_error(mint(cli, shared, path, "--skip-invalid"), EXIT_REJECTED, "no valid rows to mint")


def test_every_row_ragged_both_ways(cli, shared, tmp_path: Path) -> None:
    path = tmp_path / "all.csv"
    path.write_text(f"gtin,serial,lot\n{G},A1\n\n{G},A2,L1,x\n{G}\n")
    r = mint(cli, shared, path, "--rejects", tmp_path / "r.csv")
    one_error(r, EXIT_REJECTED, "line 2: column '(row)'", "3 of 3 rows are invalid")
    assert [(x["line"], x["code"]) for x in read_rejects(tmp_path / "r.csv")] == [
        ("2", "ragged_row"),
        ("4", "ragged_row"),
        ("5", "ragged_row"),
    ]


def test_an_unclosed_quote_is_refused_where_it_opens(cli, shared, tmp_path: Path) -> None:
    path = tmp_path / "unclosed.csv"
    path.write_text(f'gtin,serial,name\n{G},C1,"x\n{G},C2,y\n{G},C3,z\n')
    one_error(
        mint(cli, shared, path),
        EXIT_REJECTED,
        "line 2: column 3 ('name'): a quoted value starts here and its quote is never closed",
    )


def test_text_after_a_closing_quote_is_refused(cli, shared, tmp_path: Path) -> None:
    path = tmp_path / "after.csv"
    path.write_text(f'gtin,serial,name\n{G},D1,ok\n{G},D2,"12" pizza\n')
    one_error(
        mint(cli, shared, path),
        EXIT_REJECTED,
        "line 3: column 3 ('name'): ' ' follows the closing quote of a quoted value",
    )


def test_a_rejected_value_over_the_csv_field_limit(cli, shared, tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_text(f"gtin,serial,note\n{G},E1,ok\n{G},E2,{'n' * 131_073}\n")
    r = mint(cli, shared, path, "--skip-invalid", "--rejects", tmp_path / "r.csv")
    assert r.exit_code == EXIT_OK, r.output
    assert [(x["line"], x["column"], x["code"]) for x in read_rejects(tmp_path / "r.csv")] == [
        ("3", "note", "value_too_long")
    ]


def test_a_header_cell_over_64_kib_hides_nothing(cli, shared, tmp_path: Path) -> None:
    path = tmp_path / "wide-cell.csv"
    path.write_text(f"gtin,{'h' * 70_000},serial\n{G},long,F1\n")
    r = mint(cli, shared, path)
    assert r.exit_code == EXIT_OK, r.output
    assert minted_rows(shared[0], json.loads(r.stdout)["batch_id"]) == [
        {"gtin": G, "h" * 64: "long", "serial": "F1"}
    ]


def test_a_100k_column_header_is_refused_for_its_width(cli, shared, tmp_path: Path) -> None:
    path = tmp_path / "100k.csv"
    names = ",".join(f"c{i}" for i in range(100_000))
    path.write_text(f"gtin,serial,{names}\n{G},G1{',x' * 100_000}\n")
    one_error(
        mint(cli, shared, path),
        EXIT_REJECTED,
        "line 1: the header has 100,002 columns",
        f"at most {MAX_FIELDS}",
    )


# --- special and oversized files ---------------------------------------------------------------

SPECIAL = "is {kind}, not a regular file"


def run_real(*args: object, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "provmint", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line(p: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert "Traceback" not in p.stderr
    assert p.returncode == EXIT_REJECTED, p.stderr
    errors = [ln for ln in p.stderr.splitlines() if not ln.startswith("hint: ")]
    assert len(errors) == 1 and errors[0].startswith("error: "), p.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "pipe.csv"
    os.mkfifo(path)
    yield path


def test_a_fifo_is_refused_without_blocking(keyed, fifo: Path) -> None:
    # Nobody ever writes to the FIFO: opening it for reading would wait forever.
    one_line(
        run_real("batch", "create", fifo, "--workers", "1"),
        SPECIAL.format(kind="a named pipe (FIFO)"),
    )


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_an_endless_device_is_refused_without_reading(keyed, tmp_path: Path, device: str) -> None:
    link = tmp_path / "products.csv"
    link.symlink_to(device)  # a harmless-looking name in a temp dir, pointing at the device
    one_line(
        run_real("batch", "create", link, "--workers", "1"),
        str(link),
        SPECIAL.format(kind="a character device"),
    )


def test_other_special_files_are_refused(cli, shared, tmp_path: Path) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "sock.csv"))
    try:
        one_error(
            mint(cli, shared, tmp_path / "sock.csv"), EXIT_REJECTED, SPECIAL.format(kind="a socket")
        )
    finally:
        listener.close()
    one_error(
        mint(cli, shared, "/dev/null"), EXIT_REJECTED, SPECIAL.format(kind="a character device")
    )
    (tmp_path / "dir.csv").mkdir()
    one_error(mint(cli, shared, tmp_path / "dir.csv"), EXIT_REJECTED, "is a directory")


def test_a_huge_file_is_read_as_a_stream_and_refused_at_its_first_bad_record(
    cli, shared, tmp_path: Path
) -> None:
    """No size cap: a batch is read chunk by chunk. A 1 GiB sparse file (zeros after two
    lines) is refused at the record where the zeros start, without reading the rest."""
    path = tmp_path / "huge.csv"
    with open(path, "wb") as fh:  # sparse: no disk space, and reading it would take long
        fh.write(f"gtin,serial\n{G},H1\n".encode())
        fh.truncate(MAX_INPUT_BYTES + 1)
    one_error(
        mint(cli, shared, path),
        EXIT_REJECTED,
        f"{path}: line 3: the record that starts here takes more than 8 MiB",
    )


def test_the_size_limit_also_holds_when_the_size_is_not_known(tmp_path: Path) -> None:
    # procfs files say they are empty; the read stops one byte past the limit.
    status = Path("/proc/self/status")
    size = len(status.read_bytes())
    with pytest.raises(InputFileError, match=f"is over {size // 2:,} bytes"):
        parse_csv(status, max_bytes=size // 2)
    with pytest.raises(MissingColumnError, match="required column 'gtin' is missing"):
        parse_csv(status, max_bytes=size * 2)
