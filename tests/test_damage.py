"""Damaged stores: ``verify --batch`` catches every byte flip that changes what a stored
file means, and every command that reads a damaged part says so in one line.

The byte-flip test mints the example into a fresh store, then flips bytes of the Parquet
part, ``manifest.json``, ``tree.bin``, the record part and the index runs one at a time
(each restored before the next) and audits the batch through the library after each. A
random sample by default (the seed is in every failure message); ``PROVMINT_FLIPS=all``
flips every byte and
``PROVMINT_FLIP_SEED=N`` replays a run. The catalog is a DuckDB file with block
checksums, so its damage is made inside the blocks holding the batch's row and the list
of index runs, and by editing every value of those rows through SQL.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import example_store, one_error

from provmint.audit import audit_batch
from provmint.config import Settings
from provmint.errors import EXIT_ERROR, StoreCorruptError
from provmint.verify import Verdict

GTIN = "09520123450014"
SERIAL = "546CAWQDCR56"  # leaf 0
SAMPLES = {"part": 160, "manifest": 60, "tree": 60, "records": 80, "key run": 40, "token run": 40}
DUCKDB_HEADER = 3 * 4096
DUCKDB_BLOCK = 256 * 1024


@dataclass(frozen=True)
class Minted:
    """A pristine store holding the example, minted once per module."""

    base: Path
    batch_id: str

    @property
    def batch_dir(self) -> Path:
        return self.base / "store" / "batches" / self.batch_id


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Minted:
    base = tmp_path_factory.mktemp("pristine")
    with example_store(base) as (_, summary):
        return Minted(base, summary.batch_id)


@pytest.fixture
def store_copy(pristine: Minted, tmp_path: Path) -> Iterator[tuple[Settings, Minted]]:
    """A copy of the pristine store where the test runs (the CLI's store and key file)."""
    shutil.copytree(pristine.base / "store", tmp_path / "store")
    (tmp_path / "keys").mkdir(exist_ok=True)
    shutil.copy2(pristine.base / "keys" / "keys.json", tmp_path / "keys" / "keys.json")
    cfg = Settings(store=tmp_path / "store", key_file=tmp_path / "keys" / "keys.json", workers=1)
    yield cfg, Minted(tmp_path, pristine.batch_id)


def rng_and_seed() -> tuple[random.Random, int]:
    seed = int(os.environ.get("PROVMINT_FLIP_SEED") or random.SystemRandom().randrange(2**32))
    return random.Random(seed), seed


# --------------------------------------------------------------------------- meaning


def parquet_meaning(path: Path) -> Any:
    """What a Parquet part means to its readers: the Arrow schema (metadata included),
    the Parquet columns, the row groups, every value, and whether the statistics that
    query engines prune with are true. A file that cannot be decoded means nothing."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        with open(path, "rb") as fh:
            file = pq.ParquetFile(fh)
            table = file.read()
            table.validate(full=True)
            meta = file.metadata
            truthful = True
            offset = 0
            for g in range(meta.num_row_groups):
                group = meta.row_group(g)
                for i in range(group.num_columns):
                    stats = group.column(i).statistics
                    if stats is None:
                        continue
                    values = table.column(group.column(i).path_in_schema).slice(
                        offset, group.num_rows
                    )
                    if stats.has_null_count and stats.null_count != values.null_count:
                        truthful = False
                    if stats.has_min_max:
                        bounds = pc.min_max(values)
                        truthful &= (
                            stats.min <= bounds["min"].as_py()
                            and bounds["max"].as_py() <= stats.max
                        )
                offset += group.num_rows
            return (
                table.schema.to_string(show_field_metadata=True, show_schema_metadata=True),
                [
                    (
                        c.name,
                        c.physical_type,
                        str(c.logical_type),
                        c.max_definition_level,
                        c.max_repetition_level,
                    )
                    for c in file.schema
                ],
                [meta.row_group(g).num_rows for g in range(meta.num_row_groups)],
                table.to_pylist(),
                truthful,
            )
    except Exception as exc:  # any failure to decode: the file means nothing
        return f"unreadable ({type(exc).__name__})"


def json_meaning(path: Path) -> Any:
    """The JSON value of the manifest (a repeated key makes it ambiguous: unreadable)."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        if len({k for k, _ in items}) != len(items):
            raise ValueError("repeated key")
        return dict(items)

    try:
        return json.loads(path.read_bytes().decode("utf-8"), object_pairs_hook=pairs)
    except ValueError as exc:
        return f"unreadable ({type(exc).__name__})"


def bytes_meaning(path: Path) -> bytes:
    """Every byte of the tree file and of an index run means something (their headers
    have no free bytes: reserved bytes must be zero)."""
    return path.read_bytes()


def records_meaning(path: Path) -> Any:
    """The rows a record part holds (a zstd frame can change and still decode the same)."""
    from provmint.store.records import RecordPart

    try:
        with RecordPart.open(path) as part:
            return [part.get(i) for i in range(len(part))]
    except Exception as exc:
        return f"unreadable ({type(exc).__name__})"


# --------------------------------------------------------------------------- byte flips


def flip_and_audit(
    cfg: Settings, batch_id: str, path: Path, offset: int, mask: int, meaning: Callable[[Path], Any]
) -> str | None:
    """Flip one byte, audit, restore. None when the audit caught the flip or the file
    still means exactly what it meant; otherwise what went wrong."""
    original = path.read_bytes()
    before = meaning(path)
    changed = bytearray(original)
    changed[offset] ^= mask
    path.write_bytes(bytes(changed))
    try:
        report = audit_batch(cfg, batch_id, check_tokens=True, workers=1)
        after = meaning(path)
    except Exception as exc:  # a crash is the failure this test looks for
        return f"{path.name} byte {offset} ^ {mask:#04x}: crash {type(exc).__name__}: {exc}"
    finally:
        path.write_bytes(original)
    if report.verdict == Verdict.INVALID:
        if not report.reason.startswith("damaged: "):
            return f"{path.name} byte {offset} ^ {mask:#04x}: invalid but {report.reason!r}"
        return None
    if after == before:
        return None
    return (
        f"{path.name} byte {offset} ^ {mask:#04x}: the file changed meaning, but the "
        f"audit says {report.verdict.value}: {report.reason}"
    )


def run_file(minted: Minted, kind: str) -> Path:
    (path,) = (minted.base / "store" / "index").glob(f"{kind}-*.run")
    return path


@pytest.mark.parametrize("target", ["part", "manifest", "tree", "records", "key run", "token run"])
def test_every_meaningful_byte_flip_is_caught(store_copy, pristine: Minted, target: str) -> None:
    cfg, minted = store_copy
    path, meaning = {
        "part": (minted.batch_dir / "products" / "part-00000.parquet", parquet_meaning),
        "manifest": (minted.batch_dir / "manifest.json", json_meaning),
        "tree": (minted.batch_dir / "tree.bin", bytes_meaning),
        "records": (minted.batch_dir / "records" / "part-00000.rec", records_meaning),
        "key run": (run_file(minted, "key"), bytes_meaning),
        "token run": (run_file(minted, "token"), bytes_meaning),
    }[target]
    intact = audit_batch(cfg, minted.batch_id, check_tokens=True, workers=1)
    assert intact.verdict == Verdict.PENDING, intact.reason
    rng, seed = rng_and_seed()
    size = path.stat().st_size
    everything = os.environ.get("PROVMINT_FLIPS") == "all"
    offsets = range(size) if everything else sorted(rng.sample(range(size), SAMPLES[target]))
    failures = []
    for offset in offsets:
        problem = flip_and_audit(cfg, minted.batch_id, path, offset, rng.randrange(1, 256), meaning)
        if problem is not None:
            failures.append(problem)
    assert failures == [], f"seed {seed}: {len(failures)} flips not caught:\n" + "\n".join(
        failures[:20]
    )
    assert path.read_bytes() == (pristine.base / path.relative_to(minted.base)).read_bytes()


def test_a_flip_in_every_column_of_the_part_is_caught(store_copy) -> None:
    """Each column's values, found in the file, flipped: the audit names the damage
    (the sample above may miss a small column)."""
    import pyarrow.parquet as pq

    cfg, minted = store_copy
    part = minted.batch_dir / "products" / "part-00000.parquet"
    data = part.read_bytes()
    row = pq.read_table(part).to_pylist()[4]
    for column, value in row.items():
        raw = struct.pack("<q", value) if column == "leaf_index" else value.encode()
        offset = data.find(raw)
        if offset < 0:  # dictionary-encoded or compressed: the sampled flips cover it
            continue
        problem = flip_and_audit(
            cfg, minted.batch_id, part, offset + len(raw) - 1, 0x01, parquet_meaning
        )
        assert problem is None, (column, problem)


# --------------------------------------------------------------------------- the catalog


def catalog_rows(cfg: Settings, batch_id: str) -> dict[str, list[dict[str, Any]]]:
    import duckdb

    con = duckdb.connect(str(cfg.store / "catalog.duckdb"), read_only=True)
    try:
        seq = con.execute("SELECT seq FROM batches WHERE batch_id = ?", [batch_id]).fetchone()[0]
        out = {}
        for table, where in (("batches", "seq = ?"), ("index_runs", "? IS NOT NULL")):
            cursor = con.execute(f"SELECT rowid, * FROM {table} WHERE {where}", [seq])
            names = [d[0] for d in cursor.description]
            out[table] = [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
        return out
    finally:
        con.close()


def changed_value(value: Any, rng: random.Random, bits: int) -> Any:
    """The value with one bit flipped (an integer's, or one character's)."""
    if value is None:
        return "x"
    if isinstance(value, int):
        return value ^ (1 << rng.randrange(bits))
    i = rng.randrange(len(value))
    flipped = chr(ord(value[i]) ^ 1)
    return value[:i] + flipped + value[i + 1 :]


COLUMN_BITS = {"seq": 30, "part_rows": 30, "parts": 30, "kind": 30, "position": 30, "entries": 30}


def test_every_catalog_value_of_the_batch_is_checked(store_copy) -> None:
    """Every value of the batch's catalog rows (the batches row, and the list of index
    runs), changed by one bit through SQL: the audit says damaged (a changed manifest
    text that still parses to the same manifest, the position of a kind's only run, and
    the sequence number of the only batch, are the changes that mean nothing)."""
    import duckdb

    cfg, minted = store_copy
    catalog = cfg.store / "catalog.duckdb"
    backup = catalog.with_suffix(".backup")
    shutil.copyfile(catalog, backup)
    rng, seed = rng_and_seed()
    failures = []
    for table, rows in catalog_rows(cfg, minted.batch_id).items():
        for row in rows:
            for column, value in row.items():
                if column == "rowid":
                    continue
                new = changed_value(value, rng, COLUMN_BITS.get(column, 62))
                con = duckdb.connect(str(catalog))
                try:
                    con.execute(
                        f"UPDATE {table} SET {column} = ? WHERE rowid = ?", [new, row["rowid"]]
                    )
                except duckdb.Error:  # e.g. a constraint refuses it: nothing to audit
                    continue
                finally:
                    con.close()
                ref = new if column == "batch_id" else minted.batch_id
                try:
                    report = audit_batch(cfg, ref, check_tokens=True, workers=1)
                except Exception as exc:
                    failures.append(f"{table}.{column} {value!r} -> {new!r}: crash {exc!r}")
                    report = None
                finally:
                    shutil.copyfile(backup, catalog)
                if report is None or report.verdict == Verdict.INVALID:
                    continue
                if column == "manifest" and json.loads(new) == json.loads(value):
                    continue
                if column == "position":  # lookups consult every run of a kind
                    continue
                if column == "seq":  # the order of the only batch: swaps are tested below
                    continue
                failures.append(f"{table}.{column} {value!r} -> {new!r}: {report.reason}")
    assert failures == [], f"seed {seed}:\n" + "\n".join(failures)


def test_batches_in_another_order_are_caught(store_copy) -> None:
    """The index numbers products across batches in catalog order (``seq``): two batches
    swapped in the catalog would send lookups to the wrong batch, and the audit of each
    says the index is damaged."""
    import duckdb

    from provmint.batch import mint_batch

    cfg, minted = store_copy
    other = cfg.store.parent / "other.csv"
    other.write_text("gtin,serial\n09520123450014,OTHERSERIAL1\n09520123450014,OTHERSERIAL2\n")
    second = mint_batch(other, settings=cfg).batch_id
    con = duckdb.connect(str(cfg.store / "catalog.duckdb"))
    try:
        con.execute("UPDATE batches SET seq = seq + 100 WHERE batch_id = ?", [minted.batch_id])
    finally:
        con.close()
    for batch_id in (minted.batch_id, second):
        report = audit_batch(cfg, batch_id, workers=1)
        assert report.verdict == Verdict.INVALID, report.reason
        assert report.reason.startswith("damaged: key index: "), report.reason


def block_holding(data: bytes, needle: bytes) -> int:
    offset = data.find(needle)
    assert offset >= DUCKDB_HEADER, needle
    return DUCKDB_HEADER + (offset - DUCKDB_HEADER) // DUCKDB_BLOCK * DUCKDB_BLOCK


def test_flips_in_the_catalog_blocks_of_the_batch_are_caught(store_copy) -> None:
    """DuckDB checksums its blocks: a flip anywhere in a block holding the batch's row or
    the list of index runs makes that block unreadable, which the audit reports."""
    cfg, minted = store_copy
    catalog = cfg.store / "catalog.duckdb"
    data = catalog.read_bytes()
    rows = catalog_rows(cfg, minted.batch_id)
    blocks = {
        "batches": block_holding(data, rows["batches"][0]["source_sha256"].encode()),
        "index_runs": block_holding(data, rows["index_runs"][0]["name"].encode()),
    }
    rng, seed = rng_and_seed()
    for table, start in blocks.items():
        for offset in sorted(rng.sample(range(start, start + DUCKDB_BLOCK), 4)):
            changed = bytearray(data)
            changed[offset] ^= rng.randrange(1, 256)
            catalog.write_bytes(bytes(changed))
            try:
                report = audit_batch(cfg, minted.batch_id, workers=1)
            finally:
                catalog.write_bytes(data)
            assert report.verdict == Verdict.INVALID, (seed, table, offset, report.reason)
            assert report.reason.startswith("damaged: unreadable (Corrupt database file"), (
                seed,
                report.reason,
            )
            assert report.reason.endswith(f"catalog.duckdb table {table}"), report.reason


# --------------------------------------------------------------------------- read paths


def write_part(path: Path, table: Any) -> None:
    import pyarrow.parquet as pq

    pq.write_table(table, path)


def with_column(table: Any, name: str, array: Any) -> Any:
    index = table.schema.get_field_index(name)
    return table.set_column(index, name, array)


def invalid_utf8_serial(table: Any) -> Any:
    """The serial column with one value's bytes made invalid UTF-8 (unvalidated)."""
    import pyarrow as pa

    serials = table.column("serial").combine_chunks()
    offsets, data = serials.buffers()[1], bytearray(serials.buffers()[2].to_pybytes())
    data[0] = 0xFF
    broken = pa.Array.from_buffers(pa.string(), len(serials), [None, offsets, pa.py_buffer(data)])
    return with_column(table, "serial", broken)


DAMAGES: dict[str, Callable[[Path], str]] = {}


def damage(name: str) -> Callable[[Callable[[Path], str]], Callable[[Path], str]]:
    def register(fn: Callable[[Path], str]) -> Callable[[Path], str]:
        DAMAGES[name] = fn
        return fn

    return register


@damage("truncated")
def _truncated(part: Path) -> str:
    part.write_bytes(part.read_bytes()[:-200])
    return "not readable Parquet ("


@damage("garbage")
def _garbage(part: Path) -> str:
    part.write_bytes(random.Random(7).randbytes(part.stat().st_size))
    return "not readable Parquet ("


@damage("missing")
def _missing(part: Path) -> str:
    part.unlink()
    return "the part file is missing"


@damage("size statistics")
def _size_statistics(part: Path) -> str:
    """One flipped byte that pyarrow reports when reading, but that aborts the process
    (an uncaught C++ exception) when the column chunk's metadata is asked for first:
    leaf_index's definition level histogram, a thrift list of two i64 (0 and 9), made a
    list of one binary."""
    data = part.read_bytes()
    histogram = b"\x19\x26\x00\x12"
    assert histogram in data, "pyarrow writes its footer differently now: update this test"
    part.write_bytes(data.replace(histogram, b"\x19\x1b\x00\x12", 1))
    return "not readable Parquet (Definition level histogram size mismatch"


@damage("malformed token")
def _malformed_token(part: Path) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(part)
    tokens = table.column("token").to_pylist()
    tokens[0] = tokens[0][:-1] + "B"  # stray bits in the last character
    write_part(part, with_column(table, "token", pa.array(tokens)))
    return "token of product 0 is malformed"


@damage("invalid utf-8")
def _invalid_utf8(part: Path) -> str:
    import pyarrow.parquet as pq

    write_part(part, invalid_utf8_serial(pq.read_table(part)))
    return "invalid values ("


@damage("leaf order")
def _leaf_order(part: Path) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(part)
    leaves = table.column("leaf_index").to_pylist()
    leaves[0], leaves[1] = leaves[1], leaves[0]
    write_part(part, with_column(table, "leaf_index", pa.array(leaves, pa.int64())))
    return "product 0 is stored as leaf 1"


@damage("missing column")
def _missing_column(part: Path) -> str:
    import pyarrow.parquet as pq

    write_part(part, pq.read_table(part).drop_columns(["expiry"]))
    return "columns ["


@damage("missing row")
def _missing_row(part: Path) -> str:
    import pyarrow.parquet as pq

    table = pq.read_table(part)
    write_part(part, table.slice(0, table.num_rows - 1))
    return "holds 8 products where the batch has 9"


@damage("null value")
def _null_value(part: Path) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(part)
    lots = table.column("lot").to_pylist()
    lots[0] = None
    write_part(part, with_column(table, "lot", pa.array(lots, pa.string())))
    return "lot of product 0 is missing"


READ_PATHS: dict[str, Callable[[Path, str], list[object]]] = {
    "batch export": lambda out, b: [
        "batch",
        "export",
        b,
        "--allow-placeholder",
        "-o",
        out / "labels.csv",
    ],
    "labels": lambda out, b: [
        "labels",
        b,
        "--out",
        out / "labels",
        "--format",
        "none",
        "--allow-placeholder",
    ],
    "proof export --all": lambda out, b: [
        "proof",
        "export",
        "--batch",
        b,
        "--all",
        "-o",
        out / "proofs.jsonl",
    ],
}
LOOKUP_PATHS: dict[str, list[object]] = {
    "product show": ["product", "show", "--gtin", GTIN, "--serial", SERIAL],
    "proof export": ["proof", "export", "--gtin", GTIN, "--serial", SERIAL],
    "scan": ["scan", f"https://id.example.com/01/{GTIN}/21/{SERIAL}"],
}
RECORD_DAMAGES: dict[str, Callable[[bytes], bytes | None]] = {
    "truncated": lambda data: data[:-7],
    "garbage": lambda data: random.Random(7).randbytes(len(data)),
    "missing": lambda data: None,
    "header padding": lambda data: data[:24] + b"\x01" + data[25:],
    "empty": lambda data: b"",
}


@pytest.mark.parametrize("kind", list(DAMAGES))
@pytest.mark.parametrize("command", list(READ_PATHS))
def test_every_read_path_reports_a_damaged_part_in_one_line(
    cli, store_copy, tmp_path: Path, kind: str, command: str
) -> None:
    _, minted = store_copy
    part = minted.batch_dir / "products" / "part-00000.parquet"
    what = DAMAGES[kind](part)
    r = cli(*READ_PATHS[command](tmp_path, minted.batch_id))
    line = one_error(r, EXIT_ERROR, f"damaged: {what}", str(part))
    assert line.startswith("error: damaged: ")
    assert not (tmp_path / "labels.csv").exists() and not (tmp_path / "proofs.jsonl").exists()


@pytest.mark.parametrize("kind", list(RECORD_DAMAGES))
@pytest.mark.parametrize("command", list(LOOKUP_PATHS))
def test_every_lookup_reports_a_damaged_record_part_in_one_line(
    cli, store_copy, kind: str, command: str
) -> None:
    """Point lookups read the record parts (records/): damage there is one line too."""
    _, minted = store_copy
    path = minted.batch_dir / "records" / "part-00000.rec"
    changed = RECORD_DAMAGES[kind](path.read_bytes())
    if changed is None:
        path.unlink()
    else:
        path.write_bytes(changed)
    r = cli(*LOOKUP_PATHS[command])
    line = one_error(r, EXIT_ERROR, "damaged: ", str(path))
    assert line.startswith("error: damaged: ")


@pytest.mark.parametrize("kind", list(DAMAGES))
def test_the_audit_reports_each_damaged_part(cli, store_copy, kind: str) -> None:
    _, minted = store_copy
    part = minted.batch_dir / "products" / "part-00000.parquet"
    what = DAMAGES[kind](part)
    r = cli("verify", "--batch", minted.batch_id)
    assert "Traceback" not in r.stdout + r.stderr
    assert r.exit_code == 3, r.output
    assert r.stdout.rstrip().splitlines()[-1].startswith(f"INVALID: damaged: {what}")


def test_read_part_reads_an_intact_part_and_selects_columns(store_copy) -> None:
    from provmint.store import Store

    cfg, minted = store_copy
    store = Store.open(cfg.store)
    from provmint.products import read_catalog

    with read_catalog(cfg) as (_, con):
        batch = store.batch(con, minted.batch_id)
    full = store.read_part(batch, 0)
    assert full.num_rows == 9 and set(full.column_names) == {"leaf_index", "token", *batch.columns}
    assert store.read_part(batch, 0, ["gtin", "serial"]).column_names == ["gtin", "serial"]
    with pytest.raises(StoreCorruptError) as caught:
        part = store.part_files(batch)[0]
        _missing_row(part)
        store.read_part(batch, 0)
    assert caught.value.message == f"damaged: holds 8 products where the batch has 9, {part}"
