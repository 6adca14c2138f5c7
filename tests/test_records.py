"""provmint.store.records (``provmint-records/1``) and canonical.decode_record.

``tests/vectors/records.json`` and ``tests/vectors/decode_record.json`` were generated once
by :func:`build_vectors` below, which builds every byte from the formats' docstrings (the
compressed blocks with pyarrow's zstd codec at the writer's level, -1, which is the format's
codec); it never calls provmint.store.records or decode_record. To regenerate (only for a
new, versioned format): ``python tests/test_records.py``.

The writer must reproduce the part vectors byte for byte. Should a future zstd compress
differently at the same level, that test (and only that one) fails: the format is still
pinned by the reader tests, and the vectors can be regenerated.
"""

from __future__ import annotations

import json
import random
import struct
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from conftest import LOCAL_VECTORS
from hypothesis import given, settings
from hypothesis import strategies as st
from test_canonical import RECORD, spec_record

from provmint import canonical
from provmint.errors import OutputError, StoreCorruptError
from provmint.store import records
from provmint.store.records import RecordPart, write_records

PART_VECTORS = LOCAL_VECTORS / "records.json"
DECODE_VECTORS = LOCAL_VECTORS / "decode_record.json"
GTIN = "09506000134352"

# --------------------------------------------------------------------------- independent spec


def spec_block(rows: list[tuple[bytes, bytes]]) -> bytes:
    """A block's payload: per row u32be len(record) || record || 16 token bytes."""
    return b"".join(len(r).to_bytes(4, "big") + r + t for r, t in rows)


def spec_part(
    rows: list[tuple[bytes, bytes]],
    *,
    payloads: list[bytes] | None = None,
    header: dict[str, int] | None = None,
) -> bytes:
    """``provmint-records/1``: "PMRECS01" || u32le rows || u32le 64 || u32le blocks ||
    u32le codec 1 || 8 zero bytes, then (blocks + 1) u64le absolute block offsets (the
    last = file length), blocks u32le uncompressed sizes, then the zstd blocks.
    ``payloads`` replaces the block payloads (hostile files); ``header`` its fields."""
    if payloads is None:
        payloads = [spec_block(rows[i : i + 64]) for i in range(0, len(rows), 64)]
    codec = pa.Codec("zstd", compression_level=-1)
    blocks = [codec.compress(p, asbytes=True) for p in payloads]
    fields = {
        "rows": len(rows),
        "block_rows": 64,
        "blocks": len(blocks),
        "codec": 1,
        **(header or {}),
    }
    out = bytearray(b"PMRECS01")
    for name in ("rows", "block_rows", "blocks", "codec"):
        out += fields[name].to_bytes(4, "little")
    out += bytes(8)
    position = len(out) + 8 * (len(blocks) + 1) + 4 * len(blocks)
    for block in blocks:
        out += position.to_bytes(8, "little")
        position += len(block)
    out += position.to_bytes(8, "little")
    for payload in payloads:
        out += len(payload).to_bytes(4, "little")
    for block in blocks:
        out += block
    return bytes(out)


def token(i: int) -> bytes:
    return bytes((i * 37 + j * 11) % 256 for j in range(16))


def vector_parts() -> list[list[tuple[bytes, bytes]]]:
    canonical_records = [
        bytes.fromhex(c["hex"])
        for c in json.loads((LOCAL_VECTORS / "canonical.json").read_text())["records"]
    ]
    many = [
        spec_record(
            {"gtin": GTIN, "serial": f"S{i:05d}", "lot": f"L{i % 3}", "expiry": "2027-01-31"}
        )
        for i in range(130)
    ]
    return [
        [],
        [(canonical_records[0], bytes(16))],
        [(r, token(i)) for i, r in enumerate(canonical_records)],
        [(r, token(i)) for i, r in enumerate(many)],  # blocks of 64, 64 and 2 rows
        [(b"", b"\xff" * 16)] * 65,  # the container takes any bytes, even empty ones
    ]


def h(data: bytes) -> str:
    return data.hex()


def field(name: bytes, value: bytes) -> bytes:
    return bytes([len(name)]) + name + len(value).to_bytes(4, "big") + value


def raw_record(*fields: bytes, count: int | None = None, magic: bytes = b"PMR1") -> bytes:
    return magic + (len(fields) if count is None else count).to_bytes(2, "big") + b"".join(fields)


G = field(b"gtin", GTIN.encode())
S = field(b"serial", b"1")

INVALID_RECORDS: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("magic only", b"PMR1"),
    ("short count", b"PMR1\x00"),
    ("wrong magic", raw_record(G, S, magic=b"PMR2")),
    ("no fields", raw_record()),
    (
        "65 fields",
        raw_record(
            *sorted(
                [G, S, *(field(f"f{i:02d}".encode(), b"") for i in range(63))],
                key=lambda f: f[1 : 1 + f[0]],
            )
        ),
    ),
    ("count above the fields", raw_record(G, S, count=3)),
    ("bytes after the last field", raw_record(G, S) + b"\x00"),
    ("count below the fields", raw_record(G, S, field(b"z", b""), count=2)),
    ("names out of order", raw_record(S, G)),
    ("name repeated", raw_record(G, G, S)),
    ("upper-case name", raw_record(field(b"Gtin", GTIN.encode()), G, S)),
    ("name starting with a digit", raw_record(field(b"1a", b""), G, S)),
    ("name starting with _", raw_record(field(b"_a", b""), G, S)),
    ("empty name", raw_record(field(b"", b""), G, S)),
    ("name of 65 characters", raw_record(field(b"a" * 65, b""), G, S)),
    ("name with a dash", raw_record(field(b"a-b", b""), G, S)),
    ("name with a non-ASCII byte", raw_record(G, field(b"l\xc3\xb6t", b""), S)),
    ("name with a NUL", raw_record(field(b"a\x00", b""), G, S)),
    ("value of 4097 bytes", raw_record(G, field(b"lot", b"a" * 4097), S)),
    ("value not UTF-8", raw_record(G, field(b"lot", b"\xff"), S)),
    ("overlong UTF-8", raw_record(G, field(b"lot", b"\xc0\xaf"), S)),
    ("UTF-8 surrogate", raw_record(G, field(b"lot", b"\xed\xa0\x80"), S)),
    ("cut UTF-8 sequence", raw_record(G, field(b"lot", b"\xe2\x82"), S)),
    ("no serial", raw_record(G)),
    ("no gtin", raw_record(S)),
    ("gtin of 13 digits", raw_record(field(b"gtin", GTIN[1:].encode()), S)),
    ("gtin with a letter", raw_record(field(b"gtin", b"0950600013435A"), S)),
    ("gtin of full-width digits", raw_record(field(b"gtin", "０".encode() * 14), S)),
    ("value past the end", raw_record(G, S)[:-1]),
    ("value length past the end", raw_record(G)[:-16] + b"\x00\x00"),
    ("name past the end", raw_record(G, count=2) + b"\x06seri"),
    ("name length at the end", raw_record(G, count=2) + b"\x06"),
]


def build_vectors() -> tuple[dict[str, Any], dict[str, Any]]:
    parts = {
        "description": "provmint-records/1 parts, built independently of provmint.store.records "
        "(blocks: pyarrow zstd level -1)",
        "parts": [
            {"rows": [[h(r), h(t)] for r, t in rows], "hex": h(spec_part(rows))}
            for rows in vector_parts()
        ],
    }
    decode = {
        "description": "provmint-record/1 bytes that decode_record must refuse (the valid ones "
        "are canonical.json's records)",
        "invalid": [{"why": why, "hex": h(data)} for why, data in INVALID_RECORDS],
    }
    return parts, decode


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """An empty directory of the test's own (tmp_path also holds the isolated config)."""
    path = tmp_path / "work"
    path.mkdir()
    return path


@contextmanager
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as name:
        yield Path(name)


def write(path: Path, rows: list[tuple[bytes, bytes]]) -> None:
    write_records(path, pa.array([r for r, _ in rows], pa.binary()), b"".join(t for _, t in rows))


def read_all(part: RecordPart) -> list[tuple[bytes, bytes]]:
    return [part.get(i) for i in range(part.rows)]


ROW = st.tuples(st.binary(max_size=300), st.binary(min_size=16, max_size=16))


# --------------------------------------------------------------------------- vectors


def test_vector_files_match_independent_builder() -> None:
    parts, decode = build_vectors()
    assert load(PART_VECTORS) == parts
    assert load(DECODE_VECTORS) == decode


@pytest.mark.parametrize("index", range(len(vector_parts())))
def test_part_vectors_read_and_write(workdir: Path, index: int) -> None:
    case = load(PART_VECTORS)["parts"][index]
    rows = [(bytes.fromhex(r), bytes.fromhex(t)) for r, t in case["rows"]]
    expected = bytes.fromhex(case["hex"])
    (workdir / "v.rec").write_bytes(expected)
    with RecordPart.open(workdir / "v.rec") as part:
        assert part.rows == len(rows)
        assert read_all(part) == rows
        assert part.get_many(range(part.rows)) == rows
        part.check()
    write(workdir / "w.rec", rows)
    assert (workdir / "w.rec").read_bytes() == expected


def test_frozen_constants() -> None:
    assert (records.MAGIC, records.HEADER_SIZE, records.BLOCK_ROWS, records.CODEC_ZSTD) == (
        b"PMRECS01",
        32,
        64,
        1,
    )
    assert records.RECORDS_VERSION == "provmint-records/1" and records.TOKEN_SIZE == 16
    assert records.MAX_RECORD_BYTES == 6 + 64 * (1 + 64 + 4 + 4096)


# --------------------------------------------------------------------------- round trips


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(ROW, max_size=200), data=st.data())
def test_round_trip(rows: list[tuple[bytes, bytes]], data: st.DataObject) -> None:
    with scratch() as d:
        write(d / "p.rec", rows)
        assert (d / "p.rec").read_bytes() == spec_part(rows)
        with RecordPart.open(d / "p.rec") as part:
            assert len(part) == len(rows)
            assert read_all(part) == rows
            if rows:
                wanted = data.draw(st.lists(st.integers(0, len(rows) - 1), max_size=30))
                assert part.get_many(wanted) == [rows[i] for i in wanted]
            part.check()
            for bad in (-1, len(rows)):
                with pytest.raises(IndexError):
                    part.get(bad)
                with pytest.raises(IndexError):
                    part.get_many([0, bad] if rows else [bad])


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(ROW, max_size=200))
def test_payload_writer_writes_the_same_file(rows: list[tuple[bytes, bytes]]) -> None:
    """write_payloads (the rows laid out by the minting kernel) makes the file
    write_records makes from the same records and tokens."""
    payloads = [len(r).to_bytes(4, "big") + r + t for r, t in rows]
    offsets = np.cumsum([0, *map(len, payloads)], dtype=np.int64)
    with scratch() as d:
        records.write_payloads(d / "p.rec", offsets.tobytes(), b"".join(payloads))
        assert (d / "p.rec").read_bytes() == spec_part(rows)


def test_payload_writer_refuses_offsets_that_do_not_fit(workdir: Path) -> None:
    for offsets in ([1, 5], [0, 3], [0, 5, 4, 5], []):
        with pytest.raises(ValueError, match="row offsets"):
            records.write_payloads(workdir / "x.rec", np.array(offsets, np.int64), b"abcde")
    assert not (workdir / "x.rec").exists()


def test_writer_accepts_any_arrow_layout(workdir: Path) -> None:
    rows = [(spec_record({"gtin": GTIN, "serial": str(i)}), token(i)) for i in range(300)]
    values = [r for r, _ in rows]
    tokens = b"".join(t for _, t in rows)
    write_records(workdir / "plain.rec", pa.array(values, pa.binary()), tokens)
    expected = (workdir / "plain.rec").read_bytes()
    variants = {
        "chunked": (pa.chunked_array([values[:100], values[100:]], pa.binary()), tokens),
        "large": (pa.array(values, pa.large_binary()), tokens),
        "sliced": (pa.array([b"x", *values, b"y"], pa.binary()).slice(1, 300), tokens),
        "numpy tokens": (
            pa.array(values, pa.binary()),
            np.frombuffer(tokens, np.uint8).reshape(300, 16),
        ),
        "memoryview": (pa.array(values, pa.binary()), memoryview(bytearray(tokens))),
    }
    for name, (array, toks) in variants.items():
        write_records(workdir / f"{name}.rec", array, toks)
        assert (workdir / f"{name}.rec").read_bytes() == expected, name


def test_writer_refuses_bad_input(workdir: Path) -> None:
    ok = pa.array([b"a", b"b"], pa.binary())
    cases = [
        (ok, bytes(31)),
        (ok, bytes(33)),
        (pa.array([b"a", None], pa.binary()), bytes(32)),
        (pa.array(["a", "b"]), bytes(32)),
        ([b"a", b"b"], bytes(32)),
        (pa.array([b"x" * (records.MAX_RECORD_BYTES + 1)], pa.binary()), bytes(16)),
    ]
    for array, toks in cases:
        with pytest.raises(ValueError):
            write_records(workdir / "p.rec", array, toks)
    assert list(workdir.iterdir()) == []
    with pytest.raises(OutputError) as info:
        write_records(workdir / "missing" / "p.rec", ok, bytes(32))
    assert "missing" in str(info.value)
    assert list(workdir.iterdir()) == []


def test_writer_replaces_atomically(workdir: Path) -> None:
    path = workdir / "p.rec"
    write(path, [(b"old", bytes(16))])
    old = path.read_bytes()
    with pytest.raises(ValueError):
        write_records(path, pa.array([b"new"], pa.binary()), bytes(15))
    assert path.read_bytes() == old
    write(path, [(b"new", bytes(16))])
    with RecordPart.open(path) as part:
        assert part.get(0) == (b"new", bytes(16))
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in workdir.iterdir()] == ["p.rec"]


# --------------------------------------------------------------------------- damaged files


def small_part() -> bytes:
    return bytes.fromhex(load(PART_VECTORS)["parts"][3]["hex"])


def test_every_truncation_and_extension_is_reported(workdir: Path) -> None:
    data = small_part()
    path = workdir / "t.rec"
    for length in [*range(0, 200), *range(200, len(data), 7), len(data) - 1]:
        path.write_bytes(data[:length])
        with pytest.raises(StoreCorruptError) as info:
            RecordPart.open(path)
        assert str(info.value).startswith("damaged: ") and str(path) in str(info.value)
    path.write_bytes(data + b"\0")
    with pytest.raises(StoreCorruptError, match="does not span the file"):
        RecordPart.open(path)


def vector_rows(index: int) -> list[tuple[bytes, bytes]]:
    return [
        (bytes.fromhex(r), bytes.fromhex(t)) for r, t in load(PART_VECTORS)["parts"][index]["rows"]
    ]


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ({"rows": 0xFFFF_FFFF, "blocks": 0x0400_0000}, "too short"),
        ({"rows": 0xFFFF_FFFF}, "cannot hold"),
        ({"blocks": 0xFFFF_FFFF}, "cannot hold"),
        ({"rows": 128}, "cannot hold"),
        ({"rows": 0}, "cannot hold"),
        ({"rows": 192}, "impossible"),  # the last block is far too small for 64 rows
        ({"block_rows": 63}, "not one provmint writes"),
        ({"block_rows": 0}, "not one provmint writes"),
        ({"codec": 2}, "not one provmint writes"),
        ({"codec": 0}, "not one provmint writes"),
    ],
)
def test_header_damage_is_reported(workdir: Path, header: dict[str, int], reason: str) -> None:
    path = workdir / "h.rec"
    path.write_bytes(spec_part(vector_rows(3), header=header))
    with pytest.raises(StoreCorruptError, match=reason) as info:
        RecordPart.open(path)
    assert str(path) in str(info.value)


def test_row_count_one_short_is_found_by_check(workdir: Path) -> None:
    """129 rows claimed where the last block holds 2: consistent enough to open, and
    found by any read of the last block."""
    path = workdir / "h.rec"
    path.write_bytes(spec_part(vector_rows(3), header={"rows": 129}))
    with RecordPart.open(path) as part:
        assert part.get(128) == vector_rows(3)[128]  # the rows before the damage read
        with pytest.raises(StoreCorruptError, match="bytes after the last row"):
            part.check()
        with pytest.raises(StoreCorruptError, match="bytes after the last row"):
            part.get_many([128])


@pytest.mark.parametrize(
    ("offset", "value", "reason"),
    [
        (0, b"X", "bad magic"),
        (24, b"\x01", "not one provmint writes"),
        (31, b"\x80", "not one provmint writes"),
        (32, struct.pack("<Q", 0), "does not span"),
        (40, struct.pack("<Q", 10**6), "not in order"),
        (40, struct.pack("<Q", 0), "not in order"),
        (64, struct.pack("<I", 0), "impossible"),
        (64, struct.pack("<I", 2**31), "impossible"),
    ],
)
def test_table_damage_is_reported(workdir: Path, offset: int, value: bytes, reason: str) -> None:
    data = bytearray(small_part())
    data[offset : offset + len(value)] = value
    path = workdir / "d.rec"
    path.write_bytes(bytes(data))
    with pytest.raises(StoreCorruptError, match=reason):
        RecordPart.open(path)


def test_lying_payloads_are_reported(workdir: Path) -> None:
    """Blocks that decompress fine but whose rows do not fit them: every read that
    meets the damage is StoreCorruptError, never a read past the block."""
    good = [(b"rec%d" % i, token(i)) for i in range(3)]
    payload = spec_block(good)
    lies = {
        "length past the block": payload[:24] + (2**32 - 1).to_bytes(4, "big") + payload[28:],
        "length just past": payload[:24] + (5).to_bytes(4, "big") + payload[28:],
        "one row missing": spec_block(good[:2]) + b"\0" * 5,
        "bytes after the rows": payload + b"\0",
        "length cut": payload[:-22],
        "token cut": payload[:-1],
    }
    for name, lie in lies.items():
        path = workdir / "l.rec"
        # sizes must stay plausible for the table check: at least 20 bytes per row
        path.write_bytes(spec_part(good, payloads=[lie.ljust(60, b"\0")]))
        with RecordPart.open(path) as part:
            with pytest.raises(StoreCorruptError) as info:
                part.check()
            assert str(path) in str(info.value), name
            with pytest.raises(StoreCorruptError):
                part.get_many([0])
            for i in range(3):
                try:
                    record, tok = part.get(i)
                except StoreCorruptError:
                    continue
                assert len(tok) == 16 and record in lie


def test_undecompressable_block_is_reported(workdir: Path) -> None:
    data = bytearray(small_part())
    table_end = 32 + 8 * 4 + 4 * 3
    data[table_end : table_end + 4] = b"\0\0\0\0"  # the zstd magic of block 0
    path = workdir / "z.rec"
    path.write_bytes(bytes(data))
    with RecordPart.open(path) as part:
        with pytest.raises(StoreCorruptError, match="block 0 does not decompress"):
            part.get(3)
        assert part.get(64) is not None  # other blocks still read
        with pytest.raises(StoreCorruptError):
            part.check()


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_hostile_parts_never_crash(data: st.DataObject) -> None:
    """Bit flips, truncations, splices and random bytes: every operation either works
    (within bounds) or raises StoreCorruptError naming the file."""
    raw = bytearray(small_part())
    mutation = data.draw(st.sampled_from(["flip", "flips", "truncate", "random", "splice"]))
    if mutation == "flip":
        bit = data.draw(st.integers(0, 8 * len(raw) - 1))
        raw[bit // 8] ^= 1 << (bit % 8)
    elif mutation == "flips":
        for bit in data.draw(st.lists(st.integers(0, 8 * len(raw) - 1), max_size=20)):
            raw[bit // 8] ^= 1 << (bit % 8)
    elif mutation == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    elif mutation == "random":
        raw = bytearray(data.draw(st.binary(max_size=300)))
    else:
        at = data.draw(st.integers(0, len(raw)))
        raw[at : at + data.draw(st.integers(0, 50))] = data.draw(st.binary(max_size=50))
    with scratch() as d:
        path = d / "x.rec"
        path.write_bytes(bytes(raw))
        try:
            part = RecordPart.open(path)
        except StoreCorruptError as exc:
            assert str(path) in str(exc)
            return
        with part:
            for operation in (
                lambda: part.get(0),
                lambda: part.get(part.rows - 1),
                lambda: part.get(min(70, part.rows - 1)),
                lambda: part.get_many(range(part.rows)),
                part.check,
            ):
                try:
                    result = operation() if part.rows else None
                except StoreCorruptError as exc:
                    assert str(path) in str(exc)
                    continue
                if isinstance(result, tuple):
                    assert len(result[1]) == 16 and len(result[0]) < len(raw) * 64


def test_missing_and_closed_parts(workdir: Path) -> None:
    with pytest.raises(StoreCorruptError, match="missing") as info:
        RecordPart.open(workdir / "nope.rec")
    assert "nope.rec" in str(info.value)
    with pytest.raises(StoreCorruptError):
        RecordPart.open(workdir)
    write(workdir / "p.rec", [(b"a", bytes(16))])
    part = RecordPart.open(workdir / "p.rec")
    part.close()
    part.close()
    with pytest.raises(ValueError, match="closed"):
        part.get(0)


# --------------------------------------------------------------------------- decode_record


def test_decode_record_inverts_the_canonical_vectors() -> None:
    cases = load(LOCAL_VECTORS / "canonical.json")["records"]
    for case in cases:
        raw = bytes.fromhex(case["hex"])
        assert canonical.decode_record(raw) == case["fields"]
        assert canonical.encode_record(canonical.decode_record(raw)) == raw


@pytest.mark.parametrize("index", range(len(INVALID_RECORDS)), ids=[w for w, _ in INVALID_RECORDS])
def test_decode_record_refuses_the_invalid_vectors(index: int) -> None:
    case = load(DECODE_VECTORS)["invalid"][index]
    with pytest.raises(ValueError):
        canonical.decode_record(bytes.fromhex(case["hex"]))


@settings(max_examples=300, deadline=None)
@given(fields=RECORD)
def test_decode_record_round_trip(fields: dict[str, str]) -> None:
    raw = spec_record(fields)
    decoded = canonical.decode_record(raw)
    assert decoded == fields and list(decoded) == sorted(fields, key=lambda n: n.encode())
    assert canonical.decode_record(memoryview(raw)) == fields


@settings(max_examples=1000, deadline=None)
@given(fields=RECORD, data=st.data())
def test_decode_record_accepts_only_what_encode_produces(
    fields: dict[str, str], data: st.DataObject
) -> None:
    """Mutated and random bytes: decode_record raises ValueError or returns fields that
    encode back to exactly those bytes."""
    raw = bytearray(spec_record(fields))
    mutation = data.draw(st.sampled_from(["flip", "byte", "cut", "insert", "random"]))
    if mutation == "flip":
        bit = data.draw(st.integers(0, 8 * len(raw) - 1))
        raw[bit // 8] ^= 1 << (bit % 8)
    elif mutation == "byte":
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    elif mutation == "cut":
        at = data.draw(st.integers(0, len(raw)))
        del raw[at : at + data.draw(st.integers(1, 8))]
    elif mutation == "insert":
        at = data.draw(st.integers(0, len(raw)))
        raw[at:at] = data.draw(st.binary(min_size=1, max_size=8))
    else:
        raw = bytearray(b"PMR1" + data.draw(st.binary(max_size=80)))
    try:
        decoded = canonical.decode_record(bytes(raw))
    except ValueError:
        return
    assert canonical.encode_record(decoded) == bytes(raw)


def test_decode_record_of_a_stored_part(workdir: Path) -> None:
    """Records written by the fast writer decode back to the fields (the lookup path)."""
    rng = random.Random(4)
    fields = [
        {"gtin": GTIN, "serial": f"{rng.getrandbits(40):X}", "lot": "L", "note": "é\x00"}
        for _ in range(100)
    ]
    write(workdir / "p.rec", [(canonical.encode_record(f), token(i)) for i, f in enumerate(fields)])
    with RecordPart.open(workdir / "p.rec") as part:
        for i in range(100):
            assert canonical.decode_record(part.get(i)[0]) == fields[i]


if __name__ == "__main__":
    parts, decode = build_vectors()
    PART_VECTORS.write_text(json.dumps(parts, indent=1) + "\n", encoding="utf-8")
    DECODE_VECTORS.write_text(json.dumps(decode, indent=1) + "\n", encoding="utf-8")
    sys.exit(0)
