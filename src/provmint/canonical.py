"""FORMAT-CRITICAL: the byte encodings that tokens, leaves and batch commitments hash.

Everything here is frozen. A change to any byte layout is a new version with a new tag,
never an edit: proofs and printed labels live for years. Golden vectors in
``tests/vectors/canonical.json`` pin every function.

Encodings (all integers big-endian):

``provmint-record/1`` (a product record, every column of its CSV row)::

    b"PMR1" || u16 field_count || field...        fields sorted by name (bytewise)
    field = u8 len(name) || name (ASCII) || u32 len(value) || value (UTF-8)

    Names match ``[a-z][a-z0-9_]{0,63}``; ``gtin`` (14 digits) and ``serial`` are required.
    Values are the CSV text as given (the GTIN normalized to 14 digits).

``provmint-token/1`` (the message the issuer key authenticates)::

    b"PMT1" || gtin14 (14 ASCII digits) || serial (ASCII)

``provmint-leaf/1`` (the Merkle leaf data of a product)::

    record bytes || token_commitment          token_commitment = SHA-256(b"PMC1" || token)

    The token is secret-keyed, so sibling hashes in a proof reveal nothing usable about
    other products, and the proof carries only the commitment, never the token.

``provmint-batch/1`` (what anchoring commits to; binds root, size, id and manifest)::

    SHA-256(b"PMB1" || u8 len(batch_id) || batch_id || u64 tree_size || root || manifest_digest)
    manifest_digest = SHA-256(b"PMM1" || JCS(manifest))      (RFC 8785 for str/int/list/dict)
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import struct
from collections.abc import Mapping
from typing import Any

__all__ = [
    "BATCH_TAG",
    "COMMIT_TAG",
    "FIELD_NAME_PATTERN",
    "MANIFEST_TAG",
    "MAX_FIELDS",
    "MAX_VALUE_BYTES",
    "RECORD_MAGIC",
    "RECORD_VERSION",
    "TOKEN_TAG",
    "TOKEN_VERSION",
    "batch_commitment",
    "canonical_json",
    "decode_record",
    "encode_record",
    "leaf_data",
    "manifest_digest",
    "token_commitment",
    "token_message",
]

RECORD_VERSION = "provmint-record/1"
TOKEN_VERSION = "provmint-token/1"
RECORD_MAGIC = b"PMR1"
TOKEN_TAG = b"PMT1"
COMMIT_TAG = b"PMC1"
BATCH_TAG = b"PMB1"
MANIFEST_TAG = b"PMM1"

FIELD_NAME_PATTERN = r"[a-z][a-z0-9_]{0,63}"
MAX_FIELDS = 64
"""At most this many columns per product: a bound for hostile proofs, generous for labels."""
MAX_VALUE_BYTES = 4096
"""At most this many UTF-8 bytes per value."""

_NAME = re.compile(FIELD_NAME_PATTERN)


def _check_fields(fields: Mapping[str, str]) -> None:
    if len(fields) > MAX_FIELDS:
        raise ValueError(f"a record has at most {MAX_FIELDS} fields, got {len(fields)}")
    for name, value in fields.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(f"invalid field name {name!r}")
        if not isinstance(value, str):
            raise ValueError(f"field {name!r} must be a string")
    for required in ("gtin", "serial"):
        if required not in fields:
            raise ValueError(f"a record needs a {required!r} field")
    gtin = fields["gtin"]
    if len(gtin) != 14 or not gtin.isascii() or not gtin.isdigit():
        raise ValueError("the gtin field is 14 ASCII digits")


def encode_record(fields: Mapping[str, str]) -> bytes:
    """Canonical ``provmint-record/1`` bytes of one product record.

    Raises ValueError if a name or value breaks the rules above.
    """
    _check_fields(fields)
    parts = [RECORD_MAGIC, struct.pack(">H", len(fields))]
    for name in sorted(fields, key=lambda n: n.encode("ascii")):
        raw_name = name.encode("ascii")
        raw_value = fields[name].encode("utf-8")
        if len(raw_value) > MAX_VALUE_BYTES:
            raise ValueError(f"field {name!r} is longer than {MAX_VALUE_BYTES} bytes")
        parts += [struct.pack(">B", len(raw_name)), raw_name]
        parts += [struct.pack(">I", len(raw_value)), raw_value]
    return b"".join(parts)


def decode_record(data: bytes) -> dict[str, str]:
    """The fields of ``provmint-record/1`` bytes: the exact inverse of :func:`encode_record`.

    Strict: whatever ``encode_record`` could not have produced is a ValueError (another
    magic, a field count beyond MAX_FIELDS, a name that is not ``FIELD_NAME_PATTERN`` or
    out of bytewise order or repeated, a value that is not UTF-8 or longer than
    MAX_VALUE_BYTES, no ``gtin`` of 14 ASCII digits or no ``serial``, a length running
    past the end, bytes left over). So ``encode_record(decode_record(b)) == b`` whenever
    it returns.
    """
    raw = bytes(data)
    end = len(raw)
    if end < 6 or raw[:4] != RECORD_MAGIC:
        raise ValueError("not a provmint-record/1 (bad magic)")
    (count,) = _U16.unpack_from(raw, 4)
    if count > MAX_FIELDS:
        raise ValueError(f"a record has at most {MAX_FIELDS} fields, got {count}")
    fields: dict[str, str] = {}
    pos, previous = 6, b""
    for _ in range(count):
        if pos >= end:
            raise ValueError("record truncated in a field name")
        name_end = pos + 1 + raw[pos]
        if name_end + 4 > end:
            raise ValueError("record truncated in a field name")
        raw_name = raw[pos + 1 : name_end]
        name = _decoded_name(raw_name)
        if raw_name <= previous:
            raise ValueError(f"field {name!r} is out of order or repeated")
        (size,) = _U32.unpack_from(raw, name_end)
        if size > MAX_VALUE_BYTES:
            raise ValueError(f"field {name!r} is longer than {MAX_VALUE_BYTES} bytes")
        pos = name_end + 4 + size
        if pos > end:
            raise ValueError(f"record truncated in the value of field {name!r}")
        try:
            fields[name] = raw[name_end + 4 : pos].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"field {name!r} is not UTF-8") from exc
        previous = raw_name
    if pos != end:
        raise ValueError(f"{end - pos} bytes after the last field")
    gtin = fields.get("gtin")
    if gtin is None or "serial" not in fields:
        raise ValueError("a record needs a 'gtin' and a 'serial' field")
    if len(gtin) != 14 or not gtin.isascii() or not gtin.isdigit():
        raise ValueError("the gtin field is 14 ASCII digits")
    return fields


_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


@functools.lru_cache(maxsize=256)
def _decoded_name(raw: bytes) -> str:
    """A stored field name, checked (cached: every record of a batch has the same names)."""
    name = raw.decode("ascii", errors="replace")
    if not _NAME.fullmatch(name) or not raw.isascii():
        raise ValueError(f"invalid field name {name!r}")
    return name


def token_message(gtin14: str, serial: str) -> bytes:
    """The ``provmint-token/1`` message for a product identity."""
    if len(gtin14) != 14 or not gtin14.isascii() or not gtin14.isdigit():
        raise ValueError("gtin14 must be 14 ASCII digits")
    if not serial or not serial.isascii():
        raise ValueError("serial must be non-empty ASCII")
    return TOKEN_TAG + gtin14.encode("ascii") + serial.encode("ascii")


def token_commitment(token: bytes) -> bytes:
    """SHA-256 commitment to a raw token: what a leaf and a proof carry instead of it."""
    return hashlib.sha256(COMMIT_TAG + token).digest()


def leaf_data(fields: Mapping[str, str], commitment: bytes) -> bytes:
    """``provmint-leaf/1`` data: the canonical record followed by the token commitment."""
    if len(commitment) != 32:
        raise ValueError("a token commitment is 32 bytes")
    return encode_record(fields) + commitment


def canonical_json(value: Any) -> bytes:
    """RFC 8785 (JCS) bytes of a JSON value made of str, int, bool, None, list and dict.

    Keys are sorted by UTF-16 code units (RFC 8785 section 3.2.3). Floats, integers
    beyond +-2^53 (whose JCS form is a double) and any other type are refused: provmint
    never needs them.
    """
    out: list[str] = []

    def emit(v: Any) -> None:
        if v is None or isinstance(v, bool):
            out.append("null" if v is None else ("true" if v else "false"))
        elif isinstance(v, int):
            if abs(v) > 2**53:
                raise ValueError("integers beyond 2^53 are not allowed in canonical JSON")
            out.append(str(v))
        elif isinstance(v, str):
            out.append(json.dumps(v, ensure_ascii=False))
        elif isinstance(v, list):
            out.append("[")
            for i, item in enumerate(v):
                if i:
                    out.append(",")
                emit(item)
            out.append("]")
        elif isinstance(v, dict):
            if not all(isinstance(k, str) for k in v):
                raise ValueError("object keys must be strings")
            out.append("{")
            for i, key in enumerate(sorted(v, key=lambda k: k.encode("utf-16-be"))):
                if i:
                    out.append(",")
                out.append(json.dumps(key, ensure_ascii=False))
                out.append(":")
                emit(v[key])
            out.append("}")
        else:
            raise ValueError(f"{type(v).__name__} values are not allowed in canonical JSON")

    emit(value)
    return "".join(out).encode("utf-8")


def manifest_digest(manifest: Mapping[str, Any]) -> bytes:
    """SHA-256 over the canonical JSON of a batch manifest."""
    return hashlib.sha256(MANIFEST_TAG + canonical_json(dict(manifest))).digest()


def batch_commitment(batch_id: str, tree_size: int, root: bytes, manifest_hash: bytes) -> bytes:
    """The ``provmint-batch/1`` commitment: binds root, tree size, batch id and manifest.

    An RFC 9162 inclusion proof alone does not pin the tree size (a proof for size n can
    also pass for n+1), so the size is committed next to the root.
    """
    raw_id = batch_id.encode("ascii")
    if not 0 < len(raw_id) < 256:
        raise ValueError("batch id must be 1-255 ASCII characters")
    if not 0 < tree_size < 2**64 or len(root) != 32 or len(manifest_hash) != 32:
        raise ValueError("bad tree size, root or manifest digest")
    return hashlib.sha256(
        BATCH_TAG
        + struct.pack(">B", len(raw_id))
        + raw_id
        + struct.pack(">Q", tree_size)
        + root
        + manifest_hash
    ).digest()
