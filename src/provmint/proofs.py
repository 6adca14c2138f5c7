"""FORMAT-CRITICAL: the self-contained proof document, ``provmint-proof/1``.

A proof carries everything needed to check one product offline: the committed record,
the token commitment, the inclusion path, the batch manifest (whose digest the batch
commitment binds) and, once anchored, the anchor. Example (shortened)::

    {
      "format": "provmint-proof/1",
      "product": {"record_version": "provmint-record/1",
                  "record": {"gtin": "09520123450014", "serial": "546CAWQDCR56", ...},
                  "token_commitment": "<64 hex>"},
      "tree": {"profile": "rfc9162-sha256", "size": 9, "leaf_index": 0,
               "path": ["<64 hex>", ...], "root": "<64 hex>"},
      "batch": {"id": "20261128-4884667e", "manifest": {...},
                "manifest_digest": "<64 hex>", "commitment": "<64 hex>"},
      "anchor": null
    }

``anchor`` is ``null`` until the batch is anchored; then it is an object with
``"format": "provmint-anchor/1"``: the path from the batch commitment to the anchored
root (same tree profile) and the chain record (chain id, transaction, block). Proofs from
strangers are untrusted input: :func:`parse_proof` bounds sizes, rejects duplicate keys,
floats, unknown fields and non-canonical hex, and reports the exact field at fault.

Every structural error names its field the same way, ``proof field <path> <why>`` (the
path as ``tree.path[3]``, ``product.record.lot``, ``anchor.tree.root``; a key that is not
a plain name is quoted: ``product["a b"]``), and only the first one is reported, in the
order of docs/FORMATS.md: ``format``, then ``product``, ``tree``, ``batch`` and
``anchor``, each field in its documented order. What concerns the document as a whole
(its size, its UTF-8, its JSON syntax, its nesting) is ``proof <why>``. The same rules
are written as a JSON Schema in ``provmint/schemas/proof-1.schema.json`` (for other
implementations; the parser does not use it).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from provmint import merkle
from provmint.anchoring import ANCHOR_FORMAT, AnchorSection, parse_anchor_section
from provmint.canonical import FIELD_NAME_PATTERN, MAX_FIELDS, MAX_VALUE_BYTES, RECORD_VERSION
from provmint.errors import ProofError

__all__ = [
    "ANCHOR_FORMAT",
    "MAX_PROOF_BYTES",
    "PROOF_FORMAT",
    "Proof",
    "is_json_object",
    "parse_proof",
    "proof_to_json",
]

PROOF_FORMAT = "provmint-proof/1"
MAX_PROOF_BYTES = 1 << 20
"""A proof is a few KB; anything over 1 MiB is refused before parsing."""
_MAX_DEPTH = 16
_MAX_MANIFEST_BYTES = 64 << 10

_HEX64 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(FIELD_NAME_PATTERN)
_BATCH_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_SURROGATE = re.compile("[\ud800-\udfff]")
_MAX_DIGITS = 20
_MAX_JCS_INTEGER = 2**53


def _child(where: str, key: str | int) -> str:
    """The path of a member (``tree.root``) or an item (``tree.path[3]``) of ``where``,
    as error messages spell it. A key that is not a plain name is quoted (as JSON, so it
    stays one printable line) and cut short: hostile keys do not flood the error line."""
    if isinstance(key, int):
        return f"{where}[{key}]"
    if _PLAIN_KEY.fullmatch(key):
        return f"{where}.{key}" if where else key
    return f"{where}[{json.dumps(key[:40])}]"


def _subject(where: str) -> str:
    """How an error names the value at ``where``: the document itself, or a field."""
    return f"proof field {where}" if where else "proof"


@dataclass(frozen=True, slots=True)
class Proof:
    """A parsed, well-formed proof (not yet verified)."""

    record: dict[str, str]
    record_version: str
    token_commitment: bytes
    profile: str
    size: int
    leaf_index: int
    path: tuple[bytes, ...]
    root: bytes
    batch_id: str
    manifest: dict[str, Any]
    manifest_digest: bytes
    commitment: bytes
    anchor: dict[str, Any] | None
    document: dict[str, Any]
    anchor_section: AnchorSection | None = None


class _Doc:
    """Typed access to a JSON object with the path of every field for error messages."""

    def __init__(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise ProofError(f"proof field {where or 'document'} must be an object")
        self.value = value
        self.where = where

    def _name(self, key: str) -> str:
        return _child(self.where, key)

    def keys(self, required: set[str], optional: frozenset[str] = frozenset()) -> None:
        missing = sorted(required - set(self.value))
        if missing:
            raise ProofError(f"proof field {self._name(missing[0])} is missing")
        unknown = sorted(set(self.value) - required - optional)
        if unknown:
            raise ProofError(f"proof field {self._name(unknown[0])} is not part of {PROOF_FORMAT}")

    def obj(self, key: str) -> _Doc:
        return _Doc(self.value[key], self._name(key))

    def text(self, key: str, pattern: re.Pattern[str] | None = None) -> str:
        v = self.value[key]
        if not isinstance(v, str):
            raise ProofError(f"proof field {self._name(key)} must be a string")
        if pattern is not None and not pattern.fullmatch(v):
            raise ProofError(f"proof field {self._name(key)} has an invalid value {v[:80]!r}")
        return v

    def digest(self, key: str) -> bytes:
        v = self.value[key]
        if not isinstance(v, str) or not _HEX64.fullmatch(v):
            raise ProofError(f"proof field {self._name(key)} must be 64 lowercase hex digits")
        return bytes.fromhex(v)

    def integer(self, key: str, low: int, high: int) -> int:
        v = self.value[key]
        if type(v) is not int or not low <= v <= high:
            raise ProofError(
                f"proof field {self._name(key)} must be a whole number in [{low}, {high}]"
            )
        return v

    def hex_list(self, key: str, limit: int) -> tuple[bytes, ...]:
        v = self.value[key]
        if not isinstance(v, list):
            raise ProofError(f"proof field {self._name(key)} must be a list")
        if len(v) > limit:
            raise ProofError(f"proof field {self._name(key)} has {len(v)} entries; at most {limit}")
        out = []
        for i, item in enumerate(v):
            if not isinstance(item, str) or not _HEX64.fullmatch(item):
                raise ProofError(
                    f"proof field {self._name(key)}[{i}] must be 64 lowercase hex digits"
                )
            out.append(bytes.fromhex(item))
        return tuple(out)


class _Duplicated(dict[str, Any]):
    """A JSON object that spelled a key twice (kept so the error can name its path)."""

    duplicate = ""


class _BadNumber:
    """A number the format does not allow, kept as its text until its path is known."""

    __slots__ = ("why",)

    def __init__(self, why: str) -> None:
        self.why = why


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            dup = _Duplicated(obj)
            dup.duplicate = key
            return dup
        obj[key] = value
    return obj


def _no_floats(text: str) -> _BadNumber:
    return _BadNumber(f"is a non-integer number {text[:40]!r}")


def _small_int(text: str) -> int | _BadNumber:
    # Python refuses huge integers with a bare ValueError; no field needs over 20 digits.
    digits = len(text.lstrip("-"))
    if digits > _MAX_DIGITS:
        return _BadNumber(f"is an integer of {digits} digits; at most {_MAX_DIGITS}")
    return int(text)


def _clean(value: Any, level: int = 0) -> bool:
    """Whether :func:`_check_values` would find nothing: the same walk, without naming
    paths (what most of the time of parsing a good proof went to)."""
    if isinstance(value, str):
        return value.isascii() or not _SURROGATE.search(value)
    if isinstance(value, dict):
        if level >= _MAX_DEPTH or isinstance(value, _Duplicated):
            return False
        return all(
            (key.isascii() or not _SURROGATE.search(key)) and _clean(item, level + 1)
            for key, item in value.items()
        )
    if isinstance(value, list):
        return level < _MAX_DEPTH and all(_clean(item, level + 1) for item in value)
    return not isinstance(value, _BadNumber | float)


def _check_values(value: Any, where: str = "", level: int = 0) -> None:
    """The first value (in document order) that no proof may hold, named by its path:
    a duplicate key, a float, NaN or Infinity, an integer of more than 20 digits, a
    string or key that is not Unicode (a lone surrogate), nesting deeper than
    :data:`_MAX_DEPTH` levels of objects and arrays (the document itself is one)."""
    if isinstance(value, dict | list) and level >= _MAX_DEPTH:
        raise ProofError(f"{_subject(where)} is nested too deeply; at most {_MAX_DEPTH} levels")
    if isinstance(value, dict):
        if isinstance(value, _Duplicated):
            raise ProofError(f"{_subject(where)} has a duplicate field {value.duplicate[:40]!r}")
        for key, item in value.items():
            if _SURROGATE.search(key):
                raise ProofError(f"{_subject(where)} has a field name that is not valid Unicode")
            _check_values(item, _child(where, key), level + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_values(item, _child(where, i), level + 1)
    elif isinstance(value, _BadNumber):
        raise ProofError(f"{_subject(where)} {value.why}")
    elif isinstance(value, float):  # a document given as a dict rather than as JSON text
        raise ProofError(f"{_subject(where)} is a non-integer number {str(value)[:40]!r}")
    elif isinstance(value, str) and _SURROGATE.search(value):
        raise ProofError(f"{_subject(where)} is not valid Unicode (a lone surrogate)")


def _jcs_integers(value: Any, where: str) -> None:
    """The manifest is hashed as RFC 8785 JSON, which holds integers only up to 2^53."""
    if isinstance(value, dict):
        for key, item in value.items():
            _jcs_integers(item, _child(where, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _jcs_integers(item, _child(where, i))
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > _MAX_JCS_INTEGER:
        raise ProofError(f"proof field {where} is beyond 2^53, which canonical JSON cannot hold")


def is_json_object(data: bytes) -> bool:
    """Whether ``data`` is one JSON object nested no deeper than a proof may be; never
    raises (how a proof file's first line is told from the start of one whole proof: it
    is a stranger's input, and deep brackets make the C parser raise RecursionError)."""
    try:
        text = data.decode("utf-8")
        if _nested_deeper_than(text, _MAX_DEPTH):
            return False
        return isinstance(json.loads(text), dict)
    except (ValueError, RecursionError):
        return False


def _nested_deeper_than(text: str, limit: int) -> bool:
    """Do brackets outside strings nest deeper than ``limit``? (Cheap for real proofs:
    the character scan runs only when there are more brackets than the limit.)"""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def _decode(data: bytes | str) -> dict[str, Any]:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if len(raw) > MAX_PROOF_BYTES:
        raise ProofError(f"proof is {len(raw)} bytes; at most {MAX_PROOF_BYTES}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProofError(f"proof is not UTF-8 (byte {exc.start})") from None
    # Checked before parsing: the C parser recurses per level and, with a raised recursion
    # limit, thousands of brackets overflow the C stack (a crash, not an exception).
    if _nested_deeper_than(text, _MAX_DEPTH):
        raise ProofError("proof is nested too deeply")
    try:
        doc = json.loads(
            text,
            object_pairs_hook=_pairs,
            parse_float=_no_floats,
            parse_int=_small_int,
            parse_constant=_no_floats,
        )
    except RecursionError:
        raise ProofError("proof is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise ProofError(
            f"proof is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    # Duplicate keys, floats, long integers and lone surrogates (JSON escapes can spell
    # them; no UTF-8 text contains them) are refused here, named by their path.
    if not _clean(doc):
        _check_values(doc)
    if not isinstance(doc, dict):
        raise ProofError("proof must be a JSON object")
    return doc


def _record(doc: _Doc) -> dict[str, str]:
    value = doc.value["record"]
    where = doc._name("record")
    if not isinstance(value, dict):
        raise ProofError(f"proof field {where} must be an object")
    if len(value) > MAX_FIELDS:
        raise ProofError(f"proof field {where} has {len(value)} fields; at most {MAX_FIELDS}")
    for name, v in value.items():
        if not _NAME.fullmatch(name):
            raise ProofError(f"proof field {where} has an invalid field name {name[:80]!r}")
        if not isinstance(v, str):
            raise ProofError(f"proof field {where}.{name} must be a string")
        if len(v.encode("utf-8", "surrogatepass")) > MAX_VALUE_BYTES:
            raise ProofError(f"proof field {where}.{name} is longer than {MAX_VALUE_BYTES} bytes")
    for required in ("gtin", "serial"):
        if required not in value:
            raise ProofError(f"proof field {where}.{required} is missing")
    gtin = value["gtin"]
    if len(gtin) != 14 or not gtin.isascii() or not gtin.isdigit():
        raise ProofError(f"proof field {where}.gtin must be 14 ASCII digits")
    return dict(value)


def parse_proof(data: bytes | str | dict[str, Any]) -> Proof:
    """Parse and structurally check a proof document. Raises ProofError naming the field
    (the first fault in the documented order: see the module's docstring)."""
    doc_value = data if isinstance(data, dict) else _decode(data)
    if isinstance(data, dict) and not _clean(doc_value):
        _check_values(doc_value)
    doc = _Doc(doc_value, "")
    if "format" in doc.value:  # another format's fields are not judged by this one's rules
        _format(doc)
    doc.keys({"format", "product", "tree", "batch", "anchor"})
    _format(doc)
    product = doc.obj("product")
    product.keys({"record_version", "record", "token_commitment"})
    record_version = product.text("record_version")
    if record_version != RECORD_VERSION:
        raise ProofError(
            "proof field product.record_version names an unsupported record version "
            f"{record_version[:40]!r}"
        )
    record = _record(product)
    token_commitment = product.digest("token_commitment")
    tree = doc.obj("tree")
    tree.keys({"profile", "size", "leaf_index", "path", "root"})
    profile = tree.text("profile")
    if profile != merkle.PROFILE:
        raise ProofError(
            f"proof field tree.profile names an unsupported tree profile {profile[:40]!r}"
        )
    size = tree.integer("size", 1, merkle.MAX_TREE_SIZE)
    leaf_index = tree.integer("leaf_index", 0, size - 1)
    path = tree.hex_list("path", merkle.MAX_PATH)
    root = tree.digest("root")
    batch = doc.obj("batch")
    batch.keys({"id", "manifest", "manifest_digest", "commitment"})
    batch_id = batch.text("id", _BATCH_ID)
    manifest = batch.obj("manifest").value
    if len(json.dumps(manifest)) > _MAX_MANIFEST_BYTES:
        raise ProofError("proof field batch.manifest is too large")
    _jcs_integers(manifest, "batch.manifest")
    anchor = doc.value["anchor"]
    return Proof(
        record=record,
        record_version=record_version,
        token_commitment=token_commitment,
        profile=profile,
        size=size,
        leaf_index=leaf_index,
        path=path,
        root=root,
        batch_id=batch_id,
        manifest=dict(manifest),
        manifest_digest=batch.digest("manifest_digest"),
        commitment=batch.digest("commitment"),
        anchor=anchor,
        document=doc_value,
        anchor_section=None if anchor is None else parse_anchor_section(anchor),
    )


def _format(doc: _Doc) -> None:
    """The document's format must be this one."""
    fmt = doc.text("format")
    if fmt != PROOF_FORMAT:
        raise ProofError(
            f"proof field format names an unsupported proof format {fmt[:40]!r}; "
            f"this provmint reads {PROOF_FORMAT}"
        )


def proof_to_json(proof: dict[str, Any], *, indent: int | None = 2) -> str:
    """Serialize a proof document (stable key order)."""
    return json.dumps(proof, indent=indent, sort_keys=False, ensure_ascii=False)
