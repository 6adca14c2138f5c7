"""docs/FORMATS.md, the normative spec, against the code: every known-answer vector in the
document is recomputed with provmint and, for most steps, with an independent derivation
from the document's text alone (the standard library, plus Keccak for the ABI), so the
document and the code cannot drift apart.

The vectors are fenced blocks ```` ```vector name=N kind=K [source=F] ````, one
``key: <hex>`` (bytes) or ``key = <JSON>`` line per value, a line starting with two
spaces continuing the previous one (see the document's "The vector convention"). For each
kind the test knows which keys are inputs and which outputs; a block with a key it does
not check, a missing kind, or any changed value fails. ``source=F`` vectors are also
compared with the published vector file F under tests/vectors/.

A stdlib-only verifier written from the document (:func:`spec_verify`) is run against the
worked example and every exported proof, with tampered copies, and must agree with
:func:`provmint.verify.verify_proof`.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import re
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
from conftest import LOCAL_VECTORS
from eth_utils import keccak
from helpers import example_store

from provmint import anchoring, canonical, gs1, keyhash, merkle, tokens
from provmint.keys import key_id_for
from provmint.products import export_batch_proofs
from provmint.store.keyindex import KeyRun, RunKind, RunWriter
from provmint.store.records import RecordPart
from provmint.verify import Verdict, verify_proof

DOC = Path(__file__).resolve().parent.parent / "docs" / "FORMATS.md"
ARTIFACT = Path(canonical.__file__).parent / "contracts" / "AnchorRegistry.json"

# --------------------------------------------------------------------------- the blocks

_INFO = re.compile(r"```vector((?: [a-z]+=\S+)+)\s*$")
_LINE = re.compile(r"([a-z][a-z0-9_]*)(?:(:) ?([0-9a-f]*)|( =) ?(.*))$")


@dataclass
class Vector:
    """One vector block: its name, kind, source file (or None) and values."""

    name: str
    kind: str
    source: str | None
    values: dict[str, Any]
    line: int


def parse_blocks(text: str) -> list[Vector]:
    """Every vector block of a Markdown text (AssertionError on a malformed one)."""
    vectors: list[Vector] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].startswith("```vector"):
            i += 1
            continue
        info = _INFO.fullmatch(lines[i])
        assert info, f"line {i + 1}: bad vector info string {lines[i]!r}"
        attrs = dict(a.split("=", 1) for a in info.group(1).split())
        assert set(attrs) <= {"name", "kind", "source"} and {"name", "kind"} <= set(attrs), attrs
        start, i = i + 1, i + 1
        entries: list[tuple[str, bool, list[str]]] = []  # key, is_hex, text pieces
        while lines[i] != "```":
            line = lines[i]
            if line.startswith("  "):
                assert entries, f"line {i + 1}: continuation without a value"
                entries[-1][2].append(line[2:])
            else:
                m = _LINE.fullmatch(line)
                assert m, f"line {i + 1}: not 'key: hex' nor 'key = JSON': {line!r}"
                is_hex = m.group(2) == ":"
                first = m.group(3) if is_hex else m.group(5)
                entries.append((m.group(1), is_hex, [first] if first else []))
            i += 1
        values: dict[str, Any] = {}
        for key, is_hex, pieces in entries:
            assert key not in values, f"{attrs['name']}: {key} twice"
            if is_hex:
                joined = "".join(p.strip() for p in pieces)
                assert re.fullmatch(r"(?:[0-9a-f]{2})*", joined), f"{attrs['name']}.{key}"
                values[key] = bytes.fromhex(joined)
            else:
                values[key] = json.loads("\n".join(pieces))
        vectors.append(Vector(attrs["name"], attrs["kind"], attrs.get("source"), values, start))
        i += 1
    return vectors


VECTORS = parse_blocks(DOC.read_text(encoding="utf-8"))
BY_NAME = {v.name: v for v in VECTORS}

# ------------------------------------------------------------ the spec, from the document alone


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def spec_record(fields: dict[str, str]) -> bytes:
    names = sorted(fields, key=lambda n: n.encode("ascii"))
    out = b"PMR1" + struct.pack(">H", len(names))
    for name in names:
        value = fields[name].encode("utf-8")
        out += bytes([len(name)]) + name.encode("ascii") + struct.pack(">I", len(value)) + value
    return out


def spec_leaf(data: bytes) -> bytes:
    return sha256(b"\x00" + data)


def spec_node(left: bytes, right: bytes) -> bytes:
    return sha256(b"\x01" + left + right)


def spec_mth(hashes: list[bytes]) -> bytes:
    if not hashes:
        return sha256(b"")
    if len(hashes) == 1:
        return hashes[0]
    k = 1
    while k * 2 < len(hashes):
        k *= 2
    return spec_node(spec_mth(hashes[:k]), spec_mth(hashes[k:]))


def spec_path(index: int, hashes: list[bytes]) -> list[bytes]:
    """RFC 9162 PATH(m, D[n]), leaf side first."""
    if len(hashes) == 1:
        return []
    k = 1
    while k * 2 < len(hashes):
        k *= 2
    if index < k:
        return [*spec_path(index, hashes[:k]), spec_mth(hashes[k:])]
    return [*spec_path(index - k, hashes[k:]), spec_mth(hashes[:k])]


def spec_root(leaf: bytes, index: int, size: int, path: list[bytes]) -> bytes | None:
    """The document's verification algorithm; None where it says "refuse"."""
    if not 0 <= index < size or len(path) > 63:
        return None
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return None
        if fn % 2 == 1 or fn == sn:
            r = spec_node(p, r)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = spec_node(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


_SHORT = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r", '"': '\\"', "\\": "\\\\"}


def spec_jcs(value: Any) -> bytes:
    def string(s: str) -> str:
        out = []
        for ch in s:
            if ch in _SHORT:
                out.append(_SHORT[ch])
            elif ord(ch) < 0x20:
                out.append(f"\\u{ord(ch):04x}")
            else:
                assert not 0xD800 <= ord(ch) <= 0xDFFF
                out.append(ch)
        return '"' + "".join(out) + '"'

    def emit(v: Any) -> str:
        if v is None:
            return "null"
        if v is True or v is False:
            return "true" if v else "false"
        if isinstance(v, int):
            assert abs(v) <= 2**53
            return str(v)
        if isinstance(v, str):
            return string(v)
        if isinstance(v, list):
            return "[" + ",".join(emit(x) for x in v) + "]"
        assert isinstance(v, dict)
        keys = sorted(v, key=lambda k: k.encode("utf-16-be"))
        return "{" + ",".join(string(k) + ":" + emit(v[k]) for k in keys) + "}"

    return emit(value).encode("utf-8")


def spec_commitment(batch_id: str, size: int, root: bytes, digest: bytes) -> bytes:
    raw = batch_id.encode("ascii")
    return sha256(b"PMB1" + bytes([len(raw)]) + raw + size.to_bytes(8, "big") + root + digest)


def spec_anchor_leaf(commitment: bytes) -> bytes:
    return spec_leaf(b"PMAL" + commitment)


def spec_anchor_digest(size: int, root: bytes) -> bytes:
    return sha256(b"PMAD" + size.to_bytes(8, "big") + root)


def spec_token(secret: bytes, gtin: str, serial: str) -> bytes:
    return hmac.digest(secret, b"PMT1" + gtin.encode() + serial.encode(), "sha256")[:16]


def spec_verify(doc: dict[str, Any]) -> list[str]:
    """The document's verification steps 2-9 and 11, for a well-formed proof: the names
    of the checks that fail (empty: the proof holds up to the chain)."""
    failed = []
    product, tree, batch = doc["product"], doc["tree"], doc["batch"]
    h = bytes.fromhex
    leaf = spec_leaf(spec_record(product["record"]) + h(product["token_commitment"]))
    path = [h(p) for p in tree["path"]]
    if spec_root(leaf, tree["leaf_index"], tree["size"], path) != h(tree["root"]):
        failed.append("inclusion")
    manifest = batch["manifest"]
    if sha256(b"PMM1" + spec_jcs(manifest)) != h(batch["manifest_digest"]):
        failed.append("manifest")
    expected_tree = {"profile": tree["profile"], "size": tree["size"], "root": tree["root"]}
    if json.dumps(manifest.get("tree"), sort_keys=True) != json.dumps(
        expected_tree, sort_keys=True
    ):
        failed.append("manifest binds tree")
    if manifest.get("batch_id") != batch["id"]:
        failed.append("manifest binds batch")
    if manifest.get("columns") != sorted(product["record"]):
        failed.append("record fields")
    if manifest.get("record_version") != product["record_version"]:
        failed.append("record version")
    commitment = spec_commitment(
        batch["id"], tree["size"], h(tree["root"]), h(batch["manifest_digest"])
    )
    if commitment != h(batch["commitment"]):
        failed.append("batch commitment")
    anchor = doc["anchor"]
    if anchor is not None:
        at = anchor["tree"]
        root = spec_root(
            spec_anchor_leaf(h(batch["commitment"])),
            at["leaf_index"],
            at["size"],
            [h(p) for p in at["path"]],
        )
        digest_ok = spec_anchor_digest(at["size"], h(at["root"])) == h(anchor["digest"])
        if root != h(at["root"]) or not digest_ok:
            failed.append("anchor tree")
    return failed


# --------------------------------------------------------------------------- the checks, per kind

Check = Callable[[dict[str, Any], Vector], None]
KINDS: dict[str, tuple[set[str], set[str], Check]] = {}
"""kind -> (required keys, optional keys, check)."""


def kind(name: str, keys: str, optional: str = "") -> Callable[[Check], Check]:
    def register(check: Check) -> Check:
        KINDS[name] = (set(keys.split()), set(optional.split()), check)
        return check

    return register


def _hexes(items: list[str]) -> list[bytes]:
    return [bytes.fromhex(x) for x in items]


@kind("record", "fields record")
def _record(v: dict[str, Any], _: Vector) -> None:
    assert canonical.encode_record(v["fields"]) == v["record"] == spec_record(v["fields"])
    assert canonical.decode_record(v["record"]) == v["fields"]


@kind("token-message", "gtin serial message")
def _token_message(v: dict[str, Any], _: Vector) -> None:
    spec = b"PMT1" + v["gtin"].encode("ascii") + v["serial"].encode("ascii")
    assert canonical.token_message(v["gtin"], v["serial"]) == v["message"] == spec


@kind("token", "secret gtin serial message hmac token token_text")
def _token(v: dict[str, Any], _: Vector) -> None:
    message = canonical.token_message(v["gtin"], v["serial"])
    assert message == v["message"] == b"PMT1" + v["gtin"].encode() + v["serial"].encode()
    assert hmac.digest(v["secret"], message, "sha256") == v["hmac"]
    token = tokens.make_token(v["secret"], v["gtin"], v["serial"])
    assert token == v["token"] == v["hmac"][:16] == spec_token(v["secret"], v["gtin"], v["serial"])
    text = base64.urlsafe_b64encode(token).decode().rstrip("=")
    assert tokens.format_token(token) == v["token_text"] == text and len(text) == 22
    assert tokens.parse_token(v["token_text"]) == token


@kind("token-commitment", "token preimage commitment")
def _token_commitment(v: dict[str, Any], _: Vector) -> None:
    assert v["preimage"] == b"PMC1" + v["token"] and len(v["token"]) == 16
    assert canonical.token_commitment(v["token"]) == v["commitment"] == sha256(v["preimage"])


@kind("leaf", "fields token_commitment record leaf_data leaf_hash")
def _leaf(v: dict[str, Any], _: Vector) -> None:
    assert canonical.encode_record(v["fields"]) == v["record"] == spec_record(v["fields"])
    data = canonical.leaf_data(v["fields"], v["token_commitment"])
    assert data == v["leaf_data"] == v["record"] + v["token_commitment"]
    assert merkle.leaf_hash(data) == v["leaf_hash"] == spec_leaf(v["leaf_data"])


@kind("node", "left right node")
def _node(v: dict[str, Any], _: Vector) -> None:
    assert merkle.node_hash(v["left"], v["right"]) == v["node"] == spec_node(v["left"], v["right"])


@kind("roots", "leaf_inputs roots")
def _roots(v: dict[str, Any], _: Vector) -> None:
    hashes = [merkle.leaf_hash(d) for d in _hexes(v["leaf_inputs"])]
    assert len(v["roots"]) == len(hashes) + 1
    for n, root in enumerate(_hexes(v["roots"])):
        assert merkle.mth(hashes[:n]) == root == spec_mth(hashes[:n]), n
        if n:
            levels = merkle.build_levels(b"".join(hashes[:n]))
            assert levels[-1] == root


@kind("tree", "leaf_hashes root paths")
def _tree(v: dict[str, Any], _: Vector) -> None:
    hashes = _hexes(v["leaf_hashes"])
    levels = merkle.build_levels(b"".join(hashes))
    assert levels[-1] == v["root"] == spec_mth(hashes)
    assert len(v["paths"]) == len(hashes)
    for i, path in enumerate(v["paths"]):
        node = lambda level, j: levels[level][32 * j : 32 * j + 32]  # noqa: E731
        built = merkle.inclusion_path(node, i, len(hashes))
        assert built == _hexes(path) == spec_path(i, hashes), i
        assert merkle.root_from_path(hashes[i], i, len(hashes), built) == v["root"]
        assert spec_root(hashes[i], i, len(hashes), built) == v["root"]


@kind("inclusion", "leaf_hash leaf_index tree_size path root")
def _inclusion(v: dict[str, Any], _: Vector) -> None:
    path = _hexes(v["path"])
    args = (v["leaf_hash"], v["leaf_index"], v["tree_size"], path)
    assert merkle.root_from_path(*args) == v["root"] == spec_root(*args)
    assert merkle.verify_inclusion(*args, v["root"])


@kind("inclusion-reject", "leaf_hash leaf_index tree_size path root")
def _inclusion_reject(v: dict[str, Any], vector: Vector) -> None:
    assert vector.source, "a rejected case is pinned by its source file"
    args = (v["leaf_hash"], v["leaf_index"], v["tree_size"], _hexes(v["path"]))
    assert not merkle.verify_inclusion(*args, v["root"])
    assert spec_root(*args) != v["root"]


@kind("jcs", "value jcs")
def _jcs(v: dict[str, Any], _: Vector) -> None:
    assert canonical.canonical_json(v["value"]) == v["jcs"] == spec_jcs(v["value"])


@kind("manifest-digest", "manifest digest", "jcs")
def _manifest_digest(v: dict[str, Any], _: Vector) -> None:
    jcs = spec_jcs(v["manifest"])
    assert canonical.canonical_json(v["manifest"]) == jcs == v.get("jcs", jcs)
    assert canonical.manifest_digest(v["manifest"]) == v["digest"] == sha256(b"PMM1" + jcs)


@kind("batch-commitment", "batch_id tree_size root manifest_digest preimage commitment")
def _batch_commitment(v: dict[str, Any], _: Vector) -> None:
    raw = v["batch_id"].encode("ascii")
    spec = b"PMB1" + bytes([len(raw)]) + raw + v["tree_size"].to_bytes(8, "big")
    assert v["preimage"] == spec + v["root"] + v["manifest_digest"]
    args = (v["batch_id"], v["tree_size"], v["root"], v["manifest_digest"])
    assert canonical.batch_commitment(*args) == v["commitment"] == sha256(v["preimage"])
    assert spec_commitment(*args) == v["commitment"]


@kind("anchor-leaf", "commitment preimage leaf")
def _anchor_leaf(v: dict[str, Any], _: Vector) -> None:
    assert v["preimage"] == b"\x00PMAL" + v["commitment"]
    assert anchoring.anchor_leaf(v["commitment"]) == v["leaf"] == sha256(v["preimage"])


@kind(
    "anchor-tree",
    "commitments sorted leaves paths size root digest_preimage digest calldata",
)
def _anchor_tree(v: dict[str, Any], _: Vector) -> None:
    commitments = _hexes(v["commitments"])
    tree = anchoring.build_anchor_tree(commitments)
    ordered = sorted(commitments)
    assert list(tree.commitments) == ordered == _hexes(v["sorted"])
    leaves = [spec_anchor_leaf(c) for c in ordered]
    assert [anchoring.anchor_leaf(c) for c in ordered] == leaves == _hexes(v["leaves"])
    assert tree.size == v["size"] == len(ordered)
    assert tree.root == v["root"] == spec_mth(leaves)
    assert [tree.path(i) for i in range(tree.size)] == [_hexes(p) for p in v["paths"]]
    assert [spec_path(i, leaves) for i in range(len(leaves))] == [_hexes(p) for p in v["paths"]]
    assert v["digest_preimage"] == b"PMAD" + v["size"].to_bytes(8, "big") + v["root"]
    assert tree.digest == v["digest"] == sha256(v["digest_preimage"])
    assert anchoring.anchor_digest(v["size"], v["root"]) == v["digest"]
    assert anchoring.calldata_payload(tree.digest) == v["calldata"] == b"PMNT\x01" + v["digest"]
    assert anchoring.digest_from_calldata(v["calldata"]) == v["digest"]
    for i, c in enumerate(ordered):
        section = anchoring.parse_anchor_section(anchoring.anchor_section(tree, c, _CHAIN))
        assert section.check_offline(c).ok, i


_CHAIN = {
    "chain_id": 1,
    "method": "calldata",
    "contract": None,
    "sender": "0x" + "11" * 20,
    "tx_hash": "0x" + "22" * 32,
    "block_number": 1,
    "block_hash": "0x" + "33" * 32,
    "block_time": 1,
}


def _selector(signature: str) -> bytes:
    return bytes(keccak(text=signature))[:4]


@kind("registry-call", "digest issuer anchor_call anchored_at_call")
def _registry_call(v: dict[str, Any], _: Vector) -> None:
    from provmint.chain import registry_anchor_data

    assert v["anchor_call"] == _selector("anchor(bytes32)") + v["digest"]
    assert bytes.fromhex(registry_anchor_data(v["digest"])[2:]) == v["anchor_call"]
    issuer = bytes.fromhex(v["issuer"][2:])
    selector = _selector("anchoredAt(address,bytes32)")
    assert v["anchored_at_call"] == selector + bytes(12) + issuer + v["digest"]


@kind("abi", "signature keccak256")
def _abi(v: dict[str, Any], _: Vector) -> None:
    assert bytes(keccak(text=v["signature"])) == v["keccak256"]
    abi = json.loads(ARTIFACT.read_text())["abi"]
    signatures = {
        f"{e['name']}({','.join(i['type'] for i in e['inputs'])})" for e in abi if "name" in e
    }
    assert v["signature"] in signatures


@kind("registry-code", "keccak256")
def _registry_code(v: dict[str, Any], _: Vector) -> None:
    code = bytes.fromhex(json.loads(ARTIFACT.read_text())["deployedBytecode"][2:])
    assert bytes(keccak(code)) == v["keccak256"]


@kind("proof", "proof leaf_hash anchor_leaf")
def _proof(v: dict[str, Any], _: Vector) -> None:
    doc = v["proof"]
    report = verify_proof(json.dumps(doc))
    assert report.verdict is Verdict.UNCHECKED, report.reason
    assert all(c.ok for c in report.checks), report.checks
    assert bytes.fromhex(report.leaf_hash) == v["leaf_hash"]
    product = doc["product"]
    leaf = spec_leaf(spec_record(product["record"]) + bytes.fromhex(product["token_commitment"]))
    assert leaf == v["leaf_hash"]
    assert spec_anchor_leaf(bytes.fromhex(doc["batch"]["commitment"])) == v["anchor_leaf"]
    assert spec_verify(doc) == []


@kind("key-id", "secret secret_text key_id")
def _key_id(v: dict[str, Any], _: Vector) -> None:
    assert base64.urlsafe_b64encode(v["secret"]).decode() == v["secret_text"]
    assert base64.urlsafe_b64decode(v["secret_text"]) == v["secret"]
    digest = hashlib.sha256(b"provmint/key-id/v1\x00" + v["secret"]).hexdigest()
    assert key_id_for(v["secret"]) == v["key_id"] == "k-" + digest[:8]


@kind("digital-link", "base gtin lot serial token_text url")
def _digital_link(v: dict[str, Any], _: Vector) -> None:
    url = gs1.digital_link(v["base"], v["gtin"], v["serial"], v["lot"], v["token_text"])
    lot = f"/10/{quote(v['lot'], safe='')}" if v["lot"] else ""
    spec = (
        f"{v['base'].rstrip('/')}/01/{v['gtin']}{lot}/21/{quote(v['serial'], safe='')}"
        f"?t={quote(v['token_text'], safe='')}"
    )
    assert url == v["url"] == spec
    link = gs1.parse_digital_link(v["url"])
    assert (link.gtin14, link.lot, link.serial, link.token) == (
        v["gtin"],
        v["lot"],
        v["serial"],
        v["token_text"],
    )


@kind("keyhash", "gtin serial block key key_le")
def _keyhash(v: dict[str, Any], _: Vector) -> None:
    block = v["gtin"].encode() + v["serial"].encode().ljust(20, b"\0") + bytes(6)
    assert keyhash.key_block(v["gtin"], v["serial"]) == v["block"] == block
    m64 = 2**64 - 1
    h = 0x9E3779B97F4A7C15
    for (w,) in struct.iter_unpack("<Q", block):
        h = ((h ^ w) * 0xBF58476D1CE4E5B9) & m64
        h ^= h >> 31
    h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & m64
    h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & m64
    h ^= h >> 31
    assert keyhash.key_hash(v["gtin"], v["serial"]) == v["key"] == h
    assert v["key"].to_bytes(8, "little") == v["key_le"]


@kind("keyrun", "run_kind entries file")
def _keyrun(v: dict[str, Any], _: Vector) -> None:
    entries = sorted((k, r) for k, r in v["entries"])
    spec = b"PMKRUN01" + struct.pack("<QI", len(entries), v["run_kind"]) + bytes(44)
    spec += b"".join(struct.pack("<Q", k) for k, _ in entries)
    spec += b"".join(struct.pack("<I", r) for _, r in entries)
    assert spec == v["file"]
    keys = np.array([k for k, _ in entries], dtype=np.uint64)
    rows = np.array([r for _, r in entries], dtype=np.uint32)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "v.run"
        with RunWriter(path, RunKind(v["run_kind"]), count=len(entries), durable=False) as writer:
            writer.append(keys, rows)
        assert path.read_bytes() == v["file"]
        with KeyRun.open(path) as run:
            assert run.kind == v["run_kind"] and run.count == len(entries)


@kind("records-part", "file rows")
def _records_part(v: dict[str, Any], _: Vector) -> None:
    import zstandard

    data = v["file"]
    magic, rows, block_rows, blocks, codec = struct.unpack_from("<8sIIII", data)
    assert (magic, block_rows, codec, data[24:32]) == (b"PMRECS01", 64, 1, bytes(8))
    offsets = struct.unpack_from(f"<{blocks + 1}Q", data, 32)
    sizes = struct.unpack_from(f"<{blocks}I", data, 32 + 8 * (blocks + 1))
    assert offsets[-1] == len(data) and blocks == -(-rows // 64)
    found = []
    for b in range(blocks):
        payload = zstandard.ZstdDecompressor().decompress(
            data[offsets[b] : offsets[b + 1]], max_output_size=sizes[b]
        )
        assert len(payload) == sizes[b]
        pos = 0
        while pos < len(payload):
            (size,) = struct.unpack_from(">I", payload, pos)
            record = payload[pos + 4 : pos + 4 + size]
            found.append([record.hex(), payload[pos + 4 + size : pos + 20 + size].hex()])
            pos += 20 + size
    assert found == v["rows"] and len(found) == rows
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "v.rec"
        path.write_bytes(data)
        part = RecordPart.open(path)
        try:
            read = [part.get(i) for i in range(len(part))]
        finally:
            part.close()
    assert [[r.hex(), t.hex()] for r, t in read] == v["rows"]


def check(vector: Vector, values: dict[str, Any] | None = None) -> None:
    """Recompute one vector (its values, or ``values`` in their place)."""
    assert vector.kind in KINDS, f"{vector.name}: unknown kind {vector.kind}"
    required, optional, run = KINDS[vector.kind]
    values = vector.values if values is None else values
    keys = set(values)
    assert required <= keys, f"{vector.name}: missing {sorted(required - keys)}"
    assert keys <= required | optional, (
        f"{vector.name}: unchecked {sorted(keys - required - optional)}"
    )
    if vector.source is not None:
        _same_as_source(vector.source, values)
    run(values, vector)


def _same_as_source(source: str, v: dict[str, Any]) -> None:
    """A vector copied from a published vector file is that file's case."""
    data = json.loads((LOCAL_VECTORS / source).read_text())
    if source.endswith("roots.json"):
        assert (v["leaf_inputs"], v["roots"]) == (data["leaf_inputs_hex"], data["root_by_size_hex"])
        return
    b64 = lambda s: base64.b64decode(s).hex()  # noqa: E731
    assert v["leaf_hash"].hex() == b64(data["leafHash"])
    assert (v["leaf_index"], v["tree_size"]) == (data["leafIdx"], data["treeSize"])
    assert v["path"] == [b64(p) for p in data["proof"] or []]
    assert v["root"].hex() == b64(data["root"])


# --------------------------------------------------------------------------- tests


def test_the_document_has_every_kind_of_vector() -> None:
    assert len(VECTORS) >= 50
    assert len(BY_NAME) == len(VECTORS), "vector names are unique"
    assert {v.kind for v in VECTORS} == set(KINDS)
    # and nothing that looks like a vector block escaped the parser
    assert DOC.read_text().count("```vector") == len(VECTORS)


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.name)
def test_vector(vector: Vector) -> None:
    check(vector)


def _mutated(value: Any) -> Any:
    """The same value with one small change: a hex digit, a number, a character."""
    if isinstance(value, bytes):
        return bytes([value[0] ^ 0x10]) + value[1:] if value else b"\x00"
    if isinstance(value, bool) or value is None:
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str):
        if not value:
            return "0"
        last = value[-1]
        if last in "0123456789abcdef":  # hex stays hex (and bytes.fromhex ignores case)
            return value[:-1] + ("1" if last == "0" else "0")
        return value[:-1] + ("A" if last != "A" else "B")
    if isinstance(value, list):
        return [_mutated(value[0]), *value[1:]] if value else [""]
    assert isinstance(value, dict)
    first = next(iter(value), None)
    if first is None:
        return {"x": ""}
    return {**value, first: _mutated(value[first])}


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.name)
def test_a_changed_vector_fails(vector: Vector) -> None:
    """Whatever value of a block changes, recomputing the block fails."""
    for key, value in vector.values.items():
        values = {**vector.values, key: _mutated(value)}
        assert values[key] != value
        with pytest.raises(Exception):  # noqa: B017 - a mismatch or a refused input
            check(vector, values)


def test_a_changed_document_fails(tmp_path: Path) -> None:
    """Editing any hex digit of the document's text changes a vector that then fails."""
    text = DOC.read_text(encoding="utf-8")
    block = BY_NAME["example-commitment"]
    lines = text.splitlines()
    for offset, line in enumerate(lines[block.line :], block.line):
        if line.startswith("commitment: "):
            digit = line[-1]
            lines[offset] = line[:-1] + ("0" if digit != "0" else "1")
            break
    changed = {v.name: v for v in parse_blocks("\n".join(lines))}["example-commitment"]
    with pytest.raises(AssertionError):
        check(changed)


def test_quick_answers_give_the_twelve_facts() -> None:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Quick answers", 1)[1].split("\n## ", 1)[0]
    numbers = [int(m) for m in re.findall(r"^(\d+)\. \*\*", section, re.MULTILINE)]
    assert numbers == list(range(1, 13))
    for fact in (
        "big-endian",
        "`u8`",
        "4,096 bytes",
        "16 raw token",
        "provmint-keyring/1",
        "empty string",
        "from the leaf up",
        '"PMAL"',
        '"PMAD" || u64be size || root',
        "4,096 batches",
        "anchoredAt(address,bytes32)",
        "duplicate",
    ):
        assert fact in section, fact


def test_the_worked_example_is_the_document_of_its_steps() -> None:
    """The worked example's proof holds the values of the example's step vectors."""
    proof = BY_NAME["example-proof"].values["proof"]
    leaf = BY_NAME["example-leaf"].values
    assert proof["product"]["record"] == leaf["fields"]
    assert proof["product"]["token_commitment"] == leaf["token_commitment"].hex()
    assert (
        proof["product"]["token_commitment"]
        == BY_NAME["example-token-commitment"].values["commitment"].hex()
    )
    tree = BY_NAME["example-tree"].values
    assert proof["tree"]["root"] == tree["root"].hex()
    assert proof["tree"]["path"] == tree["paths"][proof["tree"]["leaf_index"]]
    assert tree["leaf_hashes"][proof["tree"]["leaf_index"]] == leaf["leaf_hash"].hex()
    assert proof["batch"]["manifest"] == BY_NAME["example-manifest"].values["manifest"]
    assert proof["batch"]["commitment"] == BY_NAME["example-commitment"].values["commitment"].hex()
    anchor = BY_NAME["example-anchor"].values
    assert proof["anchor"]["digest"] == anchor["digest"].hex()
    assert proof["anchor"]["tree"]["root"] == anchor["root"].hex()
    index = proof["anchor"]["tree"]["leaf_index"]
    assert anchor["sorted"][index] == proof["batch"]["commitment"]
    assert proof["anchor"]["tree"]["path"] == anchor["paths"][index]
    token = BY_NAME["example-token"].values
    assert (token["gtin"], token["serial"]) == (leaf["fields"]["gtin"], leaf["fields"]["serial"])


# --------------------------------------------------------------- a verifier from the document


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    base = tmp_path_factory.mktemp("formats")
    with example_store(base) as (cfg, summary):
        out = base / "all.jsonl"
        export_batch_proofs(cfg, summary.batch_id, out)
        return [json.loads(line) for line in out.read_text().splitlines()]


def _flip(h: str, at: int = 0) -> str:
    return h[:at] + ("1" if h[at] == "0" else "0") + h[at + 1 :]


def _tampered(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Copies of a proof with one field changed each (still well formed)."""
    out = []
    edits: list[Callable[[dict[str, Any]], None]] = [
        lambda d: d["product"]["record"].__setitem__(
            "serial", d["product"]["record"]["serial"] + "X"
        ),
        lambda d: d["product"].__setitem__(
            "token_commitment", _flip(d["product"]["token_commitment"])
        ),
        lambda d: d["tree"].__setitem__("root", _flip(d["tree"]["root"], 63)),
        lambda d: d["tree"].__setitem__("size", d["tree"]["size"] + 1),
        lambda d: d["tree"]["path"].__setitem__(0, _flip(d["tree"]["path"][0], 5)),
        lambda d: d["batch"]["manifest"].__setitem__("label", "forged"),
        lambda d: d["batch"].__setitem__("manifest_digest", _flip(d["batch"]["manifest_digest"])),
        lambda d: d["batch"].__setitem__("commitment", _flip(d["batch"]["commitment"])),
        lambda d: d["batch"].__setitem__("id", d["batch"]["id"] + "x"),
    ]
    if doc["anchor"] is not None:
        edits += [
            lambda d: d["anchor"]["tree"].__setitem__("root", _flip(d["anchor"]["tree"]["root"])),
            lambda d: d["anchor"].__setitem__("digest", _flip(d["anchor"]["digest"], 9)),
            lambda d: d["anchor"]["tree"]["path"].__setitem__(
                0, _flip(d["anchor"]["tree"]["path"][0])
            ),
        ]
    for edit in edits:
        copy_ = copy.deepcopy(doc)
        edit(copy_)
        out.append(copy_)
    return out


def test_a_verifier_written_from_the_document_agrees(exported: list[dict[str, Any]]) -> None:
    docs = [*exported, BY_NAME["example-proof"].values["proof"]]
    assert len(docs) == 10
    for doc in docs:
        assert spec_verify(doc) == []
        assert verify_proof(doc).verdict in (Verdict.PENDING, Verdict.UNCHECKED)
        for bad in _tampered(doc):
            failed = spec_verify(bad)
            report = verify_proof(bad)
            assert report.verdict is Verdict.INVALID, report.reason
            assert failed, report.reason
            assert failed[0] == report.reason.split(":", 1)[0]
            assert failed == [c.name for c in report.checks if not c.ok]
