"""provmint.canonical: golden vectors and the encoding rules.

``tests/vectors/canonical.json`` was generated once by :func:`build_vectors` below, which
builds every byte string by hand from the format in canonical.py's docstring (it never
calls provmint.canonical). The vector test compares canonical.py to the file;
``test_vector_file_matches_independent_builder`` keeps the file and the builder in step.

To regenerate (only for a new, versioned format):
``python tests/test_canonical.py > tests/vectors/canonical.json``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from conftest import LOCAL_VECTORS
from hypothesis import given, settings
from hypothesis import strategies as st

from provmint import canonical

VECTOR_FILE = LOCAL_VECTORS / "canonical.json"

# --------------------------------------------------------------------------- independent spec


def u8(v: int) -> bytes:
    return v.to_bytes(1, "big")


def u16(v: int) -> bytes:
    return v.to_bytes(2, "big")


def u32(v: int) -> bytes:
    return v.to_bytes(4, "big")


def u64(v: int) -> bytes:
    return v.to_bytes(8, "big")


def spec_record(fields: dict[str, str]) -> bytes:
    """``provmint-record/1``: PMR1 || u16 count || field*, fields sorted by name bytes;
    field = u8 len(name) || name || u32 len(value) || value (UTF-8)."""
    out = bytearray(b"PMR1")
    out += u16(len(fields))
    for name in sorted(fields, key=lambda n: list(n.encode("ascii"))):
        raw_name, raw_value = name.encode("ascii"), fields[name].encode("utf-8")
        out += u8(len(raw_name)) + raw_name + u32(len(raw_value)) + raw_value
    return bytes(out)


def spec_token_message(gtin14: str, serial: str) -> bytes:
    return b"PMT1" + gtin14.encode("ascii") + serial.encode("ascii")


def spec_token_commitment(token: bytes) -> bytes:
    return hashlib.sha256(b"PMC1" + token).digest()


def _jcs_string(s: str) -> str:
    short = {
        '"': '\\"',
        "\\": "\\\\",
        "\b": "\\b",
        "\f": "\\f",
        "\n": "\\n",
        "\r": "\\r",
        "\t": "\\t",
    }
    out = []
    for ch in s:
        if ch in short:
            out.append(short[ch])
        elif ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def spec_jcs(value: Any) -> str:
    """RFC 8785 for null/bool/int/str/list/dict; keys sorted by UTF-16 code units."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _jcs_string(value)
    if isinstance(value, list):
        return "[" + ",".join(spec_jcs(v) for v in value) + "]"
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: k.encode("utf-16-be"))
        return "{" + ",".join(_jcs_string(k) + ":" + spec_jcs(value[k]) for k in keys) + "}"
    raise TypeError(type(value))


def spec_manifest_digest(manifest: dict[str, Any]) -> bytes:
    return hashlib.sha256(b"PMM1" + spec_jcs(manifest).encode("utf-8")).digest()


def spec_batch_commitment(batch_id: str, size: int, root: bytes, digest: bytes) -> bytes:
    raw = batch_id.encode("ascii")
    return hashlib.sha256(b"PMB1" + u8(len(raw)) + raw + u64(size) + root + digest).digest()


# --------------------------------------------------------------------------- vector inputs

GTIN = "09506000134352"

RECORDS: list[dict[str, str]] = [
    {"gtin": GTIN, "serial": "1"},
    {
        "serial": "ABC123",
        "gtin": "00614141123452",
        "lot": "L-7",
        "expiry": "2027-01-31",
        "product_name": "Paracetamol 500 mg",
    },
    {"gtin": GTIN, "serial": "x%y", "lot": "", "expiry": "", "product_name": ""},
    {
        "gtin": GTIN,
        "serial": "U1",
        "product_name": "Crème brûlée — 日本語 😀",
        "note": 'tab\tnewline\nnul\x00quote"',
        "z9": "Ω",
        "a_b": "ÿ",
    },
    # names that sort differently by length and by underscore ('_' 0x5f < 'a' 0x61)
    {
        "gtin": GTIN,
        "serial": "S",
        "a": "1",
        "a_": "2",
        "a0": "3",
        "aa": "4",
        "b": "5",
        "ab_c": "6",
        "abc": "7",
    },
    # the maximum: 64 fields, a 64-character name, a 4096-byte value
    {
        "gtin": GTIN,
        "serial": "MAX",
        **{f"f{i:02d}": str(i) * (i % 5) for i in range(61)},
        "x" * 64: "é" * 2048,
    },
]

TOKEN_MESSAGES = [(GTIN, "1"), ("00000096385074", "ABC-123/x%y"), ("08904000210037", "~" * 20)]

TOKENS = [
    bytes(16),
    bytes(range(16)),
    b"\xff" * 16,
    bytes.fromhex("00112233445566778899aabbccddeeff"),
]

MANIFESTS: list[dict[str, Any]] = [
    {},
    {
        "format": "provmint-manifest/1",
        "batch_id": "b-20250101-0001",
        "products": 9,
        "rejected": 0,
        "label": None,
        "anchored": False,
        "columns": ["gtin", "lot", "serial"],
        "tree": {"profile": "rfc9162-sha256", "size": 9, "root": "00" * 32},
    },
    {
        "source": {"name": 'Prüfung "1".csv', "rows": 123456789012},
        "label": "日本 😀 \u007f",
        "ctl": "\x01\x1f\b\f\n\r\t\\/",
        "neg": -42,
        "nested": [[], {}, [1, [2, [3]]]],
        "Zeta": 1,
        "alpha": 2,
        "ä": 3,
        "_": 4,
    },
]

BATCHES = [
    ("b", 1, bytes(32), bytes(32)),
    ("b-20250101-0001", 9, bytes(range(32)), hashlib.sha256(b"m").digest()),
    ("x" * 255, 2**64 - 1, b"\xff" * 32, b"\x01" * 32),
]


def build_vectors() -> dict[str, Any]:
    """Every expected output, computed by the independent spec functions above."""
    return {
        "description": "provmint canonical encodings (record/1, token/1, leaf/1, batch/1); "
        "expected outputs computed independently of provmint.canonical",
        "records": [{"fields": f, "hex": spec_record(f).hex()} for f in RECORDS],
        "token_messages": [
            {"gtin14": g, "serial": s, "hex": spec_token_message(g, s).hex()}
            for g, s in TOKEN_MESSAGES
        ],
        "token_commitments": [
            {"token_hex": t.hex(), "hex": spec_token_commitment(t).hex()} for t in TOKENS
        ],
        "leaf_data": [
            {
                "fields": f,
                "commitment_hex": spec_token_commitment(t).hex(),
                "hex": (spec_record(f) + spec_token_commitment(t)).hex(),
            }
            for f, t in zip(RECORDS[:3], TOKENS, strict=False)
        ],
        "canonical_json": [
            {"value": m, "hex": spec_jcs(m).encode("utf-8").hex()} for m in MANIFESTS
        ],
        "manifest_digests": [
            {"manifest": m, "hex": spec_manifest_digest(m).hex()} for m in MANIFESTS
        ],
        "batch_commitments": [
            {
                "batch_id": b,
                "tree_size": n,
                "root_hex": r.hex(),
                "manifest_digest_hex": d.hex(),
                "hex": spec_batch_commitment(b, n, r, d).hex(),
            }
            for b, n, r, d in BATCHES
        ],
    }


def load_vectors() -> dict[str, Any]:
    return json.loads(VECTOR_FILE.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- golden vectors


def test_vector_file_matches_independent_builder() -> None:
    assert load_vectors() == build_vectors()


def test_vectors_cover_the_limits() -> None:
    big = load_vectors()["records"][-1]["fields"]
    assert len(big) == canonical.MAX_FIELDS
    assert max(len(v.encode()) for v in big.values()) == canonical.MAX_VALUE_BYTES
    assert max(len(k) for k in big) == 64


def test_record_vectors() -> None:
    cases = load_vectors()["records"]
    assert cases
    for case in cases:
        assert canonical.encode_record(case["fields"]).hex() == case["hex"]


def test_token_message_vectors() -> None:
    for case in load_vectors()["token_messages"]:
        assert canonical.token_message(case["gtin14"], case["serial"]).hex() == case["hex"]


def test_token_commitment_vectors() -> None:
    for case in load_vectors()["token_commitments"]:
        assert canonical.token_commitment(bytes.fromhex(case["token_hex"])).hex() == case["hex"]


def test_leaf_data_vectors() -> None:
    for case in load_vectors()["leaf_data"]:
        commitment = bytes.fromhex(case["commitment_hex"])
        assert canonical.leaf_data(case["fields"], commitment).hex() == case["hex"]


def test_canonical_json_vectors() -> None:
    for case in load_vectors()["canonical_json"]:
        assert canonical.canonical_json(case["value"]).hex() == case["hex"]


def test_manifest_digest_vectors() -> None:
    for case in load_vectors()["manifest_digests"]:
        assert canonical.manifest_digest(case["manifest"]).hex() == case["hex"]


def test_batch_commitment_vectors() -> None:
    for case in load_vectors()["batch_commitments"]:
        got = canonical.batch_commitment(
            case["batch_id"],
            case["tree_size"],
            bytes.fromhex(case["root_hex"]),
            bytes.fromhex(case["manifest_digest_hex"]),
        )
        assert got.hex() == case["hex"]


def test_frozen_tags() -> None:
    assert (
        canonical.RECORD_MAGIC,
        canonical.TOKEN_TAG,
        canonical.COMMIT_TAG,
        canonical.BATCH_TAG,
        canonical.MANIFEST_TAG,
    ) == (b"PMR1", b"PMT1", b"PMC1", b"PMB1", b"PMM1")
    assert canonical.RECORD_VERSION == "provmint-record/1"
    assert canonical.TOKEN_VERSION == "provmint-token/1"


# --------------------------------------------------------------------------- properties

NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,63}", fullmatch=True)
VALUES = st.text(st.characters(codec="utf-8"), max_size=40)
RECORD = st.builds(
    lambda extra, gtin, serial: {**extra, "gtin": gtin, "serial": serial},
    st.dictionaries(NAMES, VALUES, max_size=12),
    st.from_regex(r"[0-9]{14}", fullmatch=True),
    VALUES,
)


@settings(max_examples=200, deadline=None)
@given(fields=RECORD)
def test_encode_record_matches_independent_spec(fields: dict[str, str]) -> None:
    assert canonical.encode_record(fields) == spec_record(fields)
    # insertion order never matters
    assert canonical.encode_record(dict(reversed(list(fields.items())))) == spec_record(fields)


# keys below U+D800, where code-point and UTF-16 order agree (the difference is pinned by
# test_canonical_json_sorts_keys_by_utf16_code_units)
BMP_KEYS = st.text(st.characters(codec="utf-8", max_codepoint=0xD7FF), max_size=8)


@settings(max_examples=100, deadline=None)
@given(
    value=st.recursive(
        st.none() | st.booleans() | st.integers(-(2**53), 2**53) | VALUES,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(BMP_KEYS, inner, max_size=4),
        max_leaves=12,
    )
)
def test_canonical_json_matches_independent_jcs(value: Any) -> None:
    assert canonical.canonical_json(value) == spec_jcs(value).encode("utf-8")
    assert json.loads(canonical.canonical_json(value)) == value


# --------------------------------------------------------------------------- rules


def test_fields_sorted_bytewise_by_name() -> None:
    raw = canonical.encode_record(
        {"serial": "s", "gtin": GTIN, "aa": "3", "a_": "1", "a0": "2", "a": "4"}
    )
    # '0' (0x30) < '_' (0x5f) < 'a' (0x61); a prefix sorts first
    expected = (
        b"PMR1\x00\x06"
        b"\x01a\x00\x00\x00\x014"
        b"\x02a0\x00\x00\x00\x012"
        b"\x02a_\x00\x00\x00\x011"
        b"\x02aa\x00\x00\x00\x013"
        b"\x04gtin\x00\x00\x00\x0e" + GTIN.encode() + b"\x06serial\x00\x00\x00\x01s"
    )
    assert raw == expected


@pytest.mark.parametrize("missing", ["gtin", "serial"])
def test_gtin_and_serial_required(missing: str) -> None:
    fields = {"gtin": GTIN, "serial": "1", "lot": "L"}
    del fields[missing]
    with pytest.raises(ValueError, match=missing):
        canonical.encode_record(fields)


@pytest.mark.parametrize(
    "name",
    ["", "A", "Gtin", "1abc", "_a", "a-b", "a b", "a.b", "é", "a\n", "a" * 65, "gtın"],
)
def test_invalid_field_names_rejected(name: str) -> None:
    with pytest.raises(ValueError):
        canonical.encode_record({"gtin": GTIN, "serial": "1", name: "v"})


def test_valid_edge_names_accepted() -> None:
    fields = {"gtin": GTIN, "serial": "1", "a": "", "a" * 64: "", "z_9_": ""}
    assert canonical.encode_record(fields) == spec_record(fields)


@pytest.mark.parametrize("value", [1, None, b"bytes", 1.5, ["x"], True])
def test_non_str_values_rejected(value: object) -> None:
    with pytest.raises(ValueError):
        canonical.encode_record({"gtin": GTIN, "serial": "1", "lot": value})  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        canonical.encode_record({"gtin": value, "serial": "1"})  # type: ignore[dict-item]


def test_non_str_names_rejected() -> None:
    with pytest.raises(ValueError):
        canonical.encode_record({"gtin": GTIN, "serial": "1", 7: "x"})  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        canonical.encode_record({"gtin": GTIN, "serial": "1", b"lot": "x"})  # type: ignore[dict-item]


def test_value_byte_limit() -> None:
    ok = {"gtin": GTIN, "serial": "1", "lot": "é" * 2048}  # exactly 4096 UTF-8 bytes
    assert canonical.encode_record(ok) == spec_record(ok)
    for too_long in ["é" * 2048 + "a", "a" * 4097, "😀" * 1025]:
        with pytest.raises(ValueError):
            canonical.encode_record({"gtin": GTIN, "serial": "1", "lot": too_long})


def test_field_count_limit() -> None:
    fields = {"gtin": GTIN, "serial": "1", **{f"f{i}": "" for i in range(62)}}
    assert len(fields) == 64
    assert canonical.encode_record(fields) == spec_record(fields)
    fields["f62"] = ""
    with pytest.raises(ValueError):
        canonical.encode_record(fields)


def test_unencodable_value_rejected() -> None:
    with pytest.raises(ValueError):  # a lone surrogate has no UTF-8 form
        canonical.encode_record({"gtin": GTIN, "serial": "1", "lot": "\ud800"})


@pytest.mark.parametrize(
    ("gtin", "serial"),
    [
        ("0950600013435", "1"),
        ("095060001343521", "1"),
        ("0950600013435a", "1"),
        ("０９５０６０００１３４３５２", "1"),
        (GTIN, ""),
        (GTIN, "é"),
    ],
)
def test_token_message_rejects(gtin: str, serial: str) -> None:
    with pytest.raises(ValueError):
        canonical.token_message(gtin, serial)


def test_leaf_data_rejects_bad_commitment() -> None:
    for bad in (b"", bytes(31), bytes(33)):
        with pytest.raises(ValueError):
            canonical.leaf_data({"gtin": GTIN, "serial": "1"}, bad)


def test_canonical_json_rejects_floats_and_sorts_keys() -> None:
    for bad in (1.5, [1.0], {"a": {"b": [float("nan")]}}, {"a": float("inf")}, {"a": 0.0}):
        with pytest.raises(ValueError):
            canonical.canonical_json(bad)
    with pytest.raises(ValueError):
        canonical.canonical_json({1: "x"})
    assert canonical.canonical_json({"b": 1, "a": [True, None, "é"], "A": {"y": 1, "x": 2}}) == (
        '{"A":{"x":2,"y":1},"a":[true,null,"é"],"b":1}'.encode()
    )
    with pytest.raises(ValueError):
        canonical.manifest_digest({"x": 0.5})


def test_canonical_json_rejects_floats_inside_tuples() -> None:
    """Only JSON types are accepted: a tuple (which json.dumps would write as an array)
    is refused, so a float cannot hide inside one."""
    with pytest.raises(ValueError):
        canonical.canonical_json({"a": (1.5,)})
    with pytest.raises(ValueError):
        canonical.manifest_digest({"tree": {"sizes": (1, 2.0)}})


def test_canonical_json_sorts_keys_by_utf16_code_units() -> None:
    """RFC 8785 section 3.2.3 sorts property names by UTF-16 code units; its own example
    (code-point order would put U+FB33 before U+1F600, whose UTF-16 is D83D DE00)."""
    value = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    expected = (
        '{"\\r":"Carriage Return","1":"One","\u0080":"Control",'
        '"\u00f6":"Latin Small Letter O With Diaeresis","\u20ac":"Euro Sign",'
        '"\U0001f600":"Emoji: Grinning Face","\ufb33":"Hebrew Letter Dalet With Dagesh"}'
    )
    assert spec_jcs(value) == expected
    assert canonical.canonical_json(value) == expected.encode("utf-8")


def test_canonical_json_string_escaping_rfc8785_example() -> None:
    # RFC 8785 section 3.2.2.2
    value = {"string": "\u20ac$\u000f\u000aA'\u0042\u0022\u005c\\\"/"}
    expected = '{"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    assert canonical.canonical_json(value) == expected.encode("utf-8") == spec_jcs(value).encode()


@pytest.mark.parametrize(
    ("batch_id", "size", "root", "digest"),
    [
        ("", 1, bytes(32), bytes(32)),
        ("x" * 256, 1, bytes(32), bytes(32)),
        ("bé", 1, bytes(32), bytes(32)),
        ("b", 0, bytes(32), bytes(32)),
        ("b", -1, bytes(32), bytes(32)),
        ("b", 2**64, bytes(32), bytes(32)),
        ("b", 1, bytes(31), bytes(32)),
        ("b", 1, bytes(33), bytes(32)),
        ("b", 1, bytes(32), bytes(31)),
        ("b", 1, bytes(32), b""),
    ],
)
def test_batch_commitment_rejects(batch_id: str, size: int, root: bytes, digest: bytes) -> None:
    with pytest.raises(ValueError):
        canonical.batch_commitment(batch_id, size, root, digest)


def test_batch_commitment_binds_every_input() -> None:
    root, digest = bytes(range(32)), hashlib.sha256(b"m").digest()
    base = canonical.batch_commitment("b-1", 10, root, digest)
    assert base == spec_batch_commitment("b-1", 10, root, digest)
    variants = [
        canonical.batch_commitment("b-2", 10, root, digest),
        canonical.batch_commitment("b-1", 11, root, digest),
        canonical.batch_commitment("b-1", 10, bytes(32), digest),
        canonical.batch_commitment("b-1", 10, root, bytes(32)),
    ]
    assert len({base, *variants}) == 5


if __name__ == "__main__":  # pragma: no cover - regenerates the golden file
    print(json.dumps(build_vectors(), indent=1, ensure_ascii=False))
